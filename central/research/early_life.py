"""Early-life prediction of cycle life from the first 100 cycles (Severson et al. 2019).

The features describe how the discharge curve moved between cycles 10 and 100
(ΔQ(V) = Q100(V) − Q10(V)) and how the capacity behaved over those cycles; a linear model on them
predicts log10 of the cycle life. The coefficients come from ``early_life_model.json``, written by
``scripts/fit_early_life.py`` from the paper's training cells, so prediction needs numpy only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

FIRST_CYCLE = 2  # the batch files' first cycle with a discharge capacity
CURVE_CYCLES = (10, 100)
LAST_CYCLE = CURVE_CYCLES[1]
FADE_WINDOW = range(91, 101)
# A line through fewer than half of the window's capacities is mostly measurement noise.
MIN_FADE_POINTS = 5
MODEL_RESOURCE = "early_life_model.json"

LOG_MIN = "log10_abs_min_delta_q"
LOG_VARIANCE = "log10_var_delta_q"
LOG_SKEWNESS = "log10_abs_skew_delta_q"
LOG_KURTOSIS = "log10_abs_kurtosis_delta_q"
CAPACITY_2 = "capacity_cycle_2_ah"
CAPACITY_GAIN = "capacity_max_minus_cycle_2_ah"
FADE_SLOPE = "fade_slope_91_100_ah_per_cycle"
FADE_INTERCEPT = "fade_intercept_91_100_ah"


class EarlyLifeInputError(ValueError):
    """The cell's early cycles cannot give the features; the API answers 422 with the message."""


class NotEnoughCycles(EarlyLifeInputError):  # noqa: N818 (the name the API maps)
    """The data stop before the cycles the features need."""


class MissingCurve(EarlyLifeInputError):  # noqa: N818 (the name the API maps)
    """A needed cycle is there but lacks its discharge curve or capacity."""


@dataclass(frozen=True)
class Prediction:
    """A predicted cycle life with what it rests on; ``interval`` is ``(low, high)`` in cycles."""

    cycle_life: float
    model: str
    features: dict[str, float]
    interval: tuple[float, float]
    interval_level: float


def features(
    qdlin_by_cycle: Mapping[int, np.ndarray],
    capacity_by_cycle: Mapping[int, float],
    voltage_grid: np.ndarray,
) -> dict[str, float]:
    """Severson's features from cycles 2–100; cycles beyond 100 are ignored (early life only).

    ``qdlin_by_cycle`` maps cycle numbers to the discharge capacity on ``voltage_grid``;
    ``capacity_by_cycle`` to plausible discharge capacities (implausible readings left out). The
    fade-line features over cycles 91–100 are present only when enough of those capacities are.
    """
    _require_cycles(qdlin_by_cycle, capacity_by_cycle)
    grid = np.asarray(voltage_grid, dtype=float)
    if grid.ndim != 1 or grid.size < 3 or not np.all(np.isfinite(grid)):
        raise MissingCurve(
            "no discharge capacity curves on a voltage grid (the voltage grid should be a finite "
            "1-D array of at least 3 points)"
        )
    q10, q100 = (_curve(qdlin_by_cycle, cycle, grid.size) for cycle in CURVE_CYCLES)
    early = {
        cycle: float(capacity)
        for cycle, capacity in capacity_by_cycle.items()
        if FIRST_CYCLE <= cycle <= LAST_CYCLE and math.isfinite(capacity)
    }
    if FIRST_CYCLE not in early:
        raise MissingCurve(f"cycle {FIRST_CYCLE} has no plausible discharge capacity")
    values = {**_delta_q_features(q100 - q10), **_capacity_features(early)}
    degenerate = sorted(name for name, value in values.items() if not math.isfinite(value))
    if degenerate:
        raise EarlyLifeInputError(
            f"ΔQ(V) between cycles 10 and 100 is degenerate (no finite {', '.join(degenerate)})"
        )
    return values


def _require_cycles(
    qdlin_by_cycle: Mapping[int, np.ndarray], capacity_by_cycle: Mapping[int, float]
) -> None:
    """Tell a cell that is too young (422: wait) from one whose data lack a curve (fix the file)."""
    last = max([*qdlin_by_cycle, *capacity_by_cycle], default=0)
    if last < LAST_CYCLE:
        reached = f"the data end at cycle {last}" if last else "the data hold no cycles"
        raise NotEnoughCycles(
            f"early-life prediction needs cycles {FIRST_CYCLE} to {LAST_CYCLE}; {reached}"
        )


