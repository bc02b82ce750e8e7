"""The alert engine, pure: thresholds, rules and the lifecycle, with no store, clock or broker.

Wiring it into ingest (one battery, ``settings`` an ``AlertSettings``):

1. ``thresholds = settings.for_model(battery_model)``.
2. ``conditions = evaluate(BatteryContext(baseline, rul_days, rul_as_of), readings, thresholds)``
   for each battery of a batch; ``readings`` may be the batch or a window from the store.
   ``baseline`` is ``baseline(first resistances in ts order, settings.baseline_readings)``,
   stored once it is not None.
3. On a timer (about one poll interval), for every known battery:
   ``evaluate_communication(now, settings, last_data_at=..., known_since=...,
   site_offline_since=...)``.
4. For each condition: ``decision = decide(states[(battery, type)], condition, settings)``; keep
   ``decision.state`` and apply ``decision.action`` to the active row of (battery, type):
   RAISE inserts one (``make_alert_id(battery, type, decision.at, unique)``, severity, message,
   threshold and actual value from ``decision.condition``, ``triggered_at = decision.at``);
   ESCALATE sets severity, message, threshold and actual value; UPDATE sets message and actual
   value; RESOLVE sets ``resolved_at = decision.at``; NOTHING writes nothing.

State across processes and restarts: the active rows are the truth. Rebuild a missing state as
``AlertState(active=ActiveAlert(row.severity, row.triggered_at, row.actual_value))``. When an
engineer resolved the row (the API may run in another process), replace the state with
``manually_resolved(state, row.resolved_at, row.severity)``; after a restart, doing so for an
alert resolved less than ``rearm_s`` ago errs towards not raising it again at once.
"""

from central.alerts.lifecycle import (
    Action,
    ActiveAlert,
    AlertState,
    Decision,
    Suppression,
    decide,
    make_alert_id,
    manually_resolved,
)
from central.alerts.rules import (
    AlertType,
    BatteryContext,
    Condition,
    ReadingLike,
    Severity,
    baseline,
    evaluate,
    evaluate_communication,
    newest_reading,
    renewed_baseline,
)
from central.alerts.thresholds import AlertSettings, AlertThresholds

__all__ = [
    "Action",
    "ActiveAlert",
    "AlertSettings",
    "AlertState",
    "AlertThresholds",
    "AlertType",
    "BatteryContext",
    "Condition",
    "Decision",
    "ReadingLike",
    "Severity",
    "Suppression",
    "baseline",
    "decide",
    "evaluate",
    "evaluate_communication",
    "make_alert_id",
    "manually_resolved",
    "newest_reading",
    "renewed_baseline",
]
