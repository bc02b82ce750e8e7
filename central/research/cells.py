"""What a parsed ``.mat`` research file yields, whatever its layout.

A parser hands the store one :class:`ParsedCell` per cell in the file; the cell's cycles come
lazily from :meth:`ParsedCell.cycles`, so that a large HDF5 file is read one cycle at a time
while the file stays open (never the whole file in memory).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

# An absent array (no current in a batch file, say): one shared read-only empty array.
EMPTY = np.empty(0)
EMPTY.flags.writeable = False


class Layout(StrEnum):
    """The structures recognised, each by its fields rather than by the file's name."""

    NASA_PCOE = "nasa_pcoe"
    SEVERSON_BATCH = "severson_batch"
    GENERIC = "generic"


@dataclass(frozen=True)
class ParsedCycle:
    """One cycle as the file gives it; arrays are 1-D float64 (empty when the file has none).

    ``capacity_ah`` is the discharge capacity the SoH comes from: the file's own figure where it is
    sane, else coulomb counting of the discharge current, else ``None``. ``qdlin`` is the discharge
    capacity on the layout's fixed voltage grid (``ParsedCell.voltage_grid``) where the file has it;
    early-life prediction needs it.
    """

    index: int
    voltage: np.ndarray
    current: np.ndarray
    temperature: np.ndarray
    time_s: np.ndarray
    capacity_ah: float | None
    ambient_temperature_c: float | None = None
    qdlin: np.ndarray | None = None


@dataclass(frozen=True)
class ParsedCell:
    """One cell of a file. ``cycles`` re-reads lazily each time it is called (file must be open)."""

    layout: Layout
    label: str
    cycle_count: int
    cycles: Callable[[], Iterator[ParsedCycle]]
    nominal_capacity_ah: float | None = None
    chemistry: str | None = None
    manufacturer: str | None = None
    # The cycle life the file itself states (Severson's ``cycle_life``), at its own end-of-life
    # threshold ``stated_life_threshold``; ``None`` where the file states none.
    stated_cycle_life: int | None = None
    stated_life_threshold: float | None = None
    voltage_grid: np.ndarray | None = None
    notes: tuple[str, ...] = field(default=())


class InvalidMatFileError(ValueError):
    """The upload is not a ``.mat`` file this system can use; ``issues`` become the 400 details."""

    def __init__(self, message: str, issues: list[str]) -> None:
        super().__init__(message)
        self.message = message
        self.issues = issues
