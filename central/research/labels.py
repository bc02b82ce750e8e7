"""SoH and RUL labels of research cycles, and the capacity figure they rest on (pure, no I/O).

Lab files are messy: a capacity field can be empty, zero or physically impossible, and a
discharge can be a handful of samples. These rules decide once, for every layout, which numbers
count; everything else becomes ``None`` rather than a misleading SoH.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# A cell never delivers much more than its rating: above this a figure is a logging error
# (NASA B0050 states 2.64 Ah for a 2.0 Ah cell).
MAX_CAPACITY_OVER_NOMINAL = 1.25
# Below this fraction of nominal the run did not discharge the cell: no capacity was measured.
MIN_CAPACITY_OVER_NOMINAL = 0.01
# Coulomb counting over fewer samples than this is no measurement (NASA has 3-sample runs).
MIN_COULOMB_SAMPLES = 10


def plausible_capacity(capacity_ah: float | None, nominal_ah: float | None) -> float | None:
    """The capacity if a cell could have delivered it, else ``None``.

    Without a nominal capacity only finiteness and sign can be judged.
    """
    if capacity_ah is None or not math.isfinite(capacity_ah) or capacity_ah <= 0:
        return None
    if nominal_ah is not None and not (
        MIN_CAPACITY_OVER_NOMINAL * nominal_ah
        <= capacity_ah
        <= MAX_CAPACITY_OVER_NOMINAL * nominal_ah
    ):
        return None
    return float(capacity_ah)


def coulomb_count_ah(current_a: np.ndarray, time_s: np.ndarray) -> float | None:
    """Charge moved during a run (trapezoid of |I| over t), or ``None`` where it cannot be trusted.

    Untrustworthy: too few samples, arrays of different lengths, non-finite values, or a clock
    that runs backwards.
    """
    if current_a.size < MIN_COULOMB_SAMPLES or current_a.shape != time_s.shape:
        return None
    if not (np.all(np.isfinite(current_a)) and np.all(np.isfinite(time_s))):
        return None
    if np.any(np.diff(time_s) < 0):
        return None
    return float(np.trapezoid(np.abs(current_a), time_s)) / 3600.0


def discharge_capacity(
    stated_ah: float | None,
    current_a: np.ndarray,
    time_s: np.ndarray,
    nominal_ah: float | None,
) -> float | None:
    """The file's own capacity where plausible, else coulomb counting where plausible, else None."""
    stated = plausible_capacity(stated_ah, nominal_ah)
    if stated is not None:
        return stated
    return plausible_capacity(coulomb_count_ah(current_a, time_s), nominal_ah)


def state_of_health(capacity_ah: float | None, nominal_ah: float | None) -> float | None:
    """Capacity as a fraction of nominal (0–1 for a healthy reading); ``None`` without either."""
    if capacity_ah is None or nominal_ah is None or nominal_ah <= 0:
        return None
    return capacity_ah / nominal_ah


def rul_labels(
    cycle_indices: Sequence[int],
    soh: Sequence[float | None],
    threshold: float,
    stated_cycle_life: int | None = None,
    stated_threshold: float | None = None,
) -> list[int | None]:
    """Cycles left until SoH first falls below ``threshold``, per cycle.

    End of life is the first cycle (in the given order, skipping ``None`` SoH) whose SoH is
    below the threshold; a cycle's label is that cycle's index minus its own, so the crossing
    cycle and every later one get 0. Where the data never crosses but the file states its own
    cycle life at the same threshold (Severson stores 100 cycles of cells that live 150–2300),
    the label counts down to that stated life instead. Otherwise the future is unknown: ``None``.
    """
    if len(cycle_indices) != len(soh):
        raise ValueError(f"{len(cycle_indices)} cycle indices for {len(soh)} SoH values")
    end_of_life = next(
        (
            index
            for index, value in zip(cycle_indices, soh, strict=True)
            if value is not None and value < threshold
        ),
        None,
    )
    if (
        end_of_life is None
        and stated_cycle_life is not None
        and stated_threshold is not None
        and math.isclose(stated_threshold, threshold)
    ):
        end_of_life = stated_cycle_life
    if end_of_life is None:
        return [None] * len(cycle_indices)
    return [max(end_of_life - index, 0) for index in cycle_indices]
