"""How central writes values for its clients, in REST bodies and live events alike: times as
fleet-api.md shows them, and an alert as its list item, acknowledge/resolve answer and live
``alert`` event (with ``location_id`` added there). Apart from the API package, so that ingest,
which emits alerts, loads none of the API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from central.db.models import Alert


def timestamp(value: datetime, *, ms: bool = False) -> str:
    """``2025-11-30T08:00:00Z``; with ``ms`` (a reading's identity) milliseconds where non-zero."""
    utc = value if value.tzinfo is UTC else value.astimezone(UTC)
    spec = "milliseconds" if ms and utc.microsecond >= 1000 else "seconds"
    return utc.isoformat(timespec=spec)[:-6] + "Z"  # drop "+00:00"


def _time(value: Any) -> str | None:
    return None if value is None else timestamp(value)


def alert_json(alert: Alert) -> dict[str, Any]:
    """``is_active``: not resolved; ``is_pending``: active and not yet acknowledged."""
    active = alert.resolved_at is None
    return {
        "id": alert.id,
        "alert_id": alert.alert_id,
        "battery_id": alert.battery_id,
        "alert_type": alert.alert_type,
        "severity": alert.severity,
        "message": alert.message,
        "threshold_value": alert.threshold_value,
        "actual_value": alert.actual_value,
        "triggered_at": timestamp(alert.triggered_at),
        "resolved_at": _time(alert.resolved_at),
        "is_acknowledged": alert.is_acknowledged,
        "acknowledged_at": _time(alert.acknowledged_at),
        "acknowledged_by": alert.acknowledged_by,
        "acknowledgment_note": alert.acknowledgment_note,
        "created_at": timestamp(alert.created_at),
        "updated_at": timestamp(alert.updated_at),
        "is_active": active,
        "is_pending": active and not alert.is_acknowledged,
    }
