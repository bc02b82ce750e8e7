import pytest

from common import ids


def test_builds_the_documented_forms():
    assert ids.ups_id("DC-CNX-01", 1) == "DC-CNX-01-UPS-01"
    assert ids.string_id("DC-CNX-01", 1, 1) == "STR-DC-CNX-01-UPS-01-01"
    assert ids.battery_id("DC-CNX-01", 1, 1, 1) == "BAT-DC-CNX-01-UPS-01-STR-01-001"


def test_battery_round_trip():
    ref = ids.parse_battery_id("BAT-DC-BKK-01-UPS-02-STR-03-036")
    assert (ref.location_id, ref.ups, ref.string, ref.position) == ("DC-BKK-01", 2, 3, 36)
    assert ref.battery_id == "BAT-DC-BKK-01-UPS-02-STR-03-036"
    assert ref.string_id == "STR-DC-BKK-01-UPS-02-03"
    assert ref.ups_id == "DC-BKK-01-UPS-02"


def test_string_and_ups_parse():
    assert ids.parse_string_id("STR-DC-CNX-01-UPS-01-02") == ("DC-CNX-01", 1, 2)
    assert ids.parse_ups_id("DC-CNX-01-UPS-02") == ("DC-CNX-01", 2)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "BAT-DC-CNX-01-UPS-01-STR-01-01",  # short position
        "BAT-DC-CNX-01-UPS-01-STR-01-000",  # zero position
        "BAT-DC-CNX-01-UPS-00-STR-01-001",  # zero UPS
        "bat-DC-CNX-01-UPS-01-STR-01-001",
        "BAT-DC-cnx-01-UPS-01-STR-01-001",
        "BAT-DC-CNX-01-UPS-01-STR-01-001 ",
        "BAT-DC-CNX-01-UPS-01-STR-01-001\n",
        "BAT-DC-CNX-1-UPS-01-STR-01-001",
        "BAT-DC-CNX-01-UPS-01-STR-01-0001",
        "BAT-DC-CNX-01-UPS-01-STR-01-00\u0661",  # Arabic-Indic digit one
        None,
        42,
    ],
)
def test_rejects_anything_else(bad):
    with pytest.raises(ids.InvalidIdError, match="invalid battery ID"):
        ids.parse_battery_id(bad)


@pytest.mark.parametrize(
    ("call", "args"),
    [
        (ids.battery_id, ("DC-CNX-01", 1, 1, 1000)),
        (ids.battery_id, ("DC-CNX-01", 0, 1, 1)),
        (ids.string_id, ("DC-CNX-01", 1, 100)),
        (ids.ups_id, ("DCX-01", 1)),
        (ids.ups_id, ("DC-CNX-01", True)),
    ],
)
def test_builders_refuse_out_of_range(call, args):
    with pytest.raises(ids.InvalidIdError):
        call(*args)


def test_rejects_bad_string_and_ups():
    with pytest.raises(ids.InvalidIdError, match="invalid string ID"):
        ids.parse_string_id("STR-DC-CNX-01-UPS-01-00")
    with pytest.raises(ids.InvalidIdError, match="invalid UPS ID"):
        ids.parse_ups_id("DC-CNX-01-UPS-1")


def test_belongs_to():
    assert ids.battery_belongs_to("BAT-DC-CNX-01-UPS-01-STR-01-001", "DC-CNX-01")
    assert not ids.battery_belongs_to("BAT-DC-BKK-01-UPS-01-STR-01-001", "DC-CNX-01")
    assert not ids.battery_belongs_to("garbage", "DC-CNX-01")
