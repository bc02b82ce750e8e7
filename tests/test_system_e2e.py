"""The whole data path on real parts, as an operator would run it: the simulated site, a real
``battery-agent``, the session's Mosquitto, ``battery-central ingest`` and ``serve`` processes on
a fresh PostgreSQL schema. Only what the REST API (and the database behind it) shows counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import Engine, func, select, tuple_

from central.battery_status import battery_status
from central.db.engine import make_engine
from central.db.models import AgentSequence, Battery, BatteryLatest, QuarantinedMessage, Telemetry
from common.schemas import TelemetryBatch, decode
from common.topics import Topics
from common.units import MEASUREMENTS
from tests.central.api_support import PASSWORD, SECRET
from tests.edge_agent.conftest import AgentProcess, agent_settings
from tests.mqtt_capture import Capture
from tests.support import (
    READING_TOLERANCE,
    free_tcp_port,
    log_tail,
    pg_schema,
    stop_process,
    wait_for_tcp,
)

pytestmark = pytest.mark.integration

SITE = "DC-CNX-01"
BATTERIES = 216
BATTERY_CENTRAL = Path(sys.executable).with_name("battery-central")
POLL_INTERVAL_S = 2
ARRIVAL_DEADLINE_S = 60.0
READINGS_PER_BATTERY = 3


def _wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    processes: Sequence[tuple[str, subprocess.Popen[bytes] | None, Callable[[], str]]],
) -> None:
    """Poll ``condition`` until it holds; fail with the logs on the deadline, or at once when
    one of ``processes`` (name, process, log) has died, rather than waiting out the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        logs = "\n".join(log() for _, _, log in processes)
        for name, process, _ in processes:
            if process is None or process.poll() is not None:
                pytest.fail(f"{name} is not running while waiting for {what}\n{logs}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {timeout:g} s\n{logs}")
        time.sleep(0.25)


def _z(ts: datetime) -> str:
    """RFC 3339 UTC with milliseconds, as the API's query parameters take it."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass
class Child:
    """A long-running ``battery-central`` process, its stdout and stderr in one log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period (``stop_process``)."""
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def log(self) -> str:
        return f"--- {self.name} ---\n{log_tail(self.log_path, 40)}"


@dataclass
class Central:
    """``battery-central`` configured through its environment, as the README tells operators."""

    workdir: Path
    database_url: str
    broker_host: str
    broker_port: int
    prefix: str
    client_id: str = field(default_factory=lambda: f"ingest-{uuid.uuid4().hex[:8]}")

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRM_CENTRAL_")}
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "BRM_CENTRAL_DATABASE_URL": self.database_url,
                "BRM_CENTRAL_MQTT__HOST": self.broker_host,
                "BRM_CENTRAL_MQTT__PORT": str(self.broker_port),
                "BRM_CENTRAL_MQTT__TOPIC_PREFIX": self.prefix,
                # Unique, so no other test's persisted session is taken over; short-lived at
                # the broker once this test is done.
                "BRM_CENTRAL_MQTT__CLIENT_ID": self.client_id,
                "BRM_CENTRAL_MQTT__SESSION_EXPIRY_S": "60",
                "BRM_CENTRAL_API__JWT_SECRET": SECRET,
                "BRM_CENTRAL_API__LOGIN_RATE_LIMIT": "1000 per minute",
                "BRM_CENTRAL_API__RATE_LIMIT": "10000 per minute",
            }
        )
        return env

    def cli(self, *args: str, stdin: str | None = None) -> str:
        """Run one command to completion; its stdout, or fail with its stderr."""
        done = subprocess.run(
            [str(BATTERY_CENTRAL), *args],
            env=self.env,
            cwd=self.workdir,
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert done.returncode == 0, f"battery-central {' '.join(args)}: {done.stderr}"
        return done.stdout

    def child(self, name: str, *args: str) -> Child:
        return Child(name, [str(BATTERY_CENTRAL), *args], self.env, self.workdir)


@dataclass
class Api:
    """A logged-in REST client of a real ``battery-central serve``."""

    base: str
    token: str = ""

    def request(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(
            f"{self.base}{path}", data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def get(self, path: str, **query: object) -> Any:
        if query:
            path = f"{path}?{urllib.parse.urlencode(query)}"
        status, body = self.request("GET", path)
        assert status == 200, (path, status, body)
        return body

    def login(self, username: str, password: str) -> None:
        status, body = self.request(
            "POST", "/api/v1/auth/login", {"username": username, "password": password}
        )
        assert status == 200, body
        self.token = body["access_token"]


@dataclass
class System:
    """Everything running for one test, with handles to look at it."""

    database_url: str
    topics: Topics
    engine: Engine
    api: Api
    agent: AgentProcess
    ingest: Child
    server: Child

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``condition``; fail with every log on the deadline or if a process died."""
        processes = [
            ("battery-central ingest", self.ingest.process, self.ingest.log),
            ("battery-agent", self.agent.process, lambda: f"--- agent ---\n{self.agent.log()}"),
            ("battery-central serve", self.server.process, self.server.log),
        ]
        _wait_until(condition, timeout, what, processes)


