"""Ingest end to end: a real Mosquitto, the real paho adapter, PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import func, select

from central.db.engine import make_engine, make_session_factory
from central.db.inventory import load_fleet_locations
from central.db.models import (
    AgentSequence,
    Battery,
    QuarantinedMessage,
    SiteEvent,
    SiteState,
    Telemetry,
)
from central.ingest.mqtt import IngestConnection
from central.ingest.service import IngestService
from central.settings import IngestSettings, MqttSettings
from common import ids
from common.fleet import demo_fleet_path, load_fleet
from common.schemas import (
    AgentStatus,
    Event,
    EventKind,
    Events,
    Reading,
    State,
    TelemetryBatch,
    encode,
)
from common.topics import Topics
from tests.central.test_inventory import demo_birth

pytestmark = pytest.mark.integration

SITE = "DC-CNX-01"
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _wait(condition: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.05)


@pytest.fixture
def ingest(mqtt_broker, migrated_url) -> Iterator[tuple[IngestService, Topics, object]]:
    engine = make_engine(migrated_url)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        load_fleet_locations(session, load_fleet(demo_fleet_path()))
    topics = Topics(f"t{uuid.uuid4().hex[:8]}/v1")
    settings = MqttSettings(
        host=mqtt_broker.host,
        port=mqtt_broker.port,
        topic_prefix=topics.prefix,
        client_id=f"ingest-{uuid.uuid4().hex[:8]}",
    )
    service = IngestService(sessions, topics, IngestSettings(batch_max_wait_s=0.05))
    connection = IngestConnection(settings, service.inbox.put)
    connection.start()
    assert connection.subscribed.wait(10)
    stop = threading.Event()
    worker = threading.Thread(target=service.run, args=(stop,))
    worker.start()
    try:
        yield service, topics, sessions
    finally:
        stop.set()
        worker.join(10)
        connection.stop()
        engine.dispose()


@pytest.fixture
def publish(mqtt_broker) -> Iterator[Callable[[str, bytes], None]]:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(mqtt_broker.host, mqtt_broker.port)
    client.loop_start()

    def send(topic: str, payload: bytes) -> None:
        client.publish(topic, payload, qos=1).wait_for_publish(10)

    yield send
    client.loop_stop()
    client.disconnect()


def _batch(seq_first: int, count: int) -> TelemetryBatch:
    return TelemetryBatch(
        site_id=SITE,
        agent_id="agent-1",
        seq_first=seq_first,
        seq_last=seq_first + count - 1,
        readings=[
            Reading(
                battery_id=ids.battery_id(SITE, 1, 1, 1 + i % 36),
                ts=T0 + timedelta(minutes=seq_first + i),
                voltage=13.6,
            )
            for i in range(count)
        ],
    )


def _count(sessions, model) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_telemetry_is_stored_once_and_bad_input_is_quarantined(ingest, publish):
    service, topics, sessions = ingest
    payload = encode(_batch(1, 100))
    publish(topics.telemetry(SITE), payload)
    publish(topics.telemetry(SITE), payload)  # a redelivery
    publish(topics.telemetry(SITE), b"{not json")
    publish(topics.telemetry("DC-BKK-01"), payload)  # site mismatch
    publish(topics.telemetry(SITE), encode(_batch(101, 10)))
    _wait(lambda: service.stats.messages == 5)
    assert service.stats.readings_inserted == 110
    assert service.stats.readings_duplicate == 100
    assert service.stats.quarantined == 2
    assert _count(sessions, Telemetry) == 110
    with sessions() as session:
        reasons = sorted(session.scalars(select(QuarantinedMessage.reason)))
        sequence = session.scalars(select(AgentSequence)).one()
    assert reasons[0].startswith("schema: payload is not JSON")
    assert reasons[1].startswith("site mismatch")
    assert (sequence.highest_seq, sequence.duplicates, sequence.gaps) == (110, 100, 0)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_birth_upserts_the_inventory(ingest, publish):
    service, topics, sessions = ingest
    publish(topics.birth(SITE), encode(demo_birth()))
    _wait(lambda: service.stats.births == 1)
    assert _count(sessions, Battery) == 216


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_state_and_events_are_recorded_per_site(ingest, publish):
    service, topics, sessions = ingest
    online = State(
        site_id=SITE,
        agent_id="agent-1",
        status=AgentStatus.ONLINE,
        ts=T0,
        devices_up=5,
        devices_down=1,
        unavailable_devices=["STR-DC-CNX-01-UPS-01-01"],
    )
    lost = Event(
        ts=T0,
        kind=EventKind.COMMUNICATION_LOST,
        device_id="STR-DC-CNX-01-UPS-01-01",
        message="no answer",
    )
    publish(topics.state(SITE), encode(online))
    publish(topics.events(SITE), encode(Events(site_id=SITE, agent_id="agent-1", events=[lost])))
    _wait(lambda: service.stats.messages == 2)
    with sessions() as session:
        state = session.scalars(select(SiteState)).one()
        event = session.scalars(select(SiteEvent)).one()
    assert (state.site_id, state.status, state.devices_down) == (SITE, "online", 1)
    assert state.unavailable_devices == "STR-DC-CNX-01-UPS-01-01"
    assert (event.site_id, event.kind, event.ts) == (SITE, "communication_lost", T0)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_messages_received_but_not_committed_are_redelivered_after_a_crash(
    mqtt_broker, migrated_url, publish
):
    engine = make_engine(migrated_url)
    sessions = make_session_factory(engine)
    topics = Topics(f"t{uuid.uuid4().hex[:8]}/v1")
    settings = MqttSettings(
        host=mqtt_broker.host,
        port=mqtt_broker.port,
        topic_prefix=topics.prefix,
        client_id=f"ingest-{uuid.uuid4().hex[:8]}",
    )
    try:
        # First life: messages arrive but are never stored, so never acknowledged.
        crashed = IngestService(sessions, topics, IngestSettings())
        connection = IngestConnection(settings, crashed.inbox.put)
        connection.start()
        assert connection.subscribed.wait(10)
        publish(topics.telemetry(SITE), encode(_batch(1, 5)))
        _wait(lambda: crashed.inbox.qsize() == 1)
        connection.stop()
        assert _count(sessions, Telemetry) == 0

        # Second life, same client id: the broker redelivers, and now it is stored.
        service = IngestService(sessions, topics, IngestSettings(batch_max_wait_s=0.05))
        connection = IngestConnection(settings, service.inbox.put)
        connection.start()
        stop = threading.Event()
        worker = threading.Thread(target=service.run, args=(stop,))
        worker.start()
        try:
            _wait(lambda: service.stats.messages >= 1)
        finally:
            stop.set()
            worker.join(10)
            connection.stop()
        assert _count(sessions, Telemetry) == 5
    finally:
        engine.dispose()


def test_the_ingest_program_loads_neither_the_api_nor_gunicorn():
    """What ``battery-central ingest`` imports: it starts ~0.5 s sooner without the API (which
    brings scipy) and the production server, and ~0.25 s sooner again without Socket.IO, which
    only a live feed through a message queue needs."""
    code = (
        "import sys\n"
        "from central import cli, live_events, runtime\n"
        "from central.ingest import loop, mqtt\n"
        "from central.settings import CentralSettings\n"
        "live_events.live_events_for(CentralSettings())\n"
        "loaded = ('central.api', 'gunicorn', 'scipy', 'flask_socketio')\n"
        "print(sorted(m for m in loaded if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stdout
