"""Live events across processes: two ``battery-central serve`` processes on one Redis message
queue (and channel), and a third process emitting as a separate ingest does (``live_events_for``
with ``api.socketio_message_queue``): the clients of both servers get the same events, each in
the rooms it subscribed to only. Then a real ``battery-central ingest`` process as that third
process, fed over MQTT by a private Mosquitto."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import func, select

from central.db.engine import make_engine
from central.db.models import Battery
from central.live_events import message_queue_emitter
from common.schemas import Reading, TelemetryBatch, encode
from common.topics import Topics
from tests.central.fleet_support import demo_birth
from tests.central.test_live_socket import (
    B1,
    B2,
    B_OTHER,
    OTHER_SITE,
    REDIS_URL,
    SITE,
    Recorder,
    emit_mixed,
    expected_mixed,
    live_env,
    populate,
    unique_channel,
    wait_for_queue,
)
from tests.central.test_server import Central, Server, login, make_central
from tests.support import log_tail, stop_process

pytestmark = pytest.mark.integration

# The separate process: ingest's emitter, built from the environment as `battery-central ingest`
# builds it, emitting what the test gives it as JSON lines on stdin: [method, args...].
EMITTER = """
import json, sys
from central.live_events import live_events_for
from central.settings import CentralSettings
events = live_events_for(CentralSettings())
assert type(events).__name__ == "SocketIOLiveEvents", events
for line in sys.stdin:
    method, *args = json.loads(line)
    getattr(events, method)(*args)
print("emitted")
"""


class Recording:
    """Records the calls ``emit_mixed`` makes, to replay them in another process."""

    def __init__(self) -> None:
        self.calls: list[list[object]] = []

    def __getattr__(self, method: str) -> Callable[..., None]:
        return lambda *args: self.calls.append([method, *args])


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Central:
    central = make_central(tmp_path_factory.mktemp("redis"), **live_env(unique_channel()))
    central.prepare()
    populate(central.database_url)
    return central


@pytest.fixture(scope="module")
def servers(setup: Central, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    """Two servers of one database and queue, each in its own working directory (logs)."""
    second = replace(setup, workdir=tmp_path_factory.mktemp("redis-second"))
    started: list[Server] = []
    try:
        for central in (setup, second):
            started.append(central.start("serve"))
        probe = message_queue_emitter(
            REDIS_URL, setup.extra_env["BRM_CENTRAL_API__SOCKETIO_CHANNEL"]
        )
        for server in started:
            wait_for_queue(server, probe)
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def recorders() -> Iterator[Callable[[], Recorder]]:
    made: list[Recorder] = []

    def make() -> Recorder:
        made.append(Recorder())
        return made[-1]

    yield make
    for recorder in made:
        recorder.close()


def emit_from_another_process(setup: Central, workdir: Path) -> None:
    recording = Recording()
    emit_mixed(recording)  # type: ignore[arg-type]
    lines = "".join(json.dumps(call) + "\n" for call in recording.calls)
    done = subprocess.run(
        [sys.executable, "-c", EMITTER],
        env=setup.env,
        cwd=workdir,
        input=lines,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "emitted\n"), done.stderr


def test_clients_of_two_servers_get_the_same_events_from_a_separate_emitter(
    setup: Central,
    servers: list[Server],
    recorders: Callable[[], Recorder],
    tmp_path: Path,
) -> None:
    first, second = servers
    subscriptions = [
        (first, [("location", SITE)]),
        (second, [("location", SITE)]),
        (first, [("battery", B1)]),
        (second, [("battery", B1)]),
        (second, [("location", SITE), ("battery", B1)]),
        (first, [("location", OTHER_SITE), ("battery", B2)]),
        (second, [("battery", B_OTHER)]),
    ]
    tokens = {server.port: login(server)["access_token"] for server in servers}
    clients = []
    for server, targets in subscriptions:
        recorder = recorders().join(server, tokens[server.port])
        for kind, target_id in targets:
            recorder.subscribe(kind, target_id)
        clients.append((recorder, [f"{kind}:{target_id}" for kind, target_id in targets]))
    bystanders = [recorders().join(server, tokens[server.port]) for server in servers]

    emit_from_another_process(setup, tmp_path)

    for recorder, rooms in clients:
        expected = expected_mixed(*rooms)
        got = recorder.until(lambda name, data, last=expected[-1]: (name, data) == last)
        assert got == expected, rooms
    for recorder, _ in clients[:2]:  # the same site on each server: nothing more than the other
        recorder.silent(0.2)
    for bystander in bystanders:
        bystander.silent(0.1)


# --- A real ingest process ---------------------------------------------------------------------

DEADLINE_S = 30.0
BATTERIES = 216  # DC-CNX-01 in the demo fleet: 2 UPS x 3 strings x 36 blocks
NORMAL = {
    "voltage": 13.62,
    "current": 0.35,
    "temperature": 25.4,
    "internal_resistance": 0.0042,
    "soc_pct": 99.5,
    "soh_pct": 96.25,
}
HOT = {**NORMAL, "voltage": 13.61, "temperature": 56.0}  # critical above 55 °C


@dataclass
class Ingested:
    """Two ``serve`` processes and one ``ingest`` process on one SQLite file, one Redis queue and
    channel, one private topic tree of the session's Mosquitto; a publisher on that broker."""

    central: Central
    servers: list[Server]
    ingest: subprocess.Popen[bytes]
    ingest_log: Path
    publisher: mqtt.Client
    topics: Topics

    def logs(self) -> str:
        parts = [f"--- ingest ---\n{log_tail(self.ingest_log, 60)}"]
        parts += [f"--- serve {s.port} ---\n{log_tail(s.stderr, 30)}" for s in self.servers]
        return "\n".join(parts)

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while not condition():
            if self.ingest.poll() is not None:
                pytest.fail(
                    f"ingest exited ({self.ingest.returncode}) waiting for {what}\n" + self.logs()
                )
            if time.monotonic() > deadline:
                pytest.fail(f"{what} not within {DEADLINE_S:g} s\n{self.logs()}")
            time.sleep(0.1)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.publisher.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        assert info.is_published(), topic


