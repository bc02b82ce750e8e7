"""RUL estimation on synthetic SoH histories whose true end of life is known in closed form."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from central.alerts import renewed_baseline
from central.rul import RulStatus, daily_medians, estimate_rul, replacement_start

DAY = 86_400.0
YEAR_DAYS = 365.2425
START = datetime(2020, 1, 1, tzinfo=UTC).timestamp()


def history(soh_at, days: int, noise: float = 0.3, seed: int = 0, per_day: int = 1):
    """(times, SoH %) from installation at START: ``soh_at(years)`` plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    times = START + np.repeat(np.arange(days), per_day) * DAY + 3600.0
    times += np.tile(np.arange(per_day), days) * (20 * 3600.0 / per_day)
    years = (times - START) / DAY / YEAR_DAYS
    return times, soh_at(years) + rng.normal(0.0, noise, times.size)


def linear(years):
    return 100.0 - 2.0 * years  # end of life at 10 years


def accelerating(years):
    return 100.0 - 1.0 * years - 0.25 * years**2  # end of life at (√21 − 1) / 0.5 years


ACCELERATING_EOL_YEARS = (math.sqrt(21.0) - 1.0) / 0.5


def days_left(eol_years: float, days_seen: int) -> float:
    """True RUL at the end of a history of ``days_seen`` days (its last reading)."""
    return eol_years * YEAR_DAYS - (days_seen - 1) - 3600.0 / DAY


# --------------------------------------------------------------------------- daily medians


def test_daily_medians_take_one_median_per_utc_day_at_its_mean_time() -> None:
    times = np.array([2.5, 0.1, 0.2, 0.3, 1.5, 1.6, 2.9, 0.4]) * DAY
    soh = np.array([np.nan, 90.0, 92.0, 91.0, 88.0, 89.0, 70.0, 99.0])
    days, medians = daily_medians(times, soh)
    np.testing.assert_allclose(days, np.array([0.25, 1.55, 2.9]) * DAY)
    np.testing.assert_allclose(medians, [91.5, 88.5, 70.0])  # day 0: 90, 91, 92, 99


def test_daily_medians_of_nothing_are_empty() -> None:
    days, medians = daily_medians(np.array([1.0, 2.0]), np.array([np.nan, np.nan]))
    assert days.size == 0 and medians.size == 0


# --------------------------------------------------------------------------- replacement


def replaced(years_old: float, days_new: int, noise: float = 0.3, seed: int = 0):
    """(times, SoH %): a block fading 4 %/yr for ``years_old`` (to 84 % at 4 years), then a new
    one at 100.5 % fading 2 %/yr for ``days_new`` days; and the index of the new block's day 0."""
    old_days = round(years_old * YEAR_DAYS)
    times, soh = history(lambda y: 100.0 - 4.0 * y, old_days + days_new, noise=noise, seed=seed)
    new = np.arange(times.size) >= old_days
    years_new = (times - times[old_days]) / DAY / YEAR_DAYS
    soh[new] = (
        100.5
        - 2.0 * years_new[new]
        + np.random.default_rng(seed + 99).normal(0.0, noise, int(new.sum()))
    )
    return times, soh, old_days


def test_a_replacement_is_the_latest_step_up_held_by_the_days_after() -> None:
    _, soh, first = replaced(4.0, 200)
    assert replacement_start(soh) == first
    twice = np.concatenate([soh, soh[first : first + 10] * 0 + 80.0, soh[first : first + 30]])
    assert replacement_start(twice) == soh.size + 10  # a second swap, after a dip
    assert replacement_start(soh[:first]) == 0  # a fade alone has none


@pytest.mark.parametrize("high_days", [1, 2, 3])
def test_a_few_days_measured_high_are_not_a_replacement(high_days: int) -> None:
    """A glitch (a day or three reading 100 %) is not held by the days after it; nor is a
    step the newest days have not confirmed yet."""
    _, soh = history(linear, 8 * 365)  # 84 % now
    glitched = soh.copy()
    glitched[1000 : 1000 + high_days] = 100.0
    assert replacement_start(glitched) == 0
    fresh = np.concatenate([soh, np.full(high_days, 100.0)])
    assert replacement_start(fresh) == 0  # too new to tell from a glitch
    held = np.concatenate([soh, np.full(4, 100.0)])
    assert replacement_start(held) == soh.size  # four days on, it is one


