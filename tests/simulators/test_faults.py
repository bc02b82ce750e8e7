"""Injected faults: each shows while active, is gone once cleared; bad requests are refused."""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pytest

from common.fleet import demo_fleet_path, load_fleet
from simulators.twin import DeviceCondition, Fault, FaultKind, SiteTwin, StringStatus
from simulators.twin import model as physics
from simulators.twin.faults import dropout_modes
from simulators.twin.history import site_history
from simulators.twin.params import SECONDS_PER_DAY

QUIET = (
    load_fleet(demo_fleet_path())
    .get("DC-CNX-01")
    .model_copy(update={"power_outage_frequency_per_year": 0.0})
)
BATTERY = "BAT-DC-CNX-01-UPS-01-STR-02-010"  # flat string 1, block 9
STRING = "STR-DC-CNX-01-UPS-02-03"  # flat string 5
UPS = "DC-CNX-01-UPS-02"
SITE = "DC-CNX-01"


@pytest.fixture
def twin() -> SiteTwin:
    return SiteTwin(QUIET, seed=5)


@pytest.fixture
def baseline() -> SiteTwin:
    return SiteTwin(QUIET, seed=5)


@pytest.fixture
def t(twin: SiteTwin) -> float:
    return twin.installed_t + 400 * SECONDS_PER_DAY


def test_overheating_battery_raises_its_temperature_only_while_active(twin, baseline, t):
    fault = twin.inject("overheating", BATTERY, t)
    assert fault.params == {"delta_c": 20.0} and fault.end is None
    hot, ref = twin.snapshot(t + 60), baseline.snapshot(t + 60)
    assert hot.temperature[1, 9] - ref.temperature[1, 9] == pytest.approx(20.0)
    np.testing.assert_array_equal(
        np.delete(hot.temperature, 9, axis=1)[1], np.delete(ref.temperature, 9, axis=1)[1]
    )
    twin.clear(fault.id, t + 3600)
    after = twin.snapshot(t + 7200)
    assert after.temperature[1, 9] == pytest.approx(baseline.snapshot(t + 7200).temperature[1, 9])


def test_overheating_ages_faster_and_the_loss_stays_after_clear(twin, baseline, t):
    fault = twin.inject("overheating", STRING, t, delta_c=15)
    twin.clear(fault.id, t + 60 * SECONDS_PER_DAY)
    times = np.array(
        [t - 1, t + 30 * SECONDS_PER_DAY, t + 60 * SECONDS_PER_DAY, t + 400 * SECONDS_PER_DAY]
    )
    hot, ref = twin.true_soh(times), baseline.true_soh(times)
    np.testing.assert_array_equal(hot[0], ref[0])
    extra = ref[:, 5] - hot[:, 5]
    assert np.all(extra[1] > 0) and np.all(extra[2] > extra[1])
    np.testing.assert_allclose(extra[3], extra[2], rtol=1e-9)  # no recovery, no further loss
    np.testing.assert_array_equal(hot[:, :5], ref[:, :5])
    # 60 days at +15 °C cost about (AF(+15) − 1) × 60 days of normal ageing: a few tenths of 1 %.
    assert 0.002 < extra[2].mean() < 0.01
    assert np.all(twin.end_of_life_time()[5] < baseline.end_of_life_time()[5])


def test_shorted_cell_makes_the_block_about_2_2_v_low(twin, baseline, t):
    fault = twin.inject("shorted_cell", BATTERY, t)
    short, ref = twin.snapshot(t + 1), baseline.snapshot(t + 1)
    assert ref.voltage[1, 9] - short.voltage[1, 9] == pytest.approx(2.2, abs=0.05)
    others = np.delete(short.voltage[1] - ref.voltage[1], 9)
    np.testing.assert_allclose(others, 2.2 / 35, atol=0.03)
    assert short.string_voltage[1] == pytest.approx(ref.string_voltage[1], abs=0.5)
    twin.clear(fault.id, t + 2)
    np.testing.assert_array_equal(twin.snapshot(t + 3).voltage, baseline.snapshot(t + 3).voltage)


def test_two_shorted_cells_drop_twice_as_far(twin, baseline, t):
    twin.inject(FaultKind.SHORTED_CELL, BATTERY, t, cells=2)
    drop = baseline.snapshot(t + 1).voltage[1, 9] - twin.snapshot(t + 1).voltage[1, 9]
    assert drop == pytest.approx(4.4, abs=0.1)


