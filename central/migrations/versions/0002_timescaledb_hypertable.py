"""Telemetry becomes a TimescaleDB hypertable where the extension is available.

On PostgreSQL with ``timescaledb`` in ``pg_available_extensions``: create the extension, and
replace the natively partitioned ``telemetry`` by a hypertable on ``ts`` (7-day chunks) with the
same columns and key, moving any rows across. Without the extension, and always on SQLite, this
revision is a no-op: telemetry stays as revision 0001 made it (monthly native partitions).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from central.migrations import pg_telemetry

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHUNK_INTERVAL = "7 days"


def _timescaledb_available() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    query = sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    return bind.execute(query).first() is not None


def _is_hypertable() -> bool:
    query = sa.text(
        "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"
        " AND to_regclass('timescaledb_information.hypertables') IS NOT NULL"
    )
    if op.get_bind().execute(query).first() is None:
        return False
    query = sa.text(
        "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = 'telemetry'"
    )
    return op.get_bind().execute(query).first() is not None


def upgrade() -> None:
    if not _timescaledb_available():
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    op.execute("ALTER TABLE telemetry RENAME TO telemetry_partitioned")
    op.execute(
        "ALTER TABLE telemetry_partitioned RENAME CONSTRAINT pk_telemetry TO pk_telemetry_old"
    )
    op.execute(pg_telemetry.CREATE_TABLE.replace("PARTITION BY RANGE (ts)", ""))
    op.execute(
        "SELECT create_hypertable('telemetry', 'ts',"
        f" chunk_time_interval => interval '{CHUNK_INTERVAL}')"
    )
    op.execute("INSERT INTO telemetry SELECT * FROM telemetry_partitioned")
    op.execute("DROP TABLE telemetry_partitioned")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql" or not _is_hypertable():
        return
    op.execute("ALTER TABLE telemetry RENAME TO telemetry_hypertable")
    op.execute(
        "ALTER TABLE telemetry_hypertable RENAME CONSTRAINT pk_telemetry TO pk_telemetry_old"
    )
    op.execute(pg_telemetry.CREATE_TABLE)
    op.execute(pg_telemetry.CREATE_DEFAULT_PARTITION)
    op.execute(pg_telemetry.ENSURE_AROUND_NOW)
    op.execute("INSERT INTO telemetry SELECT * FROM telemetry_hypertable")
    op.execute("DROP TABLE telemetry_hypertable")
