import math

import pytest
from pydantic import ValidationError

from common.fleet import Fleet, demo_fleet_path, load_fleet
from common.units import MEASUREMENTS, checked


def test_demo_fleet_matches_the_reference():
    fleet = load_fleet(demo_fleet_path())
    assert len(fleet.locations) == 9
    cnx = fleet.get("DC-CNX-01")
    assert cnx.name == "Chiang Mai Data Center"
    assert cnx.temp_offset_c == -2.0
    assert cnx.power_outage_frequency_per_year == 2
    assert all(location.battery_count == 216 for location in fleet.locations)
    assert cnx.battery_model.nominal_capacity_ah == 120.0


def test_fleet_refuses_duplicates_and_bad_ids():
    location = load_fleet(demo_fleet_path()).locations[0].model_dump()
    with pytest.raises(ValidationError, match="listed twice"):
        Fleet.model_validate({"locations": [location, location]})
    with pytest.raises(ValidationError, match="invalid location ID"):
        Fleet.model_validate({"locations": [{**location, "location_id": "CNX"}]})


def test_unknown_location():
    with pytest.raises(KeyError, match="DC-XXX-01"):
        load_fleet(demo_fleet_path()).get("DC-XXX-01")


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("voltage", 13.5, 13.5),
        ("voltage", -1.0, None),
        ("voltage", math.nan, None),
        ("soc_pct", 100.0, 100.0),
        ("soc_pct", 655.35, None),
        ("temperature", math.inf, None),
        ("internal_resistance", None, None),
    ],
)
def test_checked_never_invents_a_value(name, value, expected):
    assert checked(name, value) == expected


def test_units_cover_every_reading_field():
    assert set(MEASUREMENTS) == {
        "voltage",
        "current",
        "temperature",
        "internal_resistance",
        "soc_pct",
        "soh_pct",
    }


def test_bad_fleet_file_names_each_problem(tmp_path):
    from common.settings import SettingsError

    path = tmp_path / "fleet.yaml"
    path.write_text("locations:\n  - {location_id: DC-CNX-01, name: x}\n")
    with pytest.raises(SettingsError) as info:
        load_fleet(path)
    assert "locations.0.region: Field required" in info.value.problems
