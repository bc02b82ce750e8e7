"""The register map file and the pure codec: layout, plans, round-trips, sentinels, bad maps."""

import copy
import math
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from common import registermap
from common.registercodec import date_to_yyyymmdd, decode_registers, decode_value, yyyymmdd_to_date
from common.registerimage import blank_image, encode_array, encode_value, write_fields
from common.registermap import (
    FieldKey,
    FieldSpec,
    RegisterMapError,
    field_spans,
    load_register_map,
    mapped_ranges,
    parse_register_map,
    plan_reads,
)

MAP = load_register_map()
ORDERS = [(b, w) for b in ("big", "little") for w in ("big", "little")]


def spec(type_: str, **extra) -> FieldSpec:
    return FieldSpec(name="x", offset=0, type=type_, **extra)


def mapped_addresses(block_count: int) -> set[int]:
    return {a for start, n in mapped_ranges(MAP, block_count) for a in range(start, start + n)}


# --------------------------------------------------------------------------- the shipped map


def test_shipped_map_layout():
    assert (MAP.name, MAP.version, MAP.byte_order, MAP.word_order) == (
        "brm-monitor",
        1,
        "big",
        "big",
    )
    assert MAP.function_codes == [3, 4]
    assert MAP.address("block_count") == 1
    assert MAP.address("string_current") == 6
    assert MAP.address("voltage", 0) == 100
    assert MAP.address("soh_pct", 35) == 100 + 5 * 35 + 4
    assert MAP.address("manufacturer") == 1500
    assert MAP.address("position", 1) == 2000 + 19 + 18
    assert MAP.field("temperature").sentinel == 0x8000
    assert MAP.field("string_voltage").sentinel == 0x7FC00000
    assert MAP.field("string_status").enum == {0: "float", 1: "discharging", 2: "recharging"}


def test_field_names_match_the_telemetry_readings():
    """The agent copies block values straight into readings: the names are the schema's."""
    block = MAP.group("block")
    assert [f.name for f in block.fields] == [
        "voltage",
        "temperature",
        "internal_resistance",
        "soc_pct",
        "soh_pct",
    ]
    assert [f.unit for f in block.fields] == ["V", "°C", "Ω", "%", "%"]


def test_plan_for_36_blocks():
    assert plan_reads(MAP, 36) == [
        (0, 11),
        (100, 125),
        (225, 55),
        (1500, 19),
        (2000, 114),
        (2114, 114),
        (2228, 114),
        (2342, 114),
        (2456, 114),
        (2570, 114),
    ]
    assert plan_reads(MAP, 36, groups=["header", "block"]) == [(0, 11), (100, 125), (225, 55)]
    assert plan_reads(MAP, 0) == [(0, 11), (1500, 19)]


@settings(max_examples=60, deadline=None)
@given(block_count=st.integers(0, 256), limit=st.integers(16, 125))
def test_plans_cover_every_mapped_register_and_no_gap(block_count, limit):
    reads = plan_reads(MAP, block_count, max_registers=limit)
    covered = [a for start, n in reads for a in range(start, start + n)]
    assert all(n <= limit for _, n in reads)
    assert len(covered) == len(set(covered))
    assert set(covered) == mapped_addresses(block_count)
    starts_in = {a: start for start, n in reads for a in range(start, start + n)}
    for span in field_spans(MAP, block_count):
        last = span.address + span.spec.width - 1
        assert starts_in[span.address] == starts_in[last], f"{span.key} is split"


def test_plan_refuses_a_read_too_small_for_a_value():
    with pytest.raises(ValueError, match="serial_number"):
        plan_reads(MAP, 1, max_registers=10)
    with pytest.raises(ValueError, match="0 to 256"):
        plan_reads(MAP, 257)
    with pytest.raises(KeyError, match="nope"):
        plan_reads(MAP, 1, groups=["nope"])


# --------------------------------------------------------------------------- codec


@pytest.mark.parametrize(
    ("type_", "value", "registers"),
    [
        ("uint16", 13524, [13524]),
        ("int16", -215, [0xFF29]),
        ("uint32", 20230115, [0x0134, 0xAFE3]),
        ("int32", -2, [0xFFFF, 0xFFFE]),
        ("float32", 1.0, [0x3F80, 0x0000]),
        ("float32", -12.5, [0xC148, 0x0000]),
    ],
)
def test_known_bit_patterns_big_endian(type_, value, registers):
    assert encode_value(spec(type_), value) == registers
    assert decode_value(spec(type_), registers) == value


