"""Injectable faults: their kinds, validation, and what each does to the twin's arrays.

A fault is plain data (kind, target ID, active interval, parameters); the functions here turn the
active ones into array edits, so ``site.py`` only decides when to call them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np

from common import ids
from simulators.twin.params import TwinParams
from simulators.twin.snapshot import SiteLayout


class FaultKind(StrEnum):
    OVERHEATING = "overheating"
    SHORTED_CELL = "shorted_cell"
    RESISTANCE_JUMP = "resistance_jump"
    SENSOR_DROPOUT = "sensor_dropout"
    SLOW_RESPONSE = "slow_response"
    NO_RESPONSE = "no_response"
    MAINS_OUTAGE = "mains_outage"
    # Float voltage too high: a block floating high in its string (imbalance), or a charger set
    # too high, stuck at boost/equalise, or whose temperature compensation failed in a hot room.
    # Voltages only: the extra float current, heat and water loss are not modelled.
    OVERCHARGE = "overcharge"
    # Capacity lost reversibly: soft sulfation from chronic undercharge, which an equalising
    # charge breaks down again, or a monitor's wrong capacity estimate; SoH reads lower and
    # resistance higher while it lasts, and both come back when it is cleared.
    CAPACITY_LOSS = "capacity_loss"
    # Ageing ``factor`` times as fast (dry-out, a leaking valve, a bad batch): the capacity it
    # costs stays after it is cleared. Injected with a past start, it shapes the twin's history.
    ACCELERATED_AGEING = "accelerated_ageing"
    # The block swapped for a new one at the fault's start: capacity, resistance and ageing start
    # afresh. An event, not a condition: it ends where it starts and cannot be cleared; the old
    # block's own faults still on then end with it.
    BLOCK_REPLACED = "block_replaced"


@dataclass(frozen=True)
class Fault:
    """One injected fault, active on [start, end); ``end`` None means until cleared."""

    id: int
    kind: FaultKind
    target: str
    start: float
    end: float | None
    params: dict[str, float | str] = field(hash=False)

    def active_at(self, t: float) -> bool:
        return self.start <= t and (self.end is None or t < self.end)

    def active_mask(self, times: np.ndarray) -> np.ndarray:
        """Boolean (n,) of the times at which this fault is active."""
        mask = times >= self.start
        return mask if self.end is None else mask & (times < self.end)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for the control HTTP API."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "target": self.target,
            "start": self.start,
            "end": self.end,
            "params": dict(self.params),
        }


@dataclass(frozen=True)
class DeviceCondition:
    """How a simulated device answers right now: after ``delay_s``, or not at all if ``silent``."""

    delay_s: float
    silent: bool


# Which target kinds each fault accepts: where the physical fault can happen.
ALLOWED_TARGETS: dict[FaultKind, frozenset[str]] = {
    FaultKind.OVERHEATING: frozenset({"battery", "string"}),
    FaultKind.SHORTED_CELL: frozenset({"battery"}),
    FaultKind.RESISTANCE_JUMP: frozenset({"battery"}),
    FaultKind.SENSOR_DROPOUT: frozenset({"battery"}),
    FaultKind.SLOW_RESPONSE: frozenset({"string", "ups", "site"}),
    FaultKind.NO_RESPONSE: frozenset({"string", "ups", "site"}),
    FaultKind.MAINS_OUTAGE: frozenset({"ups", "site"}),
    # A block floating high (imbalance), or a string's or UPS's charger set too high.
    FaultKind.OVERCHARGE: frozenset({"battery", "string", "ups"}),
    FaultKind.CAPACITY_LOSS: frozenset({"battery"}),
    FaultKind.ACCELERATED_AGEING: frozenset({"battery", "string"}),
    FaultKind.BLOCK_REPLACED: frozenset({"battery"}),
}

# Faults of a block itself, which leave with it when it is replaced (on a battery ID): not its
# place's heat (overheating) nor its monitor's sensor (sensor_dropout).
BLOCK_OWN = frozenset(
    {
        FaultKind.SHORTED_CELL,
        FaultKind.RESISTANCE_JUMP,
        FaultKind.OVERCHARGE,
        FaultKind.CAPACITY_LOSS,
        FaultKind.ACCELERATED_AGEING,
    }
)

# How a monitor presents a dropped-out sensor: "not available" (nan), a Modbus exception 04
# (exception), or implausible values that still look like readings (garbage).
DROPOUT_MODES = ("nan", "exception", "garbage")


@dataclass(frozen=True)
class _ParamSpec:
    default: float | str
    positive: bool = False  # > 0 rather than >= 0
    integer_range: tuple[int, int] | None = None
    choices: tuple[str, ...] | None = None
    minimum: float = 0.0
    maximum: float = math.inf


def param_specs(kind: FaultKind, params: TwinParams, cells: int) -> dict[str, _ParamSpec]:
    """Accepted parameters of each fault kind and their defaults."""
    specs: dict[FaultKind, dict[str, _ParamSpec]] = {
        FaultKind.OVERHEATING: {"delta_c": _ParamSpec(20.0)},
        FaultKind.SHORTED_CELL: {"cells": _ParamSpec(1.0, integer_range=(1, max(cells - 1, 1)))},
        FaultKind.RESISTANCE_JUMP: {
            "factor": _ParamSpec(params.resistance_jump_factor, positive=True)
        },
        FaultKind.SENSOR_DROPOUT: {"mode": _ParamSpec("nan", choices=DROPOUT_MODES)},
        FaultKind.SLOW_RESPONSE: {"delay_s": _ParamSpec(2.0)},
        FaultKind.NO_RESPONSE: {},
        FaultKind.MAINS_OUTAGE: {
            "duration_s": _ParamSpec(600.0, positive=True),
            "load_a": _ParamSpec(params.load_current_a, positive=True),
        },
        # 0.15 V/cell: a float charger left at the boost/equalise level (2.40 V/cell at 25 °C).
        FaultKind.OVERCHARGE: {"delta_v_per_cell": _ParamSpec(0.15, positive=True)},
        # At most half of the rated capacity per fault: the twin's capacity must stay above 0.
        FaultKind.CAPACITY_LOSS: {"soh_drop_pct": _ParamSpec(10.0, positive=True, maximum=50.0)},
        FaultKind.ACCELERATED_AGEING: {"factor": _ParamSpec(3.0, minimum=1.0)},
        # The new block's tested capacity and ohmic resistance. The twin draws each new block's
        # own (as it drew the first's: 99-102 %, the model's resistance with its spread) and
        # records them in the fault's params; these defaults are the draws' middles.
        FaultKind.BLOCK_REPLACED: {
            "soh_pct": _ParamSpec(100.0 * sum(params.soh_initial) / 2, minimum=50.0, maximum=110.0),
            "resistance_ohm": _ParamSpec(params.r0_ohm, positive=True, maximum=1.0),
        },
    }
    return specs[kind]


def _check_value(kind: FaultKind, name: str, value: object, spec: _ParamSpec) -> float | str:
    if spec.choices is not None:
        if value not in spec.choices:
            raise ValueError(f"{kind} {name} must be one of {spec.choices}, got {value!r}")
        return str(value)
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise TypeError
        number = float(value)  # numeric strings arrive from the control API's query forms
    except (TypeError, ValueError):
        raise ValueError(f"{kind} {name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < spec.minimum or (spec.positive and number == 0):
        bound = "> 0" if spec.positive else f">= {spec.minimum:g}"
        raise ValueError(f"{kind} {name} must be finite and {bound}, got {value!r}")
    if number > spec.maximum:
        raise ValueError(f"{kind} {name} must be at most {spec.maximum:g}, got {value!r}")
    if spec.integer_range is not None:
        low, high = spec.integer_range
        if number != int(number) or not low <= number <= high:
            raise ValueError(f"{kind} {name} must be a whole number from {low} to {high}")
    return number


def validate_params(
    kind: FaultKind, given: dict[str, Any], params: TwinParams, cells: int
) -> dict[str, float | str]:
    """Check ``given`` against the kind's parameters and fill in defaults; ValueError if bad."""
    specs = param_specs(kind, params, cells)
    unknown = sorted(set(given) - set(specs))
    if unknown:
        accepted = ", ".join(specs) or "none"
        raise ValueError(f"{kind} does not take {', '.join(unknown)} (accepted: {accepted})")
    return {
        name: _check_value(kind, name, given[name], spec) if name in given else spec.default
        for name, spec in specs.items()
    }