def test_resistance_jump_multiplies_the_block_resistance(twin, baseline, t):
    fault = twin.inject("resistance_jump", BATTERY, t)
    jump, ref = twin.snapshot(t + 1), baseline.snapshot(t + 1)
    assert jump.internal_resistance[1, 9] / ref.internal_resistance[1, 9] == pytest.approx(1.6)
    twin.inject("resistance_jump", "BAT-DC-CNX-01-UPS-01-STR-01-001", t, factor=2.5)
    assert twin.snapshot(t + 1).internal_resistance[0, 0] / ref.internal_resistance[
        0, 0
    ] == pytest.approx(2.5)
    twin.clear(fault.id, t + 2)
    assert (
        twin.snapshot(t + 3).internal_resistance[1, 9]
        == baseline.snapshot(t + 3).internal_resistance[1, 9]
    )


def test_sensor_dropout_blanks_the_block_until_cleared(twin, t):
    fault = twin.inject("sensor_dropout", BATTERY, t, mode="exception")
    assert fault.params["mode"] == "exception"
    snap = twin.snapshot(t + 1)
    for values in (
        snap.voltage,
        snap.temperature,
        snap.internal_resistance,
        snap.soc_pct,
        snap.soh_pct,
    ):
        assert math.isnan(values[1, 9])
        assert np.isnan(values).sum() == 1
    assert np.all(np.isfinite(snap.string_voltage)) and np.all(np.isfinite(snap.string_current))
    out = twin.readings(np.array([t - 1, t + 1, t + 10]))
    assert np.isnan(out["voltage"][:, 1, 9]).tolist() == [False, True, True]
    twin.clear(fault.id, t + 5)
    assert np.isnan(twin.readings(np.array([t + 10]))["soh_pct"]).sum() == 0
    assert np.isnan(twin.readings(np.array([t + 1]))["soh_pct"]).sum() == 1  # history keeps it


def test_dropout_modes_say_how_servers_present_each_blanked_block(twin, t):
    twin.inject("sensor_dropout", BATTERY, t, mode="garbage")
    twin.inject("sensor_dropout", "BAT-DC-CNX-01-UPS-02-STR-03-036", t)
    twin.inject("overheating", "BAT-DC-CNX-01-UPS-01-STR-01-001", t)
    snap = twin.snapshot(t + 1)
    assert math.isnan(snap.voltage[1, 9]) and math.isnan(snap.voltage[5, 35])  # every mode
    assert dropout_modes(twin.layout, twin.faults(t + 1)) == {(1, 9): "garbage", (5, 35): "nan"}
    assert dropout_modes(twin.layout, twin.faults(t - 1)) == {}


def test_mains_outage_on_a_ups_discharges_only_its_strings_and_ends_by_itself(twin, baseline, t):
    fault = twin.inject("mains_outage", UPS, t)
    assert fault.end == t + 600.0 and fault.params == {"duration_s": 600.0, "load_a": 100.0}
    during = twin.snapshot(t + 300)
    assert during.string_status.tolist() == [0, 0, 0, 1, 1, 1]
    assert during.ups_seconds_on_battery.tolist() == [0.0, 300.0]
    assert np.all(during.string_current[3:] < -99)
    assert twin.snapshot(t + 700).string_status.tolist() == [0, 0, 0, 2, 2, 2]
    assert twin.faults(t + 300) == [fault] and twin.faults(t + 700) == []
    # The cycle loss lands at the outage's end.
    later = np.array([t + 599, t + 601])
    diff = baseline.true_soh(later) - twin.true_soh(later)
    np.testing.assert_array_equal(diff[0], 0.0)
    assert np.all(diff[1, 3:] > 0) and np.all(diff[1, :3] == 0)


def test_mains_outage_on_the_site_with_load_and_early_clear(twin, baseline, t):
    fault = twin.inject("mains_outage", SITE, t, duration_s=3600, load_a=50)
    snap = twin.snapshot(t + 60)
    np.testing.assert_allclose(snap.string_current, -50.0, atol=0.5)
    assert snap.string_status.tolist() == [StringStatus.DISCHARGING] * 6
    cleared = twin.clear(fault.id, t + 120)
    assert cleared.end == t + 120
    assert twin.snapshot(t + 130).string_status.tolist() == [StringStatus.RECHARGING] * 6
    loss = (baseline.true_soh(np.array([t + 130])) - twin.true_soh(np.array([t + 130])))[0]
    dod = 50 * 120 / 3600 / (120 * baseline.true_soh(np.array([t]))[0])
    np.testing.assert_allclose(loss, 0.2 * dod**1.5 / 250, rtol=1e-6)


