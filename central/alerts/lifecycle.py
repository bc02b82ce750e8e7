"""The alert lifecycle of one (battery, alert type): a pure state machine over conditions.

``decide(state, condition, settings)`` returns the action for the store and the state to keep for
the next call. Time is the condition's ``observed_at``; nothing here reads a clock.

With no active alert:
- present, not suppressed → RAISE (``triggered_at`` = observed time);
- present but suppressed by a recent manual resolve → NOTHING (see ``manually_resolved``);
- clear → NOTHING, and a manual-resolve suppression is lifted; dead band → NOTHING.

With an active alert:
- present at a higher severity → ESCALATE (same alert; ``triggered_at`` kept);
- present at the same severity with a worse value than recorded → UPDATE (the alert records the
  worst value of its episode, so ``actual_value``, threshold and message stay consistent);
- present otherwise, or in the dead band → NOTHING, and any clear run is broken;
- clear → the clear run starts (or continues); RESOLVE once it has lasted ``hold_s``.

Severity never drops while an alert is active: the alert records the worst its episode reached
(a block that went past 55 °C has aged, even if it is back at 47 °C); it resolves only when the
condition is clear. With the hysteresis margins of the rules, a value flapping around a threshold
raises one alert, and it resolves only after staying past the margin for the whole hold.

An observation older than the last one decided on is ignored (NOTHING, state unchanged), so a
redelivered or late batch cannot re-raise or resolve from stale data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from central.alerts.rules import AlertType, Condition, Severity
from central.alerts.thresholds import AlertSettings
from common.ids import parse_battery_id
from common.timeutil import ensure_utc

_UNIQUE = re.compile(r"^[A-Za-z0-9]{1,16}$")


class Action(StrEnum):
    RAISE = "raise"  # insert a new alert from the condition
    ESCALATE = "escalate"  # the active alert takes the condition's severity, values and message
    UPDATE = "update"  # the active alert takes the condition's (worse) value and message
    RESOLVE = "resolve"  # the active alert's resolved_at = the decision's time
    NOTHING = "nothing"


@dataclass(frozen=True)
class ActiveAlert:
    """The active alert as the lifecycle needs it; rebuilt from its row after a restart.

    ``clear_since`` (start of the current clear run) may live in memory only: losing it on a
    restart just starts the hold again.
    """

    severity: Severity
    triggered_at: datetime
    actual_value: float | None
    clear_since: datetime | None = None


@dataclass(frozen=True)
class Suppression:
    """An engineer resolved the alert at ``resolved_at`` while it was at ``severity``."""

    resolved_at: datetime
    severity: Severity


@dataclass(frozen=True)
class AlertState:
    """Everything the lifecycle keeps for one (battery, alert type); the empty state is idle."""

    active: ActiveAlert | None = None
    suppressed: Suppression | None = None
    observed_at: datetime | None = None  # the latest observation decided on


@dataclass(frozen=True)
class Decision:
    """What to do with the store, and the state to keep (always, NOTHING included)."""

    action: Action
    state: AlertState
    condition: Condition

    @property
    def at(self) -> datetime:
        """``triggered_at`` of a RAISE, ``resolved_at`` of a RESOLVE."""
        return self.condition.observed_at


def decide(state: AlertState, condition: Condition, settings: AlertSettings) -> Decision:
    """The next step of the lifecycle of ``condition.alert_type`` given its current ``state``."""
    t = condition.observed_at
    if state.observed_at is not None and t < state.observed_at:
        return Decision(Action.NOTHING, state, condition)
    seen = replace(state, observed_at=t)
    if state.active is None:
        return _idle(seen, condition, settings)
    return _active(seen, state.active, condition, settings)


def manually_resolved(state: AlertState, resolved_at: datetime, severity: Severity) -> AlertState:
    """The state after an engineer resolved the active alert (which was at ``severity``).

    If the condition is still present, no new alert is raised at once (that would undo the
    engineer's action on the next reading). A new one waits until the condition has been seen
    clear once, or ``rearm_s`` has passed since ``resolved_at``, or it worsens past ``severity``.
    """
    return AlertState(suppressed=Suppression(resolved_at, severity), observed_at=state.observed_at)


def make_alert_id(
    battery_id: str, alert_type: AlertType, triggered_at: datetime, unique: str
) -> str:
    """``ALT-{battery_id}-{YYYY-MM-DD}-{alert_type}-{unique}``, the date in UTC.

    ``unique`` (1–16 letters or digits) is the caller's, e.g. ``uuid4().hex[:8]``; a value derived
    from ``triggered_at`` instead makes a retried RAISE collide rather than duplicate.
    """
    parse_battery_id(battery_id)
    if not _UNIQUE.match(unique):
        raise ValueError(f"alert ID suffix {unique!r} is not 1-16 letters or digits")
    day = ensure_utc(triggered_at).date().isoformat()
    return f"ALT-{battery_id}-{day}-{AlertType(alert_type).value}-{unique}"


def _idle(state: AlertState, condition: Condition, settings: AlertSettings) -> Decision:
    severity = condition.severity
    if severity is None:
        lifted = condition.clear and state.suppressed is not None
        return Decision(
            Action.NOTHING, replace(state, suppressed=None) if lifted else state, condition
        )
    held = state.suppressed
    if (
        held is not None
        and severity.rank <= held.severity.rank
        and (condition.observed_at - held.resolved_at).total_seconds() < settings.rearm_s
    ):
        return Decision(Action.NOTHING, state, condition)
    active = ActiveAlert(severity, condition.observed_at, condition.actual_value)
    return Decision(
        Action.RAISE, AlertState(active=active, observed_at=state.observed_at), condition
    )


def _active(
    state: AlertState, active: ActiveAlert, condition: Condition, settings: AlertSettings
) -> Decision:
    severity = condition.severity
    if severity is not None:
        if severity.rank > active.severity.rank:
            escalated = ActiveAlert(severity, active.triggered_at, condition.actual_value)
            return Decision(Action.ESCALATE, replace(state, active=escalated), condition)
        kept = replace(active, clear_since=None)
        if severity == active.severity and _worse(condition, active.actual_value):
            worse = replace(kept, actual_value=condition.actual_value)
            return Decision(Action.UPDATE, replace(state, active=worse), condition)
        return Decision(Action.NOTHING, replace(state, active=kept), condition)
    if not condition.clear:
        broken = replace(active, clear_since=None)
        return Decision(Action.NOTHING, replace(state, active=broken), condition)
    since = active.clear_since or condition.observed_at
    if (condition.observed_at - since).total_seconds() >= settings.hold_s:
        return Decision(Action.RESOLVE, AlertState(observed_at=state.observed_at), condition)
    clearing = replace(active, clear_since=since)
    return Decision(Action.NOTHING, replace(state, active=clearing), condition)


def _worse(condition: Condition, recorded: float | None) -> bool:
    if condition.actual_value is None:
        return False
    if recorded is None:
        return True
    if condition.alert_type.higher_is_worse:
        return condition.actual_value > recorded
    return condition.actual_value < recorded