def _stop_agent(agent: AgentProcess) -> None:
    if agent.process is not None:
        stop_process(agent.process)
        agent.process = None


@pytest.fixture
def pg_schema_url(pg_database_url: str) -> Iterator[str]:
    """An empty private schema of the session's PostgreSQL database, dropped afterwards."""
    with pg_schema(pg_database_url, "sys") as url:
        yield url


@pytest.fixture
def system(simulated_site, mqtt_broker, pg_schema_url: str, tmp_path: Path) -> Iterator[System]:
    """Migrate, load the fleet, create an admin, start ingest, the agent and the API server.

    Every process is stopped on the way out, whatever happened, so a failing test leaves
    nothing running.
    """
    prefix = f"sys-{uuid.uuid4().hex[:8]}/brm/v1"  # retained birth/state of other tests unseen
    central = Central(tmp_path, pg_schema_url, mqtt_broker.host, mqtt_broker.port, prefix)
    assert "(head)" in central.cli("db", "upgrade")
    assert "locations:" in central.cli("load-fleet")
    central.cli(
        "create-admin", "--username", "admin", "--email", "admin@example.com", "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip

    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    settings = agent_settings(simulated_site, mqtt_broker, agent_dir, prefix)
    for device in settings["devices"]:
        device.update(interval_s=POLL_INTERVAL_S, timeout_s=1.0)
    agent = AgentProcess(agent_dir, settings)
    ingest = central.child("ingest", "ingest")
    port = free_tcp_port()
    server = central.child(
        "serve", "serve", "--host", "127.0.0.1", "--port", str(port), "--threads", "4"
    )
    engine = make_engine(pg_schema_url)
    with ExitStack() as stack:
        stack.callback(engine.dispose)
        stack.callback(ingest.stop)
        ingest.start()
        # Telemetry is not retained: subscribe before the agent publishes anything.
        _wait_until(
            lambda: "connected to" in ingest.log_path.read_text(errors="replace"),
            30,
            "ingest connected to the broker",
            [("battery-central ingest", ingest.process, ingest.log)],
        )
        stack.callback(server.stop)
        server.start()
        try:
            wait_for_tcp(port, timeout=30)
        except TimeoutError:
            pytest.fail(f"battery-central serve did not listen\n{server.log()}")
        stack.callback(_stop_agent, agent)
        agent.start()
        api = Api(f"http://127.0.0.1:{port}")
        api.login("admin", PASSWORD)
        yield System(pg_schema_url, Topics(prefix), engine, api, agent, ingest, server)


def _telemetry_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(Telemetry.battery_id, func.count()).group_by(Telemetry.battery_id)
        )
        return {battery: n for battery, n in rows}