def _batteries(database_url: str) -> int:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return connection.scalar(
                select(func.count()).select_from(Battery).where(Battery.location_id == SITE)
            )
    finally:
        engine.dispose()


@pytest.fixture
def ingested(mqtt_broker, tmp_path: Path) -> Iterator[Ingested]:
    """Started in the order an operator would: migrate, admin, fleet; ingest; the site's birth
    (retained) stored; then the servers, each delivering from the queue before the test runs."""
    topics = Topics(f"redis-{uuid.uuid4().hex[:8]}/brm/v1")
    central = make_central(
        tmp_path,
        **live_env(unique_channel()),
        PYTHONUNBUFFERED="1",
        BRM_CENTRAL_MQTT__HOST=mqtt_broker.host,
        BRM_CENTRAL_MQTT__PORT=str(mqtt_broker.port),
        BRM_CENTRAL_MQTT__TOPIC_PREFIX=topics.prefix,
        BRM_CENTRAL_MQTT__CLIENT_ID=f"redis-ingest-{uuid.uuid4().hex[:8]}",
        BRM_CENTRAL_MQTT__SESSION_EXPIRY_S="60",
    )
    central.prepare()
    loaded = central.cli("load-fleet")
    assert loaded.returncode == 0, loaded.stderr
    with ExitStack() as stack:
        publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        publisher.connect(mqtt_broker.host, mqtt_broker.port)
        publisher.loop_start()
        stack.callback(publisher.disconnect)
        stack.callback(publisher.loop_stop)
        # The retained birth taken off the broker again at the end, once ingest has stopped.
        stack.callback(
            lambda: publisher.publish(topics.birth(SITE), b"", qos=1, retain=True).wait_for_publish(
                10
            )
        )
        ingest_log = tmp_path / "ingest.log"
        with ingest_log.open("wb") as log:
            ingest = subprocess.Popen(
                [sys.executable, "-m", "central.cli", "ingest"],
                env=central.env,
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        stack.callback(stop_process, ingest)
        system = Ingested(central, [], ingest, ingest_log, publisher, topics)
        system.wait_until(lambda: "connected to" in ingest_log.read_text(), "ingest connected")
        # Retained, as an agent publishes it.
        system.publish(topics.birth(SITE), encode(demo_birth()), retain=True)
        system.wait_until(lambda: _batteries(central.database_url) == BATTERIES, "the birth stored")
        second = replace(central, workdir=tmp_path / "second")
        second.workdir.mkdir()
        probe = message_queue_emitter(
            REDIS_URL, central.extra_env["BRM_CENTRAL_API__SOCKETIO_CHANNEL"]
        )
        for setup in (central, second):
            server = setup.start("serve")
            stack.callback(server.stop)
            system.servers.append(server)
            wait_for_queue(server, probe)
        yield system


def _reading(battery_id: str, ts: datetime, values: dict[str, float]) -> Reading:
    return Reading(battery_id=battery_id, ts=ts, **values)


def _telemetry(seq: int, reading: Reading) -> bytes:
    batch = TelemetryBatch(
        site_id=SITE, agent_id="agent-1", seq_first=seq, seq_last=seq, readings=[reading]
    )
    return encode(batch)


def _stamp(ts: datetime) -> str:
    """A whole second in UTC as the live events write it."""
    return ts.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _next_of(recorder: Recorder, name: str) -> tuple[list[str], Any]:
    """The names of the events up to the first ``name`` (inclusive), and its data."""
    events = recorder.until(lambda got, _data: got == name)
    return [got for got, _ in events], events[-1][1]


def test_a_real_ingest_process_reaches_clients_of_two_servers(
    ingested: Ingested, recorders: Callable[[], Recorder]
) -> None:
    """What ``battery-central ingest`` stores from MQTT reaches, through Redis, the clients of
    both servers in the rooms of the reading's location and battery: the telemetry_update with
    the published values; for a reading past the critical temperature, its telemetry_update, the
    alert and the battery's new status, in that order. A client of another location, or of
    another battery, hears nothing."""
    first, second = ingested.servers
    tokens = {server.port: login(server)["access_token"] for server in ingested.servers}

    def client(server: Server, kind: str, target_id: str) -> Recorder:
        recorder = recorders().join(server, tokens[server.port])
        recorder.subscribe(kind, target_id)
        return recorder

    listeners = {
        "location on the first": client(first, "location", SITE),
        "location on the second": client(second, "location", SITE),
        "battery on the second": client(second, "battery", B1),
    }
    bystanders = [
        client(first, "location", OTHER_SITE),
        client(second, "location", OTHER_SITE),
        client(first, "battery", B2),  # the same site's, but another block
    ]

    ts = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=10)
    ingested.publish(ingested.topics.telemetry(SITE), _telemetry(0, _reading(B1, ts, NORMAL)))
    for who, recorder in listeners.items():
        names, update = _next_of(recorder, "telemetry_update")
        assert names == ["telemetry_update"], (who, names)
        assert set(update) == {"battery_id", "data", "timestamp"}, who
        assert update["battery_id"] == B1, who
        assert update["timestamp"] == _stamp(ts), who
        assert set(update["data"]) == set(NORMAL), who
        for name, value in NORMAL.items():
            assert update["data"][name] == pytest.approx(value), (who, name)

    hot_ts = ts + timedelta(seconds=5)
    alert_ids = set()
    ingested.publish(ingested.topics.telemetry(SITE), _telemetry(1, _reading(B1, hot_ts, HOT)))
    for who, recorder in listeners.items():
        names, update = _next_of(recorder, "telemetry_update")
        assert names == ["telemetry_update"], (who, names)
        assert update["battery_id"] == B1, who
        assert update["timestamp"] == _stamp(hot_ts), who
        for name, value in HOT.items():
            assert update["data"][name] == pytest.approx(value), (who, name)
        names, alert = _next_of(recorder, "alert")
        assert names == ["alert"], (who, names)
        assert alert["alert_type"] == "temperature_high", who
        assert alert["severity"] == "critical", who
        assert alert["location_id"] == SITE, who
        assert alert["battery_id"] == B1, who
        assert alert["actual_value"] == pytest.approx(56.0), who
        assert alert["threshold_value"] == pytest.approx(55.0), who
        assert alert["is_active"] is True, who
        assert alert["resolved_at"] is None, who
        # The API's alert object: whole seconds (telemetry's timestamp has milliseconds).
        assert alert["triggered_at"] == hot_ts.strftime("%Y-%m-%dT%H:%M:%SZ"), who
        alert_ids.add(alert["id"])
        names, status = _next_of(recorder, "battery_status_update")
        assert names == ["battery_status_update"], (who, names)
        assert status["battery_id"] == B1, who
        assert status["data"]["status"] == "critical", who
        assert status["data"]["active_alerts"] == 1, who
        assert status["data"]["worst_severity"] == "critical", who
    assert len(alert_ids) == 1, "the same alert on each server"
    for bystander in bystanders:
        bystander.silent(0.5)
    assert "could not emit" not in ingested.ingest_log.read_text(), ingested.logs()
