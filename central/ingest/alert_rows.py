"""The alert engine's reads and writes: what the store knows of a battery when ingest first meets
it, and the ``alerts`` and ``battery_analytics`` rows the lifecycle's actions change.

Every function takes the caller's session; the ingest batch (or the sweep) owns the transaction.
Rows are the truth across processes: the partial unique index keeps one active alert per
(battery, type), so a RAISE is an insert that yields to an active row already there, and every
change of an alert applies only while it is still active (an engineer may have resolved it from
the API in the meantime).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from central.alerts import AlertType, Condition, Severity, make_alert_id
from central.db.models import (
    Alert,
    Battery,
    BatteryAnalytics,
    BatteryLatest,
    SiteState,
    Telemetry,
)
from common.ids import parse_battery_id

CHUNK = 500  # IDs per IN list


@dataclass(frozen=True)
class ActiveRow:
    """An active alert row, as the lifecycle rebuilds its state from it."""

    id: str
    severity: Severity
    triggered_at: datetime
    actual_value: float | None


@dataclass(frozen=True)
class ResolvedRow:
    """A resolved alert row: by the engine itself or by an engineer."""

    id: str
    battery_id: str
    alert_type: AlertType
    severity: Severity
    resolved_at: datetime


@dataclass
class Known:
    """What the store holds of one battery beyond its readings."""

    battery_id: str
    location_id: str
    model: str | None = None
    baseline_ohm: float | None = None
    rul_days: float | None = None
    rul_as_of: datetime | None = None
    latest_ts: datetime | None = None
    soh_pct: float | None = None
    active: dict[AlertType, ActiveRow] = field(default_factory=dict)
    resolved: dict[AlertType, ResolvedRow] = field(default_factory=dict)


def chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def location_of(battery_id: str) -> str:
    return parse_battery_id(battery_id).location_id


def load(
    session: Session, battery_ids: Sequence[str], resolved_since: datetime
) -> dict[str, Known]:
    """What the store knows of ``battery_ids``: model and site, resistance baseline, latest RUL,
    latest reading, active alerts, and each type's latest alert resolved since
    ``resolved_since`` (none where one of that type is still active)."""
    known = {b: Known(b, location_of(b)) for b in battery_ids}
    for part in chunks(list(battery_ids)):
        for battery_id, location_id, model in session.execute(
            select(Battery.battery_id, Battery.location_id, Battery.model).where(
                Battery.battery_id.in_(part)
            )
        ):
            known[battery_id].location_id = location_id
            known[battery_id].model = model
        for battery_id, baseline, rul_status, rul_days, rul_as_of in session.execute(
            select(
                BatteryAnalytics.battery_id,
                BatteryAnalytics.resistance_baseline_ohm,
                BatteryAnalytics.rul_status,
                BatteryAnalytics.rul_days,
                BatteryAnalytics.rul_computed_at,
            ).where(BatteryAnalytics.battery_id.in_(part))
        ):
            entry = known[battery_id]
            entry.baseline_ohm = baseline
            if rul_status is not None and rul_as_of is not None:
                entry.rul_days, entry.rul_as_of = rul_days, rul_as_of
        for battery_id, ts, soh in session.execute(
            select(BatteryLatest.battery_id, BatteryLatest.ts, BatteryLatest.soh_pct).where(
                BatteryLatest.battery_id.in_(part)
            )
        ):
            known[battery_id].latest_ts, known[battery_id].soh_pct = ts, soh
        _load_alerts(session, part, resolved_since, known)
    return known


def _load_alerts(
    session: Session, part: Sequence[str], resolved_since: datetime, known: dict[str, Known]
) -> None:
    rows = session.execute(
        select(
            Alert.id,
            Alert.battery_id,
            Alert.alert_type,
            Alert.severity,
            Alert.triggered_at,
            Alert.actual_value,
            Alert.resolved_at,
        ).where(
            Alert.battery_id.in_(part),
            (Alert.resolved_at.is_(None)) | (Alert.resolved_at >= resolved_since),
        )
    )
    for row_id, battery_id, kind, severity, triggered_at, actual, resolved_at in rows:
        entry, alert_type = known[battery_id], AlertType(kind)
        if resolved_at is None:
            entry.active[alert_type] = ActiveRow(row_id, Severity(severity), triggered_at, actual)
            continue
        held = entry.resolved.get(alert_type)
        if held is None or resolved_at > held.resolved_at:
            entry.resolved[alert_type] = ResolvedRow(
                row_id, battery_id, alert_type, Severity(severity), resolved_at
            )
    for entry in known.values():
        for alert_type in entry.active:
            entry.resolved.pop(alert_type, None)


def models(session: Session, battery_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """(location, model) of those of ``battery_ids`` the inventory holds."""
    found = {}
    for part in chunks(list(battery_ids)):
        for battery_id, location_id, model in session.execute(
            select(Battery.battery_id, Battery.location_id, Battery.model).where(
                Battery.battery_id.in_(part)
            )
        ):
            found[battery_id] = (location_id, model)
    return found


def first_resistances(
    session: Session, battery_ids: Sequence[str], count: int
) -> dict[str, list[float]]:
    """Each battery's first ``count`` valid (positive) resistances in ``ts`` order.

    Asked only of batteries without a baseline, so of young ones, whose readings are few.
    """
    found: dict[str, list[float]] = {b: [] for b in battery_ids}
    for part in chunks(list(battery_ids)):
        numbered = (
            select(
                Telemetry.battery_id,
                Telemetry.internal_resistance,
                func.row_number()
                .over(partition_by=Telemetry.battery_id, order_by=Telemetry.ts)
                .label("n"),
            )
            .where(Telemetry.battery_id.in_(part), Telemetry.internal_resistance > 0)
            .subquery()
        )
        rows = session.execute(
            select(numbered.c.battery_id, numbered.c.internal_resistance)
            .where(numbered.c.n <= count)
            .order_by(numbered.c.battery_id, numbered.c.n)
        )
        for battery_id, ohm in rows:
            found[battery_id].append(ohm)
    return found


def _insert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def save_baselines(
    session: Session, baselines: dict[str, float], now: datetime
) -> dict[str, float]:
    """Keep each battery's baseline unless one is stored already; the baselines now stored.

    In battery order, as every ingest worker locks rows."""
    statement = _insert(session)(BatteryAnalytics.__table__)
    kept = session.execute(
        statement.on_conflict_do_update(
            index_elements=["battery_id"],
            set_={
                "resistance_baseline_ohm": func.coalesce(
                    BatteryAnalytics.resistance_baseline_ohm,
                    statement.excluded.resistance_baseline_ohm,
                )
            },
        ).returning(BatteryAnalytics.battery_id, BatteryAnalytics.resistance_baseline_ohm),
        [
            {"battery_id": b, "resistance_baseline_ohm": baselines[b], "updated_at": now}
            for b in sorted(baselines)
        ],
    )
    return {battery_id: ohm for battery_id, ohm in kept}


def insert_alert(
    session: Session, battery_id: str, location_id: str, condition: Condition
) -> Alert | None:
    """RAISE: a new active alert from ``condition``; None if (battery, type) has one already."""
    alert_type = condition.alert_type
    severity = condition.severity
    assert severity is not None and condition.message is not None, "RAISE needs a present one"
    at = condition.observed_at
    unique = uuid.uuid4().hex
    statement = (
        _insert(session)(Alert)
        .values(
            id=str(uuid.UUID(unique)),
            alert_id=make_alert_id(battery_id, alert_type, at, unique[:12]),
            battery_id=battery_id,
            location_id=location_id,
            alert_type=alert_type.value,
            severity=severity.value,
            message=condition.message,
            threshold_value=condition.threshold_value,
            actual_value=condition.actual_value,
            triggered_at=at,
        )
        .on_conflict_do_nothing(
            index_elements=["battery_id", "alert_type"], index_where=Alert.resolved_at.is_(None)
        )
        .returning(Alert)
    )
    return session.scalars(statement).one_or_none()


def active_alert(session: Session, battery_id: str, alert_type: AlertType) -> Alert | None:
    return session.scalars(
        select(Alert).where(
            Alert.battery_id == battery_id,
            Alert.alert_type == alert_type.value,
            Alert.resolved_at.is_(None),
        )
    ).one_or_none()


def change_alert(session: Session, row_id: str, values: dict[str, Any]) -> Alert | None:
    """Apply ``values`` to the alert while it is active; None if it is resolved already."""
    statement = (
        update(Alert)
        .where(Alert.id == row_id, Alert.resolved_at.is_(None))
        .values(**values)
        .returning(Alert)
        .execution_options(synchronize_session=False)
    )
    return session.scalars(statement).one_or_none()


def escalation(condition: Condition) -> dict[str, Any]:
    """ESCALATE: the condition's severity, threshold, value and message."""
    assert condition.severity is not None
    return {
        "severity": condition.severity.value,
        "threshold_value": condition.threshold_value,
        "actual_value": condition.actual_value,
        "message": condition.message,
    }


