"""Telemetry's key covers the measured values, and its partitions are vacuumed often.

PostgreSQL only (``central.migrations.pg_telemetry`` says why): the primary key is rebuilt as
``(battery_id, ts) INCLUDE (voltage, ...)``, every existing partition (or hypertable chunk) gets
the insert-vacuum settings, and the partition helper gives them to the partitions it makes.
Rebuilding the key rewrites every partition's index: on a large store, run it in a quiet hour.
On SQLite this revision is a no-op.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from central.migrations import pg_telemetry

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RESET_OPTIONS = "autovacuum_vacuum_insert_scale_factor, autovacuum_vacuum_insert_threshold"


def _rebuild_key(include: str) -> None:
    op.execute("ALTER TABLE telemetry DROP CONSTRAINT pk_telemetry")
    op.execute(
        f"ALTER TABLE telemetry ADD CONSTRAINT pk_telemetry PRIMARY KEY (battery_id, ts){include}"
    )


def _partitions() -> list[str]:
    query = sa.text(
        "SELECT inhrelid::regclass::text FROM pg_inherits"
        " WHERE inhparent = 'telemetry'::regclass ORDER BY 1"
    )
    return list(op.get_bind().execute(query).scalars())


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _rebuild_key(f" INCLUDE ({', '.join(pg_telemetry.COVERED_COLUMNS)})")
    for partition in _partitions():
        op.execute(f"ALTER TABLE {partition} SET ({pg_telemetry.PARTITION_OPTIONS})")
    op.execute(pg_telemetry.create_function(pg_telemetry.PARTITION_OPTIONS))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(pg_telemetry.create_function())
    for partition in _partitions():
        op.execute(f"ALTER TABLE {partition} RESET ({_RESET_OPTIONS})")
    _rebuild_key("")
