"""The measurements a reading carries: their units and the physically possible range.

A value outside its range cannot come from a working sensor on a 12 V VRLA block; the agent turns
it into ``null`` and the message schema refuses it, so both sides judge by the same table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Measurement:
    name: str
    unit: str
    minimum: float
    maximum: float

    def accepts(self, value: float) -> bool:
        return math.isfinite(value) and self.minimum <= value <= self.maximum


MEASUREMENTS: dict[str, Measurement] = {
    m.name: m
    for m in (
        Measurement("voltage", "V", 0.0, 20.0),
        Measurement("current", "A", -2000.0, 2000.0),
        Measurement("temperature", "°C", -40.0, 120.0),
        Measurement("internal_resistance", "Ω", 0.0, 1.0),
        Measurement("soc_pct", "%", 0.0, 100.0),
        Measurement("soh_pct", "%", 0.0, 150.0),
    )
}


def checked(name: str, value: float | None) -> float | None:
    """``value`` if it is a plausible reading of ``name``, else None (never a made-up number)."""
    if value is None:
        return None
    return value if MEASUREMENTS[name].accepts(float(value)) else None
