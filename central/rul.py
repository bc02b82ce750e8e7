"""Remaining useful life of a fleet battery from its state-of-health history.

Pure numpy, no I/O: the RUL refresher hands in one battery's readings and stores what comes back,
so the service, the tests and the accuracy benchmark (``tests/perf/bench_rul``) run the same code.

Model. A 12 V VRLA block on float loses capacity at a rate set by its temperature (Arrhenius, life
halving per ~10 °C), so while its conditions hold its SoH falls along a straight line; the rate
changes when the conditions do (a failed fan, a repaired one) and climbs late in life (grid
corrosion, dry-out). The digital twin's true trajectories are exactly that: straight lines over
10+ years at every temperature, rippled by the season (the rate swings ±10 % with the room) and
bent by faults. Hence, on daily medians, with Huber loss (IRLS) so that a spike to 0 % or 100 %
moves nothing, and exponential recency weights (half-life 180 days) so that old history fades:

- a straight line, unless the data bend beyond noise. A bend is either a change of conditions,
  two straight lines meeting at a change point (the best of 30 days to 3 years back), extrapolated
  along the second, or wear-out, a parabola bending down; whichever explains the data better. A
  quadratic is not the default because extrapolated a year ahead it turns noise into large errors,
  and one bending up (the fade slowing down for good) is never extrapolated;
- the annual swing (sin and cos of the year) is fitted with the long-run trend (half-life 360
  days) once there are two years of history spread over the seasons, and taken out before the
  recent trend is fitted; else a short window mistakes the hot season's faster fade for a change
  of conditions. It is put back into the extrapolation, its uncertainty into the interval.

Replacement. A block swapped for a new one steps its SoH up, where ageing only ever brings it
down: the fit starts at the latest such step (``replacement_start``), so the old block's fade
never bends the new one's line, and a new block has no estimate until it has the history one
needs of its own.

Interval. The confidence band of the fitted trajectory (Huber sandwich covariance, widened for
serially correlated residuals, and for a recent rate that differs from the long-run one beyond
noise) is crossed with the end-of-life line: the lower band gives the early date, the upper band
the late one (Fieller's construction). A future change of conditions is outside any extrapolation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from statistics import NormalDist
from typing import Any

import numpy as np

from common.timeutil import from_unix, to_rfc3339, to_unix

END_OF_LIFE_PCT = 80.0  # IEEE 1188: replace at 80 % of rated capacity
SECONDS_PER_DAY = 86_400.0
DAYS_PER_YEAR = 365.2425
HUBER_K = 1.345  # 95 % efficiency under Gaussian noise
CURVATURE_T = 3.0  # |t| of a downward curvature before the trend may bend
HINGE_T = 4.0  # |t| of a change of rate at the best change point (chosen among many: stricter)
HINGE_KNOTS = -np.arange(30, 3 * 365 + 1, 15) / DAYS_PER_YEAR  # change points tried, τ (years)
HINGE_MIN_SIDE = 60 / DAYS_PER_YEAR  # a change point needs this much history on either side
SEASON_MIN_YEARS = 2.0  # fewer than two seasons cannot tell a swing from a trend
SEASON_MAX_CLUSTER = 0.5  # readings bunched in one part of the year cannot show a swing either
MAX_ITERATIONS = 20
STEP_PCT = 1e-3  # IRLS stops once no coefficient moves by more
NEGLIGIBLE_WEIGHT = 2.0**-10  # older days weigh under 0.1 % in all: left out of the fit
MIN_SCALE_PCT = 1e-3  # floor of the residual scale: a noiseless series still converges
# A replacement: SoH stepping up by this much over the median of the fortnight before, held by
# every one of the days after. Far beyond noise (a daily median of minute readings varies by
# hundredths of a point; a monitor's SoH estimate by a point or two; capacity is never gained
# back by ageing), and a day or three measured high (a glitch, a sensor reading 100 %) is not one.
REPLACEMENT_STEP_PCT = 5.0
REPLACEMENT_BEFORE_DAYS = 14
REPLACEMENT_CONFIRM_DAYS = 4


class RulStatus(StrEnum):
    FADING = "fading"  # the fit reaches end of life within the horizon: rul_days is a number
    OPEN_ENDED = "open_ended"  # flat, rising or too slow for the horizon: rul_days is None
    END_OF_LIFE = "end_of_life"  # the fit is at or below end of life now: rul_days is 0


@dataclass(frozen=True)
class RulEstimate:
    """One battery's remaining useful life, in days from ``computed_at``."""

    status: RulStatus
    rul_days: float | None
    rul_low_days: float | None  # early end of the interval; None: not within the horizon either
    rul_high_days: float | None  # late end; None: the optimistic band never reaches end of life
    interval: float  # the interval's coverage, 0.8 for 80 %
    predicted_eol_date: date | None
    soh_now_pct: float  # the fit's value now, not the last (noisy) reading
    fade_pct_per_year: float  # the trend's rate now, positive while fading
    n_points: int  # finite readings used
    n_days: int  # days with a reading (the fit sees one median a day)
    method: str  # huber-{linear|quadratic|hinge}[-seasonal]: the trend's shape, annual swing
    computed_at: datetime

    def to_json(self) -> dict[str, Any]:
        """The ``rul`` object of the battery detail (days to 0.1, dates ISO, times RFC 3339)."""

        def days(value: float | None) -> float | None:
            return None if value is None else round(value, 1)

        eol = self.predicted_eol_date
        return {
            "status": self.status.value,
            "rul_days": days(self.rul_days),
            "rul_low_days": days(self.rul_low_days),
            "rul_high_days": days(self.rul_high_days),
            "interval_pct": round(100 * self.interval),
            "predicted_eol_date": None if eol is None else eol.isoformat(),
            "soh_now_pct": round(self.soh_now_pct, 2),
            "fade_pct_per_year": round(self.fade_pct_per_year, 3),
            "n_points": self.n_points,
            "n_days": self.n_days,
            "method": self.method,
            "computed_at": to_rfc3339(self.computed_at),
        }


