"""Modbus register maps as data: the model of a map, loading it, and planning block reads.

One map (a YAML file in ``common/data/``) describes a device: the edge agent plans its reads and
decodes with it (``common.registercodec``), the simulator encodes with it, so both sides judge
registers by the same table. Nothing here does I/O beyond reading the map file.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

MAX_ADDRESS = 0xFFFF
MODBUS_MAX_READ = 125
DEFAULT_MAP = "brm-monitor-v1"

Value = int | float | str
ByteOrder = Literal["big", "little"]


class RegisterMapError(ValueError):
    """A register map that cannot describe a device; the message says which entry is wrong."""


class RegisterType(StrEnum):
    UINT16 = "uint16"
    INT16 = "int16"
    UINT32 = "uint32"
    INT32 = "int32"
    FLOAT32 = "float32"
    STRING = "string"


class TypeInfo(NamedTuple):
    registers: int
    low: float  # lowest raw value that means a reading
    high: float  # highest; the SunSpec sentinel lies outside [low, high]
    struct_code: str
    sunspec_sentinel: int


NUMERIC_TYPES: dict[RegisterType, TypeInfo] = {
    RegisterType.UINT16: TypeInfo(1, 0, 0xFFFE, "H", 0xFFFF),
    RegisterType.INT16: TypeInfo(1, -0x7FFF, 0x7FFF, "h", 0x8000),
    RegisterType.UINT32: TypeInfo(2, 0, 0xFFFFFFFE, "I", 0xFFFFFFFF),
    RegisterType.INT32: TypeInfo(2, -0x7FFFFFFF, 0x7FFFFFFF, "i", 0x80000000),
    RegisterType.FLOAT32: TypeInfo(2, -math.inf, math.inf, "f", 0x7FC00000),
}
SUNSPEC_SENTINELS = {kind: info.sunspec_sentinel for kind, info in NUMERIC_TYPES.items()}


class FieldKey(NamedTuple):
    """Which value: a field name and, in a repeated group, the 0-based repeat (block) index."""

    name: str
    index: int | None = None


class FieldSpec(BaseModel):
    """One value of a group: where it sits (offset from the group's base) and how it is coded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    offset: int = Field(ge=0, le=MAX_ADDRESS)
    type: RegisterType
    length: int | None = Field(None, ge=1, le=MODBUS_MAX_READ)
    scale: float = Field(1.0, gt=0, allow_inf_nan=False)
    unit: str = ""
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    enum: dict[int, str] | None = None
    sentinel: int | None = None  # "not available"; RegisterMap fills in its map-wide choice

    @model_validator(mode="before")
    @classmethod
    def _default_sentinel(cls, data: Any) -> Any:
        """A numeric field not told otherwise uses its type's SunSpec sentinel."""
        return _with_sentinel(data, SUNSPEC_SENTINELS)

    @model_validator(mode="after")
    def _coherent(self) -> FieldSpec:
        is_string = self.type is RegisterType.STRING
        if is_string != (self.length is not None):
            raise ValueError(f"field {self.name}: length (in registers) is for strings only")
        ranged = self.minimum is not None or self.maximum is not None
        if is_string and (self.scale != 1.0 or self.enum or ranged or self.sentinel is not None):
            raise ValueError(f"field {self.name}: a string takes no scale, enum, range or sentinel")
        if not is_string and not 0 <= (self.sentinel or 0) < 1 << (16 * self.width):
            raise ValueError(f"field {self.name}: sentinel does not fit {self.type}")
        if self.enum and self.type not in (RegisterType.UINT16, RegisterType.INT16):
            raise ValueError(f"field {self.name}: an enum must be a 16-bit integer")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"field {self.name}: minimum is above maximum")
        return self

    @property
    def width(self) -> int:
        """Registers the value occupies."""
        return self.length if self.length is not None else NUMERIC_TYPES[self.type][0]


