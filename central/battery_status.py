"""A battery's status as the fleet API shows it: one word from its latest reading and alerts.

Pure: the API and the live feed compute it the same way from what they already hold.
"""

from __future__ import annotations

from enum import StrEnum

# State-of-health bands of a 12 V VRLA block (IEEE 1188: replace at 80 % of rated capacity).
SOH_WARNING_PCT = 85.0
SOH_CRITICAL_PCT = 80.0

_RANK = {"info": 0, "warning": 1, "critical": 2}


class Status(StrEnum):
    HEALTHY = "healthy"
    WARNING = "warning"
    CRITICAL = "critical"
    UNKNOWN = "unknown"  # never reported a reading


def worst_severity(severities: list[str]) -> str | None:
    """The most severe of ``severities`` (``info`` < ``warning`` < ``critical``), or None."""
    return max(severities, key=_RANK.__getitem__, default=None)


def battery_status(has_reading: bool, soh_pct: float | None, worst_alert: str | None) -> Status:
    """Critical or warning when an active alert or the SoH says so; unknown without a reading.

    An ``info`` alert does not change the status; a battery with alerts but no reading yet
    (communication lost from the start) takes the alert's status.
    """
    if worst_alert == "critical" or (soh_pct is not None and soh_pct < SOH_CRITICAL_PCT):
        return Status.CRITICAL
    if worst_alert == "warning" or (soh_pct is not None and soh_pct < SOH_WARNING_PCT):
        return Status.WARNING
    return Status.HEALTHY if has_reading else Status.UNKNOWN
