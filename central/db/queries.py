"""The fleet API's reads: a few set-based queries per request, never one query per battery.

Listing reads ``batteries`` by its key (or ``(location_id, battery_id)``) joined to
``battery_latest``; alert counts come from the active-alert index; telemetry is one range scan of
the ``(battery_id, ts)`` key. Rows come back as plain mappings for the API to shape.

Alerts: lists and windows read the ``(location_id, triggered_at)`` or ``triggered_at`` index,
active counts the active partial index; acknowledging and resolving are conditional updates, so
two engineers (or an engineer and ingest) racing on one alert cannot both succeed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    RowMapping,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from central.battery_status import SOH_CRITICAL_PCT
from central.db.models import (
    Alert,
    Battery,
    BatteryAnalytics,
    BatteryLatest,
    BatteryString,
    Location,
    Telemetry,
)

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
) -> list[Row[Any]] | None:
    """The newest ``limit`` readings with ``start <= ts <= end``, oldest first, as rows of
    ``(ts, voltage, current, temperature, internal_resistance, soc_pct, soh_pct)``; None when
    there is no such battery.

    The usual request costs one round trip: the statement itself requires the battery to exist
    (a filter evaluated once), and only an empty answer asks again, to tell an unknown battery
    from an empty range.
    """
    battery = bindparam("battery_id", battery_id)  # one parameter for both conditions
    known = select(Battery.battery_id).where(Battery.battery_id == battery).exists()
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
        .where(known, Telemetry.battery_id == battery, Telemetry.ts >= start, Telemetry.ts <= end)
        .order_by(Telemetry.ts.desc())
        .limit(limit)
    )
    # Core on the session's connection, plain rows: no ORM or mapping work for a thousand rows.
    rows = list(session.connection().execute(statement).all())
    if not rows and not battery_exists(session, battery_id):
        return None
    rows.reverse()
    return rows


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


def battery_analytics(session: Session, battery_id: str) -> BatteryAnalytics | None:
    """The battery's derived values (resistance baseline, latest RUL estimate), if any yet."""
    return session.get(BatteryAnalytics, battery_id)


@dataclass(frozen=True)
class AlertFilters:
    """What a list of alerts is narrowed to.

    The scope (location, battery, severity, type, triggered between ``start`` and ``end``, both
    included) and the state (``active_only``, ``acknowledged``); the list's counts look at the
    scope only.
    """

    location_id: str | None = None
    battery_id: str | None = None
    severity: str | None = None
    alert_type: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    active_only: bool = True
    acknowledged: bool | None = None

    def scope(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.location_id is not None:
            where.append(Alert.location_id == self.location_id)
        if self.battery_id is not None:
            where.append(Alert.battery_id == self.battery_id)
        if self.severity is not None:
            where.append(Alert.severity == self.severity)
        if self.alert_type is not None:
            where.append(Alert.alert_type == self.alert_type)
        if self.start is not None:
            where.append(Alert.triggered_at >= self.start)
        if self.end is not None:
            where.append(Alert.triggered_at <= self.end)
        return where

    def state(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = [_ACTIVE] if self.active_only else []
        if self.acknowledged is not None:
            where.append(Alert.is_acknowledged == self.acknowledged)
        return where


@dataclass(frozen=True)
class AlertCounts:
    total: int  # matching scope and state
    active: int  # matching the scope, active
    pending: int  # matching the scope, active and not acknowledged


def list_alerts(
    session: Session, filters: AlertFilters, skip: int, limit: int
) -> tuple[Sequence[Alert], AlertCounts]:
    """One page of alerts, newest triggered first (ties by ``id``), and the counts."""
    scope, state = filters.scope(), filters.state()
    page = session.scalars(
        select(Alert)
        .where(*scope, *state)
        .order_by(Alert.triggered_at.desc(), Alert.id.desc())
        .offset(skip)
        .limit(limit)
    ).all()
    pending = and_(_ACTIVE, Alert.is_acknowledged.is_(False))
    # One pass over the scope; active and pending rows are all active, so with active_only the
    # pass reads active rows alone.
    row = session.execute(
        select(
            func.count(case((and_(*state), 1))) if state else func.count(),
            func.count(case((_ACTIVE, 1))),
            func.count(case((pending, 1))),
        ).where(*scope, *([_ACTIVE] if filters.active_only else []))
    ).one()
    return page, AlertCounts(total=row[0], active=row[1], pending=row[2])


@dataclass(frozen=True)
class AlertStats:
    """Alerts triggered since a time (total, acknowledged, per type and location), and the
    alerts active now whenever they were triggered (per severity)."""

    total: int
    acknowledged: int
    by_type: dict[str, int]
    by_location: dict[str, int]
    active_by_severity: dict[str, int]


def alert_stats(session: Session, since: datetime, location_id: str | None = None) -> AlertStats:
    location = [] if location_id is None else [Alert.location_id == location_id]
    rows = session.execute(
        select(
            Alert.location_id,
            Alert.alert_type,
            func.count(),
            func.count(case((Alert.is_acknowledged.is_(True), 1))),
        )
        .where(Alert.triggered_at >= since, *location)
        .group_by(Alert.location_id, Alert.alert_type)
    ).all()
    by_type: dict[str, int] = {}
    by_location: dict[str, int] = {}
    for loc, alert_type, count, _ in rows:
        by_type[alert_type] = by_type.get(alert_type, 0) + count
        by_location[loc] = by_location.get(loc, 0) + count
    active = session.execute(
        select(Alert.severity, func.count()).where(_ACTIVE, *location).group_by(Alert.severity)
    ).all()
    return AlertStats(
        total=sum(row[2] for row in rows),
        acknowledged=sum(row[3] for row in rows),
        by_type=dict(sorted(by_type.items(), key=lambda item: (-item[1], item[0]))),
        by_location=dict(sorted(by_location.items())),
        active_by_severity={severity: count for severity, count in active},
    )


def _alert_key(key: str) -> ColumnElement[bool]:
    return or_(Alert.alert_id == key, Alert.id == key)


def find_alert(session: Session, key: str) -> Alert | None:
    """The alert whose ``alert_id`` or ``id`` (uuid) is ``key``."""
    return session.scalars(select(Alert).where(_alert_key(key)).limit(1)).one_or_none()


def alert_with_context(session: Session, key: str) -> Row[Any] | None:
    """(alert, battery serial, position, location name) of the alert ``key`` names, or None.

    The battery and location may be absent from the inventory (ingest keeps readings that come
    before a site's birth message): their values are then None.
    """
    statement = (
        select(Alert, Battery.serial_number, Battery.position, Location.name)
        .outerjoin(Battery, Battery.battery_id == Alert.battery_id)
        .outerjoin(Location, Location.location_id == Alert.location_id)
        .where(_alert_key(key))
        .limit(1)
    )
    return session.execute(statement).one_or_none()


def acknowledge_alert(
    session: Session, alert: Alert, user_id: str, note: str | None, now: datetime
) -> bool:
    """Acknowledge ``alert`` unless it already is; False if it was (and nothing changed)."""
    result = session.execute(
        update(Alert)
        .where(Alert.id == alert.id, Alert.is_acknowledged.is_(False))
        .values(
            is_acknowledged=True,
            acknowledged_at=now,
            acknowledged_by=user_id,
            acknowledgment_note=note,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def resolve_alert(session: Session, alert: Alert, now: datetime) -> bool:
    """Resolve ``alert`` now unless it already is; False if it was (and nothing changed)."""
    result = session.execute(
        update(Alert)
        .where(Alert.id == alert.id, _ACTIVE)
        .values(resolved_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]
