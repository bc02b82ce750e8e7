"""The pure ingest decision: every (topic, payload) becomes exactly one decision, no I/O."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from central.ingest.process import (
    Quarantine,
    RecordEvents,
    RecordState,
    StoreTelemetry,
    UpsertBirth,
    decide,
)
from common import ids
from common.schemas import (
    AgentStatus,
    Birth,
    Event,
    EventKind,
    Events,
    Reading,
    State,
    TelemetryBatch,
    encode,
)
from common.topics import Topics

SITE = "DC-CNX-01"
TOPICS = Topics()
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def telemetry(site: str = SITE, seq_first: int = 1, count: int = 2) -> TelemetryBatch:
    readings = [
        Reading(
            battery_id=ids.battery_id(site, 1, 1, i + 1),
            ts=T0 + timedelta(seconds=i),
            voltage=13.6,
        )
        for i in range(count)
    ]
    return TelemetryBatch(
        site_id=site,
        agent_id="agent-1",
        seq_first=seq_first,
        seq_last=seq_first + count - 1,
        readings=readings,
    )


def test_telemetry_on_its_site_is_stored():
    batch = telemetry()
    assert decide(TOPICS, TOPICS.telemetry(SITE), encode(batch)) == StoreTelemetry(batch)


def test_birth_state_and_events_are_recognised():
    birth = Birth(site_id=SITE, agent_id="a", ts=T0, ups=[])
    state = State(site_id=SITE, agent_id="a", status=AgentStatus.ONLINE)
    event = Event(ts=T0, kind=EventKind.COMMUNICATION_LOST, device_id="m1", message="timeout")
    events = Events(site_id=SITE, agent_id="a", events=[event])
    assert decide(TOPICS, TOPICS.birth(SITE), encode(birth)) == UpsertBirth(birth)
    assert decide(TOPICS, TOPICS.state(SITE), encode(state)) == RecordState(state)
    assert decide(TOPICS, TOPICS.events(SITE), encode(events)) == RecordEvents(events)


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("brm/v1/DC-CNX-01/telemetry", b"not json", "schema: payload is not JSON"),
        ("brm/v1/DC-CNX-01/telemetry", b"[]", "schema: payload is not a JSON object"),
        ("brm/v1/DC-CNX-01/telemetry", b'{"schema": 2}', "schema: unsupported schema version"),
        ("brm/v1/DC-CNX-01/telemetry", b'{"schema": 1}', "schema: site_id: Field required"),
        ("other/DC-CNX-01/telemetry", b"{}", "topic: topic 'other/DC-CNX-01/telemetry' is not"),
        ("brm/v1/DC-CNX-01/alarms", b"{}", "topic: topic 'brm/v1/DC-CNX-01/alarms' is not"),
        ("brm/v1/nowhere/telemetry", b"{}", "topic: topic 'brm/v1/nowhere/telemetry' is not"),
    ],
)
def test_malformed_input_is_quarantined_with_its_reason(topic, payload, reason):
    decision = decide(TOPICS, topic, payload)
    assert isinstance(decision, Quarantine)
    assert decision.reason.startswith(reason)


def test_topic_site_must_equal_payload_site():
    decision = decide(TOPICS, TOPICS.telemetry("DC-BKK-01"), encode(telemetry()))
    assert decision == Quarantine("site mismatch: topic site DC-BKK-01, payload site_id DC-CNX-01")


def test_battery_of_another_site_is_quarantined():
    raw = json.loads(encode(telemetry()))
    raw["readings"][1]["battery_id"] = ids.battery_id("DC-BKK-01", 1, 1, 1)
    decision = decide(TOPICS, TOPICS.telemetry(SITE), json.dumps(raw).encode())
    assert isinstance(decision, Quarantine)
    assert "does not belong to site DC-CNX-01" in decision.reason


def test_a_custom_prefix_is_honoured():
    topics = Topics("fleet/x")
    batch = telemetry()
    assert decide(topics, topics.telemetry(SITE), encode(batch)) == StoreTelemetry(batch)
    assert isinstance(decide(topics, TOPICS.telemetry(SITE), encode(batch)), Quarantine)