def _site_batteries(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(
            select(func.count()).select_from(Battery).where(Battery.location_id == SITE)
        )


def _latest_rows(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(BatteryLatest))


def _quarantined(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(QuarantinedMessage))


def _sequence(engine: Engine, agent_id: str) -> AgentSequence | None:
    with engine.connect() as connection:
        return connection.execute(
            select(AgentSequence).where(AgentSequence.agent_id == agent_id)
        ).first()


def _twin_index(snapshot: dict, battery_id: str) -> tuple[int, int]:
    """(string row, block) of ``battery_id`` in the simulator's snapshot arrays."""
    for k, row in enumerate(snapshot["battery_ids"]):
        if battery_id in row:
            return k, row.index(battery_id)
    raise KeyError(battery_id)


def test_site_readings_reach_the_rest_api(system: System, simulated_site) -> None:
    """Every block of the site shows up in the REST API with its latest reading and a history.

    Proves the wiring across processes (agent config → topics → ingest's subscriptions →
    PostgreSQL → API queries), which no single-package test covers.
    """
    engine = system.engine

    def arrived() -> bool:
        counts = _telemetry_counts(engine)
        return (
            _site_batteries(engine) == BATTERIES
            and _latest_rows(engine) == BATTERIES
            and len(counts) == BATTERIES
            and min(counts.values()) >= READINGS_PER_BATTERY
        )

    system.wait_until(arrived, ARRIVAL_DEADLINE_S, "readings of all 216 blocks stored")

    api = system.api
    page = api.get(f"/api/v1/locations/{SITE}/batteries", limit=1000)
    snapshot = simulated_site.snapshot()
    twin_ids = {b for row in snapshot["battery_ids"] for b in row}
    assert page["total"] == BATTERIES
    assert {b["battery_id"] for b in page["batteries"]} == twin_ids  # the agent's birth
    t = READING_TOLERANCE
    for battery in page["batteries"]:
        latest = battery["latest_telemetry"]
        assert latest is not None, battery["battery_id"]
        assert battery["serial_number"].startswith("CSB-HX12-120-")
        assert 12.0 <= latest["voltage"] <= 15.0
        k, b = _twin_index(snapshot, battery["battery_id"])
        assert latest["voltage"] == pytest.approx(snapshot["voltage"][k][b], abs=t["voltage"])
        assert latest["temperature"] == pytest.approx(
            snapshot["temperature"][k][b], abs=t["temperature"]
        )
        assert latest["internal_resistance"] == pytest.approx(
            snapshot["internal_resistance"][k][b], rel=t["internal_resistance_rel"]
        )
        assert latest["soc_pct"] == pytest.approx(snapshot["soc_pct"][k][b], abs=t["soc_pct"])
        assert latest["soh_pct"] == pytest.approx(snapshot["soh_pct"][k][b], abs=t["soh_pct"])
        assert latest["current"] == pytest.approx(snapshot["string_current"][k], abs=t["current"])
        assert battery["status"] in {"healthy", "warning", "critical"}
        if battery["active_alerts"] == 0:
            assert battery["status"] == battery_status(True, latest["soh_pct"], None).value

    locations = {loc["location_id"]: loc for loc in api.get("/api/v1/locations")["locations"]}
    assert locations[SITE]["total_batteries"] == BATTERIES
    assert locations[SITE]["active_batteries"] == BATTERIES
    assert locations[SITE]["average_soh"] is not None

    # One block read over Modbus (UPS 01), one over SNMP (UPS 02): each has a history.
    by_id = {b["battery_id"]: b for b in page["batteries"]}
    for battery_id in ("BAT-DC-CNX-01-UPS-01-STR-02-017", "BAT-DC-CNX-01-UPS-02-STR-03-036"):
        newest = _parse(by_id[battery_id]["latest_telemetry"]["timestamp"])
        series = api.get(
            f"/api/v1/batteries/{battery_id}/telemetry",
            start=_z(newest - timedelta(hours=1)),
            end=_z(newest + timedelta(hours=1)),
        )
        stamps = [_parse(point["timestamp"]) for point in series["data"]]
        assert series["count"] == len(stamps) >= READINGS_PER_BATTERY
        assert stamps == sorted(set(stamps))  # strictly increasing: none twice
        assert newest in stamps
        assert all(12.0 <= point["voltage"] <= 15.0 for point in series["data"])

    # Everything the real agent sent met the contract, and its sequence has no hole.
    assert _quarantined(engine) == 0
    sequence = _sequence(engine, system.agent.settings["agent_id"])
    assert sequence is not None
    assert (sequence.gaps, sequence.missing_readings, sequence.duplicates) == (0, 0, 0)


def test_a_redelivered_batch_is_stored_once(system: System, mqtt_broker) -> None:
    """A real batch of the agent, published twice more, adds no row and counts as duplicates.

    QoS 1 is at-least-once: ingest must absorb redeliveries, keyed by (battery_id, ts).
    """
    engine = system.engine
    agent_id = system.agent.settings["agent_id"]
    capture = Capture(mqtt_broker.host, mqtt_broker.port, system.topics.telemetry(SITE))
    try:
        capture.wait_for(lambda c: len(c.of("telemetry")) >= 1, ARRIVAL_DEADLINE_S)
    finally:
        capture.close()
    message = capture.of("telemetry")[0]
    batch = decode(TelemetryBatch, message.payload)
    keys = [(r.battery_id, r.ts) for r in batch.readings]
    assert len(set(keys)) == len(keys)

    def stored_keys() -> dict[tuple[str, datetime], int]:
        with engine.connect() as connection:
            rows = connection.execute(
                select(Telemetry.battery_id, Telemetry.ts, func.count())
                .where(tuple_(Telemetry.battery_id, Telemetry.ts).in_(keys))
                .group_by(Telemetry.battery_id, Telemetry.ts)
            )
            return {(battery, ts): n for battery, ts, n in rows}

    system.wait_until(lambda: len(stored_keys()) == len(keys), 30, "the captured batch stored")
    system.wait_until(
        lambda: _sequence(engine, agent_id) is not None, 10, "the agent's sequence booked"
    )
    before = _sequence(engine, agent_id).duplicates

    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    publisher.connect(mqtt_broker.host, mqtt_broker.port)
    publisher.loop_start()
    try:
        for _ in range(2):
            publisher.publish(message.topic, message.payload, qos=1).wait_for_publish(10)
    finally:
        publisher.loop_stop()
        publisher.disconnect()

    system.wait_until(
        lambda: _sequence(engine, agent_id).duplicates >= before + 2 * len(keys),
        30,
        "both redeliveries counted as duplicates",
    )
    # Exactly the redelivered readings count: the live traffic alongside made no duplicate.
    assert _sequence(engine, agent_id).duplicates == before + 2 * len(keys)
    assert stored_keys() == dict.fromkeys(keys, 1)
    assert _quarantined(engine) == 0

    # Through the API: each redelivered instant once, with the batch's values, among the
    # readings the agent has taken since (so neighbours in time cannot be mistaken for it).
    readings = {r.battery_id: r for r in batch.readings}
    picked = sorted(readings)[:: max(1, len(readings) // 3)][:3]
    system.wait_until(
        lambda: all(_telemetry_counts(engine).get(b, 0) >= READINGS_PER_BATTERY for b in picked),
        ARRIVAL_DEADLINE_S,
        "later readings of the redelivered blocks",
    )
    for battery_id in picked:
        reading = readings[battery_id]
        exact = system.api.get(
            f"/api/v1/batteries/{battery_id}/telemetry", start=_z(reading.ts), end=_z(reading.ts)
        )
        assert exact["count"] == 1
        assert _parse(exact["data"][0]["timestamp"]) == reading.ts
        assert {m: exact["data"][0][m] for m in MEASUREMENTS} == reading.model_dump(
            include=set(MEASUREMENTS)
        )
        around = system.api.get(
            f"/api/v1/batteries/{battery_id}/telemetry",
            start=_z(reading.ts - timedelta(hours=1)),
            end=_z(reading.ts + timedelta(hours=1)),
        )
        stamps = [_parse(point["timestamp"]) for point in around["data"]]
        assert len(stamps) >= READINGS_PER_BATTERY
        assert stamps.count(reading.ts) == 1
        assert stamps == sorted(set(stamps))
