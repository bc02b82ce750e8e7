"""What a site's battery monitors would have logged over a past interval, from the twin.

A fleet system meets a site with years of history behind it (a monitor's own log, an import from
the previous system); the twin, a pure function of time, can say what that history was. Readings
come at a fixed step, one row per (time, block), in time order: the shape a store takes in bulk.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from simulators.twin.site import SiteTwin

_CHUNK_TIMES = 256  # times computed together: bounds memory whatever the interval


class HistoryRow(NamedTuple):
    """One block's reading at simulated time ``t`` (Unix seconds); None where the sensor gave
    nothing. ``current`` is the block's string current, as the monitors report it."""

    battery_id: str
    t: float
    voltage: float | None
    current: float | None
    temperature: float | None
    internal_resistance: float | None
    soc_pct: float | None
    soh_pct: float | None


def history_times(start: float, end: float, step_s: float) -> np.ndarray:
    """``start``, ``start + step_s``, ... before ``end`` (Unix seconds)."""
    if not (math.isfinite(start) and math.isfinite(end) and math.isfinite(step_s)):
        raise ValueError("start, end and step_s must be finite")
    if step_s <= 0:
        raise ValueError(f"step_s must be > 0, got {step_s}")
    count = max(math.ceil((end - start) / step_s), 0)
    times = start + step_s * np.arange(count)
    return times[times < end]


def site_history(twin: SiteTwin, start: float, end: float, step_s: float) -> Iterator[HistoryRow]:
    """Every block's readings at each step of [start, end), noise and faults included, as the
    twin computes them (faults injected with a start in the past shape this history)."""
    layout = twin.layout
    ids = [
        layout.battery_id(k, b)
        for k in range(layout.string_count)
        for b in range(layout.blocks_per_string)
    ]
    blocks = layout.blocks_per_string
    times = history_times(start, end, step_s)
    for lo in range(0, len(times), _CHUNK_TIMES):
        chunk = times[lo : lo + _CHUNK_TIMES]
        out = twin.readings(chunk)
        current = np.repeat(out["string_current"], blocks, axis=1)
        columns = [
            out["voltage"].reshape(len(chunk), -1),
            current,
            out["temperature"].reshape(len(chunk), -1),
            out["internal_resistance"].reshape(len(chunk), -1),
            out["soc_pct"].reshape(len(chunk), -1),
            out["soh_pct"].reshape(len(chunk), -1),
        ]
        values = np.stack(columns, axis=-1)  # (times, blocks, 6)
        # NaN (no reading) to None for the whole chunk at once: bulk writers call this per row.
        cells = np.where(np.isnan(values), None, values.astype(object)).tolist()
        for i, t in enumerate(chunk.tolist()):
            for j, battery_id in enumerate(ids):
                yield HistoryRow(battery_id, t, *cells[i][j])
