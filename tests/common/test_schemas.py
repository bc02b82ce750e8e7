import json
from datetime import UTC, date, datetime

import pytest
from pydantic import ValidationError

from common import ids
from common.schemas import (
    Birth,
    Events,
    Reading,
    SchemaError,
    State,
    TelemetryBatch,
    decode,
    describe_errors,
    encode,
)

BAT = "BAT-DC-CNX-01-UPS-01-STR-01-001"


def _batch(**overrides):
    payload = {
        "schema": 1,
        "site_id": "DC-CNX-01",
        "agent_id": "agent-cnx",
        "seq_first": 10,
        "seq_last": 11,
        "readings": [
            {
                "battery_id": BAT,
                "ts": "2025-11-30T08:00:00.000Z",
                "voltage": 13.52,
                "current": -2.5,
                "temperature": 28.5,
                "internal_resistance": 0.0045,
                "soc_pct": 95.0,
                "soh_pct": 92.0,
            },
            {
                "battery_id": BAT,
                "ts": "2025-11-30T08:01:00.000Z",
                "voltage": None,
                "current": None,
                "temperature": None,
                "internal_resistance": None,
                "soc_pct": None,
                "soh_pct": None,
            },
        ],
    }
    payload.update(overrides)
    return json.dumps(payload).encode()


def test_telemetry_round_trip_keeps_nulls_and_ms_timestamps():
    batch = decode(TelemetryBatch, _batch())
    assert batch.readings[0].ts == datetime(2025, 11, 30, 8, 0, tzinfo=UTC)
    assert batch.readings[1].voltage is None
    wire = json.loads(encode(batch))
    assert wire["schema"] == 1
    assert wire["readings"][0]["ts"] == "2025-11-30T08:00:00.000Z"
    assert wire["readings"][1]["voltage"] is None
    assert decode(TelemetryBatch, encode(batch)) == batch


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (_batch(schema=2), "unsupported schema version 2"),
        (_batch(seq_last=15), "does not match 2 readings"),
        (_batch(site_id="DC-BKK-01"), "does not belong to site DC-BKK-01"),
        (_batch(readings=[]), "readings"),
        (_batch(extra_field=1), "extra_field"),
        (_batch(agent_id="a b"), "agent_id"),
        (_batch(seq_first=-1, seq_last=0), "seq_first"),
    ],
)
def test_bad_telemetry_names_the_problem(payload, reason):
    with pytest.raises(SchemaError, match=reason):
        decode(TelemetryBatch, payload)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("voltage", 250.0),
        ("soc_pct", 101.0),
        ("temperature", "hot"),
        ("ts", "2025-11-30T08:00:00"),
        ("battery_id", "BAT-1"),
    ],
)
def test_bad_reading_field_is_named_by_path(field, value):
    payload = json.loads(_batch())
    payload["readings"][1][field] = value
    with pytest.raises(SchemaError, match=rf"readings\.1\.{field}"):
        decode(TelemetryBatch, json.dumps(payload))


def test_non_finite_numbers_are_refused():
    with pytest.raises(SchemaError, match="finite"):
        decode(TelemetryBatch, _batch().replace(b"13.52", b"NaN"))


def test_oversized_payload_is_refused_before_parsing():
    with pytest.raises(SchemaError, match="exceeds"):
        decode(TelemetryBatch, b" " * (5 * 1024 * 1024))


def _birth(battery_id=BAT, string_id="STR-DC-CNX-01-UPS-01-01", ups_id="DC-CNX-01-UPS-01"):
    return {
        "schema": 1,
        "site_id": "DC-CNX-01",
        "agent_id": "agent-cnx",
        "ts": "2025-11-30T08:00:00.000Z",
        "ups": [
            {
                "ups_id": ups_id,
                "strings": [
                    {
                        "string_id": string_id,
                        "batteries": [
                            {
                                "battery_id": battery_id,
                                "serial_number": "CSB-HX12-120-2023-001234",
                                "manufacturer": "CSB",
                                "model": "HX12-120",
                                "nominal_voltage_v": 12.0,
                                "nominal_capacity_ah": 120.0,
                                "installed_date": "2023-01-15",
                                "warranty_months": 60,
                                "position": 1,
                            }
                        ],
                    }
                ],
            }
        ],
    }


def test_birth_round_trip():
    birth = decode(Birth, json.dumps(_birth()))
    assert birth.ups[0].strings[0].batteries[0].installed_date == date(2023, 1, 15)
    assert decode(Birth, encode(birth)) == birth


@pytest.mark.parametrize(
    "kwargs",
    [
        {"battery_id": "BAT-DC-CNX-01-UPS-01-STR-02-001"},
        {"string_id": "STR-DC-CNX-01-UPS-02-01", "battery_id": "BAT-DC-CNX-01-UPS-02-STR-01-001"},
        {
            "ups_id": "DC-BKK-01-UPS-01",
            "string_id": "STR-DC-BKK-01-UPS-01-01",
            "battery_id": "BAT-DC-BKK-01-UPS-01-STR-01-001",
        },
    ],
)
def test_birth_refuses_inconsistent_inventory(kwargs):
    with pytest.raises(SchemaError, match=r"listed under|does not belong"):
        decode(Birth, json.dumps(_birth(**kwargs)))


