"""A demo site's inventory for central's tests: the birth its agent would publish."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from central.db.models import Alert
from common import ids
from common.fleet import demo_fleet_path, load_fleet
from common.schemas import BatteryInfo, Birth, StringInfo, UpsInfo

SITE = "DC-CNX-01"


def demo_birth(serial_suffix: str = "", site: str = SITE) -> Birth:
    location = load_fleet(demo_fleet_path()).get(site)
    spec = location.battery_model
    ups = [
        UpsInfo(
            ups_id=ids.ups_id(site, u),
            strings=[
                StringInfo(
                    string_id=ids.string_id(site, u, s),
                    batteries=[
                        BatteryInfo(
                            battery_id=ids.battery_id(site, u, s, p),
                            serial_number=f"CSB-{u}{s}{p:03d}{serial_suffix}",
                            manufacturer=spec.manufacturer,
                            model=spec.model,
                            nominal_voltage_v=spec.nominal_voltage_v,
                            nominal_capacity_ah=spec.nominal_capacity_ah,
                            installed_date=location.installed_date,
                            warranty_months=spec.warranty_months,
                            position=p,
                        )
                        for p in range(1, location.blocks_per_string + 1)
                    ],
                )
                for s in range(1, location.strings_per_ups + 1)
            ],
        )
        for u in range(1, location.ups_count + 1)
    ]
    return Birth(site_id=site, agent_id="agent-1", ts=datetime(2026, 1, 1, tzinfo=UTC), ups=ups)


class StoredAlerts:
    """What an end-to-end test reads of the alerts ingest stored (``engine``: the store's)."""

    engine: Engine

    def alerts(self, battery_id: str, alert_type: str) -> list[Alert]:
        """The battery's alerts of ``alert_type``, oldest triggered first."""
        with Session(self.engine) as session:
            return list(
                session.scalars(
                    select(Alert)
                    .where(Alert.battery_id == battery_id, Alert.alert_type == alert_type)
                    .order_by(Alert.triggered_at)
                )
            )

    def active(self, battery_id: str, alert_type: str) -> Alert | None:
        rows = [a for a in self.alerts(battery_id, alert_type) if a.resolved_at is None]
        return rows[0] if rows else None
