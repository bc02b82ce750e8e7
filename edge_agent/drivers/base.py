"""The one small interface every device driver offers the pollers.

A driver turns its library's failures into ``DeviceError`` and its device's bad values into
``None`` plus an ``InvalidValue`` note; it never invents a number and never lets a library
exception escape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from common.schemas import Reading, StringInfo


class DeviceError(Exception):
    """The device could not be read this time (timeout, refused, protocol error, wrong device)."""


@dataclass(frozen=True)
class InvalidValue:
    """A value the device gave wrong (or not at all) that became ``None`` in a reading.

    ``battery_id`` None means the value concerns the whole device (e.g. the string current).
    """

    battery_id: str | None
    field: str
    reason: str


@dataclass(frozen=True)
class PollResult:
    readings: list[Reading]
    invalid: list[InvalidValue] = field(default_factory=list)


class Driver(Protocol):
    """One device: a Modbus string monitor (``device_id`` a string ID) or a UPS SNMP card."""

    device_id: str

    async def inventory(self) -> list[StringInfo]:
        """Nameplates of every battery the device reports, grouped by string."""
        ...

    async def poll(self, ts: datetime) -> PollResult:
        """Read every battery once; each reading carries ``ts``. Raise ``DeviceError``."""
        ...

    async def close(self) -> None:
        """Release the connection; the next call reconnects."""
        ...