def test_noise_of_a_real_monitor_and_small_recoveries_are_not_replacements() -> None:
    """SoH estimates scattered by a point or more (σ 1 %), 2 % of the days reading 0 % or 100 %,
    and a 3-point recovery (an equalising charge) over 50 seeded decade-long histories."""
    rng = np.random.default_rng(11)
    for seed in range(50):
        _, soh = history(linear, 10 * 365, noise=1.0, seed=seed)
        soh[2000:] += 3.0
        spikes = rng.random(soh.size) < 0.02
        soh[spikes] = rng.choice([0.0, 100.0], size=int(spikes.sum()))
        assert replacement_start(soh) == 0, seed


def test_a_short_history_has_no_replacement() -> None:
    assert replacement_start(np.array([80.0, 100.0, 100.0, 100.0])) == 0
    assert replacement_start(np.array([80.0, 100.0, 100.0, 100.0, 100.0])) == 1
    assert replacement_start(np.array([])) == 0


def test_the_fit_sees_only_the_new_block() -> None:
    """The old block's fade (4 %/yr, end of life close) is not the new one's (2 %/yr)."""
    times, soh, first = replaced(4.0, 400)
    estimate = estimate_rul(times, soh)
    alone = estimate_rul(times[first:], soh[first:])
    assert estimate is not None and alone is not None
    assert estimate == alone
    assert (estimate.n_days, estimate.n_points) == (400, 400)
    assert estimate.fade_pct_per_year == pytest.approx(2.0, rel=0.25)
    assert estimate.rul_days > 3000


def test_a_new_block_has_no_estimate_until_it_has_its_own_history() -> None:
    times, soh, first = replaced(4.0, 60)  # 60 days: under the 90-day span
    assert estimate_rul(times[:first], soh[:first]).rul_days < 400  # the old block: a year
    assert estimate_rul(times, soh) is None


def test_a_new_blocks_baseline_is_its_own_first_readings_when_resistance_stepped_down() -> None:
    """The resistance half of a replacement (``central.alerts.renewed_baseline``): a new block
    reads well below the worn one; a block whose SoH recovered without that keeps its own."""
    worn = [0.0068, 0.0070, None, 0.0069]
    new = [0.0047, 0.0046, 0.0, 0.0048, 0.0045]
    assert renewed_baseline(worn, new, 3) == 0.0047  # median of its first three valid
    assert renewed_baseline(worn, new[:3], 3) is None  # two valid so far: not yet
    assert renewed_baseline(worn, [0.0066, 0.0065, 0.0067], 3) is None  # only 4 % down
    assert renewed_baseline([], new, 3) is None  # nothing to compare with


# --------------------------------------------------------------------------- accuracy


def errors(soh_at, eol_years: float, lead_days: int, seeds=range(8)) -> np.ndarray:
    """Absolute RUL errors (days) at ``lead_days`` before end of life, one per noise seed."""
    seen = round(eol_years * YEAR_DAYS) - lead_days
    truth = days_left(eol_years, seen)
    out = []
    for seed in seeds:
        estimate = estimate_rul(*history(soh_at, seen, seed=seed))
        assert estimate is not None and estimate.status is RulStatus.FADING
        out.append(abs(estimate.rul_days - truth))
    return np.array(out)


def assert_accurate(errors_days: np.ndarray, lead_days: int) -> None:
    """Typically within 3 % (or 5 days), never beyond 8 % (or 12 days: 0.3 % noise on a line)."""
    assert np.median(errors_days) <= max(0.03 * lead_days, 5.0)
    assert errors_days.max() <= max(0.08 * lead_days, 12.0)


@pytest.mark.parametrize("lead_days", [365, 180, 90])
def test_linear_fade_recovers_the_rul(lead_days: int) -> None:
    assert_accurate(errors(linear, 10.0, lead_days), lead_days)
    estimate = estimate_rul(*history(linear, 8 * 365))
    assert estimate.fade_pct_per_year == pytest.approx(2.0, rel=0.05)
    assert estimate.method == "huber-linear-seasonal"


