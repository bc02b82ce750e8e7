"""The SNMP contract: scaling, BITS, contexts and communities, and the MIB file agreeing with it."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from common import snmp_oids as so

MIB_FILE = Path(so.__file__).with_name("data") / "BRM-BATTERY-MIB.txt"


def test_oid_text_round_trip() -> None:
    assert so.parse_oid(".1.3.6.1.2.1.33") == so.UPS_MIB
    assert so.format_oid(so.UPS_BATTERY_VOLTAGE.instance()) == "1.3.6.1.2.1.33.1.2.5.0"
    with pytest.raises(ValueError, match="not a numeric OID"):
        so.parse_oid("1.3.six")


def test_scale_rounds_half_up_clamps_and_keeps_missing_missing() -> None:
    tenths = so.Scale(10, "V", 0)
    assert tenths.encode(486.04) == 4860
    assert tenths.encode(486.05) == 4861
    assert tenths.encode(-3.0) == 0  # NonNegativeInteger: clamped, not an error
    assert tenths.encode(math.nan) is None
    assert tenths.encode(None) is None
    assert tenths.decode(4861) == pytest.approx(486.1)
    assert tenths.decode(None) is None
    assert so.Scale(10, "A").encode(-12.34) == -123  # signed current stays signed


def test_units_of_the_served_objects() -> None:
    assert so.scale_of(so.UPS_BATTERY_VOLTAGE).encode(486.0) == 4860  # 0.1 V DC
    assert so.scale_of(so.UPS_BATTERY_CURRENT).encode(-45.0) == -450  # 0.1 A, negative out
    assert so.scale_of(so.UPS_CHARGE_REMAINING).encode(100.4) == 100
    assert so.scale_of(so.UPS_MINUTES_REMAINING).encode(0.0) == 1  # PositiveInteger
    assert so.scale_of(so.BRM_BATTERY_VOLTAGE).encode(13.5) == 13500  # mV
    assert so.scale_of(so.BRM_BATTERY_TEMPERATURE).encode(-2.26) == -23  # 0.1 °C
    assert so.scale_of(so.BRM_BATTERY_RESISTANCE).encode(0.0045) == 4500  # µΩ
    assert so.scale_of(so.BRM_BATTERY_SOH).encode(97.53) == 975  # 0.1 %
    assert so.scale_of(so.BRM_BATTERY_SOC).encode(100.2) == 1000  # clamped to 100.0 %
    assert so.scale_of(so.BRM_STRING_CURRENT).encode(-0.25) == -250  # mA
    assert so.BRM_BATTERY_VOLTAGE.encode(12.8) == 12800
    assert so.BRM_BATTERY_VOLTAGE.decode(12800) == pytest.approx(12.8)
    assert so.UPS_BATTERY_CURRENT.decode(-450) == pytest.approx(-45.0)
    with pytest.raises(TypeError, match="brmBatteryId has no scale"):
        so.BRM_BATTERY_ID.encode(1.0)


def test_bits_are_msb_first_as_smiv2_says() -> None:
    assert so.encode_bits([]) == b"\x00"
    assert so.encode_bits([0]) == b"\x80"
    assert so.encode_bits([1, 4]) == b"\x48"
    assert so.encode_bits([9]) == b"\x00\x40"
    assert so.decode_bits(so.encode_bits([0, 2, 4, 9])) == {0, 2, 4, 9}
    with pytest.raises(ValueError, match="start at 0"):
        so.encode_bits([-1])


def test_contexts_and_communities_name_ups_cards() -> None:
    assert so.context_name(2) == "ups-02"
    assert so.ups_of_context("ups-02") == 2
    assert so.ups_of_context(b"") == 1
    assert so.ups_of_context("ups-00") is None
    assert so.ups_of_context("UPS-01") is None
    assert so.community_for("public", 1) == "public"
    assert so.community_for("public", 2) == "public@2"
    assert so.ups_of_community("public", "public") == 1
    assert so.ups_of_community("public@1", "public") == 1
    assert so.ups_of_community("public@12", "public") == 12
    assert so.ups_of_community("public@x", "public") is None
    assert so.ups_of_community("private@2", "public") is None
    with pytest.raises(ValueError, match=r"1\.\.99"):
        so.context_name(0)


@pytest.mark.parametrize(
    ("charge", "minutes", "expected"),
    [
        (100.0, 60.0, so.BatteryStatus.NORMAL),
        (30.0, 5.0, so.BatteryStatus.LOW),  # at upsConfigLowBattTime
        (0.0, 3.0, so.BatteryStatus.DEPLETED),
        (10.0, 0.0, so.BatteryStatus.DEPLETED),
        (math.nan, 60.0, so.BatteryStatus.NORMAL),
        (math.nan, math.nan, so.BatteryStatus.UNKNOWN),
    ],
)
def test_battery_status(charge: float, minutes: float, expected: so.BatteryStatus) -> None:
    assert so.battery_status(charge, minutes, low_minutes=5) == expected


def _readings(on_battery: bool, currents: list[float]) -> so.UpsReadings:
    return so.UpsReadings.of_strings(
        seconds_on_battery=42.0 if on_battery else 0.0,
        minutes_remaining=20.0,
        charge_pct=80.0,
        string_voltages=[430.0, math.nan, 432.0],
        string_currents=currents,
        block_temperatures=[24.0, 25.0, math.nan],
        on_battery=on_battery,
    )


def test_ups_values_aggregate_parallel_strings() -> None:
    values = so.ups_live_values(_readings(True, [-40.0, -41.0, -39.5]))
    assert values[so.UPS_BATTERY_VOLTAGE.instance()] == 4310  # mean of the known strings
    assert values[so.UPS_BATTERY_CURRENT.instance()] == -1205  # sum, discharging
    assert values[so.UPS_BATTERY_TEMPERATURE.instance()] == 25  # 24.5 rounds half up
    assert values[so.UPS_SECONDS_ON_BATTERY.instance()] == 42
    assert values[so.UPS_OUTPUT_SOURCE.instance()] == so.OutputSource.BATTERY
    assert values[so.UPS_INPUT_VOLTAGE.instance(1)] == 0  # the mains is out
    assert values[so.UPS_OUTPUT_VOLTAGE.instance(1)] == 230


def test_ups_current_is_missing_when_a_string_sensor_is() -> None:
    values = so.ups_live_values(_readings(False, [0.5, math.nan, 0.4]))
    assert values[so.UPS_BATTERY_CURRENT.instance()] is None
    assert values[so.UPS_OUTPUT_SOURCE.instance()] == so.OutputSource.NORMAL
    assert values[so.UPS_INPUT_VOLTAGE.instance(1)] == 230


def test_battery_row_flags_each_missing_reading() -> None:
    readings = {
        "voltage": 13.52,
        "temperature": math.nan,
        "internal_resistance": 0.0051,
        "soc_pct": 100.0,
        "soh_pct": math.nan,
    }
    values = so.battery_row_values(2, 17, readings)
    assert values[so.BRM_BATTERY_VOLTAGE.instance(2, 17)] == 13520
    assert values[so.BRM_BATTERY_TEMPERATURE.instance(2, 17)] is None
    assert values[so.BRM_BATTERY_READING_STATE.instance(2, 17)] == so.ReadingState.PARTIAL
    assert values[so.BRM_BATTERY_MISSING.instance(2, 17)] == so.encode_bits([1, 4])
    columns = {
        oid[len(so.BRM_BATTERY_ENTRY)]: raw for oid, raw in values.items() if raw is not None
    }
    decoded = so.decode_battery_row(columns)
    assert decoded == {
        "voltage": pytest.approx(13.52),
        "temperature": None,
        "internal_resistance": pytest.approx(0.0051),
        "soc_pct": pytest.approx(100.0),
        "soh_pct": None,
    }


def test_row_with_no_reading_is_unavailable() -> None:
    values = so.battery_row_values(1, 1, {})
    assert values[so.BRM_BATTERY_READING_STATE.instance(1, 1)] == so.ReadingState.UNAVAILABLE
    assert so.decode_bits(values[so.BRM_BATTERY_MISSING.instance(1, 1)]) == {0, 1, 2, 3, 4}  # type: ignore[arg-type]


def test_string_row() -> None:
    values = so.string_row_values(3, 486.1, math.nan, so.StringState.DISCHARGING)
    assert values[so.BRM_STRING_VOLTAGE.instance(3)] == 486100
    assert values[so.BRM_STRING_CURRENT.instance(3)] is None
    assert values[so.BRM_STRING_STATE.instance(3)] == 2
    assert values[so.BRM_STRING_MISSING.instance(3)] == so.encode_bits([1])


def test_instances_find_their_object_type() -> None:
    assert so.object_of(so.UPS_BATTERY_VOLTAGE.instance()) is so.UPS_BATTERY_VOLTAGE
    assert so.object_of(so.BRM_BATTERY_SOH.instance(3, 36)) is so.BRM_BATTERY_SOH
    assert so.object_of(so.UPS_BATTERY) is None
    assert so.split_row_oid(so.BRM_BATTERY_SOC.instance(2, 9), so.BRM_BATTERY_ENTRY) == (10, (2, 9))
    assert so.split_row_oid(so.UPS_BATTERY_VOLTAGE.instance(), so.BRM_BATTERY_ENTRY) is None


def test_constant_groups() -> None:
    values = so.ups_config_values(
        so.Mains(voltage_v=220.0, frequency_hz=60.0, low_battery_minutes=3)
    )
    assert values[so.UPS_CONFIG_INPUT_VOLTAGE.instance()] == 220
    assert values[so.UPS_CONFIG_OUTPUT_FREQ.instance()] == 600
    assert values[so.UPS_CONFIG_LOW_BATT_TIME.instance()] == 3


def _mib_assignments() -> dict[str, tuple[str, int]]:
    """name → (parent, arc) of every ``::= { parent arc }`` in the MIB file."""
    text = MIB_FILE.read_text(encoding="ascii")
    kinds = "OBJECT-TYPE|OBJECT IDENTIFIER|OBJECT-IDENTITY|MODULE-IDENTITY"
    assignment = r"(?:(?!^\w).)*?::=\s*\{\s*(\w+)\s+(\d+)(?:\s+(\d+))?\s*\}"
    pattern = re.compile(rf"^(\w+)\s+(?:{kinds}){assignment}", re.M | re.S)
    found: dict[str, tuple[str, int]] = {}
    for match in pattern.finditer(text):
        name, parent, arc, extra = match.groups()
        if extra is not None:  # { enterprises 32473 1 }
            parent, arc = f"{parent}.{arc}", extra
        found[name] = (parent, int(arc))
    return found


def _resolve(name: str, assignments: dict[str, tuple[str, int]]) -> so.Oid:
    if name == "enterprises.32473":
        return so.ENTERPRISE
    parent, arc = assignments[name]
    return (*_resolve(parent, assignments), arc)


def test_mib_file_and_catalogue_agree() -> None:
    assignments = _mib_assignments()
    brm = {obj.name: obj for obj in so.CATALOGUE.values() if obj.oid[:7] == so.ENTERPRISE}
    assert len(brm) == 23
    for name, obj in brm.items():
        assert _resolve(name, assignments) == obj.oid, name
    assert _resolve("brmUpsSimulator", assignments) == so.BRM_SIMULATOR_AGENT
    bits = re.search(r"brmBatteryMissingReadings OBJECT-TYPE\s+SYNTAX\s+BITS \{([^}]*)\}",
                     MIB_FILE.read_text(encoding="ascii"))  # fmt: skip
    assert bits is not None
    assert [int(n) for n in re.findall(r"\((\d+)\)", bits[1])] == list(
        range(len(so.BATTERY_READINGS))
    )
