"""``/api/v1/batteries``: the fleet's batteries with their latest readings, one battery's detail,
and its telemetry over a time range. Every role may read."""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from flask_jwt_extended import jwt_required
from sqlalchemy.orm import Session

from central.api import responses
from central.api.auth import current_active_user
from central.api.errors import ApiError
from central.api.extensions import db
from central.api.openapi import operation
from central.api.schemas import BatteriesQuery, SohHistoryQuery, TelemetryQuery, parse_query
from central.battery_status import battery_status, worst_severity
from central.db import queries
from central.db.models import BatteryAnalytics
from central.db.queries import AlertSummary
from central.db.soh_history import daily_history
from central.rul import SECONDS_PER_DAY, RulEstimate, RulStatus
from central.wire_format import timestamp
from common.ids import parse_string_id
from common.timeutil import from_unix, utc_now

bp = Blueprint("batteries", __name__, url_prefix="/api/v1/batteries")

BATTERY_PARAM = {"battery_id": "BAT-DC-CNX-01-UPS-01-STR-01-001"}
_NO_ALERTS = AlertSummary(0, ())


def telemetry_point(ts: datetime, row: Mapping[str, Any]) -> dict[str, Any]:
    """One reading as the reference shows it (``timestamp`` plus the measured values)."""
    return {
        "timestamp": timestamp(ts, ms=True),
        "voltage": row["voltage"],
        "current": row["current"],
        "temperature": row["temperature"],
        "internal_resistance": row["internal_resistance"],
        "soc_pct": row["soc_pct"],
        "soh_pct": row["soh_pct"],
    }


def battery_item(row: Mapping[str, Any], alerts: AlertSummary) -> dict[str, Any]:
    """A row of ``queries.list_batteries`` as the reference's battery object."""
    return {
        "battery_id": row["battery_id"],
        "serial_number": row["serial_number"],
        "position": row["position"],
        "manufacturer": row["manufacturer"],
        "model": row["model"],
        "nominal_voltage_v": row["nominal_voltage_v"],
        "nominal_capacity_ah": row["nominal_capacity_ah"],
        "installed_date": row["installed_date"].isoformat(),
        "warranty_months": row["warranty_months"],
        "string_id": row["string_id"],
        "created_at": timestamp(row["created_at"]),
        "updated_at": timestamp(row["updated_at"]),
        "latest_telemetry": (
            None if row["latest_ts"] is None else telemetry_point(row["latest_ts"], row)
        ),
        "status": battery_status(
            row["latest_ts"] is not None, row["soh_pct"], worst_severity(list(alerts.severities))
        ).value,
        "active_alerts": alerts.count,
    }


def battery_page(session: Session, location_id: str | None, skip: int, limit: int) -> Any:
    """``{"batteries": [...], "total": n}`` for one page; shared with the locations blueprint."""
    rows, total = queries.list_batteries(session, location_id, skip, limit)
    alerts = queries.active_alerts(session, (row["battery_id"] for row in rows))
    items = [battery_item(row, alerts.get(row["battery_id"], _NO_ALERTS)) for row in rows]
    return jsonify(batteries=items, total=total)


def rul_json(analytics: BatteryAnalytics | None) -> dict[str, Any] | None:
    """The detail's ``rul`` object (``RulEstimate.to_json()``) from the stored estimate; None
    while there is none (too little SoH history yet) or the stored one is incomplete."""
    if analytics is None or analytics.rul_status not in set(RulStatus):
        return None
    interval_pct = analytics.rul_interval_pct
    soh_now, fade = analytics.soh_now_pct, analytics.fade_pct_per_year
    n_points, n_days = analytics.rul_n_points, analytics.rul_n_days
    method, computed_at = analytics.rul_method, analytics.rul_computed_at
    if (
        interval_pct is None
        or soh_now is None
        or fade is None
        or n_points is None
        or n_days is None
        or method is None
        or computed_at is None
    ):
        return None
    return RulEstimate(
        status=RulStatus(analytics.rul_status),
        rul_days=analytics.rul_days,
        rul_low_days=analytics.rul_low_days,
        rul_high_days=analytics.rul_high_days,
        interval=interval_pct / 100,
        predicted_eol_date=analytics.predicted_eol_date,
        soh_now_pct=soh_now,
        fade_pct_per_year=fade,
        n_points=n_points,
        n_days=n_days,
        method=method,
        computed_at=computed_at,
    ).to_json()


def _months_later(start: date, months: int) -> date:
    """``start`` plus whole calendar months; a day past the month's end clamps to its last day."""
    years, month_index = divmod(start.month - 1 + months, 12)
    year, month = start.year + years, month_index + 1
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def warranty_state(installed: date, warranty_months: int, today: date) -> tuple[int, bool]:
    """(age in days, still in warranty): the warranty runs to the same day ``months`` later."""
    return (today - installed).days, today < _months_later(installed, warranty_months)