@pytest.mark.parametrize("lead_days", [365, 180, 90])
def test_accelerating_fade_recovers_the_rul(lead_days: int) -> None:
    assert_accurate(errors(accelerating, ACCELERATING_EOL_YEARS, lead_days), lead_days)
    estimate = estimate_rul(*history(accelerating, 6 * 365))
    assert estimate.fade_pct_per_year == pytest.approx(
        1.0 + 0.5 * (6 * 365 - 1) / YEAR_DAYS, rel=0.08
    )
    assert "quadratic" in estimate.method


@pytest.mark.parametrize("lead_days", [300, 200, 100])
def test_a_seasonal_swing_of_the_rate_does_not_bias_the_rul(lead_days: int) -> None:
    """The rate swings ±30 % over the year (the twin's: ±10 %); end of life is at 10 years."""

    def seasonal(years):
        return 100.0 - 2.0 * years - 2.0 * 0.3 / (2 * math.pi) * np.sin(2 * math.pi * years)

    assert_accurate(errors(seasonal, 10.0, lead_days), lead_days)
    assert estimate_rul(*history(seasonal, 5 * 365)).method.endswith("-seasonal")


def test_a_straight_line_is_not_bent_by_noise() -> None:
    bent = 0
    for seed in range(20):
        times, soh = history(linear, 6 * 365, seed=seed)
        estimate = estimate_rul(times, soh)
        assert estimate is not None
        bent += not estimate.method.startswith("huber-linear")
    assert bent <= 2


def test_spikes_to_zero_and_full_do_not_move_the_estimate() -> None:
    seen = round(9.0 * YEAR_DAYS)
    times, soh = history(linear, seen, seed=3)
    clean = estimate_rul(times, soh)
    rng = np.random.default_rng(4)
    spikes = rng.random(soh.size) < 0.03
    soh[spikes] = rng.choice([0.0, 100.0], size=int(spikes.sum()))
    soh[-3:] = 0.0  # even the latest readings
    spiked = estimate_rul(times, soh)
    assert clean is not None and spiked is not None
    assert spiked.rul_days == pytest.approx(clean.rul_days, rel=0.05)
    assert spiked.soh_now_pct == pytest.approx(clean.soh_now_pct, abs=0.1)


def test_minute_readings_with_a_bad_hour_a_day_fit_like_clean_ones() -> None:
    times, soh = history(linear, 3 * 365, per_day=48, seed=5)
    bad = (np.arange(soh.size) % 48) < 2  # one hour a day reads garbage
    noisy = soh.copy()
    noisy[bad] = 5.0
    clean, dirty = estimate_rul(times, soh), estimate_rul(times, noisy)
    assert clean is not None and dirty is not None
    assert dirty.n_points == clean.n_points == soh.size
    assert dirty.n_days == 3 * 365
    assert dirty.rul_days == pytest.approx(clean.rul_days, rel=0.01)


def test_a_change_of_rate_is_followed_within_months() -> None:
    """2 %/yr for five years, then a cooling fault: 4 %/yr. Old history must not dilute it."""
    change = 5.0

    def stepped(years):
        return 100.0 - 2.0 * years - 2.0 * np.maximum(years - change, 0.0)

    eol_years = change + (100.0 - 2.0 * change - 80.0) / 4.0  # 7.5 years
    seen = round((change + 0.75) * YEAR_DAYS)  # nine months after the change
    times, soh = history(stepped, seen)
    estimate = estimate_rul(times, soh)
    truth = days_left(eol_years, seen)
    assert estimate is not None
    assert estimate.method.startswith("huber-hinge")
    assert estimate.fade_pct_per_year == pytest.approx(4.0, rel=0.10)
    assert estimate.rul_days == pytest.approx(truth, rel=0.15)
    slope, intercept = np.polyfit((times - times[-1]) / DAY, soh, 1)
    naive = (80.0 - intercept) / slope
    assert abs(naive - truth) > 3 * abs(estimate.rul_days - truth)


def test_a_slowdown_after_a_fix_is_followed_too() -> None:
    """4 %/yr for two years, then the cooling is repaired: 2 %/yr. A straight line, not a bend."""

    def repaired(years):
        return 100.0 - 4.0 * years + 2.0 * np.maximum(years - 2.0, 0.0)

    times, soh = history(repaired, round(3.0 * YEAR_DAYS))
    estimate = estimate_rul(times, soh)
    assert estimate.method.startswith("huber-hinge")
    assert estimate.fade_pct_per_year == pytest.approx(2.0, rel=0.10)


