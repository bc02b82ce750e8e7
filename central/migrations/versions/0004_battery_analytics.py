"""Per-battery analytics: the resistance baseline and the latest RUL estimate.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "battery_analytics",
        sa.Column("battery_id", sa.String(length=64), nullable=False),
        sa.Column("resistance_baseline_ohm", sa.Double(), nullable=True),
        sa.Column("rul_status", sa.String(length=16), nullable=True),
        sa.Column("rul_days", sa.Double(), nullable=True),
        sa.Column("rul_low_days", sa.Double(), nullable=True),
        sa.Column("rul_high_days", sa.Double(), nullable=True),
        sa.Column("rul_interval_pct", sa.Integer(), nullable=True),
        sa.Column("predicted_eol_date", sa.Date(), nullable=True),
        sa.Column("soh_now_pct", sa.Double(), nullable=True),
        sa.Column("fade_pct_per_year", sa.Double(), nullable=True),
        sa.Column("rul_n_points", sa.Integer(), nullable=True),
        sa.Column("rul_n_days", sa.Integer(), nullable=True),
        sa.Column("rul_method", sa.String(length=64), nullable=True),
        sa.Column("rul_computed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("battery_id", name=op.f("pk_battery_analytics")),
    )


def downgrade() -> None:
    op.drop_table("battery_analytics")
