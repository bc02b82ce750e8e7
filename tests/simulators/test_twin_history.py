"""A site's history from the twin: the readings its monitors would have logged, row by row."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.fleet import demo_fleet_path, load_fleet
from simulators.twin import SiteTwin
from simulators.twin.history import HistoryRow, history_times, site_history
from simulators.twin.params import SECONDS_PER_DAY

CNX = load_fleet(demo_fleet_path()).get("DC-CNX-01")
BATTERY = "BAT-DC-CNX-01-UPS-02-STR-01-004"  # flat string 3, block 3


@pytest.fixture
def twin() -> SiteTwin:
    return SiteTwin(CNX, seed=1)


@pytest.fixture
def t(twin: SiteTwin) -> float:
    return twin.installed_t + 900 * SECONDS_PER_DAY


def test_times_cover_start_to_end_exclusive():
    assert history_times(0.0, 10.0, 2.5).tolist() == [0.0, 2.5, 5.0, 7.5]
    assert history_times(0.0, 10.1, 2.5).tolist() == [0.0, 2.5, 5.0, 7.5, 10.0]
    assert history_times(5.0, 5.0, 1.0).size == 0
    assert history_times(5.0, 1.0, 1.0).size == 0
    for bad in ((0.0, 1.0, 0.0), (0.0, 1.0, -1.0), (0.0, math.inf, 1.0), (math.nan, 1.0, 1.0)):
        with pytest.raises(ValueError):
            history_times(*bad)


def test_rows_are_the_twins_readings_time_by_time_block_by_block(twin, t):
    rows = list(site_history(twin, t, t + 300 * 3600.0, 3600.0))  # more than one chunk of times
    assert len(rows) == 300 * 216
    assert all(isinstance(row, HistoryRow) for row in rows[:5])
    times = history_times(t, t + 300 * 3600.0, 3600.0)
    expected = twin.readings(times)
    layout = twin.layout
    for index in (0, 1, 35, 36, 215, 216, 150 * 216 + 107, len(rows) - 1):
        row = rows[index]
        i, flat = divmod(index, 216)
        k, b = divmod(flat, 36)
        assert row.battery_id == layout.battery_id(k, b)
        assert row.t == times[i]
        assert row.voltage == expected["voltage"][i, k, b]
        assert row.current == expected["string_current"][i, k]  # the block's string's current
        assert row.temperature == expected["temperature"][i, k, b]
        assert row.internal_resistance == expected["internal_resistance"][i, k, b]
        assert row.soc_pct == expected["soc_pct"][i, k, b]
        assert row.soh_pct == expected["soh_pct"][i, k, b]
    assert [row.t for row in rows[::216]] == times.tolist()


def test_a_sensor_out_in_the_past_is_logged_as_nothing(twin, t):
    fault = twin.inject("sensor_dropout", BATTERY, t + 3600.0)
    twin.clear(fault.id, t + 3 * 3600.0)
    logged = [
        row for row in site_history(twin, t, t + 5 * 3600.0, 3600.0) if row.battery_id == BATTERY
    ]
    assert [row.voltage is None for row in logged] == [False, True, True, False, False]
    assert all(row.current is not None for row in logged)  # the string's sensor kept working
    assert logged[1][2:] == (None, logged[1].current, None, None, None, None)


def test_a_block_ageing_fast_since_a_past_time_has_that_history(twin, t):
    """What the RUL engine is fitted on: an ageing fault injected with a past start is in the
    history, which follows the twin's true SoH within the measurement noise."""
    reference = SiteTwin(CNX, seed=1)
    twin.inject("accelerated_ageing", BATTERY, t - 365 * SECONDS_PER_DAY, factor=5)
    start = t - 730 * SECONDS_PER_DAY
    logged = {
        row.t: row.soh_pct
        for row in site_history(twin, start, t, SECONDS_PER_DAY)
        if row.battery_id == BATTERY
    }
    normal = {
        row.t: row.soh_pct
        for row in site_history(reference, start, t, SECONDS_PER_DAY)
        if row.battery_id == BATTERY
    }
    times = np.array(sorted(logged))
    soh = np.array([logged[time] for time in times])
    truth = 100 * twin.true_soh(times)[:, 3, 3]
    noise = twin.params.noise_soh_pct
    assert np.max(np.abs(soh - truth)) < 6 * noise
    before = times < t - 365 * SECONDS_PER_DAY
    assert all(logged[time] == normal[time] for time in times[before])
    lost = np.array([normal[time] - logged[time] for time in times[~before]])
    assert lost[-1] > 5.0  # four times the usual ~1.7 %/year on top, for a year
    assert np.all(np.diff(truth[~before]) < 0)