def test_word_and_byte_order():
    f = spec("float32")
    assert encode_value(f, -12.5, word_order="little") == [0x0000, 0xC148]
    assert encode_value(f, -12.5, byte_order="little") == [0x48C1, 0x0000]
    assert encode_value(f, -12.5, "little", "little") == [0x0000, 0x48C1]
    assert encode_value(spec("string", length=2), "AB", byte_order="little") == [0x4241, 0]


ROUND_TRIP_VALUES = {
    "uint16": st.integers(0, 0xFFFE),
    "int16": st.integers(-0x7FFF, 0x7FFF),
    "uint32": st.integers(0, 0xFFFFFFFE),
    "int32": st.integers(-0x7FFFFFFF, 0x7FFFFFFF),
    "float32": st.floats(width=32, allow_nan=False, allow_infinity=False),
    "string": st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=8),
}


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
@pytest.mark.parametrize("type_", list(ROUND_TRIP_VALUES))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_round_trip_every_type_and_order(byte_order, word_order, type_, data):
    field = spec(type_, length=4) if type_ == "string" else spec(type_)
    value = data.draw(ROUND_TRIP_VALUES[type_])
    words = encode_value(field, value, byte_order, word_order)
    assert len(words) == field.width
    assert all(0 <= w <= 0xFFFF for w in words)
    decoded = decode_value(field, words, byte_order, word_order)
    expected = float(str(np.float32(value))) if type_ == "float32" else value
    assert decoded == expected


@settings(max_examples=100, deadline=None)
@given(st.floats(0, 65.534))
def test_scaled_values_round_to_the_nearest_step(volts):
    voltage = MAP.field("voltage")
    decoded = decode_value(voltage, encode_value(voltage, volts))
    assert abs(decoded - volts) <= 0.0005 + 1e-12
    assert decoded == round(decoded, 3)


def test_scaled_values_decode_cleanly():
    assert decode_value(MAP.field("voltage"), [13524]) == 13.524
    assert decode_value(MAP.field("temperature"), [0xFF29]) == -21.5
    assert decode_value(MAP.field("internal_resistance"), [4500]) == 0.0045
    assert decode_value(MAP.field("soh_pct"), [1013]) == 101.3
    assert (
        decode_value(MAP.field("string_voltage"), encode_value(spec("float32"), 488.11)) == 488.11
    )


@pytest.mark.parametrize(
    ("type_", "sentinel"),
    [
        ("uint16", [0xFFFF]),
        ("int16", [0x8000]),
        ("uint32", [0xFFFF, 0xFFFF]),
        ("int32", [0x8000, 0x0000]),
        ("float32", [0x7FC0, 0x0000]),
    ],
)
def test_not_available_is_the_sunspec_sentinel(type_, sentinel):
    field = spec(type_)
    assert encode_value(field, None) == sentinel
    assert encode_value(field, math.nan) == sentinel
    assert decode_value(field, sentinel) is None
    assert encode_array(field, np.array([math.nan, math.inf])).tolist() == [sentinel, sentinel]


def test_any_nan_or_infinity_decodes_as_none():
    f = spec("float32")
    for bits in (0x7FC00001, 0xFFC00000, 0x7F800000, 0xFF800000):
        assert decode_value(f, [bits >> 16, bits & 0xFFFF]) is None
    assert encode_value(f, 1e39) == [0x7FC0, 0]  # beyond float32: not available


def test_values_the_field_cannot_hold_become_not_available():
    assert encode_value(MAP.field("voltage"), 70.0) == [0xFFFF]
    assert encode_value(MAP.field("voltage"), -0.1) == [0xFFFF]
    assert encode_value(MAP.field("temperature"), 4000.0) == [0x8000]
    assert encode_value(MAP.field("string_status"), 7) == [0xFFFF]
    assert decode_value(MAP.field("string_status"), [7]) is None
    assert encode_value(MAP.field("position"), 0) == [0xFFFF]
    assert decode_value(MAP.field("position"), [0]) is None
    assert decode_value(MAP.field("installed_date"), [0, 5]) is None


