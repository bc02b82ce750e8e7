"""The twin's pure physics, tested without a site: ageing, voltages, outages and noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.fleet import BatteryModelSpec
from simulators.twin import model
from simulators.twin.params import (
    GAS_CONSTANT_J_MOL_K,
    SECONDS_PER_DAY,
    SECONDS_PER_YEAR,
    TwinParams,
)

P = TwinParams()
T0 = 1_673_740_800.0  # 2023-01-15T00:00Z


def test_activation_energy_halves_life_per_10_c_at_25_c():
    assert P.activation_energy_j_mol == pytest.approx(52_900, rel=0.002)
    assert P.ea_over_r == pytest.approx(P.activation_energy_j_mol / GAS_CONSTANT_J_MOL_K)
    assert float(model.arrhenius_factor(25.0, P.ea_over_r)) == pytest.approx(1.0)
    assert float(model.arrhenius_factor(35.0, P.ea_over_r)) == pytest.approx(2.0)
    assert float(model.arrhenius_factor(15.0, P.ea_over_r)) < 0.5  # slightly: Arrhenius, not 2^x


def test_seasonal_offset_swings_by_amplitude_over_a_year():
    times = T0 + np.linspace(0, SECONDS_PER_YEAR, 3651)
    season = model.seasonal_offset(times, 1.5, 105.0)
    assert season.max() == pytest.approx(1.5, abs=1e-3)
    assert season.min() == pytest.approx(-1.5, abs=1e-3)
    assert abs(season.mean()) < 0.01


def test_ageing_table_without_season_counts_plain_seconds():
    flat = TwinParams(seasonal_amplitude_c=0.0)
    table = model.build_ageing_table(T0, 25.0, flat)
    times = T0 + np.array([0.0, 1.0, SECONDS_PER_DAY * 100.5, SECONDS_PER_YEAR * 3])
    np.testing.assert_allclose(table.lookup(times), times - T0, rtol=1e-12, atol=1e-6)
    assert table.lookup(np.array([T0 - 1e6]))[0] == 0.0
    beyond = table.t_end + SECONDS_PER_YEAR
    assert table.lookup(np.array([beyond]))[0] == pytest.approx(beyond - T0, rel=1e-9)


def test_ageing_table_is_non_decreasing_even_in_floating_point():
    table = model.build_ageing_table(T0, 26.0, P)
    rng = np.random.default_rng(3)
    times = np.sort(
        np.concatenate(
            [
                T0 + rng.uniform(-1e7, 32 * SECONDS_PER_YEAR, 200_000),
                T0 + SECONDS_PER_DAY * np.arange(0, 11_000, dtype=float),  # grid points exactly
                np.nextafter(T0 + SECONDS_PER_DAY * np.arange(1, 11_000, dtype=float), -np.inf),
            ]
        )
    )
    assert np.all(np.diff(table.lookup(times)) >= 0)
    # With a season the integral still runs at about one second per second on average.
    year = table.lookup(np.array([T0 + SECONDS_PER_YEAR]))[0]
    assert year == pytest.approx(SECONDS_PER_YEAR, rel=0.01)


def test_calendar_rate_reaches_20_percent_at_design_life_at_25_c():
    rate = model.calendar_rate_per_s(10.0, np.array([1.0]), np.array([1.0]), P)
    assert rate[0] * 10 * SECONDS_PER_YEAR == pytest.approx(0.20)


def test_cycle_loss_follows_the_woehler_curve():
    assert model.cycle_loss(np.array([1.0]), P)[0] == pytest.approx(0.2 / 250)
    half, full = model.cycle_loss(np.array([0.5, 1.0]), P)
    assert half / full == pytest.approx(0.5**1.5)
    assert model.cycle_loss(np.array([0.0]), P)[0] == 0.0


def test_resistance_rises_about_half_by_end_of_life():
    r = model.internal_resistance(np.array([0.0045]), np.array([1.0]), np.array([0.8]), 2.5)
    assert r[0] == pytest.approx(0.0045 * 1.5)


def test_float_voltages_sum_to_the_string_setpoint():
    rng = np.random.default_rng(0)
    spread = rng.normal(0, 0.06, size=(2, 36))
    spread -= spread.mean(axis=1, keepdims=True)
    setpoint = model.string_setpoint(np.array([[25.0, 35.0]]), 6, 36, P)
    assert setpoint[0, 0] == pytest.approx(486.0)
    assert setpoint[0, 1] == pytest.approx(486.0 - 0.003 * 10 * 216)  # compensated down
    volts = model.float_block_voltages(setpoint, spread, None)
    np.testing.assert_allclose(volts.sum(axis=-1), setpoint)


def test_shorted_cell_block_is_low_and_the_others_share_the_difference():
    spread = np.zeros((1, 36))
    setpoint = np.array([[486.0]])
    drop = np.zeros((1, 1, 36))
    drop[0, 0, 4] = 2.2
    volts = model.float_block_voltages(setpoint, spread, drop)[0, 0]
    assert volts[4] == pytest.approx(13.5 - 2.2)
    assert volts[0] == pytest.approx(13.5 + 2.2 / 35)
    assert volts.sum() == pytest.approx(486.0)


def test_discharge_voltage_drops_with_load_and_stops_at_end_of_discharge():
    soc = np.array([1.0, 0.5, 0.0])
    volts = model.discharge_voltage(soc, np.array(100.0), np.full(3, 0.0135), np.array(6), P)
    assert volts[0] == pytest.approx(6 * 2.14 - 1.35)
    assert volts[0] > volts[1] > volts[2]
    assert volts[2] == pytest.approx(10.5)
    assert model.open_circuit_voltage(np.array(1.0), 6, P) == pytest.approx(12.84)


def test_float_current_rises_with_temperature_and_age():
    base = model.float_current(np.array(25.0), np.array(0.0), P)
    assert 0.1 <= base <= 0.3
    assert model.float_current(np.array(35.0), np.array(0.0), P) == pytest.approx(2 * base)
    assert model.float_current(np.array(25.0), np.array(0.1), P) > base


def test_outages_are_a_seeded_poisson_process():
    rng = np.random.default_rng(5)
    starts, durations = model.draw_outages(rng, T0, T0 + 100 * SECONDS_PER_YEAR, 4.0, P)
    assert 300 < len(starts) < 500
    assert np.all(np.diff(starts) >= 0)
    assert np.median(durations) == pytest.approx(240, rel=0.25)
    none = model.draw_outages(np.random.default_rng(5), T0, T0 + SECONDS_PER_YEAR, 0.0, P)
    assert len(none[0]) == 0


def test_merge_intervals_joins_overlaps_with_the_larger_load():
    merged = model.merge_intervals([(10.0, 20.0, 50.0), (0.0, 5.0, 100.0), (15.0, 30.0, 80.0)])
    assert merged == [(0.0, 5.0, 100.0), (10.0, 30.0, 80.0)]


def _one_outage_table(start: float = 1000.0, end: float = 1600.0) -> model.EventTable:
    return model.build_event_table([(start, end, 100.0)], np.ones((1, 1, 2)), 120.0, P)


def test_event_table_drains_soc_and_charges_cycle_life():
    table = _one_outage_table()
    dod = 100.0 * 600 / 3600 / 120.0
    np.testing.assert_allclose(table.soc_end[1], 1 - dod)
    np.testing.assert_allclose(table.loss_after[1], 0.2 * dod**1.5 / 250)
    np.testing.assert_array_equal(table.loss_before[1], 0.0)


def test_outage_state_discharges_then_recharges():
    table = _one_outage_table()
    times = np.array([999.0, 1000.0, 1300.0, 1599.0, 1600.0, 1600.0 + 3 * 3600, 1e6])
    state = model.outage_state(table, times, P)
    assert state.on_battery.tolist() == [False, True, True, True, False, False, False]
    soc = state.soc[:, 0, 0]
    assert soc[0] == 1.0 and soc[1] == 1.0
    assert soc[2] < soc[1] and soc[3] < soc[2]
    deficit = 1 - soc[4]
    assert 1 - soc[5] == pytest.approx(deficit * math.exp(-1))
    assert soc[6] == 1.0  # recharged: back on float
    assert state.seconds_on_battery[2] == 300.0
    assert state.cycle_loss[3, 0, 0] == 0.0 and state.cycle_loss[4, 0, 0] > 0.0
    assert state.heating_w_to_c[3] > state.heating_w_to_c[2] > 0.0


def test_block_params_spread_is_seeded_and_sums_to_zero_per_string():
    draw = model.draw_block_params(np.random.default_rng(9), 6, 36, 2.0, P)
    again = model.draw_block_params(np.random.default_rng(9), 6, 36, 2.0, P)
    np.testing.assert_array_equal(draw.soh0, again.soh0)
    np.testing.assert_allclose(draw.float_spread_v.sum(axis=1), 0.0, atol=1e-12)
    assert draw.weak.sum() == round(0.02 * 216)
    assert np.all((draw.soh0 >= 0.99) & (draw.soh0 <= 1.02))
    assert draw.r0.mean() == pytest.approx(0.0045, rel=0.05)
    middle, ends = draw.mean_temp_c[:, 15:21].mean(), draw.mean_temp_c[:, [0, 35]].mean()
    assert 0.5 < middle - ends < 1.5


def test_splitmix64_matches_the_reference_sequence():
    # SplitMix64 seeded with 0: the first outputs of the reference generator (Vigna).
    out = model.splitmix64(np.array([0, 0x9E3779B97F4A7C15], dtype=np.uint64))
    assert int(out[0]) == 0xE220A8397B1DCDAF
    assert int(out[1]) == 0x6E789E6AA1B965F4


def test_noise_is_standard_normal_and_independent_of_batching():
    keys = model.index_keys(12345, 1, 216)
    times = T0 + np.arange(500) * 1.5
    a, b = model.normal_pair(keys, model.time_keys(times))
    assert abs(a.mean()) < 0.01 and abs(b.mean()) < 0.01
    assert a.std() == pytest.approx(1.0, abs=0.01) and b.std() == pytest.approx(1.0, abs=0.01)
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.01
    single = model.normal_pair(keys, model.time_keys(times[7:8]))[0]
    np.testing.assert_array_equal(single[0], a[7])
    other = model.normal_pair(model.index_keys(12346, 1, 216), model.time_keys(times))[0]
    assert not np.array_equal(other, a)


def test_params_reject_meaningless_values_and_scale_to_the_block_model():
    with pytest.raises(ValueError, match="load_current_a"):
        TwinParams(load_current_a=0.0)
    with pytest.raises(ValueError, match="ageing_sigma"):
        TwinParams(ageing_sigma=float("nan"))
    with pytest.raises(ValueError, match="reversed"):
        TwinParams(weak_multiplier=(3.0, 2.0))
    big = TwinParams.for_model(BatteryModelSpec(nominal_capacity_ah=240.0), load_current_a=150.0)
    assert big.r0_ohm == pytest.approx(0.00225) and big.load_current_a == 150.0
    assert TwinParams.for_model(BatteryModelSpec()) == TwinParams()
