"""Pure: decoded device values into readings and nameplates, each bad value a ``None`` with a note.

Both drivers end here, so "not available" and "out of range" mean the same whatever the protocol,
and the physical ranges are those of ``common.units``, the table the message schema enforces.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime

from pydantic import ValidationError

from common.schemas import BatteryInfo, Reading, StringInfo, describe_errors
from common.units import MEASUREMENTS, checked
from edge_agent.drivers.base import InvalidValue

BLOCK_FIELDS = ("voltage", "temperature", "internal_resistance", "soc_pct", "soh_pct")
NOT_AVAILABLE = "not available"

Number = float | int


def check(field: str, value: Number | None) -> tuple[float | None, str | None]:
    """``(value, None)`` for a plausible reading of ``field``, else ``(None, reason)``."""
    if value is None:
        return None, NOT_AVAILABLE
    good = checked(field, value)
    if good is not None:
        return float(good), None
    unit = MEASUREMENTS[field].unit
    if not math.isfinite(value):
        return None, f"not a finite number: {value} {unit}"
    return None, f"out of range: {value:.6g} {unit}"


def block_reading(
    battery_id: str,
    ts: datetime,
    values: Mapping[str, Number | None],
    current: float | None,
    missing: str = NOT_AVAILABLE,
) -> tuple[Reading, list[InvalidValue]]:
    """One block's reading from its decoded ``values`` (keys of ``BLOCK_FIELDS``).

    ``current`` is the string's, already checked once per device. A field absent or None
    gets the reason ``missing`` (a driver passes e.g. "exception 04 device failure").
    """
    fields: dict[str, float | None] = {}
    invalid: list[InvalidValue] = []
    for name in BLOCK_FIELDS:
        raw = values.get(name)
        good, reason = check(name, raw)
        fields[name] = good
        if reason is not None:
            invalid.append(InvalidValue(battery_id, name, missing if raw is None else reason))
    return Reading(battery_id=battery_id, ts=ts, current=current, **fields), invalid


def string_info(
    string_id: str, nameplates: Iterable[tuple[str, Mapping[str, object]]]
) -> tuple[StringInfo, list[str]]:
    """A string's nameplates from (battery ID, BatteryInfo fields) pairs, by position.

    A block whose nameplate is incomplete or wrong is left out, and its problem is returned so
    that the driver can log it: one bad serial number must not hide the string's readings.
    """
    batteries: list[BatteryInfo] = []
    problems: list[str] = []
    for battery_id, fields in nameplates:
        try:
            batteries.append(BatteryInfo.model_validate({"battery_id": battery_id, **fields}))
        except ValidationError as exc:
            problems.append(f"nameplate of {battery_id}: {describe_errors(exc)}")
    batteries.sort(key=lambda battery: battery.position)
    return StringInfo(string_id=string_id, batteries=batteries), problems
