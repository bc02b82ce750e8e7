import json
from datetime import UTC, date, datetime

import pytest

from common.schemas import (
    Birth,
    Events,
    SchemaError,
    State,
    TelemetryBatch,
    decode,
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