def worsening(condition: Condition) -> dict[str, Any]:
    """UPDATE: the worse value and its message."""
    return {"actual_value": condition.actual_value, "message": condition.message}


def resolved_among(session: Session, row_ids: Iterable[str]) -> list[ResolvedRow]:
    """Those of the alert rows ``row_ids`` that are resolved (an engineer did, elsewhere)."""
    found = []
    for part in chunks(list(row_ids)):
        rows = session.execute(
            select(
                Alert.id, Alert.battery_id, Alert.alert_type, Alert.severity, Alert.resolved_at
            ).where(Alert.id.in_(part), Alert.resolved_at.is_not(None))
        )
        found.extend(
            ResolvedRow(row_id, battery_id, AlertType(kind), Severity(severity), resolved_at)
            for row_id, battery_id, kind, severity, resolved_at in rows
        )
    return found


@dataclass(frozen=True)
class Silence:
    """communication_lost's inputs for one battery, on central's clock."""

    battery_id: str
    known_since: datetime | None  # when central learned of it (its inventory row)
    last_data_at: datetime | None  # when central last received a reading of it


def silences(session: Session) -> list[Silence]:
    """Every battery central knows, from the inventory or its readings."""
    known = {b: at for b, at in session.execute(select(Battery.battery_id, Battery.created_at))}
    latest = {
        b: at
        for b, at in session.execute(select(BatteryLatest.battery_id, BatteryLatest.updated_at))
    }
    return [
        Silence(battery_id, known.get(battery_id), latest.get(battery_id))
        for battery_id in sorted(known.keys() | latest.keys())
    ]


def offline_sites(session: Session) -> dict[str, datetime]:
    """Sites whose agent state is ``offline``: since when central received that state."""
    rows = session.execute(
        select(SiteState.site_id, SiteState.received_at).where(SiteState.status == "offline")
    )
    return {site_id: since for site_id, since in rows}
