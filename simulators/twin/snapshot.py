"""What a site's monitors would read at one instant: the twin's output, shaped for the servers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import IntEnum

import numpy as np

from common import ids
from common.fleet import Location


class StringStatus(IntEnum):
    """String operating state, as the Modbus map encodes it."""

    FLOAT = 0
    DISCHARGING = 1
    RECHARGING = 2


@dataclass(frozen=True)
class SiteLayout:
    """Index arithmetic for one site; strings are numbered flat, k = ups * strings_per_ups + s."""

    location_id: str
    ups_count: int
    strings_per_ups: int
    blocks_per_string: int

    @classmethod
    def of(cls, location: Location) -> SiteLayout:
        return cls(
            location.location_id,
            location.ups_count,
            location.strings_per_ups,
            location.blocks_per_string,
        )

    @property
    def string_count(self) -> int:
        return self.ups_count * self.strings_per_ups

    def ups_of_string(self, k: int) -> int:
        """0-based UPS index of flat string ``k``."""
        return k // self.strings_per_ups

    def ups_id(self, u: int) -> str:
        return ids.ups_id(self.location_id, u + 1)

    def string_id(self, k: int) -> str:
        u, s = divmod(k, self.strings_per_ups)
        return ids.string_id(self.location_id, u + 1, s + 1)

    def battery_id(self, k: int, b: int) -> str:
        u, s = divmod(k, self.strings_per_ups)
        return ids.battery_id(self.location_id, u + 1, s + 1, b + 1)

    def locate_battery(self, battery_id: str) -> tuple[int, int]:
        """(flat string index, 0-based block index) of a battery ID of this site."""
        ref = ids.parse_battery_id(battery_id)
        self._check(ref.location_id, ref.ups, battery_id)
        if not 1 <= ref.string <= self.strings_per_ups or ref.position > self.blocks_per_string:
            raise KeyError(f"{battery_id} is not a battery of {self.location_id}")
        return (ref.ups - 1) * self.strings_per_ups + ref.string - 1, ref.position - 1

    def locate_string(self, string_id: str) -> int:
        location, ups, string = ids.parse_string_id(string_id)
        self._check(location, ups, string_id)
        if not 1 <= string <= self.strings_per_ups:
            raise KeyError(f"{string_id} is not a string of {self.location_id}")
        return (ups - 1) * self.strings_per_ups + string - 1

    def locate_ups(self, ups_id: str) -> int:
        location, ups = ids.parse_ups_id(ups_id)
        self._check(location, ups, ups_id)
        return ups - 1

    def _check(self, location: str, ups: int, what: str) -> None:
        if location != self.location_id or ups > self.ups_count:
            raise KeyError(f"{what} is not part of {self.location_id}")


@dataclass(frozen=True)
class BlockInventory:
    """Nameplate data of one block, as a monitor reports it."""

    battery_id: str
    serial_number: str
    manufacturer: str
    model: str
    nominal_voltage_v: float
    nominal_capacity_ah: float
    installed_date: date
    warranty_months: int
    position: int


@dataclass(frozen=True)
class SiteSnapshot:
    """Readings of a whole site at simulated time ``t`` (Unix seconds).

    Block arrays are shaped (string_count, blocks_per_string); NaN means the sensor gave no value
    (a sensor-dropout fault). Current is negative while discharging.
    """

    t: float
    voltage: np.ndarray
    temperature: np.ndarray
    internal_resistance: np.ndarray
    soc_pct: np.ndarray
    soh_pct: np.ndarray
    string_current: np.ndarray
    string_voltage: np.ndarray
    string_status: np.ndarray
    ups_seconds_on_battery: np.ndarray
    ups_minutes_remaining: np.ndarray
    ups_charge_pct: np.ndarray