def test_slow_and_no_response_only_change_device_condition(twin, baseline, t):
    slow = twin.inject("slow_response", STRING, t, delay_s=3.5)
    twin.inject("no_response", UPS, t)
    assert twin.device_condition(STRING, t + 1) == DeviceCondition(3.5, False)
    assert twin.device_condition(UPS, t + 1) == DeviceCondition(0.0, True)
    assert twin.device_condition("STR-DC-CNX-01-UPS-02-01", t + 1) == DeviceCondition(0.0, False)
    assert twin.device_condition(STRING, t - 1) == DeviceCondition(0.0, False)
    np.testing.assert_array_equal(twin.snapshot(t + 1).voltage, baseline.snapshot(t + 1).voltage)
    twin.clear(slow.id, t + 2)
    assert twin.device_condition(STRING, t + 3) == DeviceCondition(0.0, False)


def test_site_wide_response_faults_apply_to_every_device(twin, t):
    twin.inject("slow_response", SITE, t)
    twin.inject("no_response", SITE, t + 10)
    for device in ("DC-CNX-01-UPS-01", "STR-DC-CNX-01-UPS-01-01", STRING):
        assert twin.device_condition(device, t + 5) == DeviceCondition(2.0, False)
        assert twin.device_condition(device, t + 15) == DeviceCondition(2.0, True)
    with pytest.raises(ValueError, match="not a device"):
        twin.device_condition(BATTERY, t)
    with pytest.raises(KeyError):
        twin.device_condition("STR-DC-BKK-01-UPS-01-01", t)


def test_overcharged_block_floats_high_and_the_rest_of_its_string_gives_way(twin, baseline, t):
    fault = twin.inject("overcharge", BATTERY, t, delta_v_per_cell=0.2)
    assert fault.params == {"delta_v_per_cell": 0.2}
    high, ref = twin.snapshot(t + 1), baseline.snapshot(t + 1)
    assert high.voltage[1, 9] - ref.voltage[1, 9] == pytest.approx(1.2, abs=0.03)  # 6 cells
    others = np.delete(high.voltage[1] - ref.voltage[1], 9)
    np.testing.assert_allclose(others, -1.2 / 35, atol=0.03)
    assert high.string_voltage[1] == pytest.approx(ref.string_voltage[1], abs=0.5)
    np.testing.assert_array_equal(high.voltage[[0, 2, 3, 4, 5]], ref.voltage[[0, 2, 3, 4, 5]])
    twin.clear(fault.id, t + 2)
    np.testing.assert_array_equal(twin.snapshot(t + 3).voltage, baseline.snapshot(t + 3).voltage)


def test_default_overcharge_is_a_charger_left_at_boost_level(twin, baseline, t):
    twin.inject("overcharge", BATTERY, t)
    rise = twin.snapshot(t + 1).voltage[1, 9] - baseline.snapshot(t + 1).voltage[1, 9]
    assert rise == pytest.approx(6 * 0.15, abs=0.03)  # 2.25 → 2.40 V/cell


def test_overcharging_charger_lifts_every_block_of_its_ups_until_the_mains_fail(twin, baseline, t):
    twin.inject("overcharge", UPS, t, delta_v_per_cell=0.1)
    high, ref = twin.snapshot(t + 1), baseline.snapshot(t + 1)
    np.testing.assert_allclose(high.voltage[3:] - ref.voltage[3:], 0.6, atol=0.03)
    np.testing.assert_array_equal(high.voltage[:3], ref.voltage[:3])
    np.testing.assert_allclose(high.string_voltage[3:] - ref.string_voltage[3:], 36 * 0.6, atol=0.5)
    # On battery the charger is out of the circuit: the blocks discharge as they would anyway.
    for site in (twin, baseline):
        site.inject("mains_outage", UPS, t + 10, duration_s=600)
    np.testing.assert_array_equal(
        twin.snapshot(t + 300).voltage[3:], baseline.snapshot(t + 300).voltage[3:]
    )