def test_state_offline_will_needs_no_stats():
    will = State(site_id="DC-CNX-01", agent_id="agent-cnx", status="offline")
    assert decode(State, encode(will)).status == "offline"
    online = decode(
        State,
        json.dumps(
            {
                "schema": 1,
                "site_id": "DC-CNX-01",
                "agent_id": "agent-cnx",
                "status": "online",
                "ts": "2025-11-30T08:00:00Z",
                "buffer_depth": 3,
                "dropped_count": 0,
                "devices_up": 7,
                "devices_down": 1,
                "unavailable_devices": ["DC-CNX-01-UPS-02"],
            }
        ),
    )
    assert online.devices_down == 1
    with pytest.raises(SchemaError, match="status"):
        decode(
            State,
            json.dumps({"schema": 1, "site_id": "DC-CNX-01", "agent_id": "a", "status": "asleep"}),
        )


def test_events():
    events = decode(
        Events,
        json.dumps(
            {
                "schema": 1,
                "site_id": "DC-CNX-01",
                "agent_id": "agent-cnx",
                "events": [
                    {
                        "ts": "2025-11-30T08:00:00Z",
                        "kind": "communication_lost",
                        "device_id": "STR-DC-CNX-01-UPS-01-01",
                        "message": "timed out",
                    }
                ],
            }
        ),
    )
    assert events.events[0].kind == "communication_lost"
    with pytest.raises(SchemaError, match="kind"):
        decode(Events, encode(events).replace(b"communication_lost", b"exploded"))


@pytest.mark.parametrize(
    "battery_id",
    [
        BAT,
        "BAT-DC-CNX-01-UPS-99-STR-99-999",
        "BAT-DC-CNX-00-UPS-10-STR-10-100",
        "BAT-DC-CNX-01-UPS-01-STR-01-010",
        "BAT-DC-CNX-01-UPS-00-STR-01-001",
        "BAT-DC-CNX-01-UPS-01-STR-00-001",
        "BAT-DC-CNX-01-UPS-01-STR-01-000",
        "BAT-DC-CNX-01-UPS-01-STR-01-01",
        "BAT-DC-CNX-01-UPS-01-STR-01-0001",
        "BAT-DC-cnx-01-UPS-01-STR-01-001",
        "BAT-DC-CNX-01-UPS-01-STR-01-001\n",
        " BAT-DC-CNX-01-UPS-01-STR-01-001",
        "BAT-DC-CNX-01-UPS-١-STR-01-001",
        "",
    ],
)
def test_battery_ids_are_judged_as_the_id_rules_do_and_refused_in_their_words(battery_id):
    """The schema checks battery IDs by a pattern (in Rust, for speed): same verdict and same
    message as ``common.ids``."""
    payload = json.loads(_batch())
    payload["readings"][0]["battery_id"] = battery_id
    try:
        ids.validate_battery_id(battery_id)
    except ids.InvalidIdError as exc:
        with pytest.raises(SchemaError) as refused:
            decode(TelemetryBatch, json.dumps(payload))
        assert refused.value.reason == f"readings.0.battery_id: Value error, {exc}"
    else:
        payload["site_id"] = ids.parse_battery_id(battery_id).location_id
        payload["readings"][1]["battery_id"] = battery_id
        batch = decode(TelemetryBatch, json.dumps(payload))
        assert batch.readings[0].battery_id == battery_id


def test_a_timestamp_without_zone_is_refused_in_plain_words():
    payload = json.loads(_batch())
    payload["readings"][1]["ts"] = "2025-11-30T08:00:00"
    with pytest.raises(SchemaError) as refused:
        decode(TelemetryBatch, json.dumps(payload))
    assert refused.value.reason == (
        "readings.1.ts: Value error, timestamp 2025-11-30T08:00:00 has no time zone"
    )
    with pytest.raises(ValidationError) as invalid:
        Reading(battery_id=BAT, ts=datetime(2025, 11, 30, 8, 0))
    assert describe_errors(invalid.value) == (
        "ts: Value error, timestamp 2025-11-30T08:00:00 has no time zone"
    )


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("2025-11-30T08:00:00.123Z", datetime(2025, 11, 30, 8, 0, 0, 123000, tzinfo=UTC)),
        ("2025-11-30T08:00:00.123999Z", datetime(2025, 11, 30, 8, 0, 0, 123000, tzinfo=UTC)),
        ("2025-11-30T15:00:00.5+07:00", datetime(2025, 11, 30, 8, 0, 0, 500000, tzinfo=UTC)),
        ("2025-11-30T01:00:00.4567-07:00", datetime(2025, 11, 30, 8, 0, 0, 456000, tzinfo=UTC)),
        ("2025-11-30T08:00:00+00:00", datetime(2025, 11, 30, 8, 0, tzinfo=UTC)),
    ],
)
def test_reading_times_are_utc_with_whole_milliseconds(sent, stored):
    payload = json.loads(_batch())
    payload["readings"][0]["ts"] = sent
    ts = decode(TelemetryBatch, json.dumps(payload)).readings[0].ts
    assert ts == stored
    assert ts.tzinfo is UTC  # datetime's own, as every other time in the programs
    built = Reading(battery_id=BAT, ts=datetime.fromisoformat(sent.replace("Z", "+00:00")))
    assert (built.ts, built.ts.tzinfo) == (stored, UTC)


def test_a_message_without_its_schema_version_is_refused():
    payload = json.loads(_batch())
    del payload["schema"]
    with pytest.raises(SchemaError, match="unsupported schema version None"):
        decode(TelemetryBatch, json.dumps(payload))
