"""SoH, capacity plausibility and RUL labels on hand-made numbers (no files)."""

from __future__ import annotations

import numpy as np
import pytest

from central.research.labels import (
    coulomb_count_ah,
    discharge_capacity,
    plausible_capacity,
    rul_labels,
    state_of_health,
)


def test_state_of_health_is_capacity_over_nominal():
    assert state_of_health(1.6, 2.0) == pytest.approx(0.8)
    assert state_of_health(None, 2.0) is None
    assert state_of_health(1.0, None) is None
    assert state_of_health(1.0, 0.0) is None


@pytest.mark.parametrize(
    ("capacity", "nominal", "expected"),
    [
        (1.8, 2.0, 1.8),
        (2.5, 2.0, 2.5),  # the ceiling itself: 1.25 × nominal
        (2.64, 2.0, None),  # NASA B0050: over 2.6 Ah on a 2 Ah cell
        (0.0, 2.0, None),
        (0.019, 2.0, None),  # under 1 % of nominal: the cell was not discharged
        (float("nan"), 2.0, None),
        (float("inf"), 2.0, None),
        (-1.0, 2.0, None),
        (None, 2.0, None),
        (30.0, None, 30.0),  # without a nominal only sign and finiteness can be judged
    ],
)
def test_plausible_capacity(capacity, nominal, expected):
    assert plausible_capacity(capacity, nominal) == expected


def test_coulomb_count_integrates_absolute_current_over_hours():
    time_s = np.linspace(0.0, 3600.0, 61)
    current = np.full(61, -2.0)  # NASA logs discharge current as negative
    assert coulomb_count_ah(current, time_s) == pytest.approx(2.0)


def test_coulomb_count_refuses_untrustworthy_runs():
    time_s = np.linspace(0.0, 3600.0, 61)
    current = np.full(61, 2.0)
    assert coulomb_count_ah(current[:3], time_s[:3]) is None  # a 3-sample discharge
    assert coulomb_count_ah(current, time_s[:-1]) is None
    assert coulomb_count_ah(current, time_s[::-1]) is None  # clock runs backwards
    with_nan = current.copy()
    with_nan[5] = np.nan
    assert coulomb_count_ah(with_nan, time_s) is None


def test_discharge_capacity_prefers_the_file_then_counts_then_gives_up():
    time_s = np.linspace(0.0, 3600.0, 61)
    current = np.full(61, 1.5)
    assert discharge_capacity(1.7, current, time_s, 2.0) == 1.7
    assert discharge_capacity(0.0, current, time_s, 2.0) == pytest.approx(1.5)
    assert discharge_capacity(None, current, time_s, 2.0) == pytest.approx(1.5)
    assert discharge_capacity(2.64, current * 2.0, time_s, 2.0) is None  # both impossible
    assert discharge_capacity(None, current[:3], time_s[:3], 2.0) is None


def test_rul_counts_down_to_the_first_crossing_and_is_zero_after():
    cycles = [1, 2, 3, 4, 5, 6]
    soh = [0.95, 0.9, 0.85, 0.79, 0.81, 0.7]
    assert rul_labels(cycles, soh, 0.8) == [3, 2, 1, 0, 0, 0]


def test_rul_uses_cycle_indices_not_positions():
    assert rul_labels([2, 10, 30], [0.9, 0.85, 0.75], 0.8) == [28, 20, 0]


def test_rul_skips_missing_soh_when_looking_for_the_crossing():
    assert rul_labels([1, 2, 3, 4], [0.9, None, 0.85, 0.7], 0.8) == [3, 2, 1, 0]
    assert rul_labels([1, 2], [None, None], 0.8) == [None, None]


def test_rul_falls_back_to_the_stated_cycle_life_at_the_same_threshold():
    # Severson: 100 cycles stored, the cell lives to 500.
    assert rul_labels([2, 3, 100], [0.96, 0.96, 0.95], 0.8, 500, 0.8) == [498, 497, 400]


def test_rul_ignores_a_stated_life_at_another_threshold_or_without_one():
    assert rul_labels([1, 2], [0.9, 0.9], 0.7, 500, 0.8) == [None, None]
    assert rul_labels([1, 2], [0.9, 0.9], 0.8, 500, None) == [None, None]
    assert rul_labels([1, 2], [0.9, 0.9], 0.8) == [None, None]


def test_an_observed_crossing_wins_over_the_stated_life():
    assert rul_labels([1, 2, 3], [0.9, 0.79, 0.7], 0.8, 500, 0.8) == [1, 0, 0]


def test_rul_labels_need_one_soh_per_cycle():
    with pytest.raises(ValueError, match="3 cycle indices for 2 SoH"):
        rul_labels([1, 2, 3], [0.9, 0.8], 0.8)