def _curve(qdlin_by_cycle: Mapping[int, np.ndarray], cycle: int, size: int) -> np.ndarray:
    curve = qdlin_by_cycle.get(cycle)
    if curve is None or np.size(curve) == 0:
        raise MissingCurve(f"cycle {cycle} has no discharge curve on the voltage grid (Qdlin)")
    values = np.asarray(curve, dtype=float)
    if values.shape != (size,):
        raise MissingCurve(
            f"cycle {cycle}'s discharge curve has shape {values.shape}, "
            f"the voltage grid {size} points"
        )
    if not np.all(np.isfinite(values)):
        raise MissingCurve(f"cycle {cycle}'s discharge curve holds non-finite values")
    return values


def _delta_q_features(delta_q: np.ndarray) -> dict[str, float]:
    """Moments as MATLAB's defaults give them (var with n−1; biased skewness, Pearson kurtosis),
    which is what the paper's features were computed with."""
    centred = delta_q - delta_q.mean()
    m2 = float(np.mean(centred**2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            LOG_MIN: float(np.log10(abs(delta_q.min()))),
            LOG_VARIANCE: float(np.log10(np.var(delta_q, ddof=1))),
            LOG_SKEWNESS: float(np.log10(abs(np.mean(centred**3) / m2**1.5))),
            LOG_KURTOSIS: float(np.log10(abs(np.mean(centred**4) / m2**2))),
        }


def _capacity_features(early: Mapping[int, float]) -> dict[str, float]:
    values = {
        CAPACITY_2: early[FIRST_CYCLE],
        CAPACITY_GAIN: max(early.values()) - early[FIRST_CYCLE],
    }
    window = sorted(cycle for cycle in early if cycle in FADE_WINDOW)
    if len(window) >= MIN_FADE_POINTS:
        slope, intercept = np.polyfit(window, [early[cycle] for cycle in window], 1)
        values[FADE_SLOPE] = float(slope)
        values[FADE_INTERCEPT] = float(intercept)
    return values


@dataclass(frozen=True)
class LinearModel:
    """A linear model on standardised features predicting log10 cycle life."""

    name: str
    feature_names: tuple[str, ...]
    means: np.ndarray
    scales: np.ndarray
    coefficients: np.ndarray
    intercept: float
    log10_interval_half_width: float
    interval_level: float

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> LinearModel:
        if document["target"] != "log10_cycle_life":
            raise ValueError(f"unsupported target transform {document['target']!r}")
        interval = document["interval"]
        return cls(
            name=document["model"],
            feature_names=tuple(document["feature_names"]),
            means=np.asarray(document["feature_means"], dtype=float),
            scales=np.asarray(document["feature_scales"], dtype=float),
            coefficients=np.asarray(document["coefficients"], dtype=float),
            intercept=float(document["intercept"]),
            log10_interval_half_width=float(interval["log10_half_width"]),
            interval_level=float(interval["level"]),
        )

    def predict(self, values: Mapping[str, float]) -> Prediction:
        missing = [name for name in self.feature_names if name not in values]
        if missing:
            raise MissingCurve(
                f"the {self.name} model needs {', '.join(missing)}, which these cycles do not "
                f"give (capacities of cycles {FADE_WINDOW.start}–{FADE_WINDOW.stop - 1})"
            )
        x = np.array([values[name] for name in self.feature_names], dtype=float)
        log_life = self.intercept + float(self.coefficients @ ((x - self.means) / self.scales))
        half = self.log10_interval_half_width
        return Prediction(
            cycle_life=10.0**log_life,
            model=self.name,
            features={name: float(values[name]) for name in self.feature_names},
            interval=(10.0 ** (log_life - half), 10.0 ** (log_life + half)),
            interval_level=self.interval_level,
        )


@cache
def shipped_model() -> LinearModel:
    """The model fitted by ``scripts/fit_early_life.py``; read once per process."""
    text = resources.files(__package__).joinpath(MODEL_RESOURCE).read_text(encoding="utf-8")
    return LinearModel.from_dict(json.loads(text))


def predict(values: Mapping[str, float]) -> Prediction:
    """Cycle life predicted by the shipped model from :func:`features`' output."""
    return shipped_model().predict(values)
