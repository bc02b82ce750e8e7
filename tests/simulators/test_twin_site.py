"""A whole site's twin: determinism, ageing physics, plausibility of readings; and the SimClock."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.fleet import Location, demo_fleet_path, load_fleet
from simulators.clock import SimClock
from simulators.twin import SiteTwin, StringStatus
from simulators.twin.params import SECONDS_PER_DAY, SECONDS_PER_YEAR

FLEET = load_fleet(demo_fleet_path())
CNX = FLEET.get("DC-CNX-01")
QUIET = CNX.model_copy(update={"power_outage_frequency_per_year": 0.0})
KEYS = ("voltage", "temperature", "internal_resistance", "soc_pct", "soh_pct", "string_current")


def _site(location: Location = CNX, seed: int = 1) -> SiteTwin:
    return SiteTwin(location, seed=seed)


def _after_install(twin: SiteTwin, days: float) -> float:
    return twin.installed_t + days * SECONDS_PER_DAY


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_readings_different_seed_does_not():
    a, b, c = _site(seed=7), _site(seed=7), _site(seed=8)
    times = _after_install(a, 400) + np.arange(50) * 60.0
    ra, rb, rc = a.readings(times), b.readings(times), c.readings(times)
    for key in KEYS:
        np.testing.assert_array_equal(ra[key], rb[key])
        assert not np.array_equal(ra[key], rc[key]) or key == "soc_pct"
    np.testing.assert_array_equal(a.end_of_life_time(), b.end_of_life_time())
    assert [i.serial_number for i in a.inventory()[0]] == [
        i.serial_number for i in b.inventory()[0]
    ]


def test_batched_shuffled_and_one_by_one_times_give_identical_values():
    twin = _site()
    twin.inject("mains_outage", "DC-CNX-01-UPS-01", _after_install(twin, 200), duration_s=900)
    twin.inject("sensor_dropout", "BAT-DC-CNX-01-UPS-02-STR-01-003", _after_install(twin, 200))
    rng = np.random.default_rng(0)
    times = _after_install(twin, 200) + np.concatenate(
        [rng.uniform(-3600, 20_000, 1500), rng.uniform(0, 5 * SECONDS_PER_YEAR, 1500)]
    )
    batch = twin.readings(times)  # longer than one internal chunk
    order = rng.permutation(len(times))
    shuffled = twin.readings(times[order])
    for i in rng.choice(len(times), 40, replace=False):
        single = twin.readings(times[i : i + 1])
        snap = twin.snapshot(float(times[i]))
        for key in KEYS:
            np.testing.assert_array_equal(single[key][0], batch[key][i])
        np.testing.assert_array_equal(snap.voltage, batch["voltage"][i])
        np.testing.assert_array_equal(snap.soh_pct, batch["soh_pct"][i])
    for key in KEYS:
        np.testing.assert_array_equal(shuffled[key], batch[key][order])
    np.testing.assert_array_equal(twin.true_soh(times[order]), twin.true_soh(times)[order])


def test_seed_changes_the_block_parameters():
    assert not np.array_equal(_site(seed=1).mean_temperature(), _site(seed=2).mean_temperature())


# --------------------------------------------------------------------------- ageing


def test_calendar_ageing_follows_arrhenius_between_sites():
    cool = SiteTwin(QUIET, seed=3)
    hot = SiteTwin(QUIET.model_copy(update={"temp_offset_c": QUIET.temp_offset_c + 10}), seed=3)
    t = np.array([cool.installed_t + 2 * SECONDS_PER_YEAR])
    loss_cool = cool.blocks.soh0 - cool.true_soh(t)[0]
    loss_hot = hot.blocks.soh0 - hot.true_soh(t)[0]
    ea_over_r = 52_950.0 / 8.314462618
    t_cool, t_hot = cool.mean_temperature() + 273.15, hot.mean_temperature() + 273.15
    np.testing.assert_allclose(t_hot - t_cool, 10.0)
    expected = np.exp(ea_over_r * (1 / t_cool - 1 / t_hot))
    np.testing.assert_allclose(loss_hot / loss_cool, expected, rtol=0.05)
    assert 1.8 < np.median(loss_hot / loss_cool) < 2.2


def test_calendar_loss_rate_is_about_2_percent_a_year_near_25_c():
    twin = SiteTwin(QUIET.model_copy(update={"temp_offset_c": 0.0}), seed=1)
    t = np.array([twin.installed_t + SECONDS_PER_YEAR])
    loss = twin.blocks.soh0 - twin.true_soh(t)[0]
    assert np.median(loss) == pytest.approx(0.02, rel=0.2)


def _assert_never_rises(twin: SiteTwin, extra_times: list[float]) -> None:
    grid = twin.installed_t + np.linspace(-30, 3653, 20_000) * SECONDS_PER_DAY
    times = np.sort(np.concatenate([grid, extra_times, np.nextafter(extra_times, -np.inf)]))
    soh = twin.true_soh(times)
    assert np.all(np.diff(soh, axis=0) <= 0.0)
    assert np.all(soh[-1] < soh[0])


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    days=st.lists(st.floats(0, 3000), min_size=3, max_size=3),
    delta=st.floats(0, 40),
    duration=st.floats(1, 20_000),
)
def test_true_soh_never_rises_with_faults(seed, days, delta, duration):
    twin = SiteTwin(FLEET.get("DC-UBN-01"), seed=seed)
    starts = [_after_install(twin, d) for d in days]
    heat = twin.inject("overheating", "STR-DC-UBN-01-UPS-01-02", starts[0], delta_c=delta)
    twin.inject("overheating", "BAT-DC-UBN-01-UPS-02-STR-03-007", starts[1], delta_c=delta)
    out = twin.inject("mains_outage", "DC-UBN-01", starts[2], duration_s=duration, load_a=150)
    twin.clear(heat.id, starts[0] + 30 * SECONDS_PER_DAY)
    _assert_never_rises(twin, [*starts, starts[0] + 30 * SECONDS_PER_DAY, out.end])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_true_soh_never_rises_without_faults(seed):
    _assert_never_rises(SiteTwin(FLEET.get("DC-HDY-01"), seed=seed), [])


def test_weak_blocks_reach_end_of_life_sooner():
    twin = _site()
    eol = twin.end_of_life_time()
    assert twin.blocks.weak.sum() >= 1
    assert eol[twin.blocks.weak].max() < np.median(eol[~twin.blocks.weak])
    assert np.all(np.isfinite(eol))


def test_end_of_life_time_is_where_true_soh_crosses_80_percent():
    twin = _site()
    eol = twin.end_of_life_time()
    k, b = np.unravel_index(np.argmin(eol), eol.shape)
    soh = twin.true_soh(np.array([eol[k, b] - SECONDS_PER_DAY, eol[k, b] + SECONDS_PER_DAY]))
    assert soh[0, k, b] > 0.80 >= soh[1, k, b]
    assert (eol[k, b] - twin.installed_t) / SECONDS_PER_YEAR < 10


def test_hotter_site_reaches_end_of_life_earlier():
    cool = SiteTwin(QUIET, seed=4)
    hot = SiteTwin(QUIET.model_copy(update={"temp_offset_c": 8.0}), seed=4)
    assert np.all(hot.end_of_life_time() < cool.end_of_life_time())
    years = (np.median(cool.end_of_life_time()) - cool.installed_t) / SECONDS_PER_YEAR
    assert 8 < years < 14  # ~10-year design life at a 22-25 °C room


def test_outages_cost_cycle_life():
    busy = SiteTwin(QUIET.model_copy(update={"power_outage_frequency_per_year": 20.0}), seed=2)
    quiet = SiteTwin(QUIET, seed=2)
    t = np.array([busy.installed_t + 5 * SECONDS_PER_YEAR])
    assert np.all(busy.true_soh(t) < quiet.true_soh(t))


# --------------------------------------------------------------------------- plausibility


def test_fresh_string_on_float_is_plausible():
    twin = SiteTwin(QUIET, seed=1)
    snap = twin.snapshot(_after_install(twin, 1))
    np.testing.assert_allclose(snap.string_voltage, 486.0, atol=2.0)
    assert np.all((snap.voltage > 13.2) & (snap.voltage < 13.8))
    assert np.all((snap.internal_resistance > 0.003) & (snap.internal_resistance < 0.007))
    np.testing.assert_array_equal(snap.soc_pct, 100.0)
    assert np.all((snap.soh_pct > 97) & (snap.soh_pct < 104))
    assert np.all((snap.string_current > 0) & (snap.string_current < 0.5))
    assert snap.string_status.tolist() == [StringStatus.FLOAT] * 6
    np.testing.assert_array_equal(snap.ups_seconds_on_battery, 0.0)
    np.testing.assert_array_equal(snap.ups_charge_pct, 100.0)
    assert np.all((snap.ups_minutes_remaining > 60) & (snap.ups_minutes_remaining < 80))
    assert np.all((snap.temperature > 18) & (snap.temperature < 30))


def test_outage_discharges_then_recharges_back_to_float():
    twin = SiteTwin(QUIET, seed=1)
    t = _after_install(twin, 100)
    twin.inject("mains_outage", "DC-CNX-01", t, duration_s=1200)
    before, early, late = (twin.snapshot(t + dt) for dt in (-1, 60, 1190))
    assert early.string_status.tolist() == [StringStatus.DISCHARGING] * 6
    np.testing.assert_allclose(early.string_current, -100.0, atol=0.5)
    assert np.all(late.soc_pct < early.soc_pct) and np.all(early.soc_pct < 100)
    assert np.all(late.voltage < early.voltage) and np.all(early.voltage < before.voltage)
    assert np.all(late.voltage >= 10.5 - 0.05)
    np.testing.assert_allclose(late.ups_seconds_on_battery, 1190.0)
    assert np.all(late.ups_minutes_remaining < early.ups_minutes_remaining)
    assert np.all(late.temperature > before.temperature)  # I²R heating
    after = twin.snapshot(t + 1200 + 600)
    assert after.string_status.tolist() == [StringStatus.RECHARGING] * 6
    assert np.all(after.string_current > 1.0) and np.all(after.soc_pct > late.soc_pct)
    assert np.all(after.voltage.mean(axis=1) > before.voltage.mean(axis=1))
    back = twin.snapshot(t + 1200 + 2 * 86_400)
    assert back.string_status.tolist() == [StringStatus.FLOAT] * 6
    np.testing.assert_array_equal(back.soc_pct, 100.0)


def test_long_outage_stops_at_end_of_discharge():
    twin = SiteTwin(QUIET, seed=1)
    t = _after_install(twin, 100)
    twin.inject("mains_outage", "DC-CNX-01-UPS-02", t, duration_s=3 * 3600)
    snap = twin.snapshot(t + 3 * 3600 - 1)
    np.testing.assert_array_equal(snap.soc_pct[3:], 0.0)
    np.testing.assert_allclose(snap.voltage[3:], 10.5, atol=0.05)
    np.testing.assert_array_equal(snap.ups_minutes_remaining[1], 0.0)
    assert snap.string_status.tolist() == [0, 0, 0, 1, 1, 1]


def test_aged_site_has_higher_resistance_and_lower_soh():
    twin = _site()
    early, late = twin.readings(np.array([_after_install(twin, 10), _after_install(twin, 3000)]))[
        "internal_resistance"
    ]
    assert np.all(late > early)
    soh = twin.true_soh(np.array([_after_install(twin, 3000)]))[0]
    np.testing.assert_allclose(late / early, 1 + 2.5 * (twin.blocks.soh0 - soh), rtol=0.06)


def test_middle_blocks_run_warmer_than_the_ends():
    temp = _site().mean_temperature()
    assert temp[:, 15:21].mean() > temp[:, [0, 35]].mean() + 0.5
    assert temp.shape == (6, 36)


def test_readings_have_the_documented_shapes():
    twin = _site()
    out = twin.readings(_after_install(twin, 5) + np.arange(3) * 10.0)
    assert set(out) == set(KEYS)
    assert out["voltage"].shape == (3, 6, 36) and out["string_current"].shape == (3, 6)
    assert twin.true_soh(np.array([twin.installed_t])).shape == (1, 6, 36)
    with pytest.raises(ValueError, match="finite"):
        twin.readings(np.array([np.nan]))


def test_inventory_has_deterministic_unique_serials():
    twin = _site()
    inventory = twin.inventory()
    assert len(inventory) == 6 and all(len(row) == 36 for row in inventory)
    first = inventory[1][4]
    assert first.battery_id == "BAT-DC-CNX-01-UPS-01-STR-02-005" and first.position == 5
    assert re.fullmatch(r"CSB-HX12-120-2023-\d{6}", first.serial_number)
    serials = {block.serial_number for row in inventory for block in row}
    assert len(serials) == 216
    assert first.nominal_capacity_ah == 120.0 and first.warranty_months == 60


# --------------------------------------------------------------------------- clock


class _Wall:
    def __init__(self, start: float = 1000.0) -> None:
        self.value = start

    def __call__(self) -> float:
        return self.value


def test_clock_scale_advances_k_simulated_seconds_per_wall_second():
    wall = _Wall()
    clock = SimClock(time_scale=3600.0, epoch=1_700_000_000.0, wall=wall)
    assert clock.now() == 1_700_000_000.0
    wall.value += 2.0
    assert clock.now() == 1_700_000_000.0 + 7200.0
    assert clock.time_scale == 3600.0


def test_clock_epoch_defaults_to_wall_time_and_scale_changes_do_not_jump():
    wall = _Wall(5000.0)
    clock = SimClock(wall=wall)
    assert clock.now() == 5000.0
    wall.value += 10.0
    assert clock.now() == 5010.0
    clock.time_scale = 60.0
    assert clock.now() == 5010.0
    wall.value += 1.0
    assert clock.now() == 5070.0
    with pytest.raises(ValueError, match="time_scale"):
        SimClock(time_scale=0.0)