def test_overcharge_of_a_string_stacks_with_a_shorted_cell(twin, baseline, t):
    twin.inject("overcharge", "STR-DC-CNX-01-UPS-01-02", t, delta_v_per_cell=0.1)
    twin.inject("shorted_cell", BATTERY, t)
    high, ref = twin.snapshot(t + 1), baseline.snapshot(t + 1)
    assert ref.voltage[1, 9] + 0.6 - high.voltage[1, 9] == pytest.approx(2.2, abs=0.05)
    others = np.delete(high.voltage[1] - ref.voltage[1], 9)
    np.testing.assert_allclose(others, 0.6 + 2.2 / 35, atol=0.03)


def test_capacity_loss_lowers_soh_raises_resistance_and_comes_back_when_cleared(twin, baseline, t):
    fault = twin.inject("capacity_loss", BATTERY, t, soh_drop_pct=12)
    assert fault.params == {"soh_drop_pct": 12.0}
    later = np.array([t - 1, t + 1])
    lost = baseline.true_soh(later) - twin.true_soh(later)
    assert lost[0].max() == 0.0
    assert lost[1, 1, 9] == pytest.approx(0.12)
    assert np.count_nonzero(lost[1]) == 1
    low, ref = twin.snapshot(t + 1), baseline.snapshot(t + 1)
    assert ref.soh_pct[1, 9] - low.soh_pct[1, 9] == pytest.approx(12.0)  # the same noise
    # The twin's resistance follows capacity: R = R0 · (1 + 2.5 · (SoH0 − SoH)).
    r0, soh0 = twin.blocks.r0[1, 9], twin.blocks.soh0[1, 9]
    true_soh = twin.true_soh(np.array([t + 1]))[0, 1, 9]
    noise = ref.internal_resistance[1, 9] / physics.internal_resistance(
        r0, soh0, true_soh + 0.12, twin.params.r_ageing_slope
    )
    expected = physics.internal_resistance(r0, soh0, true_soh, twin.params.r_ageing_slope) * noise
    assert low.internal_resistance[1, 9] == pytest.approx(expected)
    assert low.internal_resistance[1, 9] / ref.internal_resistance[1, 9] > 1.2
    assert twin.end_of_life_time()[1, 9] < baseline.end_of_life_time()[1, 9]
    twin.clear(fault.id, t + 2)
    after = twin.snapshot(t + 3)
    np.testing.assert_array_equal(after.soh_pct, baseline.snapshot(t + 3).soh_pct)
    assert after.internal_resistance[1, 9] == baseline.snapshot(t + 3).internal_resistance[1, 9]


def test_capacity_loss_makes_a_discharge_go_deeper(twin, baseline, t):
    twin.inject("capacity_loss", BATTERY, t, soh_drop_pct=30)
    for site in (twin, baseline):
        site.inject("mains_outage", "DC-CNX-01-UPS-01", t + 10, duration_s=1800)
    low, ref = twin.snapshot(t + 1200), baseline.snapshot(t + 1200)
    drawn, drawn_ref = 100 - low.soc_pct[1, 9], 100 - ref.soc_pct[1, 9]
    soh = baseline.true_soh(np.array([t]))[0, 1, 9]
    assert drawn / drawn_ref == pytest.approx(soh / (soh - 0.30), rel=1e-3)
    assert low.voltage[1, 9] < ref.voltage[1, 9]


def test_accelerated_ageing_costs_factor_minus_one_times_the_normal_loss_and_it_stays(
    twin, baseline, t
):
    fault = twin.inject("accelerated_ageing", BATTERY, t, factor=4)
    assert fault.params == {"factor": 4.0}
    twin.clear(fault.id, t + 100 * SECONDS_PER_DAY)
    times = t + SECONDS_PER_DAY * np.array([-1.0, 50.0, 100.0, 400.0])
    fast, ref = twin.true_soh(times), baseline.true_soh(times)
    normal = baseline.true_soh(np.array([t]))[0, 1, 9] - ref[2, 1, 9]  # lost while it lasted
    extra = ref[:, 1, 9] - fast[:, 1, 9]
    assert extra[0] == 0.0
    assert 0 < extra[1] < extra[2]
    assert extra[2] == pytest.approx(3 * normal, rel=1e-6)  # three times the loss on top
    assert extra[3] == pytest.approx(extra[2], rel=1e-9)  # nothing comes back after the clear
    changed = ref - fast != 0
    assert changed[:, 1, 9].tolist() == [False, True, True, True]
    assert np.count_nonzero(changed) == 3
    assert twin.end_of_life_time()[1, 9] < baseline.end_of_life_time()[1, 9]