def test_strings():
    manufacturer = MAP.field("manufacturer")
    words = encode_value(manufacturer, "CSB")
    assert words == [0x4353, 0x4200, 0, 0, 0, 0, 0, 0]
    assert decode_value(manufacturer, words) == "CSB"
    assert decode_value(manufacturer, [0x4142, 0x2020, 0, 0, 0, 0, 0, 0]) == "AB"
    assert decode_value(manufacturer, [0] * 8) is None
    assert encode_value(manufacturer, None) == [0] * 8
    with pytest.raises(ValueError, match="longer than 16"):
        encode_value(manufacturer, "A" * 17)
    with pytest.raises(ValueError, match="not ASCII"):
        encode_value(manufacturer, "Ünïcode")
    with pytest.raises(TypeError, match="is a string"):
        encode_value(manufacturer, 5)
    with pytest.raises(TypeError, match="numeric"):
        encode_value(MAP.field("voltage"), "13.5")


def test_decode_checks_the_register_count():
    with pytest.raises(ValueError, match="takes 2 registers"):
        decode_value(MAP.field("string_current"), [1])


def test_dates():
    assert date_to_yyyymmdd(date(2023, 1, 15)) == 20230115
    assert yyyymmdd_to_date(20230115) == date(2023, 1, 15)
    assert yyyymmdd_to_date(20231315) is None
    assert yyyymmdd_to_date(None) is None
    installed = MAP.field("installed_date")
    assert decode_value(installed, encode_value(installed, date(2021, 6, 1))) == 20210601


# --------------------------------------------------------------------------- images and reads


def _sample_values(blocks: int) -> dict:
    rng = np.random.default_rng(7)
    voltage = rng.uniform(12.0, 14.0, blocks)
    voltage[3] = np.nan
    return {
        "map_version": 1,
        "block_count": blocks,
        "string_current": -98.5,
        "string_status": 1,
        "voltage": voltage,
        "temperature": rng.uniform(-5.0, 45.0, blocks),
        "serial_number": [f"SN-{i:04d}" for i in range(blocks)],
        "installed_date": [20230115] * blocks,
        "manufacturer": "CSB",
    }


def test_image_decodes_back_through_planned_reads():
    blocks = 36
    values = _sample_values(blocks)
    image = blank_image(MAP, blocks)
    write_fields(MAP, image, values, blocks)
    decoded = {}
    for start, count in plan_reads(MAP, blocks):
        decoded |= decode_registers(MAP, start, image[start : start + count].tolist(), blocks)
    assert len(decoded) == len(field_spans(MAP, blocks))
    assert decoded[FieldKey("block_count")] == 36
    assert decoded[FieldKey("string_current")] == -98.5
    assert decoded[FieldKey("string_voltage")] is None  # never written: not available
    assert decoded[FieldKey("model")] is None
    assert decoded[FieldKey("voltage", 3)] is None
    for i in (0, 17, 35):
        assert decoded[FieldKey("voltage", i)] == pytest.approx(values["voltage"][i], abs=5e-4)
        assert decoded[FieldKey("temperature", i)] == pytest.approx(
            values["temperature"][i], abs=0.05
        )
        assert decoded[FieldKey("serial_number", i)] == f"SN-{i:04d}"
        assert decoded[FieldKey("soc_pct", i)] is None


def test_vectorised_encoding_matches_one_value_at_a_time():
    temperature = MAP.field("temperature")
    values = np.array([-40.04, -0.05, 0.0, 21.449, 3276.7, 3276.8, np.nan])
    rows = encode_array(temperature, values).tolist()
    assert rows == [encode_value(temperature, float(v)) for v in values]


def test_decode_leaves_out_values_a_read_cuts():
    image = blank_image(MAP, 2)
    write_fields(MAP, image, {"string_current": 1.5, "string_voltage": 27.0}, 2)
    decoded = decode_registers(MAP, 7, image[7:9].tolist(), 2)
    assert decoded == {}
    decoded = decode_registers(MAP, 6, image[6:10].tolist(), 2)
    assert decoded == {FieldKey("string_current"): 1.5, FieldKey("string_voltage"): 27.0}


