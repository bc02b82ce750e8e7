"""Alert rules and thresholds: pure, no store, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from central.alerts import (
    AlertSettings,
    AlertThresholds,
    AlertType,
    BatteryContext,
    Condition,
    Severity,
    baseline,
    evaluate,
    evaluate_communication,
)
from common.schemas import Reading

BATTERY = "BAT-DC-CNX-01-UPS-01-STR-01-001"
T0 = datetime(2025, 11, 30, 8, 0, tzinfo=UTC)
DEFAULTS = AlertThresholds()
FLOAT_A = 0.2  # float current of a healthy string


def reading(at: datetime = T0, **values: float | None) -> Reading:
    return Reading(battery_id=BATTERY, ts=at, **values)


def condition_of(
    alert_type: AlertType,
    readings: list[Reading],
    context: BatteryContext | None = None,
    thresholds: AlertThresholds = DEFAULTS,
) -> Condition | None:
    found = [
        c
        for c in evaluate(context or BatteryContext(), readings, thresholds)
        if c.alert_type is alert_type
    ]
    assert len(found) <= 1
    return found[0] if found else None


def judged(condition: Condition | None) -> tuple[Severity | None, bool]:
    assert condition is not None
    return condition.severity, condition.clear


@pytest.mark.parametrize(
    ("celsius", "severity", "clear"),
    [
        (45.2, Severity.WARNING, False),
        (55.0, Severity.WARNING, False),  # strict: at a threshold is not beyond it
        (55.1, Severity.CRITICAL, False),
        (45.0, None, False),
        (44.5, None, False),  # the dead band: within the 1 °C margin
        (44.0, None, True),
    ],
)
def test_temperature_high(celsius, severity, clear) -> None:
    found = condition_of(AlertType.TEMPERATURE_HIGH, [reading(temperature=celsius)])
    assert judged(found) == (severity, clear)


def test_temperature_message_and_values_as_the_reference_shows() -> None:
    found = condition_of(AlertType.TEMPERATURE_HIGH, [reading(temperature=45.2)])
    assert found is not None
    assert found.message == "Battery temperature 45.2°C exceeds threshold 45.0°C"
    assert (found.actual_value, found.threshold_value, found.observed_at) == (45.2, 45.0, T0)
    critical = condition_of(AlertType.TEMPERATURE_HIGH, [reading(temperature=56.3)])
    assert critical is not None
    assert critical.message == "Battery temperature 56.3°C exceeds threshold 55.0°C"
    assert critical.threshold_value == 55.0


def test_a_value_that_would_print_as_its_threshold_gets_more_digits() -> None:
    found = condition_of(AlertType.TEMPERATURE_HIGH, [reading(temperature=45.04)])
    assert found is not None
    assert found.message == "Battery temperature 45.04°C exceeds threshold 45.0°C"


@pytest.mark.parametrize(
    ("volts", "severity", "clear", "message"),
    [
        (14.52, Severity.WARNING, False, "Battery voltage 14.52V exceeds threshold 14.40V"),
        (14.75, Severity.CRITICAL, False, "Battery voltage 14.75V exceeds threshold 14.70V"),
        (14.40, None, False, None),
        (14.36, None, False, None),
        (14.35, None, True, None),
    ],
)
def test_voltage_high(volts, severity, clear, message) -> None:
    found = condition_of(AlertType.VOLTAGE_HIGH, [reading(voltage=volts, current=FLOAT_A)])
    assert judged(found) == (severity, clear)
    assert found is not None
    assert found.message == message


@pytest.mark.parametrize(
    ("volts", "severity", "clear", "message"),
    [
        (12.55, Severity.WARNING, False, "Battery voltage 12.55V below threshold 12.60V"),
        (11.85, Severity.CRITICAL, False, "Battery voltage 11.85V below threshold 12.00V"),
        (12.00, Severity.WARNING, False, "Battery voltage 12.00V below threshold 12.60V"),
        (12.62, None, False, None),
        (12.65, None, True, None),
        (13.50, None, True, None),
    ],
)
def test_voltage_low_on_float(volts, severity, clear, message) -> None:
    found = condition_of(AlertType.VOLTAGE_LOW, [reading(voltage=volts, current=FLOAT_A)])
    assert judged(found) == (severity, clear)
    assert found is not None
    assert found.message == message


@pytest.mark.parametrize("current", [-100.0, -1.5, None])
@pytest.mark.parametrize("volts", [12.4, 11.5, 10.6, 13.6])
def test_discharge_does_not_raise_voltage_low_nor_count_as_clear(current, volts) -> None:
    found = condition_of(AlertType.VOLTAGE_LOW, [reading(voltage=volts, current=current)])
    assert judged(found) == (None, False)


def test_a_small_negative_current_is_still_float() -> None:
    found = condition_of(AlertType.VOLTAGE_LOW, [reading(voltage=11.85, current=-0.8)])
    assert judged(found) == (Severity.CRITICAL, False)


def test_end_of_discharge_is_critical_while_discharging() -> None:
    found = condition_of(AlertType.VOLTAGE_LOW, [reading(voltage=10.32, current=-100.0)])
    assert found is not None
    assert (found.severity, found.threshold_value) == (Severity.CRITICAL, 10.5)
    assert found.message == (
        "Battery voltage 10.32V below end-of-discharge threshold 10.50V while discharging"
    )
    never = AlertThresholds(voltage_low_discharge_v=None)
    off = condition_of(AlertType.VOLTAGE_LOW, [reading(voltage=9.0, current=-100.0)], None, never)
    assert judged(off) == (None, False)


def test_resistance_drift_against_the_blocks_own_baseline() -> None:
    context = BatteryContext(baseline_resistance_ohm=0.0045)
    found = condition_of(
        AlertType.RESISTANCE_DRIFT, [reading(internal_resistance=0.00591)], context
    )
    assert found is not None
    assert found.severity is Severity.WARNING
    assert (
        found.message == "Internal resistance 5.91mΩ is 31% above baseline 4.50mΩ (threshold 25%)"
    )
    assert (found.actual_value, found.threshold_value) == (31.3, 25.0)
    critical = condition_of(
        AlertType.RESISTANCE_DRIFT, [reading(internal_resistance=0.0068)], context
    )
    assert critical is not None
    assert (critical.severity, critical.threshold_value) == (Severity.CRITICAL, 50.0)
    assert critical.message == (
        "Internal resistance 6.80mΩ is 51% above baseline 4.50mΩ (threshold 50%)"
    )
    dead_band = condition_of(
        AlertType.RESISTANCE_DRIFT, [reading(internal_resistance=0.0055)], context
    )
    assert judged(dead_band) == (None, False)  # +22 %: within 5 points of the threshold
    clear = condition_of(AlertType.RESISTANCE_DRIFT, [reading(internal_resistance=0.0054)], context)
    assert judged(clear) == (None, True)  # +20 %


def test_no_resistance_drift_without_a_baseline() -> None:
    assert condition_of(AlertType.RESISTANCE_DRIFT, [reading(internal_resistance=0.009)]) is None


@pytest.mark.parametrize(
    ("soh", "severity", "clear", "message"),
    [
        (83.2, Severity.WARNING, False, "State of health 83.2% below threshold 85.0%"),
        (80.0, Severity.WARNING, False, "State of health 80.0% below threshold 85.0%"),
        (79.9, Severity.CRITICAL, False, "State of health 79.9% below threshold 80.0%"),
        (85.0, None, False, None),
        (85.5, None, True, None),
    ],
)
def test_soh_degraded(soh, severity, clear, message) -> None:
    found = condition_of(AlertType.SOH_DEGRADED, [reading(soh_pct=soh)])
    assert judged(found) == (severity, clear)
    assert found is not None
    assert found.message == message


def test_rul_warning_and_critical_are_two_types() -> None:
    as_of = T0 + timedelta(hours=1)
    context = BatteryContext(rul_days=150.4, rul_as_of=as_of)
    warning = condition_of(AlertType.RUL_WARNING, [], context)
    assert warning is not None
    assert (warning.severity, warning.observed_at) == (Severity.WARNING, as_of)
    assert warning.message == "Remaining useful life 150 days below threshold 180 days"
    assert judged(condition_of(AlertType.RUL_CRITICAL, [], context)) == (None, True)

    near = BatteryContext(rul_days=20.7, rul_as_of=as_of)
    critical = condition_of(AlertType.RUL_CRITICAL, [], near)
    assert critical is not None
    assert critical.severity is Severity.CRITICAL
    assert critical.message == "Remaining useful life 20 days below threshold 30 days"
    # The warning stays present: reaching critical is not an improvement.
    assert judged(condition_of(AlertType.RUL_WARNING, [], near)) == (Severity.WARNING, False)


def test_rul_needs_its_time() -> None:
    with pytest.raises(ValueError, match="needs rul_as_of"):
        BatteryContext(rul_days=100.0)
    assert condition_of(AlertType.RUL_WARNING, [reading(soh_pct=90.0)]) is None


def test_rul_without_end_of_life_in_sight_clears_both_types() -> None:
    open_ended = BatteryContext(rul_days=None, rul_as_of=T0)
    for alert_type in (AlertType.RUL_WARNING, AlertType.RUL_CRITICAL):
        found = condition_of(alert_type, [], open_ended)
        assert found is not None
        assert (found.severity, found.clear, found.actual_value) == (None, True, None)


def test_null_values_are_skipped_never_zero() -> None:
    earlier = T0 - timedelta(minutes=1)
    readings = [
        reading(earlier, voltage=13.5, current=FLOAT_A, temperature=46.0, soh_pct=90.0),
        reading(T0, voltage=None, current=None, temperature=None, soh_pct=None),
    ]
    temperature = condition_of(AlertType.TEMPERATURE_HIGH, readings)
    assert temperature is not None
    assert (temperature.actual_value, temperature.observed_at) == (46.0, earlier)
    voltage_low = condition_of(AlertType.VOLTAGE_LOW, readings)
    assert judged(voltage_low) == (None, True)  # 13.5 V on float, not a null read as 0 V
    assert evaluate(BatteryContext(baseline_resistance_ohm=0.0045), [reading()], DEFAULTS) == []


def test_the_latest_reading_wins_whatever_the_order() -> None:
    readings = [
        reading(T0, temperature=47.0),
        reading(T0 - timedelta(minutes=2), temperature=40.0),
        reading(T0 - timedelta(minutes=1), temperature=56.0),
    ]
    found = condition_of(AlertType.TEMPERATURE_HIGH, readings)
    assert found is not None
    assert (found.actual_value, found.severity) == (47.0, Severity.WARNING)


def test_of_readings_at_the_same_latest_time_the_last_with_a_value_wins() -> None:
    readings = [
        reading(T0, temperature=47.0, soh_pct=60.0),
        reading(T0 - timedelta(minutes=1), temperature=56.0, soh_pct=95.0),
        reading(T0, temperature=52.0, soh_pct=None),
    ]
    temperature = condition_of(AlertType.TEMPERATURE_HIGH, readings)
    assert temperature is not None
    assert temperature.actual_value == 52.0  # the last of the two at T0
    soh = condition_of(AlertType.SOH_DEGRADED, readings)
    assert soh is not None
    assert (soh.actual_value, soh.observed_at) == (60.0, T0)  # the last at T0 has none


def test_voltage_low_uses_the_current_of_the_same_reading() -> None:
    readings = [
        reading(T0 - timedelta(minutes=1), voltage=13.5, current=FLOAT_A),
        reading(T0, voltage=11.5, current=None),  # no current: cannot tell float from discharge
    ]
    assert judged(condition_of(AlertType.VOLTAGE_LOW, readings)) == (None, False)


def test_baseline_needs_enough_early_readings() -> None:
    assert baseline([0.0045, 0.0046], min_count=3) is None
    assert baseline([0.0045, None, 0.0, 0.0046], min_count=3) is None  # nulls and zeros skipped
    assert baseline([0.0045, None, 0.0047, 0.0046], min_count=3) == 0.0046
    # Only the first min_count count: later readings never move the baseline.
    assert baseline([0.0045, 0.0047, 0.0046, 0.0090, 0.0095, 0.0099], min_count=3) == 0.0046
    assert baseline(iter([0.004, 0.005, 0.006, 0.007]), min_count=4) == pytest.approx(0.0055)


def test_per_model_override() -> None:
    settings = AlertSettings(
        per_model={"HX12-120": {"temperature_warning_c": 40.0, "voltage_low_discharge_v": None}}
    )
    hx = settings.for_model("HX12-120")
    assert hx.temperature_warning_c == 40.0
    assert hx.voltage_low_discharge_v is None
    assert hx.temperature_critical_c == DEFAULTS.temperature_critical_c
    assert settings.for_model("HR12-500") == DEFAULTS
    assert settings.for_model(None) == DEFAULTS
    warm = [reading(temperature=42.0)]
    assert judged(condition_of(AlertType.TEMPERATURE_HIGH, warm, None, hx)) == (
        Severity.WARNING,
        False,
    )
    assert judged(condition_of(AlertType.TEMPERATURE_HIGH, warm, None, DEFAULTS)) == (None, True)


@pytest.mark.parametrize(
    "override",
    [
        {"temperature_warnng_c": 40.0},  # a typo fails at load, not at the first alert
        {"temperature_warning_c": 60.0},  # past the critical threshold
        {"soh_critical_pct": 90.0},
        {"voltage_low_discharge_v": 12.5},
    ],
)
def test_bad_thresholds_are_refused_when_the_settings_load(override) -> None:
    with pytest.raises(ValidationError, match="HX12-120"):
        AlertSettings(per_model={"HX12-120": override})


def test_communication_lost_after_three_silent_poll_intervals() -> None:
    settings = AlertSettings()
    assert settings.communication_after_s == 180.0
    last = T0
    on_time = evaluate_communication(
        T0 + timedelta(seconds=180), settings, last_data_at=last, known_since=T0
    )
    assert (on_time.severity, on_time.clear, on_time.observed_at) == (None, True, last)
    lost = evaluate_communication(
        T0 + timedelta(seconds=185), settings, last_data_at=last, known_since=T0
    )
    assert lost.alert_type is AlertType.COMMUNICATION_LOST
    assert (lost.severity, lost.observed_at) == (Severity.WARNING, T0 + timedelta(seconds=185))
    assert lost.message == (
        "No data from battery for 3 poll intervals (last reading 2025-11-30T08:00:00Z)"
    )
    assert (lost.actual_value, lost.threshold_value) == (185.0, 180.0)
    later = evaluate_communication(
        T0 + timedelta(minutes=10), settings, last_data_at=last, known_since=T0
    )
    assert later.message == (
        "No data from battery for 10 poll intervals (last reading 2025-11-30T08:00:00Z)"
    )


def test_poll_interval_is_a_setting() -> None:
    settings = AlertSettings(poll_interval_s=10.0)
    lost = evaluate_communication(
        T0 + timedelta(seconds=31), settings, last_data_at=T0, known_since=T0
    )
    assert lost.severity is Severity.WARNING


def test_communication_lost_for_a_battery_that_never_reported() -> None:
    settings = AlertSettings()
    early = evaluate_communication(
        T0 + timedelta(seconds=60), settings, last_data_at=None, known_since=T0
    )
    assert (early.severity, early.clear) == (None, False)  # not overdue, yet not proven either
    lost = evaluate_communication(
        T0 + timedelta(seconds=300), settings, last_data_at=None, known_since=T0
    )
    assert lost.message == "No data from battery for 5 poll intervals (no reading yet)"


def test_communication_lost_while_the_site_agent_is_offline() -> None:
    offline = T0 + timedelta(seconds=30)
    found = evaluate_communication(
        T0 + timedelta(seconds=40),
        AlertSettings(),
        last_data_at=T0,
        known_since=T0,
        site_offline_since=offline,
    )
    assert found.severity is Severity.WARNING
    assert found.message == (
        "Site agent offline since 2025-11-30T08:00:30Z (last reading 2025-11-30T08:00:00Z)"
    )