def test_accelerated_ageing_of_a_string_ages_each_block_at_its_own_rate(twin, baseline, t):
    twin.inject("accelerated_ageing", STRING, t, factor=2)
    times = np.array([t, t + 200 * SECONDS_PER_DAY])
    fast, ref = twin.true_soh(times), baseline.true_soh(times)
    normal = ref[0, 5] - ref[1, 5]
    np.testing.assert_allclose(fast[0, 5] - fast[1, 5], 2 * normal, rtol=1e-9)
    np.testing.assert_array_equal(fast[:, :5], ref[:, :5])


def test_a_fault_injected_with_a_past_start_is_part_of_the_twins_history(twin, baseline, t):
    past = t - 300 * SECONDS_PER_DAY
    twin.inject("accelerated_ageing", BATTERY, past, factor=3)
    history = np.array([past - SECONDS_PER_DAY, past + 100 * SECONDS_PER_DAY, t])
    fast, ref = twin.readings(history)["soh_pct"], baseline.readings(history)["soh_pct"]
    assert fast[0, 1, 9] == ref[0, 1, 9]
    assert 0 < ref[1, 1, 9] - fast[1, 1, 9] < ref[2, 1, 9] - fast[2, 1, 9]


def test_a_replaced_block_starts_new_and_ages_afresh_from_then(twin, baseline, t):
    """SoH back to the new block's own (99-102 %), resistance to its own R0, ageing from zero
    at its own rate; the rest of the site untouched; the old block's lost capacity gone."""
    ageing = twin.inject("accelerated_ageing", BATTERY, t - 300 * SECONDS_PER_DAY, factor=6)
    swap = t + 0.5 * SECONDS_PER_DAY
    fault = twin.inject("block_replaced", BATTERY, swap)
    assert (fault.start, fault.end) == (swap, swap)  # an event: never active, nothing to clear
    assert twin.faults(swap) == []
    new_soh, new_r0 = fault.params["soh_pct"], fault.params["resistance_ohm"]
    assert 99.0 <= new_soh <= 102.0
    assert 0.8 < new_r0 / twin.params.r0_ohm < 1.25
    ended = {f.id: f for f in twin.faults()}[ageing.id]
    assert ended.end == swap  # the fast ageing was the old block's: it left with it
    with pytest.raises(ValueError, match="already ended"):
        twin.clear(fault.id, swap + 1.0)

    times = swap + SECONDS_PER_DAY * np.array([-1.0, 0.0, 1.0, 365.0, 730.0])
    soh, ref = twin.true_soh(times), baseline.true_soh(times)
    assert soh[0, 1, 9] < ref[0, 1, 9] - 0.05  # the old block, aged fast
    assert soh[1, 1, 9] == pytest.approx(new_soh / 100, abs=1e-12)
    assert (np.diff(soh[1:, 1, 9]) < 0).all()  # and ages from then on
    own = baseline.true_soh(np.array([twin.installed_t, twin.installed_t + 730 * SECONDS_PER_DAY]))
    first_two_years = own[0, 1, 9] - own[1, 1, 9]
    assert soh[1, 1, 9] - soh[4, 1, 9] == pytest.approx(first_two_years, rel=0.5)
    unchanged = np.ones(soh.shape[1:], dtype=bool)
    unchanged[1, 9] = False
    np.testing.assert_array_equal(soh[:, unchanged], ref[:, unchanged])

    new = twin.readings(np.array([swap]))
    assert new["internal_resistance"][0, 1, 9] == pytest.approx(new_r0, rel=0.05)  # its noise
    assert new["soh_pct"][0, 1, 9] == pytest.approx(new_soh, abs=1.5)
    assert twin.end_of_life_time()[1, 9] > swap + 5 * 365 * SECONDS_PER_DAY