def test_write_fields_checks_lengths_and_names():
    image = blank_image(MAP, 3)
    with pytest.raises(ValueError, match="needs 3 values"):
        write_fields(MAP, image, {"voltage": [1.0, 2.0]}, 3)
    with pytest.raises(KeyError, match="no field bogus"):
        write_fields(MAP, image, {"bogus": 1}, 3)


# --------------------------------------------------------------------------- bad maps


def _raw_map() -> dict:
    return yaml.safe_load(
        (Path(registermap.__file__).parent / "data" / "brm-monitor-v1.yaml").read_text()
    )


def _edit(change) -> dict:
    data = copy.deepcopy(_raw_map())
    change(data)
    return data


def _field(data: dict, group: int, index: int) -> dict:
    return data["groups"][group]["fields"][index]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: _field(d, 0, 1).update(offset=0), "fields block_count and map_version overlap"),
        (lambda d: _field(d, 1, 4).update(offset=5), "soh_pct runs past the stride"),
        (lambda d: d["groups"][1].update(max_repeat=300), "groups block and string_inventory"),
        (lambda d: d["groups"][1].update(repeat="blocks"), "repeat names no field"),
        (lambda d: d["groups"][1].update(repeat="string_current"), "must be a uint16"),
        (lambda d: d["groups"][1].pop("stride"), "repeat, stride and max_repeat go together"),
        (lambda d: _field(d, 2, 1).update(name="manufacturer"), "manufacturer is used twice"),
        (lambda d: _field(d, 2, 0).pop("length"), "length \\(in registers\\) is for strings"),
        (lambda d: _field(d, 0, 0).update(length=2), "length \\(in registers\\) is for strings"),
        (lambda d: _field(d, 2, 0).update(scale=0.1), "a string takes no scale"),
        (lambda d: _field(d, 0, 5).update(enum={0: "x"}), "an enum must be a 16-bit integer"),
        (lambda d: _field(d, 0, 0).update(type="uint8"), "uint8"),
        (lambda d: _field(d, 0, 0).update(scale=0), "greater than 0"),
        (lambda d: _field(d, 0, 0).update(sclae=2), "sclae"),
        (lambda d: d["groups"][3].update(base=65530), "runs past address 65535"),
        (lambda d: d.update(word_order="middle"), "word_order"),
        (lambda d: d.update(max_read_registers=126), "max_read_registers"),
        (lambda d: d["sentinels"].update(uint16=0x10000), "sentinel does not fit"),
    ],
)
def test_bad_maps_are_rejected_with_the_reason(change, message):
    with pytest.raises(RegisterMapError, match=message):
        parse_register_map(_edit(change), "test map")


def test_load_by_path_and_missing_maps(tmp_path):
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump({**_raw_map(), "name": "custom", "word_order": "little"}))
    custom = load_register_map(path)
    assert (custom.name, custom.word_order) == ("custom", "little")
    with pytest.raises(RegisterMapError, match="no register map brm-monitor-v9"):
        load_register_map("brm-monitor-v9")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nversion: 1\ngroups: []\n")
    with pytest.raises(RegisterMapError, match=r"broken\.yaml is not a valid register map"):
        load_register_map(broken)


def test_custom_sentinels_apply_to_every_field_of_the_type():
    custom = parse_register_map(_edit(lambda d: d["sentinels"].update(uint16=0)))
    voltage = custom.field("voltage")
    assert encode_value(voltage, None) == [0]
    assert decode_value(voltage, [0]) is None
    assert encode_value(voltage, 0.0) == [0]  # indistinguishable from n/a, so it is n/a
    assert encode_value(voltage, 1.0) == [1000]


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ((0x7F7F, 0xFFFF), 3.4028235e38),  # float32 maximum: rounding may not overflow
        ((0x4158, 0x0000), 13.5),
        ((0x3DCC, 0xCCCD), 0.1),  # the float32 nearest 0.1 reads as 0.1, not 0.10000000149
    ],
)
def test_float32_decodes_to_its_shortest_decimal(words, expected):
    assert decode_value(spec("float32"), list(words), "big", "big") == expected