@bp.get("")
@jwt_required()
@operation(
    summary="List batteries with latest telemetry",
    tag="batteries",
    response=responses.BatteryList,
    query=BatteriesQuery,
    description="In battery ID order. `status` comes from the latest SoH and active alerts.",
)
def list_batteries() -> ResponseReturnValue:
    current_active_user()
    query = parse_query(BatteriesQuery)
    return battery_page(db.session, query.location_id, query.skip, query.limit)


@bp.get("/<battery_id>")
@jwt_required()
@operation(
    summary="Battery detail",
    tag="batteries",
    response=responses.BatteryDetail,
    path_params=BATTERY_PARAM,
    description="`rul`: the latest remaining-useful-life estimate, null until there is one.",
)
def get_battery(battery_id: str) -> ResponseReturnValue:
    current_active_user()
    row = queries.get_battery(db.session, battery_id)
    if row is None:
        raise ApiError(404, f"Battery {battery_id} not found")
    alerts = queries.active_alerts(db.session, [battery_id]).get(battery_id, _NO_ALERTS)
    age_days, in_warranty = warranty_state(
        row["installed_date"], row["warranty_months"], utc_now().date()
    )
    string_number = parse_string_id(row["string_id"])[2]
    return jsonify(
        {
            **battery_item(row, alerts),
            "age_days": age_days,
            "is_in_warranty": in_warranty,
            "string_info": {
                "string_id": row["string_id"],
                "position": string_number,
                "ups_id": row["ups_id"],
            },
            "location_info": {"location_id": row["location_id"], "name": row["location_name"]},
            "rul": rul_json(queries.battery_analytics(db.session, battery_id)),
        }
    )


@bp.get("/<battery_id>/telemetry")
@jwt_required()
@operation(
    summary="Battery telemetry over a time range",
    tag="batteries",
    response=responses.TelemetrySeries,
    query=TelemetryQuery,
    path_params=BATTERY_PARAM,
    description=(
        "Readings with start <= timestamp <= end, oldest first. When more than `limit` "
        "readings fall in the range, the newest `limit` are returned."
    ),
)
def telemetry(battery_id: str) -> ResponseReturnValue:
    current_active_user()
    query = parse_query(TelemetryQuery)
    end = query.end or utc_now()
    start = query.start or end - timedelta(hours=24)
    if start > end:
        detail = {"loc": ["query", "start"], "field": "start", "msg": "start is after end"}
        raise ApiError(422, "start: start is after end", [{**detail, "type": "value_error"}])
    rows = queries.telemetry_range(db.session, battery_id, start, end, query.limit)
    if rows is None:
        raise ApiError(404, f"Battery {battery_id} not found")
    # ``telemetry_point``'s object, built from the plain rows (a thousand per response).
    data = [
        {
            "timestamp": timestamp(ts, ms=True),
            "voltage": voltage,
            "current": current,
            "temperature": temperature,
            "internal_resistance": resistance,
            "soc_pct": soc,
            "soh_pct": soh,
        }
        for ts, voltage, current, temperature, resistance, soc, soh in rows
    ]
    return jsonify(
        battery_id=battery_id,
        start=timestamp(start),
        end=timestamp(end),
        data=data,
        count=len(data),
    )


@bp.get("/<battery_id>/soh-history")
@jwt_required()
@operation(
    summary="Battery SoH history, one point a day",
    tag="batteries",
    response=responses.SohHistory,
    query=SohHistoryQuery,
    path_params=BATTERY_PARAM,
    description=(
        "The daily median SoH the RUL fit sees, over the last `days` days, beside the latest "
        "RUL estimate: what a chart needs to draw the history and its extrapolation."
    ),
)
def soh_history(battery_id: str) -> ResponseReturnValue:
    current_active_user()
    query = parse_query(SohHistoryQuery)
    if not queries.battery_exists(db.session, battery_id):
        raise ApiError(404, f"Battery {battery_id} not found")
    since_day = int(utc_now().timestamp() // SECONDS_PER_DAY) - query.days + 1
    days, _ = daily_history(db.session, battery_id, since_day)
    points = [
        {
            "date": from_unix(int(day) * SECONDS_PER_DAY).date().isoformat(),
            "t": timestamp(from_unix(float(t))),
            "soh_pct": round(float(soh), 3),
            "n": int(n),
        }
        for day, t, soh, n in zip(days.day, days.t, days.soh, days.n, strict=True)
    ]
    return jsonify(
        battery_id=battery_id,
        days=query.days,
        points=points,
        rul=rul_json(queries.battery_analytics(db.session, battery_id)),
    )
