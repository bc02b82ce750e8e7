"""Decoded device values into readings and nameplates: a bad value is None with a reason."""

from datetime import UTC, date, datetime

import pytest

from edge_agent.drivers.base import InvalidValue
from edge_agent.drivers.values import BLOCK_FIELDS, NOT_AVAILABLE, block_reading, check, string_info

TS = datetime(2026, 11, 22, 12, 0, 0, 123456, tzinfo=UTC)
BAT = "BAT-DC-CNX-01-UPS-01-STR-01-007"
STRING = "STR-DC-CNX-01-UPS-01-01"
GOOD = {
    "voltage": 13.512,
    "temperature": 22.4,
    "internal_resistance": 0.0051,
    "soc_pct": 100,
    "soh_pct": 94.5,
}


def nameplate(position: int, **changes: object) -> dict[str, object]:
    return {
        "serial_number": f"CSB-HX12-120-2023-{position:06d}",
        "manufacturer": "CSB",
        "model": "HX12-120",
        "nominal_voltage_v": 12.0,
        "nominal_capacity_ah": 120.0,
        "installed_date": date(2023, 1, 15),
        "warranty_months": 60,
        "position": position,
        **changes,
    }


def battery(position: int) -> str:
    return f"BAT-DC-CNX-01-UPS-01-STR-01-{position:03d}"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("voltage", 13.5, (13.5, None)),
        ("voltage", 0, (0.0, None)),
        ("soc_pct", 100, (100.0, None)),
        ("current", -2000.0, (-2000.0, None)),
        ("voltage", None, (None, NOT_AVAILABLE)),
        ("voltage", 65.534, (None, "out of range: 65.534 V")),
        ("temperature", 3276.7, (None, "out of range: 3276.7 °C")),
        ("temperature", -40.1, (None, "out of range: -40.1 °C")),
        ("internal_resistance", 65.534, (None, "out of range: 65.534 Ω")),
        ("soh_pct", 6553.4, (None, "out of range: 6553.4 %")),
        ("current", float("nan"), (None, "not a finite number: nan A")),
        ("voltage", float("inf"), (None, "not a finite number: inf V")),
    ],
)
def test_check_keeps_plausible_values_and_says_why_it_drops_the_others(field, value, expected):
    assert check(field, value) == expected


def test_a_good_block_reads_in_full_with_the_string_current():
    reading, invalid = block_reading(BAT, TS, GOOD, -12.5)
    assert invalid == []
    assert reading.battery_id == BAT
    assert reading.ts == datetime(2026, 11, 22, 12, 0, 0, 123000, tzinfo=UTC)
    assert reading.current == -12.5
    assert {name: getattr(reading, name) for name in BLOCK_FIELDS} == pytest.approx(GOOD)
    assert isinstance(reading.soc_pct, float)


def test_garbage_and_missing_values_become_none_never_a_number():
    values = {**GOOD, "voltage": 65.534, "temperature": 3276.7, "soh_pct": None}
    del values["soc_pct"]
    reading, invalid = block_reading(BAT, TS, values, None)
    assert (reading.voltage, reading.temperature, reading.soc_pct, reading.soh_pct) == (None,) * 4
    assert reading.internal_resistance == 0.0051
    assert reading.current is None  # the driver notes the string current once, not per block
    assert invalid == [
        InvalidValue(BAT, "voltage", "out of range: 65.534 V"),
        InvalidValue(BAT, "temperature", "out of range: 3276.7 °C"),
        InvalidValue(BAT, "soc_pct", NOT_AVAILABLE),
        InvalidValue(BAT, "soh_pct", NOT_AVAILABLE),
    ]
    assert reading.model_dump(mode="json")["voltage"] is None  # null on the wire, never 0


def test_a_block_the_device_refused_carries_the_refusal_as_its_reason():
    reading, invalid = block_reading(BAT, TS, {}, 0.2, missing="exception 04 device failure")
    assert all(getattr(reading, name) is None for name in BLOCK_FIELDS)
    assert reading.current == 0.2
    assert invalid == [
        InvalidValue(BAT, name, "exception 04 device failure") for name in BLOCK_FIELDS
    ]


def test_string_info_orders_by_position_and_leaves_out_bad_nameplates():
    rows = [
        (battery(3), nameplate(3)),
        (battery(1), nameplate(1)),
        (battery(2), nameplate(2, serial_number=None)),
        (battery(4), nameplate(4, installed_date=None, nominal_voltage_v=0.0)),
    ]
    info, problems = string_info(STRING, rows)
    assert info.string_id == STRING
    assert [b.battery_id for b in info.batteries] == [battery(1), battery(3)]
    assert info.batteries[0].serial_number == "CSB-HX12-120-2023-000001"
    assert info.batteries[0].installed_date == date(2023, 1, 15)
    assert len(problems) == 2
    assert problems[0].startswith(f"nameplate of {battery(2)}: serial_number")
    assert "installed_date" in problems[1] and "nominal_voltage_v" in problems[1]


def test_string_info_refuses_a_battery_id_that_is_no_battery_id():
    info, problems = string_info(STRING, [("BAT-7", nameplate(1))])
    assert info.batteries == []
    assert len(problems) == 1
    assert "battery_id" in problems[0]
