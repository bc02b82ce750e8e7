"""The fleet API's reads: a few set-based queries per request, never one query per battery.

Listing reads ``batteries`` by its key (or ``(location_id, battery_id)``) joined to
``battery_latest``; alert counts come from the active-alert index; telemetry is one range scan of
the ``(battery_id, ts)`` key. Rows come back as plain mappings for the API to shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, and_, case, func, or_, select
from sqlalchemy.orm import Session

from central.battery_status import SOH_CRITICAL_PCT
from central.db.models import Alert, Battery, BatteryLatest, BatteryString, Location, Telemetry

_ACTIVE = Alert.resolved_at.is_(None)

BATTERY_COLUMNS = (
    Battery.battery_id,
    Battery.serial_number,
    Battery.position,
    Battery.manufacturer,
    Battery.model,
    Battery.nominal_voltage_v,
    Battery.nominal_capacity_ah,
    Battery.installed_date,
    Battery.warranty_months,
    Battery.string_id,
    Battery.location_id,
    Battery.created_at,
    Battery.updated_at,
)
LATEST_COLUMNS = (
    BatteryLatest.ts.label("latest_ts"),
    BatteryLatest.voltage,
    BatteryLatest.current,
    BatteryLatest.temperature,
    BatteryLatest.internal_resistance,
    BatteryLatest.soc_pct,
    BatteryLatest.soh_pct,
)


@dataclass(frozen=True)
class AlertSummary:
    """A battery's active alerts: how many, and the worst severity among them."""

    count: int
    severities: tuple[str, ...]


@dataclass(frozen=True)
class LocationStats:
    total_batteries: int = 0
    active_batteries: int = 0
    critical_batteries: int = 0
    average_soh: float | None = None
    active_alerts: int = 0


def _with_latest(*where: Any) -> Any:
    return (
        select(*BATTERY_COLUMNS, *LATEST_COLUMNS)
        .outerjoin(BatteryLatest, BatteryLatest.battery_id == Battery.battery_id)
        .where(*where)
    )


def list_batteries(
    session: Session, location_id: str | None, skip: int, limit: int
) -> tuple[Sequence[RowMapping], int]:
    """One page of batteries in ID order with their latest readings, and the total.

    The page's keys come from the index alone first, so a deep ``skip`` walks index entries,
    not joined rows; only the page's batteries are then joined to their latest readings.
    """
    where = [] if location_id is None else [Battery.location_id == location_id]
    page = (
        select(Battery.battery_id)
        .where(*where)
        .order_by(Battery.battery_id)
        .offset(skip)
        .limit(limit)
        .subquery("page")
    )
    statement = (
        select(*BATTERY_COLUMNS, *LATEST_COLUMNS)
        .join(page, page.c.battery_id == Battery.battery_id)
        .outerjoin(BatteryLatest, BatteryLatest.battery_id == Battery.battery_id)
        .order_by(Battery.battery_id)
    )
    rows = session.execute(statement).mappings().all()
    total = session.scalar(select(func.count()).select_from(Battery).where(*where)) or 0
    return rows, total


def get_battery(session: Session, battery_id: str) -> RowMapping | None:
    """One battery with its latest reading, string and location names, or None."""
    statement = (
        _with_latest(Battery.battery_id == battery_id)
        .add_columns(BatteryString.ups_id, Location.name.label("location_name"))
        .join(BatteryString, BatteryString.string_id == Battery.string_id)
        .join(Location, Location.location_id == Battery.location_id)
    )
    return session.execute(statement).mappings().one_or_none()


def battery_exists(session: Session, battery_id: str) -> bool:
    return session.get(Battery, battery_id) is not None


def active_alerts(session: Session, battery_ids: Iterable[str]) -> dict[str, AlertSummary]:
    """Active alerts of ``battery_ids`` (those without any are absent from the result)."""
    ids = list(battery_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(Alert.battery_id, Alert.severity).where(_ACTIVE, Alert.battery_id.in_(ids))
    ).all()
    grouped: dict[str, list[str]] = {}
    for battery_id, severity in rows:
        grouped.setdefault(battery_id, []).append(severity)
    return {b: AlertSummary(len(s), tuple(s)) for b, s in grouped.items()}


def telemetry_range(
    session: Session, battery_id: str, start: datetime, end: datetime, limit: int
) -> list[RowMapping]:
    """The newest ``limit`` readings with ``start <= ts <= end``, oldest first."""
    statement = (
        select(
            Telemetry.ts,
            Telemetry.voltage,
            Telemetry.current,
            Telemetry.temperature,
            Telemetry.internal_resistance,
            Telemetry.soc_pct,
            Telemetry.soh_pct,
        )
        .where(Telemetry.battery_id == battery_id, Telemetry.ts >= start, Telemetry.ts <= end)
        .order_by(Telemetry.ts.desc())
        .limit(limit)
    )
    # Core on the session's connection: no ORM result processing for a thousand plain rows.
    rows = session.connection().execute(statement).mappings().all()
    return list(reversed(rows))


def list_locations(session: Session) -> Sequence[Location]:
    return session.scalars(select(Location).order_by(Location.location_id)).all()


def location_stats(
    session: Session, active_since: datetime, location_id: str | None = None
) -> dict[str, LocationStats]:
    """Per location: batteries, those reporting since ``active_since``, critical ones (SoH under
    the critical band or a critical alert), average latest SoH, active alerts."""
    critical_alert = (
        select(Alert.battery_id).where(_ACTIVE, Alert.severity == "critical").scalar_subquery()
    )
    battery_where = [] if location_id is None else [Battery.location_id == location_id]
    rows = session.execute(
        select(
            Battery.location_id,
            func.count(),
            func.count(case((BatteryLatest.ts >= active_since, 1))),
            func.count(
                case(
                    (
                        or_(
                            BatteryLatest.soh_pct < SOH_CRITICAL_PCT,
                            Battery.battery_id.in_(critical_alert),
                        ),
                        1,
                    )
                )
            ),
            func.avg(BatteryLatest.soh_pct),
        )
        .outerjoin(BatteryLatest, BatteryLatest.battery_id == Battery.battery_id)
        .where(*battery_where)
        .group_by(Battery.location_id)
    ).all()
    alert_where = [_ACTIVE] if location_id is None else [_ACTIVE, Alert.location_id == location_id]
    alerts = dict(
        session.execute(
            select(Alert.location_id, func.count())
            .where(and_(*alert_where))
            .group_by(Alert.location_id)
        ).all()
    )
    stats = {
        loc: LocationStats(
            total_batteries=total,
            active_batteries=active,
            critical_batteries=critical,
            average_soh=None if average is None else round(float(average), 1),
            active_alerts=alerts.get(loc, 0),
        )
        for loc, total, active, critical, average in rows
    }
    for loc, count in alerts.items():
        stats.setdefault(loc, LocationStats(active_alerts=count))
    return stats
