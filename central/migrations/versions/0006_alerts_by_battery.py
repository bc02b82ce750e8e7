"""Alerts by battery: one battery's alerts, newest first, without scanning its location's.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        op.f("ix_alerts_battery_id_triggered_at"), "alerts", ["battery_id", "triggered_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_alerts_battery_id_triggered_at"), table_name="alerts")