class GroupSpec(BaseModel):
    """Fields laid out once at ``base``, or ``repeat`` times every ``stride`` registers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    base: int = Field(ge=0, le=MAX_ADDRESS)
    stride: int | None = Field(None, ge=1)
    repeat: str | None = None
    max_repeat: int | None = Field(None, ge=1)
    description: str = ""
    fields: list[FieldSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _layout(self) -> GroupSpec:
        if not (self.repeat is None) == (self.stride is None) == (self.max_repeat is None):
            raise ValueError(f"group {self.name}: repeat, stride and max_repeat go together")
        spans = sorted((f.offset, f.offset + f.width, f.name) for f in self.fields)
        for (_, end, first), (start, _, second) in itertools.pairwise(spans):
            if start < end:
                raise ValueError(f"group {self.name}: fields {first} and {second} overlap")
        if self.stride is not None and spans[-1][1] > self.stride:
            raise ValueError(f"group {self.name}: field {spans[-1][2]} runs past the stride")
        if self.base + self.extent - 1 > MAX_ADDRESS:
            raise ValueError(f"group {self.name}: runs past address {MAX_ADDRESS}")
        return self

    @property
    def size(self) -> int:
        """Registers of one copy of the group (its stride, or up to its last field's end)."""
        return self.stride or max(f.offset + f.width for f in self.fields)

    @property
    def extent(self) -> int:
        """Registers the group may occupy at its largest repeat."""
        return self.size * (self.max_repeat or 1)

    def count(self, block_count: int) -> int:
        """Copies present on a device with ``block_count`` blocks."""
        if self.max_repeat is None:
            return 1
        if not 0 <= block_count <= self.max_repeat:
            raise ValueError(f"group {self.name} holds 0 to {self.max_repeat} copies")
        return block_count


class RegisterMap(BaseModel):
    """A device profile: byte and word order, read functions, groups of fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: int = Field(ge=1)
    description: str = ""
    byte_order: ByteOrder = "big"
    word_order: ByteOrder = "big"
    function_codes: list[Literal[3, 4]] = Field([3, 4], min_length=1)
    max_read_registers: int = Field(MODBUS_MAX_READ, ge=1, le=MODBUS_MAX_READ)
    string_encoding: Literal["ascii"] = "ascii"
    sentinels: dict[RegisterType, int] = Field(default_factory=lambda: dict(SUNSPEC_SENTINELS))
    groups: list[GroupSpec] = Field(min_length=1)
    _fields: dict[str, tuple[GroupSpec, FieldSpec]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _fill_sentinels(cls, data: Any) -> Any:
        """Give every numeric field its type's sentinel, so a field alone can be coded."""
        if not isinstance(data, dict):
            return data
        sentinels = {**SUNSPEC_SENTINELS, **(data.get("sentinels") or {})}
        groups = [
            {**g, "fields": [_with_sentinel(f, sentinels) for f in g.get("fields") or []]}
            if isinstance(g, dict)
            else g
            for g in data.get("groups") or []
        ]
        return {**data, "sentinels": sentinels, "groups": groups}

    @model_validator(mode="after")
    def _consistent(self) -> RegisterMap:
        for group in self.groups:
            for spec in group.fields:
                if spec.name in self._fields:
                    raise ValueError(f"field name {spec.name} is used twice")
                self._fields[spec.name] = (group, spec)
        for group in self.groups:
            _check_repeat(self, group)
        ordered = sorted(self.groups, key=lambda g: g.base)
        for first, second in itertools.pairwise(ordered):
            if first.base + first.extent > second.base:
                raise ValueError(
                    f"groups {first.name} and {second.name} overlap at their largest repeat"
                )
        return self

    def field(self, name: str) -> FieldSpec:
        """The field called ``name``; KeyError names the map if there is none."""
        try:
            return self._fields[name][1]
        except KeyError:
            raise KeyError(f"register map {self.name} has no field {name}") from None

    def group(self, name: str) -> GroupSpec:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(f"register map {self.name} has no group {name}")

    def group_of(self, field_name: str) -> GroupSpec:
        self.field(field_name)
        return self._fields[field_name][0]

    def address(self, name: str, index: int | None = None) -> int:
        """Address of field ``name`` (in repeat ``index`` for a repeated group)."""
        group, spec = self.group_of(name), self.field(name)
        if (group.repeat is None) != (index is None):
            raise ValueError(f"field {name}: give an index exactly when its group repeats")
        return group.base + (index or 0) * group.size + spec.offset


def _with_sentinel(spec: Any, sentinels: Mapping[Any, int]) -> Any:
    if isinstance(spec, dict) and "sentinel" not in spec and spec.get("type") in sentinels:
        return {**spec, "sentinel": sentinels[spec["type"]]}
    return spec


def _check_repeat(regmap: RegisterMap, group: GroupSpec) -> None:
    """A repeat count must come from a 16-bit field of a group that is there once."""
    if group.repeat is None:
        return
    if group.repeat not in regmap._fields:
        raise ValueError(f"group {group.name}: repeat names no field ({group.repeat})")
    owner, spec = regmap._fields[group.repeat]
    if owner.repeat is not None or spec.type is not RegisterType.UINT16:
        raise ValueError(
            f"group {group.name}: repeat field {group.repeat} must be a uint16 of a single group"
        )


# --------------------------------------------------------------------------- loading


def parse_register_map(data: Any, source: str = "register map") -> RegisterMap:
    """Validate a map given as plain data; every error names ``source`` and the bad entry."""
    try:
        return RegisterMap.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(error) for error in exc.errors()]
        raise RegisterMapError(
            f"{source} is not a valid register map: " + "; ".join(problems)
        ) from exc


