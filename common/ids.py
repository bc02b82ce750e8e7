"""Building, parsing and validating the fleet's IDs; the one place their format is known.

location ``DC-CNX-01``; UPS ``DC-CNX-01-UPS-01``; string ``STR-DC-CNX-01-UPS-01-01``;
battery ``BAT-DC-CNX-01-UPS-01-STR-01-001``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LOCATION = r"DC-[A-Z]{3}-[0-9]{2}"
_LOCATION_RE = re.compile(rf"(?P<loc>{_LOCATION})")
_UPS_RE = re.compile(rf"(?P<loc>{_LOCATION})-UPS-(?P<ups>[0-9]{{2}})")
_STRING_RE = re.compile(rf"STR-(?P<loc>{_LOCATION})-UPS-(?P<ups>[0-9]{{2}})-(?P<str>[0-9]{{2}})")
_BATTERY_RE = re.compile(
    rf"BAT-(?P<loc>{_LOCATION})-UPS-(?P<ups>[0-9]{{2}})-STR-(?P<str>[0-9]{{2}})-(?P<pos>[0-9]{{3}})"
)


class InvalidIdError(ValueError):
    """An ID that does not follow the fleet's format; the message says which part is wrong."""


@dataclass(frozen=True, order=True)
class BatteryRef:
    """A parsed battery ID: site, UPS number, string number (per UPS) and position (from 1)."""

    location_id: str
    ups: int
    string: int
    position: int

    @property
    def ups_id(self) -> str:
        return ups_id(self.location_id, self.ups)

    @property
    def string_id(self) -> str:
        return string_id(self.location_id, self.ups, self.string)

    @property
    def battery_id(self) -> str:
        return battery_id(self.location_id, self.ups, self.string, self.position)


def _check_number(name: str, value: int, upper: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= upper:
        raise InvalidIdError(f"{name} must be an integer from 1 to {upper}, got {value!r}")


def validate_location_id(value: str) -> str:
    """Return ``value`` if it is a location ID such as ``DC-CNX-01``, else raise."""
    if not isinstance(value, str) or not _LOCATION_RE.fullmatch(value):
        raise InvalidIdError(f"invalid location ID {value!r}: expected the form DC-CNX-01")
    return value


def ups_id(location_id: str, ups: int) -> str:
    validate_location_id(location_id)
    _check_number("UPS number", ups, 99)
    return f"{location_id}-UPS-{ups:02d}"


def string_id(location_id: str, ups: int, string: int) -> str:
    validate_location_id(location_id)
    _check_number("UPS number", ups, 99)
    _check_number("string number", string, 99)
    return f"STR-{location_id}-UPS-{ups:02d}-{string:02d}"


def battery_id(location_id: str, ups: int, string: int, position: int) -> str:
    validate_location_id(location_id)
    _check_number("UPS number", ups, 99)
    _check_number("string number", string, 99)
    _check_number("position", position, 999)
    return f"BAT-{location_id}-UPS-{ups:02d}-STR-{string:02d}-{position:03d}"


def _numbers_ok(match: re.Match[str], *groups: str) -> bool:
    return all(int(match[g]) >= 1 for g in groups)


def parse_ups_id(value: str) -> tuple[str, int]:
    """Split a UPS ID into (location ID, UPS number)."""
    match = _UPS_RE.fullmatch(value) if isinstance(value, str) else None
    if not match or not _numbers_ok(match, "ups"):
        raise InvalidIdError(f"invalid UPS ID {value!r}: expected the form DC-CNX-01-UPS-01")
    return match["loc"], int(match["ups"])


def parse_string_id(value: str) -> tuple[str, int, int]:
    """Split a string ID into (location ID, UPS number, string number)."""
    match = _STRING_RE.fullmatch(value) if isinstance(value, str) else None
    if not match or not _numbers_ok(match, "ups", "str"):
        raise InvalidIdError(
            f"invalid string ID {value!r}: expected the form STR-DC-CNX-01-UPS-01-01"
        )
    return match["loc"], int(match["ups"]), int(match["str"])


def parse_battery_id(value: str) -> BatteryRef:
    """Parse a battery ID into its parts; raise ``InvalidIdError`` for anything else."""
    match = _BATTERY_RE.fullmatch(value) if isinstance(value, str) else None
    if not match or not _numbers_ok(match, "ups", "str", "pos"):
        raise InvalidIdError(
            f"invalid battery ID {value!r}: expected the form BAT-DC-CNX-01-UPS-01-STR-01-001"
        )
    return BatteryRef(match["loc"], int(match["ups"]), int(match["str"]), int(match["pos"]))


def validate_battery_id(value: str) -> str:
    """``value`` if it is a valid battery ID; the hot path of decoding telemetry (one match)."""
    match = _BATTERY_RE.fullmatch(value) if isinstance(value, str) else None
    if not match or not _numbers_ok(match, "ups", "str", "pos"):
        raise InvalidIdError(
            f"invalid battery ID {value!r}: expected the form BAT-DC-CNX-01-UPS-01-STR-01-001"
        )
    return value


def battery_belongs_to(battery: str, location_id: str) -> bool:
    """True when ``battery`` is a valid battery ID of ``location_id``."""
    try:
        return parse_battery_id(battery).location_id == location_id
    except InvalidIdError:
        return False
