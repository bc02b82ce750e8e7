"""MIT–Stanford–Toyota batch files (Severson et al., Nature Energy 2019): one struct array, one
element per A123 LFP cell, each with its own stated cycle life.

Recognised by structure: a struct array with fields ``summary``, ``cycles`` and ``cycle_life``
(MATLAB names it ``batch``). A cycle is the file's own cycle number from ``summary.cycle``; its
capacity is ``summary.QDischarge``; ``cycles(k).Qdlin`` (cycle k's discharge capacity on the
``Vdlin`` voltage grid) is what early-life prediction uses. The files carry no raw V/I/T, so a
cycle's voltage is the grid and its other arrays are empty. A cell's cycles are read one
``Qdlin`` at a time while the file is open.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from central.research.cells import EMPTY, InvalidMatFileError, Layout, ParsedCell, ParsedCycle
from central.research.labels import plausible_capacity
from central.research.matfile import BAD_CONTENTS, Kind, MatNode

LAYOUT = Layout.SEVERSON_BATCH
EXPECTED = (
    "Severson batch: a struct array (MATLAB's 'batch') with fields summary (cycle, QDischarge), "
    "cycles (Qdlin), cycle_life, Vdlin"
)
NOMINAL_CAPACITY_AH = 1.1  # A123 APR18650M1A
CHEMISTRY = "LFP"
MANUFACTURER = "A123"
LIFE_THRESHOLD = 0.8  # the paper's end of life: 0.88 Ah
_REQUIRED = frozenset({"summary", "cycles", "cycle_life"})


def recognise(variables: Mapping[str, MatNode]) -> list[str]:
    """Names of the batch struct arrays among the file's variables."""
    return [
        name
        for name, node in variables.items()
        if node.kind is Kind.STRUCT and set(node.fields()) >= _REQUIRED
    ]


def read_cells(variables: Mapping[str, MatNode], names: list[str]) -> list[ParsedCell]:
    """One cell per element of each batch; per-cell metadata now, cycles lazily."""
    return [
        _cell(variables[name], index) for name in names for index in range(variables[name].size)
    ]


def _text(batch: MatNode, name: str, index: int) -> str:
    if name not in batch.fields():
        return ""
    node = batch.field(name, index)
    return node.text().strip() if node.kind is Kind.CHAR else ""


def _cell(batch: MatNode, index: int) -> ParsedCell:
    barcode = _text(batch, "barcode", index)
    policy = _text(batch, "policy_readable", index)
    summary = batch.field("summary", index)
    cycle_numbers = _cycle_numbers(summary)
    capacities = summary.field("QDischarge").numbers()
    if capacities.size != cycle_numbers.size:
        counts = f"{capacities.size} values for {cycle_numbers.size} cycles"
        raise InvalidMatFileError(BAD_CONTENTS, [f"{summary.name}.QDischarge has {counts}"])
    grid = batch.field("Vdlin", index).numbers() if "Vdlin" in batch.fields() else EMPTY
    grid.flags.writeable = False  # shared by every cycle of the cell
    per_cycle = batch.field("cycles", index)

    def cycles() -> Iterator[ParsedCycle]:
        for number, capacity in zip(cycle_numbers.tolist(), capacities.tolist(), strict=True):
            yield ParsedCycle(
                index=int(number),
                voltage=grid,
                current=EMPTY,
                temperature=EMPTY,
                time_s=EMPTY,
                capacity_ah=plausible_capacity(capacity, NOMINAL_CAPACITY_AH),
                qdlin=_qdlin(per_cycle, int(number), grid.size),
            )

    return ParsedCell(
        layout=LAYOUT,
        label=f"{barcode or policy or batch.name} #{index + 1}",
        cycle_count=int(cycle_numbers.size),
        cycles=cycles,
        nominal_capacity_ah=NOMINAL_CAPACITY_AH,
        chemistry=CHEMISTRY,
        manufacturer=MANUFACTURER,
        stated_cycle_life=_stated_life(batch.field("cycle_life", index).scalar()),
        stated_life_threshold=LIFE_THRESHOLD,
        voltage_grid=grid if grid.size else None,
        notes=(f"charging policy {policy}",) if policy else (),
    )


def _stated_life(life: float | None) -> int | None:
    """The file's cycle life in whole cycles; NaN (a cell still cycling) states none."""
    return round(life) if life is not None and np.isfinite(life) and life >= 1 else None


def _cycle_numbers(summary: MatNode) -> np.ndarray:
    """The file's cycle numbers: whole, positive and increasing, or the file is refused."""
    if summary.kind is not Kind.STRUCT or not {"cycle", "QDischarge"} <= set(summary.fields()):
        raise InvalidMatFileError(
            BAD_CONTENTS, [f"{summary.name} should be a struct with fields cycle and QDischarge"]
        )
    numbers = summary.field("cycle").numbers()
    if not (
        np.all(np.isfinite(numbers))
        and np.all(numbers == np.round(numbers))
        and np.all(numbers >= 1)
        and np.all(np.diff(numbers) > 0)
    ):
        raise InvalidMatFileError(
            BAD_CONTENTS, [f"{summary.name}.cycle should hold increasing whole cycle numbers"]
        )
    return numbers


def _qdlin(per_cycle: MatNode, number: int, grid_size: int) -> np.ndarray | None:
    """``cycles(number).Qdlin`` (MATLAB's cycles(k) is cycle k), or ``None`` where it is empty."""
    if per_cycle.kind is not Kind.STRUCT or "Qdlin" not in per_cycle.fields():
        return None
    if number > per_cycle.size:
        return None
    node = per_cycle.field("Qdlin", number - 1)
    values = node.numbers() if node.size else EMPTY
    if not values.size:
        return None
    if grid_size and values.size != grid_size:
        raise InvalidMatFileError(
            BAD_CONTENTS, [f"{node.name} has {values.size} values for a {grid_size}-point Vdlin"]
        )
    return values