def test_a_replacement_is_seeded_and_its_params_may_be_given(twin, baseline, t):
    first = twin.inject("block_replaced", BATTERY, t)
    again = baseline.inject("block_replaced", BATTERY, t)
    assert first.params == again.params  # same site, seed, block and time: the same new block
    other = SiteTwin(QUIET, seed=5).inject("block_replaced", BATTERY, t + 1.0)
    assert other.params != first.params
    given = SiteTwin(QUIET, seed=5)
    fault = given.inject("block_replaced", BATTERY, t, soh_pct=95, resistance_ohm=0.005)
    assert fault.params == {"soh_pct": 95.0, "resistance_ohm": 0.005}
    at = given.readings(np.array([t]))
    assert at["soh_pct"][0, 1, 9] == pytest.approx(95.0, abs=1.5)
    assert at["internal_resistance"][0, 1, 9] == pytest.approx(0.005, rel=0.05)


def test_a_replaced_block_gets_no_credit_for_the_old_blocks_cycles():
    """Outages cost the old block cycle life; the new block carries only its own."""
    stormy = load_fleet(demo_fleet_path()).get("DC-CNX-01")
    stormy = stormy.model_copy(update={"power_outage_frequency_per_year": 40.0})
    twin, kept = SiteTwin(stormy, seed=2), SiteTwin(stormy, seed=2)
    swap = twin.installed_t + 3 * 365 * SECONDS_PER_DAY
    twin.inject("block_replaced", BATTERY, swap, soh_pct=100.0)
    after = np.array([swap + 60.0])
    old = kept.true_soh(after)[0, 1, 9]
    assert old < kept.blocks.soh0[1, 9] - kept._rate[1, 9] * kept._table.lookup(after)[0] - 1e-4
    # A minute after the swap only a minute's calendar ageing: no old cycle loss.
    assert twin.true_soh(after)[0, 1, 9] == pytest.approx(1.0, abs=1e-6)
    later = twin.true_soh(np.array([swap + 365 * SECONDS_PER_DAY]))[0, 1, 9]
    assert later < 1.0 - 1e-4


def test_a_history_across_a_replacement_shows_both_blocks(twin, t):
    """What central's RUL fit meets: a fading block, then a step up to a new one."""
    twin.inject("accelerated_ageing", BATTERY, t - 400 * SECONDS_PER_DAY, factor=8)
    swap = t - 100 * SECONDS_PER_DAY
    twin.inject("block_replaced", BATTERY, swap)
    rows = [
        row
        for row in site_history(twin, t - 300 * SECONDS_PER_DAY, t, SECONDS_PER_DAY)
        if row.battery_id == BATTERY
    ]
    before = [row for row in rows if row.t < swap]
    after = [row for row in rows if row.t >= swap]
    assert len(before) == 200 and len(after) == 100
    assert before[-1].soh_pct < 92.0 and after[0].soh_pct > 98.0
    assert after[0].internal_resistance < 0.85 * before[-1].internal_resistance
    truth = 100 * twin.true_soh(np.array([row.t for row in rows]))[:, 1, 9]
    measured = np.array([row.soh_pct for row in rows])
    assert np.abs(measured - truth).max() < 6 * twin.params.noise_soh_pct


@pytest.mark.parametrize(
    ("kind", "target", "error"),
    [
        ("overheating", "BAT-DC-BKK-01-UPS-01-STR-01-001", KeyError),  # another site
        ("overheating", "BAT-DC-CNX-01-UPS-03-STR-01-001", KeyError),  # no third UPS
        ("overheating", "BAT-DC-CNX-01-UPS-01-STR-01-037", KeyError),  # 36 blocks
        ("overheating", UPS, ValueError),
        ("shorted_cell", STRING, ValueError),
        ("sensor_dropout", SITE, ValueError),
        ("resistance_jump", "STR-DC-CNX-01-UPS-01-01", ValueError),
        ("slow_response", BATTERY, ValueError),
        ("no_response", "DC-BKK-01", KeyError),
        ("mains_outage", STRING, ValueError),
        ("mains_outage", "not-an-id", ValueError),
        ("overcharge", SITE, ValueError),
        ("capacity_loss", STRING, ValueError),
        ("accelerated_ageing", UPS, ValueError),
        ("block_replaced", STRING, ValueError),
        ("block_replaced", "BAT-DC-CNX-01-UPS-01-STR-01-037", KeyError),
        ("meteor_strike", SITE, ValueError),
    ],
)
def test_invalid_targets_and_kinds_are_refused(twin, t, kind, target, error):
    with pytest.raises(error):
        twin.inject(kind, target, t)
    assert twin.faults() == []


