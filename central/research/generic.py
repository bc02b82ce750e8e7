"""The documented layout for anyone's own cycling data (README: "the generic .mat layout").

A struct named ``battery`` (or any struct with ``cycle_index`` and ``capacity_ah``), one element
per cell::

    cycle_index            N whole numbers, increasing
    capacity_ah            N numbers (Ah; NaN where not measured)
    voltage, current,      optional cell arrays of N vectors (V, A, °C, s); within a cycle the
    temperature, time_s    non-empty vectors have equal lengths
    ambient_temperature_c  optional, 1 or N numbers (°C)
    nominal_capacity_ah    optional number (Ah)
    label, chemistry,      optional text
    manufacturer
    cycle_life             optional whole number: the cell's stated life in cycles, at
    cycle_life_soh         optional SoH fraction (default 0.8)

It is validated strictly, every problem reported at once, because a researcher fixing a file
wants the whole list; unknown fields are refused since they are usually misspelt ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from central.research.cells import EMPTY, InvalidMatFileError, Layout, ParsedCell, ParsedCycle
from central.research.labels import discharge_capacity
from central.research.matfile import BAD_CONTENTS, Kind, MatNode

LAYOUT = Layout.GENERIC
VARIABLE = "battery"
EXPECTED = (
    "generic: a struct 'battery' (1×1, or 1×M for M cells) with fields cycle_index and "
    "capacity_ah, optionally voltage/current/temperature/time_s cell arrays "
    "(README: the generic .mat layout)"
)
REQUIRED = ("cycle_index", "capacity_ah")
SERIES = ("voltage", "current", "temperature", "time_s")
TEXTS = ("label", "chemistry", "manufacturer")
NUMBERS = ("ambient_temperature_c", "nominal_capacity_ah", "cycle_life", "cycle_life_soh")
FIELDS = (*REQUIRED, *SERIES, *NUMBERS, *TEXTS)
DEFAULT_LIFE_SOH = 0.8
_MAX_ISSUES = 20


def recognise(variables: Mapping[str, MatNode]) -> list[str]:
    """``battery`` by name, or any struct carrying the two required fields."""
    return [
        name
        for name, node in variables.items()
        if node.kind is Kind.STRUCT and (name == VARIABLE or set(REQUIRED) <= set(node.fields()))
    ]


def read_cells(variables: Mapping[str, MatNode], names: list[str]) -> list[ParsedCell]:
    """One cell per struct element, all validated (every problem of every cell) first."""
    cells = []
    for name in names:
        battery = variables[name]
        _check_fields(battery)
        cells.extend(_Cell(battery, index) for index in range(battery.size))
    issues = [issue for cell in cells for issue in cell.issues]
    if issues:
        extra = len(issues) - _MAX_ISSUES
        more = [f"… and {extra} more"] if extra > 0 else []
        raise InvalidMatFileError(BAD_CONTENTS, issues[:_MAX_ISSUES] + more)
    return [cell.parsed() for cell in cells]


def _check_fields(battery: MatNode) -> None:
    fields = set(battery.fields())
    issues = [f"{battery.name} lacks field {name}" for name in REQUIRED if name not in fields]
    issues += [
        f"{battery.name} has unknown field {name} (allowed: {', '.join(FIELDS)})"
        for name in sorted(fields - set(FIELDS))
    ]
    if not battery.size:
        issues.append(f"{battery.name} is an empty struct array")
    if issues:
        raise InvalidMatFileError(BAD_CONTENTS, issues)


class _Cell:
    """One element of ``battery``: metadata validated now (``issues``), vectors when iterated."""

    def __init__(self, battery: MatNode, index: int) -> None:
        self._battery = battery
        self._index = index
        self._where = battery.name if battery.size == 1 else f"{battery.name}({index + 1})"
        self.issues: list[str] = []
        self.cycle_index = self._cycle_index()
        count = self.cycle_index.size
        self.capacity = self._per_cycle("capacity_ah", count, allow_one=False)
        self.ambient = self._per_cycle("ambient_temperature_c", count, allow_one=True)
        self.series = {name: self._series(name, count) for name in SERIES if self._has(name)}
        self._check_lengths(count)
        self.nominal = self._number("nominal_capacity_ah", lambda v: math.isfinite(v) and v > 0)
        self.life = self._number("cycle_life", lambda v: v > 0 and v.is_integer())
        self.life_soh = self._number("cycle_life_soh", lambda v: 0 < v <= 1)
        self.texts = {name: self._text(name) for name in TEXTS}

    def _has(self, name: str) -> bool:
        """Given for this element: elements of a struct array share fields, some leave them []."""
        return name in self._battery.fields() and self._node(name).size > 0

    def _node(self, name: str) -> MatNode:
        return self._battery.field(name, self._index)

    def _numeric(self, name: str) -> np.ndarray | None:
        node = self._node(name)
        if node.size and node.kind is not Kind.NUMERIC:
            self.issues.append(f"{self._where}.{name} should be numbers, is {node.describe()}")
            return None
        return node.numbers() if node.size else EMPTY

    def _cycle_index(self) -> np.ndarray:
        values = self._numeric("cycle_index")
        if values is None:
            return EMPTY
        if not values.size:
            self.issues.append(f"{self._where}.cycle_index is empty: no cycles")
        elif not (
            np.all(np.isfinite(values))
            and np.all(values == np.round(values))
            and np.all(values >= 0)
            and np.all(np.diff(values) > 0)
        ):
            self.issues.append(
                f"{self._where}.cycle_index should hold increasing whole numbers ≥ 0"
            )
        return values

    def _per_cycle(self, name: str, count: int, *, allow_one: bool) -> np.ndarray | None:
        if name not in REQUIRED and not self._has(name):
            return None
        values = self._numeric(name)
        if values is not None and values.size != count and not (allow_one and values.size == 1):
            self.issues.append(f"{self._where}.{name} has {values.size} values for {count} cycles")
            return None
        return values

    def _series(self, name: str, count: int) -> MatNode | None:
        node = self._node(name)
        if node.kind is not Kind.CELL:
            self.issues.append(
                f"{self._where}.{name} should be a cell array of {count} vectors, "
                f"is {node.describe()}"
            )
            return None
        if node.size != count:
            self.issues.append(f"{self._where}.{name} has {node.size} vectors for {count} cycles")
            return None
        return node

    def _check_lengths(self, count: int) -> None:
        """Within a cycle the non-empty vectors must pair sample for sample."""
        present = {name: node for name, node in self.series.items() if node is not None}
        for cycle in range(count):
            lengths = {}
            for name, node in present.items():
                vector = node.cell(cycle)
                if vector.size and vector.kind is not Kind.NUMERIC:
                    self.issues.append(f"{vector.name} should be numbers, is {vector.describe()}")
                elif vector.size:
                    lengths[name] = vector.size
            if len(set(lengths.values())) > 1:
                described = ", ".join(f"{name} {size}" for name, size in lengths.items())
                self.issues.append(
                    f"{self._where} cycle {cycle + 1} has vectors of different lengths: {described}"
                )

    def _number(self, name: str, valid: Callable[[float], bool]) -> float | None:
        if not self._has(name):
            return None
        node = self._node(name)
        values = self._numeric(name)
        if values is None:
            return None
        if values.size != 1 or not valid(float(values[0])):
            self.issues.append(f"{node.name} is not a valid {name}: {values[:3].tolist()}")
            return None
        return float(values[0])

    def _text(self, name: str) -> str | None:
        if not self._has(name):
            return None
        node = self._node(name)
        if node.kind is not Kind.CHAR:
            self.issues.append(f"{node.name} should be text, is {node.describe()}")
            return None
        return node.text().strip() or None

    def _vector(self, name: str, cycle: int) -> np.ndarray:
        node = self.series.get(name)
        if node is None:
            return EMPTY
        vector = node.cell(cycle)
        return vector.numbers() if vector.size else EMPTY

    def cycles(self) -> Iterator[ParsedCycle]:
        for cycle, number in enumerate(self.cycle_index.tolist()):
            current, time_s = self._vector("current", cycle), self._vector("time_s", cycle)
            stated = float(self.capacity[cycle]) if self.capacity is not None else None
            ambient = None
            if self.ambient is not None:
                ambient = float(self.ambient[0 if self.ambient.size == 1 else cycle])
                ambient = ambient if math.isfinite(ambient) else None
            yield ParsedCycle(
                index=int(number),
                voltage=self._vector("voltage", cycle),
                current=current,
                temperature=self._vector("temperature", cycle),
                time_s=time_s,
                capacity_ah=discharge_capacity(stated, current, time_s, self.nominal),
                ambient_temperature_c=ambient,
            )

    def parsed(self) -> ParsedCell:
        return ParsedCell(
            layout=LAYOUT,
            label=self.texts["label"] or self._where,
            cycle_count=int(self.cycle_index.size),
            cycles=self.cycles,
            nominal_capacity_ah=self.nominal,
            chemistry=self.texts["chemistry"],
            manufacturer=self.texts["manufacturer"],
            stated_cycle_life=round(self.life) if self.life is not None else None,
            stated_life_threshold=(
                (self.life_soh or DEFAULT_LIFE_SOH) if self.life is not None else None
            ),
        )
