"""NASA Ames PCoE battery files (Saha & Goebel 2007): one struct per 18650 cell, its history as
a list of charge, discharge and impedance runs.

Recognised by structure: a struct with field ``cycle`` whose entries have ``type``,
``ambient_temperature``, ``time`` and ``data``. A cycle is one discharge run, numbered 1.. in
file order (the charge before it and any impedance measurement belong to it but yield nothing
the store keeps), so a cell's cycle count is its number of discharge runs. Its capacity is the
file's ``Capacity`` where plausible, else coulomb counting (see :mod:`labels`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

from central.research.cells import InvalidMatFileError, Layout, ParsedCell, ParsedCycle
from central.research.labels import discharge_capacity
from central.research.matfile import BAD_CONTENTS, Kind, MatNode

LAYOUT = Layout.NASA_PCOE
EXPECTED = (
    "NASA PCoE: a struct with field cycle (1×N struct: type, ambient_temperature, time, data)"
)
NOMINAL_CAPACITY_AH = 2.0
CHEMISTRY = "Li-ion"  # 18650 LCO cells
_ENTRY_FIELDS = frozenset({"type", "ambient_temperature", "time", "data"})
_DISCHARGE_FIELDS = ("Voltage_measured", "Current_measured", "Temperature_measured", "Time")


def recognise(variables: Mapping[str, MatNode]) -> list[str]:
    """Names of the variables shaped like a NASA cell (one per cell)."""
    names = []
    for name, node in variables.items():
        if node.kind is not Kind.STRUCT or node.size != 1 or "cycle" not in node.fields():
            continue
        entries = node.field("cycle")
        if entries.kind is Kind.STRUCT and set(entries.fields()) >= _ENTRY_FIELDS:
            names.append(name)
    return names


def read_cells(variables: Mapping[str, MatNode], names: list[str]) -> list[ParsedCell]:
    """One cell per variable, labelled by the variable's name (e.g. B0025)."""
    return [_cell(name, variables[name].field("cycle")) for name in names]


def _cell(label: str, entries: MatNode) -> ParsedCell:
    discharges = [
        index
        for index in range(entries.size)
        if entries.field("type", index).text().strip().lower() == "discharge"
    ]
    if not discharges:
        raise InvalidMatFileError(BAD_CONTENTS, [f"{entries.name} has no discharge runs"])
    for index in discharges:
        data = entries.field("data", index)
        missing = [name for name in _DISCHARGE_FIELDS if name not in data.fields()]
        if missing:
            raise InvalidMatFileError(BAD_CONTENTS, [f"{data.name} lacks {', '.join(missing)}"])

    def cycles() -> Iterator[ParsedCycle]:
        for number, index in enumerate(discharges, start=1):
            data = entries.field("data", index)
            current = data.field("Current_measured").numbers()
            time_s = data.field("Time").numbers()
            stated = data.field("Capacity").scalar() if "Capacity" in data.fields() else None
            yield ParsedCycle(
                index=number,
                voltage=data.field("Voltage_measured").numbers(),
                current=current,
                temperature=data.field("Temperature_measured").numbers(),
                time_s=time_s,
                capacity_ah=discharge_capacity(stated, current, time_s, NOMINAL_CAPACITY_AH),
                ambient_temperature_c=_finite(entries.field("ambient_temperature", index).scalar()),
            )

    return ParsedCell(
        layout=LAYOUT,
        label=label,
        cycle_count=len(discharges),
        cycles=cycles,
        nominal_capacity_ah=NOMINAL_CAPACITY_AH,
        chemistry=CHEMISTRY,
    )


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
