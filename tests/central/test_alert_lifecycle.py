"""The alert lifecycle: raise, escalate, hold, resolve, manual resolve, no flapping."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest

from central.alerts import (
    Action,
    ActiveAlert,
    AlertSettings,
    AlertState,
    AlertType,
    BatteryContext,
    Condition,
    Decision,
    Severity,
    decide,
    evaluate,
    evaluate_communication,
    make_alert_id,
    manually_resolved,
)
from common.schemas import Reading

BATTERY = "BAT-DC-CNX-01-UPS-01-STR-01-001"
T0 = datetime(2025, 11, 30, 8, 0, tzinfo=UTC)
SETTINGS = AlertSettings()  # hold 10 minutes, re-arm 1 hour
THRESHOLDS = SETTINGS.defaults


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


NO_FACTS = BatteryContext()


def from_reading(
    alert_type: AlertType, context: BatteryContext = NO_FACTS, **values: float
) -> Callable[[float, datetime], Condition]:
    """A condition maker: the one measurement under test, the others as in ``values``."""
    field = {
        AlertType.TEMPERATURE_HIGH: "temperature",
        AlertType.VOLTAGE_HIGH: "voltage",
        AlertType.VOLTAGE_LOW: "voltage",
        AlertType.RESISTANCE_DRIFT: "internal_resistance",
        AlertType.SOH_DEGRADED: "soh_pct",
    }[alert_type]

    def make(value: float, at: datetime) -> Condition:
        reading = Reading(battery_id=BATTERY, ts=at, **{**values, field: value})
        (found,) = [
            c for c in evaluate(context, [reading], THRESHOLDS) if c.alert_type is alert_type
        ]
        return found

    return make


def from_rul(alert_type: AlertType) -> Callable[[float, datetime], Condition]:
    def make(days: float, at: datetime) -> Condition:
        context = BatteryContext(rul_days=days, rul_as_of=at)
        (found,) = [c for c in evaluate(context, [], THRESHOLDS) if c.alert_type is alert_type]
        return found

    return make


def from_silence(silence_s: float, at: datetime) -> Condition:
    last = at - timedelta(seconds=silence_s)
    return evaluate_communication(
        at, SETTINGS, last_data_at=last, known_since=T0 - timedelta(days=1)
    )


temperature = from_reading(AlertType.TEMPERATURE_HIGH)
voltage_low = from_reading(AlertType.VOLTAGE_LOW, current=0.2)


@dataclass(frozen=True)
class Case:
    make: Callable[[float, datetime], Condition]
    first: float
    first_severity: Severity
    critical: float | None  # None: the type has one severity
    clear: float


CASES = {
    "temperature_high": Case(temperature, 46.0, Severity.WARNING, 56.0, 43.0),
    "voltage_high": Case(
        from_reading(AlertType.VOLTAGE_HIGH, current=0.2), 14.5, Severity.WARNING, 14.8, 13.6
    ),
    "voltage_low": Case(voltage_low, 12.5, Severity.WARNING, 11.3, 13.5),
    "resistance_drift": Case(
        from_reading(AlertType.RESISTANCE_DRIFT, BatteryContext(baseline_resistance_ohm=0.0045)),
        0.0060,
        Severity.WARNING,
        0.0070,
        0.0046,
    ),
    "soh_degraded": Case(from_reading(AlertType.SOH_DEGRADED), 84.0, Severity.WARNING, 79.0, 90.0),
    "rul_warning": Case(from_rul(AlertType.RUL_WARNING), 150.0, Severity.WARNING, None, 400.0),
    "rul_critical": Case(from_rul(AlertType.RUL_CRITICAL), 20.0, Severity.CRITICAL, None, 400.0),
    "communication_lost": Case(from_silence, 200.0, Severity.WARNING, None, 30.0),
}


def run(
    steps: Iterable[Condition],
    state: AlertState | None = None,
    settings: AlertSettings = SETTINGS,
) -> tuple[list[Decision], AlertState]:
    """Feed conditions in order; every decision, and the state after the last."""
    state = state or AlertState()
    decisions = []
    for condition in steps:
        decision = decide(state, condition, settings)
        decisions.append(decision)
        state = decision.state
    return decisions, state


def actions(decisions: list[Decision]) -> list[Action]:
    return [d.action for d in decisions if d.action is not Action.NOTHING]


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_each_type_raises_escalates_and_resolves_after_the_hold(case: Case) -> None:
    raised = decide(AlertState(), case.make(case.first, minutes(0)), SETTINGS)
    assert raised.action is Action.RAISE
    assert raised.at == raised.condition.observed_at
    state = raised.state
    assert state.active is not None
    assert state.active.severity is case.first_severity
    triggered = state.active.triggered_at
    if case.critical is not None:
        escalated = decide(state, case.make(case.critical, minutes(1)), SETTINGS)
        assert escalated.action is Action.ESCALATE
        assert escalated.condition.severity is Severity.CRITICAL
        state = escalated.state
        assert state.active is not None
        assert (state.active.severity, state.active.triggered_at) == (Severity.CRITICAL, triggered)
    # Clear from minute 2: nothing for the ten minutes of the hold, then resolved.
    decisions, state = run((case.make(case.clear, minutes(m)) for m in range(2, 12)), state)
    assert actions(decisions) == []
    resolved = decide(state, case.make(case.clear, minutes(12)), SETTINGS)
    assert resolved.action is Action.RESOLVE
    assert resolved.state.active is None
    # A new episode is a new alert.
    again = decide(resolved.state, case.make(case.first, minutes(13)), SETTINGS)
    assert again.action is Action.RAISE


def test_hold_time_is_configurable() -> None:
    decisions, state = run(
        [temperature(46.0, minutes(0)), temperature(43.0, minutes(1))],
        settings=AlertSettings(hold_s=0),
    )
    assert actions(decisions) == [Action.RAISE, Action.RESOLVE]
    assert state == AlertState(observed_at=minutes(1))


def test_the_hysteresis_margin_must_be_crossed_to_count_as_clear() -> None:
    # 44.5 °C is below the 45 °C threshold but inside its 1 °C margin: never clear.
    steps = [temperature(45.5, minutes(0))] + [temperature(44.5, minutes(m)) for m in range(1, 60)]
    decisions, state = run(steps)
    assert actions(decisions) == [Action.RAISE]
    assert state.active is not None
    assert state.active.clear_since is None
    # 44.0 °C is past the margin: the hold starts there.
    decisions, _ = run([temperature(44.0, minutes(m)) for m in range(60, 71)], state)
    assert actions(decisions) == [Action.RESOLVE]
    assert decisions[-1].at == minutes(70)


def test_leaving_clear_restarts_the_hold() -> None:
    steps = (
        [temperature(46.0, minutes(0))]
        + [temperature(43.0, minutes(m)) for m in range(1, 9)]  # clear for 7 minutes
        + [temperature(44.6, minutes(9))]  # dead band: the clear run is broken
        + [temperature(43.0, minutes(m)) for m in range(10, 21)]
    )
    decisions, _ = run(steps)
    assert actions(decisions) == [Action.RAISE, Action.RESOLVE]
    assert decisions[-1].at == minutes(20)  # ten minutes after the run restarted


def test_a_value_flapping_near_its_threshold_raises_one_alert() -> None:
    # Two hours of a block hovering around 45 °C, with a dip past the margin now and then.
    pattern = [44.8, 45.3, 44.6, 45.1, 44.9, 45.2, 43.8, 44.7, 45.4, 44.2]
    steps = [temperature(pattern[m % len(pattern)], minutes(m)) for m in range(120)]
    decisions, state = run(steps)
    assert actions(decisions).count(Action.RAISE) == 1
    assert Action.RESOLVE not in actions(decisions)
    # A wider swing, clear for minutes at a time, but never for the whole hold.
    wide = [temperature(46.0 if (m // 5) % 2 else 43.0, minutes(120 + m)) for m in range(120)]
    decisions, state = run(wide, state)
    assert Action.RAISE not in actions(decisions)
    assert Action.RESOLVE not in actions(decisions)
    # Then it settles: one resolve.
    decisions, _ = run([temperature(42.0, minutes(240 + m)) for m in range(11)], state)
    assert actions(decisions) == [Action.RESOLVE]


def test_a_value_flapping_around_the_critical_threshold_escalates_once() -> None:
    flapping = [temperature(55.3 if m % 2 else 54.8, minutes(m)) for m in range(1, 30)]
    decisions, state = run([temperature(46.0, minutes(0)), *flapping])
    assert actions(decisions) == [Action.RAISE, Action.ESCALATE]
    assert state.active is not None
    assert state.active.severity is Severity.CRITICAL


def test_severity_never_drops_while_active() -> None:
    steps = [temperature(46.0, minutes(0)), temperature(56.0, minutes(1))] + [
        temperature(47.0, minutes(m)) for m in range(2, 60)
    ]
    decisions, state = run(steps)
    assert actions(decisions) == [Action.RAISE, Action.ESCALATE]
    assert state.active is not None
    assert (state.active.severity, state.active.actual_value) == (Severity.CRITICAL, 56.0)


def test_the_alert_records_the_worst_value_of_its_episode() -> None:
    steps = [
        temperature(45.5, minutes(0)),
        temperature(46.1, minutes(1)),
        temperature(45.8, minutes(2)),
        temperature(46.4, minutes(3)),
    ]
    decisions, state = run(steps)
    assert [d.action for d in decisions] == [
        Action.RAISE,
        Action.UPDATE,
        Action.NOTHING,
        Action.UPDATE,
    ]
    assert decisions[-1].condition.message == "Battery temperature 46.4°C exceeds threshold 45.0°C"
    assert state.active is not None
    assert state.active.actual_value == 46.4
    # For a low type, lower is worse.
    decisions, _ = run([voltage_low(12.5, minutes(0)), voltage_low(12.4, minutes(1))])
    assert actions(decisions) == [Action.RAISE, Action.UPDATE]


def test_a_repeated_or_late_observation_changes_nothing() -> None:
    raised = decide(AlertState(), temperature(46.0, minutes(5)), SETTINGS)
    again = decide(raised.state, temperature(46.0, minutes(5)), SETTINGS)
    assert (again.action, again.state) == (Action.NOTHING, raised.state)
    late = decide(raised.state, temperature(60.0, minutes(4)), SETTINGS)
    assert (late.action, late.state) == (Action.NOTHING, raised.state)
    clearing = decide(raised.state, temperature(40.0, minutes(6)), SETTINGS).state
    stale = decide(clearing, temperature(46.0, minutes(5.5)), SETTINGS)
    assert stale.state == clearing  # an older high value does not break the newer clear run


def test_discharge_raises_no_voltage_low_and_resolves_nothing() -> None:
    on_float = [voltage_low(13.5, minutes(m)) for m in range(5)]
    outage = [
        from_reading(AlertType.VOLTAGE_LOW, current=-100.0)(12.6 - 0.05 * m, minutes(5 + m))
        for m in range(30)
    ]  # 12.6 V down to 11.15 V under a 100 A load
    decisions, _ = run(on_float + outage)
    assert actions(decisions) == []
    # A shorted cell found on float stays alerted through an outage longer than the hold.
    shorted = [voltage_low(11.3, minutes(0))]
    discharging = [
        from_reading(AlertType.VOLTAGE_LOW, current=-100.0)(11.0, minutes(m)) for m in range(1, 31)
    ]
    decisions, state = run(shorted + discharging)
    assert actions(decisions) == [Action.RAISE]
    assert state.active is not None


def test_manual_resolve_while_present_waits_for_a_clear_reading() -> None:
    raised = decide(AlertState(), temperature(46.0, minutes(0)), SETTINGS)
    state = manually_resolved(raised.state, minutes(1), Severity.WARNING)
    decisions, state = run([temperature(46.0, minutes(m)) for m in range(2, 30)], state)
    assert actions(decisions) == []  # the engineer's resolve is not undone on the next reading
    decisions, _ = run([temperature(43.0, minutes(30)), temperature(46.0, minutes(31))], state)
    assert actions(decisions) == [Action.RAISE]  # seen clear once: armed again


def test_manual_resolve_rearms_after_the_rearm_time() -> None:
    state = manually_resolved(AlertState(), minutes(0), Severity.WARNING)
    assert decide(state, temperature(46.0, minutes(59)), SETTINGS).action is Action.NOTHING
    assert decide(state, temperature(46.0, minutes(60)), SETTINGS).action is Action.RAISE


def test_manual_resolve_does_not_hide_a_worsening() -> None:
    state = manually_resolved(AlertState(), minutes(0), Severity.WARNING)
    critical = decide(state, temperature(56.0, minutes(1)), SETTINGS)
    assert critical.action is Action.RAISE
    assert critical.condition.severity is Severity.CRITICAL


def test_a_dead_band_reading_does_not_rearm() -> None:
    state = manually_resolved(AlertState(), minutes(0), Severity.WARNING)
    decisions, _ = run([temperature(44.5, minutes(1)), temperature(46.0, minutes(2))], state)
    assert actions(decisions) == []


def test_state_rebuilt_from_a_stored_alert_continues_the_same_alert() -> None:
    stored = AlertState(active=ActiveAlert(Severity.WARNING, minutes(0), 46.0))
    decisions, _ = run([temperature(46.0, minutes(1)), temperature(56.0, minutes(2))], stored)
    assert actions(decisions) == [Action.ESCALATE]


def test_communication_restored_resolves_after_the_hold() -> None:
    lost = evaluate_communication(minutes(10), SETTINGS, last_data_at=minutes(0), known_since=T0)
    raised = decide(AlertState(), lost, SETTINGS)
    assert raised.action is Action.RAISE
    back = [
        evaluate_communication(minutes(m + 0.5), SETTINGS, last_data_at=minutes(m), known_since=T0)
        for m in range(11, 22)
    ]
    decisions, _ = run(back, raised.state)
    assert actions(decisions) == [Action.RESOLVE]
    assert decisions[-1].at == minutes(21)  # ten minutes of data since it came back at 11


def test_make_alert_id() -> None:
    alert_id = make_alert_id(BATTERY, AlertType.TEMPERATURE_HIGH, T0, "3f9a1c2b")
    assert alert_id == "ALT-BAT-DC-CNX-01-UPS-01-STR-01-001-2025-11-30-temperature_high-3f9a1c2b"
    bangkok = datetime(2025, 12, 1, 6, 0, tzinfo=timezone(timedelta(hours=7)))
    assert "-2025-11-30-" in make_alert_id(BATTERY, AlertType.SOH_DEGRADED, bangkok, "a1")
    assert len(make_alert_id(BATTERY, AlertType.COMMUNICATION_LOST, T0, "F" * 16)) <= 128


@pytest.mark.parametrize(
    ("battery", "unique"),
    [(BATTERY, ""), (BATTERY, "has-dash"), (BATTERY, "x" * 17), ("BAT-NOPE", "abc")],
)
def test_make_alert_id_refuses_bad_parts(battery, unique) -> None:
    with pytest.raises(ValueError):
        make_alert_id(battery, AlertType.VOLTAGE_HIGH, T0, unique)