def unix_seconds(times: np.ndarray | list[Any]) -> np.ndarray:
    """Float Unix seconds from Unix seconds or ``datetime64`` values; NaT and None become NaN."""
    array = np.asarray(times)
    if np.issubdtype(array.dtype, np.datetime64):
        millis = array.astype("datetime64[ms]")
        seconds = millis.astype(np.int64) / 1000.0
        return np.where(np.isnat(millis), np.nan, seconds)
    return np.asarray(array, dtype=float)


def daily_medians(
    times: np.ndarray | list[Any], soh_pct: np.ndarray | list[Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Median SoH of each UTC day with a finite reading: (mean time of its readings, median).

    A monitor reports every minute; one robust number a day keeps the fit cheap and takes out
    single bad readings before the fit ever sees them.
    """
    t = unix_seconds(times)
    y = np.asarray(soh_pct, dtype=float)
    if t.shape != y.shape or t.ndim != 1:
        raise ValueError("times and soh_pct must be 1-D arrays of the same length")
    keep = np.isfinite(t) & np.isfinite(y)
    t, y = t[keep], y[keep]
    day = np.floor(t / SECONDS_PER_DAY).astype(np.int64)
    order = np.lexsort((y, day))
    t, y, day = t[order], y[order], day[order]
    if day.size == 0:
        return np.empty(0), np.empty(0)
    starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
    counts = np.diff(np.r_[starts, day.size])
    middle = 0.5 * (y[starts + (counts - 1) // 2] + y[starts + counts // 2])
    return np.add.reduceat(t, starts) / counts, middle


def replacement_start(
    soh_days: np.ndarray,
    *,
    step_pct: float = REPLACEMENT_STEP_PCT,
    before_days: int = REPLACEMENT_BEFORE_DAYS,
    confirm_days: int = REPLACEMENT_CONFIRM_DAYS,
) -> int:
    """Index of the first daily point of the block in place now: 0, or the first day of the
    latest step up (a replacement; see ``REPLACEMENT_STEP_PCT``), in ``soh_days`` (the daily
    medians in time order). A step needs ``confirm_days`` after it: the newest days, if high,
    are not one yet.
    """
    y = np.asarray(soh_days, dtype=float)
    n = y.size
    if n < confirm_days + 1:
        return 0
    held = np.lib.stride_tricks.sliding_window_view(y, confirm_days).min(axis=1)[1:]
    day = np.arange(1, n - confirm_days + 1)  # each day that might start a step ...
    floor = np.minimum.accumulate(y[: n - confirm_days])  # ... and the least before it:
    if n - confirm_days >= before_days:  # the median before can be no lower
        windows = np.lib.stride_tricks.sliding_window_view(y[: n - confirm_days], before_days)
        floor[before_days - 1 :] = windows.min(axis=1)
    maybe = day[held >= floor + step_pct]
    level = np.array([np.median(y[max(i - before_days, 0) : i]) for i in maybe])
    steps = maybe[held[maybe - 1] >= level + step_pct] if maybe.size else maybe
    if steps.size == 0:
        return 0
    start = int(steps[-1])  # the latest run of candidates: its first day is the step
    while start - 1 in steps:
        start -= 1
    return start


@dataclass(frozen=True)
class _Fit:
    beta: np.ndarray  # coefficients of the design's columns (τ in years from now; SoH in %)
    cov: np.ndarray
    scale: float = 0.0  # robust residual scale (%)


def _normal(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted normal equations (XᵀWX, XᵀWy): at most five columns, τ in years keeps them tame."""
    xw = x * weights[:, None]
    return xw.T @ x, xw.T @ y


def _solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve the normal equations; a degenerate history (few, bunched days) gets least norm."""
    try:
        return np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(a, b, rcond=None)[0]


def _huber_fit(x: np.ndarray, y: np.ndarray, recency: np.ndarray) -> _Fit:
    """Huber M-estimate by IRLS; sandwich covariance widened for serial correlation.

    The residual scale is the MAD over the last two half-lives, where the fit matters most.
    """
    recent = recency >= 0.25 * recency.max()
    middle = int(recent.sum()) // 2
    beta = _solve(*_normal(x, y, recency))
    weights = recency
    for _ in range(MAX_ITERATIONS):
        absolute = np.abs(y - x @ beta)
        scale = max(1.4826 * float(np.partition(absolute[recent], middle)[middle]), MIN_SCALE_PCT)
        weights = recency * np.minimum(1.0, HUBER_K * scale / np.maximum(absolute, 1e-12))
        new = _solve(*_normal(x, y, weights))
        step = float(np.max(np.abs(new - beta)))
        beta = new
        if step < STEP_PCT:
            break
    residual = y - x @ beta
    inside = np.abs(residual) <= HUBER_K * scale  # where ψ' = 1: the sandwich's bread
    inverse = np.linalg.pinv(_normal(x, y, recency * inside)[0])
    score = x * (weights * residual)[:, None]
    n_eff = recency.sum() ** 2 / (recency**2).sum()
    correction = n_eff / max(n_eff - x.shape[1], 1.0) * _serial_inflation(residual, recency)
    return _Fit(beta, inverse @ (score.T @ score) @ inverse * correction, scale)


def _serial_inflation(residual: np.ndarray, recency: np.ndarray) -> float:
    """(1 + ρ)/(1 − ρ) for a lag-1 autocorrelation ρ > 0 of the residuals (AR(1) variance)."""
    if residual.size < 3:
        return 1.0
    r = residual - np.average(residual, weights=recency)
    pair = np.sqrt(recency[1:] * recency[:-1])
    rho = np.sum(pair * r[1:] * r[:-1]) / max(float(np.sum(recency * r * r)), 1e-300)
    rho = min(max(rho, 0.0), 0.9)
    return (1.0 + rho) / (1.0 - rho)


_NO_SEASON = _Fit(np.zeros(2), np.zeros((2, 2)))


def _annual(tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sin and cos of the year at ``tau`` (years): the season's two regressors."""
    return np.sin(2.0 * np.pi * tau), np.cos(2.0 * np.pi * tau)


def _recency(tau: np.ndarray, half_life_years: float) -> tuple[np.ndarray, np.ndarray]:
    """(mask of the days that weigh anything, their exponential recency weights)."""
    recency = np.exp2(tau / half_life_years)
    used = recency >= recency[-1] * NEGLIGIBLE_WEIGHT
    return used, recency[used]


def _huber_loss(residual: np.ndarray, recency: np.ndarray, scale: float) -> float:
    """Weighted Huber loss at a common scale: what the candidate shapes are compared by."""
    z = np.abs(residual) / scale
    return float(recency @ np.where(z <= HUBER_K, 0.5 * z * z, HUBER_K * (z - 0.5 * HUBER_K)))


def _best_knot(tau: np.ndarray, y: np.ndarray, weights: np.ndarray) -> float | None:
    """The change point (τ) whose two-line fit leaves the least weighted squared residual.

    With h = min(τ − k, 0), every candidate's normal equations are prefix sums over the days
    before k, so all candidates cost one pass; ``tau`` is sorted.
    """
    inside = (tau[0] + HINGE_MIN_SIDE < HINGE_KNOTS) & (tau[-1] - HINGE_MIN_SIDE > HINGE_KNOTS)
    knots = HINGE_KNOTS[inside]
    if knots.size == 0:
        return None
    w_tau, w_y = weights * tau, weights * y
    sums = np.cumsum(np.stack([weights, w_tau, w_tau * tau, w_y, w_y * tau]), axis=1)
    before = np.concatenate([np.zeros((5, 1)), sums], axis=1)[:, np.searchsorted(tau, knots)]
    w, wt, wtt, wy, wty = before
    a = np.empty((knots.size, 3, 3))
    a[:, 0, 0], a[:, 0, 1], a[:, 1, 1] = sums[0, -1], sums[1, -1], sums[2, -1]
    a[:, 0, 2] = wt - knots * w
    a[:, 1, 2] = wtt - knots * wt
    a[:, 2, 2] = wtt - 2.0 * knots * wt + knots * knots * w
    a[:, 1, 0], a[:, 2, 0], a[:, 2, 1] = a[:, 0, 1], a[:, 0, 2], a[:, 1, 2]
    b = np.column_stack([np.full(knots.size, sums[3, -1]), np.full(knots.size, sums[4, -1])])
    b = np.column_stack([b, wty - knots * wy])
    beta = (np.linalg.pinv(a) @ b[..., None])[..., 0]
    explained = np.einsum("kj,kj->k", beta, b)  # SSE = Σ w y² − βᵀb at each solution
    return float(knots[int(np.argmax(explained))])


def _trend(
    tau: np.ndarray, y: np.ndarray, half_life_years: float
) -> tuple[_Fit, str, float | None]:
    """The recent trend as β and covariance of (1, τ, τ²), and its shape.

    A straight line unless the data bend beyond noise; a bend is either a change of conditions
    (two straight lines meeting at a change point, extrapolated along the second) or wear-out
    (a parabola bending down), whichever fits the better. A parabola bending up is never
    extrapolated.
    """
    used, recency = _recency(tau, half_life_years)
    tau, y = tau[used], y[used]
    ones = np.ones_like(tau)
    linear = _huber_fit(np.column_stack([ones, tau]), y, recency)
    best = (_Fit(np.r_[linear.beta, 0.0], np.pad(linear.cov, (0, 1))), "linear", None)
    lowest = _huber_loss(y - linear.beta[0] - linear.beta[1] * tau, recency, linear.scale)
    x = np.column_stack([ones, tau, tau * tau])
    quadratic = _huber_fit(x, y, recency)
    curvature, curvature_var = quadratic.beta[2], quadratic.cov[2, 2]
    if curvature < 0 and curvature * curvature > CURVATURE_T**2 * curvature_var:
        best = (quadratic, "quadratic", None)
        lowest = _huber_loss(y - x @ quadratic.beta, recency, linear.scale)
    residual = np.abs(y - linear.beta[0] - linear.beta[1] * tau)
    robust = recency * np.minimum(1.0, HUBER_K * linear.scale / np.maximum(residual, 1e-12))
    knot = _best_knot(tau, y, robust)
    if knot is not None:
        x = np.column_stack([ones, tau, np.minimum(tau - knot, 0.0)])
        hinge = _huber_fit(x, y, recency)
        bend, bend_var = hinge.beta[2], hinge.cov[2, 2]
        loss = _huber_loss(y - x @ hinge.beta, recency, linear.scale)
        if bend * bend > HINGE_T**2 * bend_var and loss < lowest:
            after = _Fit(np.r_[hinge.beta[:2], 0.0], np.pad(hinge.cov[:2, :2], (0, 1)))
            best = (after, "hinge", knot)
    return best


@dataclass(frozen=True)
class _Trajectory:
    """Trend (β and covariance of 1, τ, τ²) plus the annual swing (sin, cos amplitudes)."""

    trend: _Fit
    season: _Fit
    method: str

    def band(self, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(level, standard error) at ``tau``; the trend's variance is a quartic in τ."""
        sin, cos = _annual(tau)
        (s, c), ((ss, sc), (_, cc)) = self.season.beta, self.season.cov
        level = np.polyval(self.trend.beta[::-1], tau) + s * sin + c * cos
        flipped = self.trend.cov[::-1]  # cov[i, j] summed over i + j = each power of τ
        variance = np.polyval([np.trace(flipped, offset=k) for k in range(2, -3, -1)], tau)
        variance += ss * sin * sin + 2.0 * sc * sin * cos + cc * cos * cos
        return level, np.sqrt(np.maximum(variance, 0.0))


def _trajectory(tau: np.ndarray, y: np.ndarray, half_life_years: float) -> _Trajectory:
    """Recent trend, then season and long-run rate on a window twice as long, then the trend anew.

    The long-run fit carries the trend's change point, if any, so that a fault's bend is not
    mistaken for a season.

    The rate's variance gains whatever the chosen rate differs from the long-run one beyond the
    noise of both: a fade that has been changing pace is less sure to keep its present one.
    """
    phases = np.exp(2j * np.pi * tau)
    seasonal = bool(tau[0] <= -SEASON_MIN_YEARS and abs(phases.mean()) < SEASON_MAX_CLUSTER)
    fit, shape, knot = _trend(tau, y, half_life_years)
    used, recency = _recency(tau, 2.0 * half_life_years)
    t = tau[used]
    x = np.vander(t, 3, increasing=True)
    if knot is not None:
        x = np.column_stack([x, np.minimum(t - knot, 0.0)])
    if seasonal:
        x = np.column_stack([x, *_annual(t)])
    long_run = _huber_fit(x, y[used], recency)
    season = _Fit(long_run.beta[-2:], long_run.cov[-2:, -2:]) if seasonal else _NO_SEASON
    if seasonal:
        sin, cos = _annual(tau)
        fit, shape, knot = _trend(
            tau, y - season.beta[0] * sin - season.beta[1] * cos, half_life_years
        )
    change = (fit.beta[1] - long_run.beta[1]) ** 2 - fit.cov[1, 1] - long_run.cov[1, 1]
    cov = fit.cov.copy()
    cov[1, 1] += max(change, 0.0)
    method = f"huber-{shape}" + "-seasonal" * seasonal
    return _Trajectory(_Fit(fit.beta, cov), season, method)


def _first_crossing(level: np.ndarray, eol_pct: float) -> float | None:
    """Days until ``level`` (one value per day from now) first falls to ``eol_pct``."""
    below = level <= eol_pct
    if not below.any():
        return None
    j = int(below.argmax())
    if j == 0:
        return 0.0
    drop = level[j - 1] - level[j]
    return float(j - 1 + (level[j - 1] - eol_pct) / drop)  # a plain float: JSON and SQL take it


def estimate_rul(
    times: np.ndarray | list[Any],
    soh_pct: np.ndarray | list[Any],
    now: float | datetime | None = None,
    *,
    eol_pct: float = END_OF_LIFE_PCT,
    half_life_days: float = 180.0,
    interval: float = 0.80,
    min_days: int = 30,
    min_span_days: float = 90.0,
    horizon_days: int = 7305,
) -> RulEstimate | None:
    """Fit the SoH history and extrapolate it to ``eol_pct``; None with too little history.

    ``times`` are Unix seconds (float) or ``datetime64``; ``soh_pct`` in %, where NaN and None are
    skipped. ``now`` (Unix seconds or an aware datetime) defaults to the last reading; readings
    after it are ignored and RUL counts from it, so a battery that stopped reporting keeps ageing.
    Too little history: fewer than ``min_days`` days with a reading, or under ``min_span_days``
    from the first to the last, counted from the latest replacement (``replacement_start``).
    A trend that does not reach ``eol_pct`` within ``horizon_days`` (20 years; flat or rising
    included) is open-ended: status ``open_ended``, ``rul_days`` None.
    """
    if not 0.0 < interval < 1.0:
        raise ValueError(f"interval must be between 0 and 1, got {interval}")
    t = unix_seconds(times)
    y = np.asarray(soh_pct, dtype=float)
    if t.shape != y.shape or t.ndim != 1:
        raise ValueError("times and soh_pct must be 1-D arrays of the same length")
    finite = np.isfinite(t) & np.isfinite(y)
    if now is None:
        if not finite.any():
            return None
        now_s = float(t[finite].max())
    else:
        now_s = to_unix(now) if isinstance(now, datetime) else float(now)
    finite &= t <= now_s
    days_t, days_y = daily_medians(t[finite], y[finite])
    first = replacement_start(days_y)
    if first:
        finite &= t >= days_t[first] - (days_t[first] % SECONDS_PER_DAY)
        days_t, days_y = days_t[first:], days_y[first:]
    if days_t.size < min_days or days_t[-1] - days_t[0] < min_span_days * SECONDS_PER_DAY:
        return None
    tau = (days_t - now_s) / (SECONDS_PER_DAY * DAYS_PER_YEAR)
    fit = _trajectory(tau, days_y, half_life_days / DAYS_PER_YEAR)
    ahead = np.arange(horizon_days + 1) / DAYS_PER_YEAR
    level, sd = fit.band(ahead)
    spread = NormalDist().inv_cdf(0.5 + interval / 2.0) * sd
    rul = _first_crossing(level, eol_pct)
    if rul is None:
        status, eol_date = RulStatus.OPEN_ENDED, None
    else:
        status = RulStatus.END_OF_LIFE if rul == 0.0 else RulStatus.FADING
        eol_date = from_unix(now_s + rul * SECONDS_PER_DAY).date()
    return RulEstimate(
        status=status,
        rul_days=rul,
        rul_low_days=_first_crossing(level - spread, eol_pct),
        rul_high_days=_first_crossing(level + spread, eol_pct),
        interval=interval,
        predicted_eol_date=eol_date,
        soh_now_pct=float(level[0]),
        fade_pct_per_year=float(-fit.trend.beta[1]),
        n_points=int(finite.sum()),
        n_days=int(days_t.size),
        method=fit.method,
        computed_at=from_unix(now_s),
    )
