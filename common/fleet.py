"""The fleet file: locations and the battery plant each one holds.

Central loads locations from it; the simulators build their sites from it. The demo fleet of
DESIGN.md ships as ``deploy/fleet.yaml``.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from common.ids import validate_location_id
from common.settings import SettingsError, problems_of, read_yaml_mapping


class BatteryModelSpec(BaseModel):
    """Nameplate of one block model, as the birth message and the twin use it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    manufacturer: str = "CSB"
    model: str = "HX12-120"
    nominal_voltage_v: float = Field(12.0, gt=0)
    nominal_capacity_ah: float = Field(120.0, gt=0)
    cells: int = Field(6, ge=1, le=12)
    design_life_years: float = Field(10.0, gt=0)
    warranty_months: int = Field(60, ge=0)


class Location(BaseModel):
    """One data-center site: where it is, its climate and its battery plant."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    location_id: str
    name: str
    region: str
    city: str
    country: str
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    temp_offset_c: float = 0.0
    humidity_offset_pct: float = 0.0
    power_outage_frequency_per_year: float = Field(2.0, ge=0)
    ups_count: int = Field(2, ge=1, le=99)
    strings_per_ups: int = Field(3, ge=1, le=99)
    blocks_per_string: int = Field(36, ge=1, le=999)
    installed_date: date = date(2023, 1, 15)
    battery_model: BatteryModelSpec = BatteryModelSpec()

    @field_validator("location_id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        return validate_location_id(value)

    @property
    def battery_count(self) -> int:
        return self.ups_count * self.strings_per_ups * self.blocks_per_string


class Fleet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    locations: list[Location]

    @field_validator("locations")
    @classmethod
    def _unique(cls, value: list[Location]) -> list[Location]:
        seen: set[str] = set()
        for location in value:
            if location.location_id in seen:
                raise ValueError(f"location {location.location_id} is listed twice")
            seen.add(location.location_id)
        return value

    def get(self, location_id: str) -> Location:
        for location in self.locations:
            if location.location_id == location_id:
                return location
        raise KeyError(f"location {location_id} is not in the fleet file")


def load_fleet(path: str | Path) -> Fleet:
    """Read and validate a fleet file (YAML); ``SettingsError`` names each problem by its path."""
    try:
        return Fleet.model_validate(read_yaml_mapping(Path(path)))
    except ValidationError as exc:
        raise SettingsError(str(path), problems_of(exc)) from exc


def demo_fleet_path() -> Path:
    """The demo fleet shipped with the package (a copy of ``deploy/fleet.yaml``)."""
    return Path(__file__).with_name("data") / "demo-fleet.yaml"
