"""Research uploads: cells of uploaded ``.mat`` files and their cycles.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CYCLE_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "research_batteries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("upload_id", sa.String(length=36), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("file_sha256", sa.String(length=64), nullable=False),
        sa.Column("cell_label", sa.String(length=200), nullable=False),
        sa.Column("cell_index", sa.Integer(), nullable=False),
        sa.Column("layout", sa.String(length=32), nullable=False),
        sa.Column("total_cycles", sa.Integer(), nullable=False),
        sa.Column("nominal_capacity", sa.Double(), nullable=False),
        sa.Column("manufacturer", sa.String(length=200), nullable=True),
        sa.Column("chemistry", sa.String(length=100), nullable=True),
        sa.Column("eol_threshold", sa.Double(), nullable=False),
        sa.Column("stated_cycle_life", sa.Integer(), nullable=True),
        sa.Column("stated_life_threshold", sa.Double(), nullable=True),
        sa.Column("voltage_grid", sa.LargeBinary(), nullable=True),
        sa.Column("uploaded_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_research_batteries")),
    )
    op.create_index(
        "ix_research_batteries_upload_id", "research_batteries", ["upload_id"], unique=False
    )
    op.create_index(
        "ix_research_batteries_manufacturer", "research_batteries", ["manufacturer"], unique=False
    )
    op.create_table(
        "research_cycles",
        sa.Column("id", _CYCLE_ID, autoincrement=True, nullable=False),
        sa.Column("battery_id", sa.Integer(), nullable=False),
        sa.Column("cycle_index", sa.Integer(), nullable=False),
        sa.Column("capacity_ah", sa.Double(), nullable=True),
        sa.Column("soh", sa.Double(), nullable=True),
        sa.Column("rul", sa.Integer(), nullable=True),
        sa.Column("ambient_temperature", sa.Double(), nullable=True),
        sa.Column("voltage", sa.LargeBinary(), nullable=True),
        sa.Column("current", sa.LargeBinary(), nullable=False),
        sa.Column("temperature", sa.LargeBinary(), nullable=False),
        sa.Column("time_s", sa.LargeBinary(), nullable=False),
        sa.Column("discharge_capacity", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["battery_id"],
            ["research_batteries.id"],
            name=op.f("fk_research_cycles_battery_id_research_batteries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_research_cycles")),
    )
    op.create_index(
        "uq_research_cycles_battery_id_cycle_index",
        "research_cycles",
        ["battery_id", "cycle_index"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_table("research_cycles")
    op.drop_table("research_batteries")