def _problem(error: Any) -> str:
    """One validation error as 'where: what (got what)', without pydantic's boilerplate."""
    where = ".".join(str(part) for part in error["loc"]) or "map"
    text = f"{where}: {error['msg'].removeprefix('Value error, ')}"
    given = error.get("input")
    if error["type"] != "value_error" and isinstance(given, str | int | float):
        text += f" (got {given!r})"
    return text


def load_register_map(name_or_path: str | Path = DEFAULT_MAP) -> RegisterMap:
    """Load a packaged map by name (``brm-monitor-v1``) or any map file by path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = Path(__file__).with_name("data") / f"{name_or_path}.yaml"
    if not path.is_file():
        raise RegisterMapError(f"no register map {name_or_path!s} (looked for {path})")
    with path.open(encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    return parse_register_map(data, str(path))


# --------------------------------------------------------------------------- layout


class FieldSpan(NamedTuple):
    """One value on a device: its key, first register and field spec."""

    key: FieldKey
    address: int
    spec: FieldSpec


def field_spans(
    regmap: RegisterMap, block_count: int, groups: Iterable[str] | None = None
) -> list[FieldSpan]:
    """Every value a device with ``block_count`` blocks serves, by address."""
    wanted = set(groups) if groups is not None else None
    if wanted is not None and (unknown := wanted - {g.name for g in regmap.groups}):
        raise KeyError(f"register map {regmap.name} has no group {sorted(unknown)}")
    spans: list[FieldSpan] = []
    for group in regmap.groups:
        if wanted is not None and group.name not in wanted:
            continue
        repeated = group.repeat is not None
        for index in range(group.count(block_count)):
            start = group.base + index * group.size
            for spec in group.fields:
                key = FieldKey(spec.name, index if repeated else None)
                spans.append(FieldSpan(key, start + spec.offset, spec))
    return sorted(spans, key=lambda s: s.address)


def mapped_ranges(
    regmap: RegisterMap, block_count: int, groups: Iterable[str] | None = None
) -> list[tuple[int, int]]:
    """Maximal runs of mapped registers as (address, count); everything else is a gap."""
    return _runs(field_spans(regmap, block_count, groups), MAX_ADDRESS + 1)


def plan_reads(
    regmap: RegisterMap,
    block_count: int,
    max_registers: int = MODBUS_MAX_READ,
    groups: Iterable[str] | None = None,
) -> list[tuple[int, int]]:
    """Fewest contiguous reads (address, count) covering every mapped register.

    A read never spans a gap (the device answers exception 02) and never splits a value, so each
    read decodes on its own. ``groups`` limits the plan, e.g. to ``["header"]`` to learn
    ``block_count`` first, or to the live groups for a routine poll.
    """
    limit = min(max_registers, regmap.max_read_registers)
    return _runs(field_spans(regmap, block_count, groups), limit)


def _runs(spans: Iterable[FieldSpan], limit: int) -> list[tuple[int, int]]:
    """Pack adjacent values into runs of at most ``limit`` registers, never splitting one."""
    runs: list[list[int]] = []
    for span in spans:
        width = span.spec.width
        if width > limit:
            raise ValueError(f"field {span.key.name} ({width} registers) exceeds a {limit} read")
        last = runs[-1] if runs else None
        if last and last[0] + last[1] == span.address and last[1] + width <= limit:
            last[1] += width
        else:
            runs.append([span.address, width])
    return [(start, count) for start, count in runs]
