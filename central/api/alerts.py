"""``/api/v1/alerts``: the alerts list with its counts, statistics, one alert with its battery's
context, and the two things an engineer does to an alert: acknowledge it and resolve it.

Every role may read; acknowledging and resolving take an engineer or an admin.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from flask_jwt_extended import jwt_required

from central.api import responses
from central.api.auth import current_active_user, require_engineer
from central.api.errors import ApiError
from central.api.extensions import db
from central.api.live import socketio
from central.api.openapi import operation
from central.api.schemas import (
    AcknowledgeBody,
    AlertsQuery,
    AlertStatsQuery,
    parse_body,
    parse_query,
)
from central.db import queries
from central.db.models import Alert
from central.db.queries import AlertFilters
from central.live_events import SocketIOLiveEvents
from central.wire_format import alert_json
from common.timeutil import utc_now

bp = Blueprint("alerts", __name__, url_prefix="/api/v1/alerts")

# The path's example names an alert by its ``alert_id``; its ``id`` (uuid) is accepted as well.
ALERT_PARAM = {"alert_id": "ALT-BAT-DC-CNX-01-UPS-01-STR-01-001-2025-11-30-temperature_high-a1b2"}
_ALERT_ID_NOTE = "`{alert_id}` is the alert's `alert_id` or its `id` (uuid)."


def _get_alert(alert_id: str) -> Alert:
    alert = queries.find_alert(db.session, alert_id)
    if alert is None:
        raise ApiError(404, f"Alert {alert_id} not found")
    return alert


@bp.get("")
@jwt_required()
@operation(
    summary="List alerts with filters",
    tag="alerts",
    response=responses.AlertList,
    query=AlertsQuery,
    description=(
        "Newest `triggered_at` first. `start_date` <= triggered_at <= `end_date` (a time "
        "without a zone is UTC; start_date after end_date is a 422). `total` counts the alerts "
        "matching every filter. `active_count` (not resolved) and `pending_count` (not resolved "
        "and not acknowledged) count the alerts matching location_id, battery_id, severity, "
        "alert_type and the dates, ignoring active_only and acknowledged: they do not change as "
        "a client switches between the active, acknowledged and all views of the same scope. "
        "`battery_id` (beyond the reference): one battery's alerts."
    ),
)
def list_alerts() -> ResponseReturnValue:
    current_active_user()
    query = parse_query(AlertsQuery)
    start, end = query.start_date, query.end_date
    if start is not None and end is not None and start > end:
        msg = "start_date is after end_date"
        detail = {"loc": ["query", "start_date"], "field": "start_date", "msg": msg}
        raise ApiError(422, f"start_date: {msg}", [{**detail, "type": "value_error"}])
    filters = AlertFilters(
        location_id=query.location_id,
        battery_id=query.battery_id,
        severity=query.severity,
        alert_type=query.alert_type,
        start=start,
        end=end,
        active_only=query.active_only,
        acknowledged=query.acknowledged,
    )
    alerts, counts = queries.list_alerts(db.session, filters, query.skip, query.limit)
    return jsonify(
        alerts=[alert_json(alert) for alert in alerts],
        total=counts.total,
        active_count=counts.active,
        pending_count=counts.pending,
    )


@bp.get("/stats")
@jwt_required()
@operation(
    summary="Alert statistics",
    tag="alerts",
    response=responses.AlertStats,
    query=AlertStatsQuery,
    description=(
        "The window is the last `days` × 24 hours. `total_alerts`, `acknowledged_alerts`, "
        "`alerts_by_type` and `alerts_by_location` (keyed by location_id) count the alerts "
        "triggered within the window, resolved or not. `active_alerts` counts the alerts active "
        "now, including those triggered before the window (a week-old alert still open is still "
        "a problem); `critical_alerts`, `warning_alerts` and `info_alerts` split `active_alerts` "
        "by severity. An unknown location_id gives zeros."
    ),
)
def alert_stats() -> ResponseReturnValue:
    current_active_user()
    query = parse_query(AlertStatsQuery)
    since = utc_now() - timedelta(days=query.days)
    stats = queries.alert_stats(db.session, since, query.location_id)
    active = stats.active_by_severity
    return jsonify(
        total_alerts=stats.total,
        active_alerts=sum(active.values()),
        critical_alerts=active.get("critical", 0),
        warning_alerts=active.get("warning", 0),
        info_alerts=active.get("info", 0),
        acknowledged_alerts=stats.acknowledged,
        alerts_by_type=stats.by_type,
        alerts_by_location=stats.by_location,
    )


@bp.get("/<alert_id>")
@jwt_required()
@operation(
    summary="Alert detail with battery context",
    tag="alerts",
    response=responses.AlertDetail,
    path_params=ALERT_PARAM,
    description=_ALERT_ID_NOTE,
)
def get_alert(alert_id: str) -> ResponseReturnValue:
    current_active_user()
    row = queries.alert_with_context(db.session, alert_id)
    if row is None:
        raise ApiError(404, f"Alert {alert_id} not found")
    alert, serial, position, location_name = row
    return jsonify(
        {
            **alert_json(alert),
            "battery_serial": serial,
            "battery_position": position,
            "location_id": alert.location_id,
            "location_name": location_name,
        }
    )


@bp.post("/<alert_id>/acknowledge")
@jwt_required()
@operation(
    summary="Acknowledge an alert (engineer or admin)",
    tag="alerts",
    response=responses.AlertResponse,
    body=AcknowledgeBody,
    errors=(400, 403),
    path_params=ALERT_PARAM,
    description=(
        f"{_ALERT_ID_NOTE} Records who (the user's user_id), when and the note (may be "
        "omitted or null); a resolved alert may still be acknowledged. 400: already "
        "acknowledged."
    ),
)
def acknowledge(alert_id: str) -> ResponseReturnValue:
    user = require_engineer()
    body = parse_body(AcknowledgeBody)
    alert = _get_alert(alert_id)
    if not queries.acknowledge_alert(db.session, alert, user.user_id, body.note, utc_now()):
        db.session.rollback()
        raise ApiError(400, "Alert has already been acknowledged")
    db.session.commit()
    db.session.refresh(alert)
    return _answer_and_tell(alert)


@bp.post("/<alert_id>/resolve")
@jwt_required()
@operation(
    summary="Resolve an alert manually (engineer or admin)",
    tag="alerts",
    response=responses.AlertResponse,
    errors=(400, 403),
    path_params=ALERT_PARAM,
    description=(
        f"{_ALERT_ID_NOTE} Sets resolved_at to now; acknowledgement is left as it is. "
        "400: already resolved."
    ),
)
def resolve(alert_id: str) -> ResponseReturnValue:
    require_engineer()
    alert = _get_alert(alert_id)
    if not queries.resolve_alert(db.session, alert, utc_now()):
        db.session.rollback()
        raise ApiError(400, "Alert has already been resolved")
    db.session.commit()
    db.session.refresh(alert)
    return _answer_and_tell(alert)


def _answer_and_tell(alert: Alert) -> ResponseReturnValue:
    """The changed alert to the caller, and as a live ``alert`` event to its rooms' clients."""
    body = alert_json(alert)
    SocketIOLiveEvents(socketio).alert(alert.location_id, alert.battery_id, body)
    return jsonify(body)