@pytest.mark.parametrize(
    ("kind", "target", "params"),
    [
        ("overheating", BATTERY, {"delta_c": -5}),
        ("overheating", BATTERY, {"delta_c": float("nan")}),
        ("overheating", BATTERY, {"delta_c": "hot"}),
        ("overheating", BATTERY, {"temperature": 5}),
        ("shorted_cell", BATTERY, {"cells": 0}),
        ("shorted_cell", BATTERY, {"cells": 6}),
        ("shorted_cell", BATTERY, {"cells": 1.5}),
        ("resistance_jump", BATTERY, {"factor": 0}),
        ("sensor_dropout", BATTERY, {"mode": "zero"}),
        ("slow_response", STRING, {"delay_s": float("inf")}),
        ("mains_outage", UPS, {"duration_s": 0}),
        ("mains_outage", UPS, {"load_a": -1}),
        ("mains_outage", UPS, {"duration_s": True}),
        ("overcharge", BATTERY, {"delta_v_per_cell": 0}),
        ("overcharge", STRING, {"delta_v_per_cell": -0.1}),
        ("capacity_loss", BATTERY, {"soh_drop_pct": 0}),
        ("capacity_loss", BATTERY, {"soh_drop_pct": 50.5}),
        ("capacity_loss", BATTERY, {"factor": 2}),
        ("accelerated_ageing", BATTERY, {"factor": 0.5}),
        ("accelerated_ageing", STRING, {"factor": float("inf")}),
        ("block_replaced", BATTERY, {"soh_pct": 49}),
        ("block_replaced", BATTERY, {"soh_pct": 111}),
        ("block_replaced", BATTERY, {"resistance_ohm": 0}),
        ("block_replaced", BATTERY, {"factor": 2}),
    ],
)
def test_bad_params_are_refused(twin, t, kind, target, params):
    with pytest.raises(ValueError):
        twin.inject(kind, target, t, **params)
    assert twin.faults() == []


def test_numeric_strings_are_accepted_and_time_must_be_finite(twin, t):
    assert twin.inject("overheating", BATTERY, t, delta_c="12.5").params["delta_c"] == 12.5
    with pytest.raises(ValueError, match="finite"):
        twin.inject("overheating", BATTERY, float("nan"))


def test_clear_and_listing_rules(twin, t):
    a = twin.inject("overheating", BATTERY, t)
    b = twin.inject("no_response", SITE, t + 10)
    c = twin.inject("mains_outage", SITE, t, duration_s=60)
    assert [f.id for f in twin.faults()] == [1, 2, 3]
    assert [f.id for f in twin.faults(t + 5)] == [a.id, c.id]
    with pytest.raises(KeyError):
        twin.clear(99, t)
    assert twin.clear(a.id, t + 20).end == t + 20
    with pytest.raises(ValueError, match="already"):
        twin.clear(a.id, t + 30)
    with pytest.raises(ValueError, match="already ended"):
        twin.clear(c.id, t + 100)  # the outage ended by itself
    cleared = twin.clear_all(t + 40)  # the outage (to t + 60) is cut short too
    assert [f.id for f in cleared] == [b.id, c.id]
    assert [f.end for f in cleared] == [t + 40, t + 40]
    assert twin.clear_all(t + 50) == []
    assert twin.faults(t + 45) == []


def test_fault_to_dict_is_json_ready(twin, t):
    fault = twin.inject(FaultKind.SENSOR_DROPOUT, BATTERY, t)
    doc = json.loads(json.dumps(fault.to_dict()))
    assert doc == {
        "id": fault.id,
        "kind": "sensor_dropout",
        "target": BATTERY,
        "start": t,
        "end": None,
        "params": {"mode": "nan"},
    }
    assert isinstance(fault, Fault) and FaultKind("mains_outage") is FaultKind.MAINS_OUTAGE


def test_faults_can_be_injected_while_another_thread_takes_snapshots(twin, t):
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                twin.snapshot(t + 100)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(30):
            fault = twin.inject("overheating", BATTERY, t + i)
            twin.clear(fault.id, t + i + 1)
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert len(twin.faults()) == 30 and twin.faults(t + 100) == []
