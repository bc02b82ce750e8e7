"""Every table of the store.

On PostgreSQL ``telemetry`` is partitioned by month on ``ts`` with a default partition (see
``central.migrations.pg_telemetry``); on SQLite it is a plain table with the same key.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 13:17:34.272601
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from central.migrations import pg_telemetry

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agent_sequences",
        sa.Column("agent_id", sa.String(length=128), nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("highest_seq", sa.BigInteger(), nullable=False),
        sa.Column("gaps", sa.BigInteger(), nullable=False),
        sa.Column("missing_readings", sa.BigInteger(), nullable=False),
        sa.Column("duplicates", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("agent_id", name=op.f("pk_agent_sequences")),
    )
    op.create_index(op.f("ix_agent_sequences_site_id"), "agent_sequences", ["site_id"])

    op.create_table(
        "battery_latest",
        sa.Column("battery_id", sa.String(length=64), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("voltage", sa.Double(), nullable=True),
        sa.Column("current", sa.Double(), nullable=True),
        sa.Column("temperature", sa.Double(), nullable=True),
        sa.Column("internal_resistance", sa.Double(), nullable=True),
        sa.Column("soc_pct", sa.Double(), nullable=True),
        sa.Column("soh_pct", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("battery_id", name=op.f("pk_battery_latest")),
    )
    op.create_table(
        "locations",
        sa.Column("location_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("region", sa.String(length=100), nullable=False),
        sa.Column("city", sa.String(length=100), nullable=False),
        sa.Column("country", sa.String(length=100), nullable=False),
        sa.Column("latitude", sa.Double(), nullable=False),
        sa.Column("longitude", sa.Double(), nullable=False),
        sa.Column("temp_offset_c", sa.Double(), nullable=False),
        sa.Column("humidity_offset_pct", sa.Double(), nullable=False),
        sa.Column("power_outage_frequency_per_year", sa.Double(), nullable=False),
        sa.Column("ups_count", sa.Integer(), nullable=False),
        sa.Column("strings_per_ups", sa.Integer(), nullable=False),
        sa.Column("blocks_per_string", sa.Integer(), nullable=False),
        sa.Column("installed_date", sa.Date(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("location_id", name=op.f("pk_locations")),
    )
    op.create_table(
        "quarantined_messages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantined_messages")),
    )
    op.create_index(
        op.f("ix_quarantined_messages_received_at"), "quarantined_messages", ["received_at"]
    )

    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_revoked_tokens")),
    )
    op.create_index(op.f("ix_revoked_tokens_expires_at"), "revoked_tokens", ["expires_at"])

    if op.get_bind().dialect.name == "postgresql":
        for statement in pg_telemetry.create_statements():
            op.execute(statement)
    else:
        op.create_table(
            "telemetry",
            sa.Column("battery_id", sa.String(length=64), nullable=False),
            sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
            sa.Column("voltage", sa.Double(), nullable=True),
            sa.Column("current", sa.Double(), nullable=True),
            sa.Column("temperature", sa.Double(), nullable=True),
            sa.Column("internal_resistance", sa.Double(), nullable=True),
            sa.Column("soc_pct", sa.Double(), nullable=True),
            sa.Column("soh_pct", sa.Double(), nullable=True),
            sa.PrimaryKeyConstraint("battery_id", "ts", name=op.f("pk_telemetry")),
        )
    op.create_table(
        "users",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("full_name", sa.String(length=200), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("role IN ('admin', 'engineer', 'viewer')", name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "ups_units",
        sa.Column("ups_id", sa.String(length=64), nullable=False),
        sa.Column("location_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["location_id"],
            ["locations.location_id"],
            name=op.f("fk_ups_units_location_id_locations"),
        ),
        sa.PrimaryKeyConstraint("ups_id", name=op.f("pk_ups_units")),
    )
    op.create_index(op.f("ix_ups_units_location_id"), "ups_units", ["location_id"])

    op.create_table(
        "strings",
        sa.Column("string_id", sa.String(length=64), nullable=False),
        sa.Column("ups_id", sa.String(length=64), nullable=False),
        sa.Column("location_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["location_id"],
            ["locations.location_id"],
            name=op.f("fk_strings_location_id_locations"),
        ),
        sa.ForeignKeyConstraint(
            ["ups_id"], ["ups_units.ups_id"], name=op.f("fk_strings_ups_id_ups_units")
        ),
        sa.PrimaryKeyConstraint("string_id", name=op.f("pk_strings")),
    )
    op.create_index(op.f("ix_strings_location_id"), "strings", ["location_id"])
    op.create_index(op.f("ix_strings_ups_id"), "strings", ["ups_id"])

    op.create_table(
        "batteries",
        sa.Column("battery_id", sa.String(length=64), nullable=False),
        sa.Column("string_id", sa.String(length=64), nullable=False),
        sa.Column("location_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("serial_number", sa.String(length=64), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("nominal_voltage_v", sa.Double(), nullable=False),
        sa.Column("nominal_capacity_ah", sa.Double(), nullable=False),
        sa.Column("installed_date", sa.Date(), nullable=False),
        sa.Column("warranty_months", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["location_id"],
            ["locations.location_id"],
            name=op.f("fk_batteries_location_id_locations"),
        ),
        sa.ForeignKeyConstraint(
            ["string_id"], ["strings.string_id"], name=op.f("fk_batteries_string_id_strings")
        ),
        sa.PrimaryKeyConstraint("battery_id", name=op.f("pk_batteries")),
    )
    op.create_index(
        "ix_batteries_location_id_battery_id", "batteries", ["location_id", "battery_id"]
    )
    op.create_index(op.f("ix_batteries_string_id"), "batteries", ["string_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_batteries_string_id"), "batteries")
    op.drop_index("ix_batteries_location_id_battery_id", "batteries")

    op.drop_table("batteries")
    op.drop_index(op.f("ix_strings_ups_id"), "strings")
    op.drop_index(op.f("ix_strings_location_id"), "strings")

    op.drop_table("strings")
    op.drop_index(op.f("ix_ups_units_location_id"), "ups_units")

    op.drop_table("ups_units")
    op.drop_table("users")
    op.drop_table("telemetry")  # its partitions go with it on PostgreSQL
    if op.get_bind().dialect.name == "postgresql":
        op.execute(pg_telemetry.DROP_FUNCTION)
    op.drop_index(op.f("ix_revoked_tokens_expires_at"), "revoked_tokens")

    op.drop_table("revoked_tokens")
    op.drop_index(op.f("ix_quarantined_messages_received_at"), "quarantined_messages")

    op.drop_table("quarantined_messages")
    op.drop_table("locations")
    op.drop_table("battery_latest")
    op.drop_index(op.f("ix_agent_sequences_site_id"), "agent_sequences")

    op.drop_table("agent_sequences")