def test_the_interval_contains_the_truth_in_most_seeded_trials() -> None:
    covered, trials = 0, 40
    for seed in range(trials):
        seen = round(10.0 * YEAR_DAYS) - 200
        times, soh = history(linear, seen, seed=100 + seed)
        estimate = estimate_rul(times, soh)
        assert estimate is not None
        assert estimate.rul_low_days <= estimate.rul_days <= estimate.rul_high_days
        covered += estimate.rul_low_days <= days_left(10.0, seen) <= estimate.rul_high_days
    assert covered >= 0.65 * trials


def test_a_wider_interval_is_wider() -> None:
    times, soh = history(linear, 8 * 365)
    narrow, wide = estimate_rul(times, soh, interval=0.5), estimate_rul(times, soh, interval=0.95)
    assert wide.rul_low_days < narrow.rul_low_days < narrow.rul_high_days < wide.rul_high_days
    assert wide.rul_days == narrow.rul_days


# --------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize(
    "days, every",
    [
        (20, 1),  # three weeks of readings
        (60, 1),  # two months: 60 days with readings, but under the 90-day span
        (300, 11),  # ten months, but only 28 days with a reading
    ],
)
def test_too_little_history_gives_none(days: int, every: int) -> None:
    times, soh = history(linear, days)
    assert estimate_rul(times[::every], soh[::every]) is None


def test_no_reading_at_all_gives_none() -> None:
    assert estimate_rul(np.array([]), np.array([])) is None
    assert estimate_rul([START, START + DAY], [None, None]) is None


@pytest.mark.parametrize(
    "soh_at", [lambda y: 96.0 + 0 * y, lambda y: 90.0 + 0.5 * y], ids=["flat", "rising"]
)
def test_a_flat_or_rising_battery_is_open_ended(soh_at) -> None:
    times, soh = history(soh_at, 3 * 365)
    estimate = estimate_rul(times, soh)
    assert estimate is not None
    assert estimate.status is RulStatus.OPEN_ENDED
    assert estimate.rul_days is None and estimate.predicted_eol_date is None
    assert estimate.rul_high_days is None
    rul = estimate.to_json()
    assert rul["rul_days"] is None and rul["predicted_eol_date"] is None
    assert rul["status"] == "open_ended"


def test_a_fade_too_slow_for_the_horizon_is_open_ended() -> None:
    times, soh = history(lambda y: 99.0 - 0.5 * y, 2 * 365, noise=0.05)
    assert estimate_rul(times, soh).status is RulStatus.OPEN_ENDED  # 38 years to go
    longer = estimate_rul(times, soh, horizon_days=50 * 365)
    assert longer.status is RulStatus.FADING
    assert longer.rul_days == pytest.approx((19.0 / 0.5 - 2.0) * YEAR_DAYS, rel=0.1)


@pytest.mark.parametrize(
    "soh_at", [lambda y: 81.0 - 2.0 * y, lambda y: 79.0 + 0 * y], ids=["crossed", "below"]
)
def test_at_or_below_end_of_life_the_rul_is_zero(soh_at) -> None:
    times, soh = history(soh_at, 2 * 365, noise=0.1)  # the first reaches 80 % after six months
    estimate = estimate_rul(times, soh)
    assert estimate is not None
    assert estimate.status is RulStatus.END_OF_LIFE
    assert estimate.rul_days == 0.0 and estimate.rul_low_days == 0.0
    assert estimate.predicted_eol_date == datetime.fromtimestamp(times[-1], UTC).date()
    assert estimate.soh_now_pct <= 80.0


def test_nan_and_none_readings_are_skipped() -> None:
    times, soh = history(linear, 4 * 365)
    gappy = soh.astype(object)
    gappy[::7] = None
    gappy[3::7] = np.nan
    keep = np.ones(soh.size, dtype=bool)
    keep[::7] = keep[3::7] = False
    with_gaps = estimate_rul(list(times), list(gappy))
    without = estimate_rul(times[keep], soh[keep])
    assert with_gaps == without
    assert with_gaps.n_points == int(keep.sum())