def parse_kind(kind: FaultKind | str) -> FaultKind:
    try:
        return FaultKind(kind)
    except ValueError:
        known = ", ".join(k.value for k in FaultKind)
        raise ValueError(f"unknown fault kind {kind!r} (known: {known})") from None


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Located:
    """A fault resolved to array indices: [k, b] selects its blocks in (strings, blocks) arrays."""

    fault: Fault
    target_kind: str
    k: int | slice
    b: int | slice


def target_kind_of(target: str) -> str:
    """'battery', 'string', 'ups' or 'site', from the ID's shape alone."""
    if not isinstance(target, str):
        raise ValueError(f"fault target must be an ID string, got {target!r}")
    if target.startswith("BAT-"):
        return "battery"
    if target.startswith("STR-"):
        return "string"
    if "-UPS-" in target:
        return "ups"
    ids.validate_location_id(target)
    return "site"


def locate(layout: SiteLayout, fault: Fault) -> Located:
    """Resolve a fault's target on ``layout``; KeyError if it is not part of this site."""
    kind = target_kind_of(fault.target)
    if kind == "battery":
        k, b = layout.locate_battery(fault.target)
        return Located(fault, kind, k, b)
    if kind == "string":
        return Located(fault, kind, layout.locate_string(fault.target), slice(None))
    if kind == "ups":
        u = layout.locate_ups(fault.target)
        per = layout.strings_per_ups
        return Located(fault, kind, slice(u * per, (u + 1) * per), slice(None))
    if fault.target != layout.location_id:
        raise KeyError(f"{fault.target} is not this site ({layout.location_id})")
    return Located(fault, kind, slice(None), slice(None))


def check_target(layout: SiteLayout, fault: Fault) -> Located:
    """Locate the target and check the fault may be applied to that kind of equipment."""
    located = locate(layout, fault)
    allowed = ALLOWED_TARGETS[fault.kind]
    if located.target_kind not in allowed:
        raise ValueError(
            f"{fault.kind} cannot target a {located.target_kind} ({fault.target}); "
            f"it takes a {' or '.join(sorted(allowed))} ID"
        )
    return located


def of_kind(located: Iterable[Located], kind: FaultKind) -> Iterator[Located]:
    return (item for item in located if item.fault.kind == kind)


# --------------------------------------------------------------------------- effects on arrays


def _active(item: Located, times: np.ndarray) -> np.ndarray | None:
    mask = item.fault.active_mask(times)
    return mask if mask.any() else None


def add_overheating(temp: np.ndarray, located: Iterable[Located], times: np.ndarray) -> None:
    """Raise the target blocks' temperature by delta_c while the fault is active (in place)."""
    for item in of_kind(located, FaultKind.OVERHEATING):
        mask = _active(item, times)
        if mask is not None:
            temp[mask, item.k, item.b] += float(item.fault.params["delta_c"])


def apply_resistance_jump(res: np.ndarray, located: Iterable[Located], times: np.ndarray) -> None:
    """Multiply the target block's resistance by the jump factor while active (in place)."""
    for item in of_kind(located, FaultKind.RESISTANCE_JUMP):
        mask = _active(item, times)
        if mask is not None:
            res[mask, item.k, item.b] *= float(item.fault.params["factor"])


def shorted_cells(
    located: Iterable[Located], times: np.ndarray, shape: tuple[int, int]
) -> np.ndarray | None:
    """(n, strings, blocks) count of shorted cells per block, or None when nothing is shorted."""
    cells: np.ndarray | None = None
    for item in of_kind(located, FaultKind.SHORTED_CELL):
        mask = _active(item, times)
        if mask is not None:
            if cells is None:
                cells = np.zeros((len(times), *shape))
            cells[mask, item.k, item.b] += float(item.fault.params["cells"])
    return cells


def apply_dropout(arrays: Iterable[np.ndarray], located: list[Located], times: np.ndarray) -> None:
    """Blank the target block's readings (NaN) while its sensor is out (in place)."""
    masks = [
        (item, mask)
        for item in of_kind(located, FaultKind.SENSOR_DROPOUT)
        if (mask := _active(item, times)) is not None
    ]
    for array in arrays if masks else ():
        for item, mask in masks:
            array[mask, item.k, item.b] = np.nan


def dropout_modes(layout: SiteLayout, faults: Iterable[Fault]) -> dict[tuple[int, int], str]:
    """(flat string, block) → dropout mode of each sensor-dropout fault in ``faults``.

    The twin blanks the readings of every mode alike; this tells a server how to present them.
    """
    return {
        layout.locate_battery(fault.target): str(fault.params["mode"])
        for fault in faults
        if fault.kind == FaultKind.SENSOR_DROPOUT
    }


# Faults whose extra ageing lasts: the capacity they cost is not given back when they clear.
LASTING_AGEING = (FaultKind.OVERHEATING, FaultKind.ACCELERATED_AGEING)