def test_datetime64_times_give_the_same_estimate() -> None:
    times, soh = history(linear, 4 * 365)
    stamps = (times * 1000).astype("datetime64[ms]")
    stamps[5] = np.datetime64("NaT")
    soh_nat = soh.copy()
    soh_nat[5] = np.nan
    assert estimate_rul(stamps, soh) == estimate_rul(times, soh_nat)


def test_now_ignores_later_readings_and_counts_from_itself() -> None:
    times, soh = history(linear, 6 * 365)
    cut = times[-1] - 100 * DAY
    as_of = estimate_rul(times, soh, now=cut)
    assert as_of == estimate_rul(times[times <= cut], soh[times <= cut])
    stale = estimate_rul(times[times <= cut], soh[times <= cut], now=cut + 100 * DAY)
    assert stale.rul_days == pytest.approx(as_of.rul_days - 100.0, abs=0.5)
    assert stale.predicted_eol_date == as_of.predicted_eol_date
    aware = datetime.fromtimestamp(cut, UTC)
    assert estimate_rul(times, soh, now=aware) == as_of


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.0, 4000.0),
            st.one_of(st.floats(-20.0, 130.0), st.just(math.nan), st.sampled_from([0.0, 100.0])),
        ),
        max_size=400,
    ),
    st.floats(-2.0, 2.0),
)
def test_any_history_gives_a_sane_estimate_or_none(readings, trend) -> None:
    """Sparse, bunched, flat, spiky or garbage histories never raise or give NaN to the API."""
    times = START + np.array([day for day, _ in readings]) * DAY
    soh = np.array([value for _, value in readings]) + trend * np.array(
        [day / YEAR_DAYS for day, _ in readings]
    )
    estimate = estimate_rul(times, soh, min_days=5, min_span_days=10)
    if estimate is None:
        return
    rul = estimate.to_json()
    json.dumps(rul, allow_nan=False)
    if estimate.rul_days is not None:
        assert estimate.rul_days >= 0.0
        assert estimate.rul_low_days is not None and estimate.rul_low_days <= estimate.rul_days
        if estimate.rul_high_days is not None:
            assert estimate.rul_days <= estimate.rul_high_days


def test_bad_arguments_are_refused() -> None:
    times, soh = history(linear, 200)
    with pytest.raises(ValueError, match="same length"):
        estimate_rul(times, soh[:-1])
    with pytest.raises(ValueError, match="interval"):
        estimate_rul(times, soh, interval=1.0)
    with pytest.raises(ValueError, match="time zone"):
        estimate_rul(times, soh, now=datetime(2021, 1, 1))


# --------------------------------------------------------------------------- API shape


def test_to_json_is_the_battery_detail_rul_object() -> None:
    times, soh = history(linear, 8 * 365)
    estimate = estimate_rul(times, soh)
    rul = estimate.to_json()
    assert set(rul) == {
        "status",
        "rul_days",
        "rul_low_days",
        "rul_high_days",
        "interval_pct",
        "predicted_eol_date",
        "soh_now_pct",
        "fade_pct_per_year",
        "n_points",
        "n_days",
        "method",
        "computed_at",
    }
    assert rul["status"] == "fading"
    assert rul["interval_pct"] == 80
    assert rul["rul_low_days"] < rul["rul_days"] < rul["rul_high_days"]
    assert date.fromisoformat(rul["predicted_eol_date"]) == estimate.predicted_eol_date
    assert rul["computed_at"] == datetime.fromtimestamp(times[-1], UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.000Z"
    )
    assert rul["method"] == "huber-linear-seasonal"
    assert isinstance(rul["n_points"], int) and rul["n_points"] == 8 * 365


def test_estimate_fields_are_plain_python_numbers() -> None:
    """JSON encoders and database drivers refuse numpy scalars."""
    days = np.arange(120) * 86400.0
    estimate = estimate_rul(days, 90 - 0.05 * np.arange(120))
    assert estimate is not None
    for value in (estimate.rul_days, estimate.rul_low_days, estimate.rul_high_days):
        assert type(value) is float
    assert json.loads(json.dumps(estimate.to_json()))["rul_days"] == estimate.to_json()["rul_days"]