def lasting_ageing_loss(
    located: Iterable[Located],
    times: np.ndarray,
    lookup: Callable[[np.ndarray], np.ndarray],
    extra_rate: Callable[[Fault], np.ndarray],
    shape: tuple[int, int],
) -> np.ndarray | None:
    """Extra calendar loss (n, strings, blocks) from time spent hot or ageing fast, or None.

    ``lookup(t)`` is the site's seasonal ageing integral; ``extra_rate(fault)`` gives each block's
    additional loss per unit of it while the fault is active. The integral is clipped to the
    fault's interval, so the loss only grows with time and stays after the fault is cleared.
    """
    loss: np.ndarray | None = None
    for item in located:
        fault = item.fault
        if fault.kind not in LASTING_AGEING:
            continue
        if times.size == 0 or fault.start >= float(np.max(times)):
            continue
        end = math.inf if fault.end is None else fault.end
        span = lookup(np.clip(times, fault.start, end)) - lookup(np.array([fault.start]))
        if loss is None:
            loss = np.zeros((len(times), *shape))
        rate = extra_rate(fault)[item.k, item.b]
        loss[:, item.k, item.b] += (
            span[:, None] * rate if isinstance(item.b, slice) else span * rate
        )
    return loss


def capacity_loss(
    located: Iterable[Located], times: np.ndarray, shape: tuple[int, int]
) -> np.ndarray | None:
    """(n, strings, blocks) SoH fraction missing while a capacity-loss fault is active, or None:
    unlike ageing, it comes back when the fault is cleared."""
    loss: np.ndarray | None = None
    for item in of_kind(located, FaultKind.CAPACITY_LOSS):
        mask = _active(item, times)
        if mask is not None:
            if loss is None:
                loss = np.zeros((len(times), *shape))
            loss[mask, item.k, item.b] += float(item.fault.params["soh_drop_pct"]) / 100.0
    return loss


def overcharge(
    located: Iterable[Located], times: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Extra float volts per cell while overcharged: (n, strings, blocks) of single blocks and
    (n, strings) of whole strings' charger setpoints; each None where there is none.

    A single block floating high takes its excess from the rest of its string, because the
    charger holds the string total; a string's or UPS's charger set too high lifts every block.
    """
    blocks: np.ndarray | None = None
    strings: np.ndarray | None = None
    for item in of_kind(located, FaultKind.OVERCHARGE):
        mask = _active(item, times)
        if mask is None:
            continue
        extra = float(item.fault.params["delta_v_per_cell"])
        if item.target_kind == "battery":
            if blocks is None:
                blocks = np.zeros((len(times), *shape))
            blocks[mask, item.k, item.b] += extra
        else:
            if strings is None:
                strings = np.zeros((len(times), shape[0]))
            strings[mask, item.k] += extra
    return blocks, strings


@dataclass(frozen=True)
class Renewal:
    """A block replaced at ``t``: its place [k, b] and the new block's constants."""

    t: float
    k: int
    b: int
    soh0: float  # fraction of rating
    r0: float  # ohm
    rate_ratio: float  # its calendar ageing rate over the first block's at that place


def ended_by_replacement(faults: Iterable[Fault], replaced: Fault) -> list[Fault]:
    """The old block's own faults still on when ``replaced`` swapped it, ended at that moment."""
    t = replaced.start
    return [
        replace(fault, end=t)
        for fault in faults
        if fault.target == replaced.target
        and fault.kind in BLOCK_OWN
        and fault.start < t
        and (fault.end is None or fault.end > t)
    ]


def renewed_base(values: np.ndarray, times: np.ndarray, renewals: Iterable[Renewal]) -> np.ndarray:
    """(n, K, B) value each block had at its latest renewal up to each time (0 before any):
    ``values`` (len(renewals), K, B) are the quantity at each renewal's time, in order."""
    base = np.zeros((len(times), *values.shape[1:]))
    for j, renewal in enumerate(renewals):
        base[times >= renewal.t, renewal.k, renewal.b] = values[j, renewal.k, renewal.b]
    return base


def outage_interval(fault: Fault) -> tuple[float, float, float]:
    """(start, end, load_a) of a mains-outage fault; its end is set when it is injected."""
    end = fault.start + float(fault.params["duration_s"]) if fault.end is None else fault.end
    return fault.start, end, float(fault.params["load_a"])


def device_condition(
    faults: Iterable[Fault], device_id: str, site_id: str, t: float
) -> DeviceCondition:
    """Combine active slow/no-response faults on this device or the whole site."""
    delay, silent = 0.0, False
    for fault in faults:
        if fault.target not in (device_id, site_id) or not fault.active_at(t):
            continue
        if fault.kind == FaultKind.SLOW_RESPONSE:
            delay = max(delay, float(fault.params["delay_s"]))
        elif fault.kind == FaultKind.NO_RESPONSE:
            silent = True
    return DeviceCondition(delay, silent)
