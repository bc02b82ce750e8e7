"""``battery-central serve`` and ``run``: real gunicorn processes on free ports, real clients."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import socketio
from sqlalchemy import func, select

from central import migrations
from central.db.engine import make_engine
from central.db.models import Telemetry
from common import ids
from common.schemas import Reading, TelemetryBatch, encode
from common.topics import Topics
from tests.central.api_support import PASSWORD, SECRET
from tests.support import free_tcp_port, log_tail, stop_process, wait_for_tcp

pytestmark = pytest.mark.integration

STOP_WITHIN_S = 5.0


@dataclass
class Central:
    """A ``battery-central`` setup: a SQLite file, a JWT secret, a private topic tree."""

    workdir: Path
    database_url: str
    extra_env: dict[str, str] = field(default_factory=dict)
    jwt_secret: str | None = SECRET

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRM_CENTRAL_")}
        env["BRM_CENTRAL_DATABASE_URL"] = self.database_url
        env["BRM_CENTRAL_API__LOGIN_RATE_LIMIT"] = "1000 per minute"
        if self.jwt_secret is not None:
            env["BRM_CENTRAL_API__JWT_SECRET"] = self.jwt_secret
        return {**env, **self.extra_env}

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "central.cli", *args],
            env=self.env,
            cwd=self.workdir,
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    def prepare(self) -> None:
        """Migrate the database and create the ``admin`` user, as an operator would."""
        for args, stdin in [
            (("db", "upgrade"), None),
            (("create-admin", "--username", "admin", "--email", "a@example.com",
              "--password-stdin"), PASSWORD + "\n"),
        ]:  # fmt: skip
            done = self.cli(*args, stdin=stdin)
            assert done.returncode == 0, done.stderr

    def start(self, command: str) -> Server:
        server = Server(self.workdir / command)
        with server.stdout.open("wb") as stdout, server.stderr.open("wb") as stderr:
            server.process = subprocess.Popen(
                [sys.executable, "-m", "central.cli", command, "--port", str(server.port)],
                env=self.env,
                cwd=self.workdir,
                stdout=stdout,
                stderr=stderr,
            )
        try:
            wait_for_tcp(server.port, timeout=30)
        except TimeoutError as exc:
            server.stop()
            raise RuntimeError(log_tail(server.stderr)) from exc
        return server


@dataclass
class Server:
    """One ``serve`` or ``run`` process; its access log and its error log in files."""

    logs: Path
    port: int = field(default_factory=free_tcp_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stdout(self) -> Path:
        return self.logs.with_suffix(".out")

    @property
    def stderr(self) -> Path:
        return self.logs.with_suffix(".err")

    def terminate(self, signum: int = signal.SIGTERM) -> tuple[int, float]:
        """Send ``signum``; the exit code and how long the process took to exit."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signum)
        code = self.process.wait(30)
        return code, time.monotonic() - started

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


def make_central(workdir: Path, **extra_env: str) -> Central:
    return Central(workdir, f"sqlite:///{workdir / 'central.sqlite3'}", extra_env)


def call(
    url: str, body: dict | None = None, token: str | None = None, method: str | None = None
) -> tuple[int, dict[str, object]]:
    """(status, JSON body) of a GET, or of a POST when there is a ``body`` and no ``method``."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def login(server: Server, username: str = "admin") -> dict[str, object]:
    credentials = {"username": username, "password": PASSWORD}
    status, body = call(f"{server.url}/api/v1/auth/login", credentials)
    assert status == 200, body
    return body


@pytest.fixture
def central(tmp_path: Path) -> Central:
    setup = make_central(tmp_path)
    setup.prepare()
    return setup


def test_serve_answers_http_and_socketio_then_stops_on_sigterm(central: Central) -> None:
    server = central.start("serve")
    try:
        status, body = call(f"{server.url}/health")
        assert status == 200
        assert body["status"] == "healthy"
        token = login(server)["access_token"]
        assert isinstance(token, str)
        status, me = call(f"{server.url}/api/v1/auth/me", token=token)
        assert (status, me["username"]) == (200, "admin")

        client = socketio.Client(reconnection=False)
        client.connect(server.url, auth={"token": token}, transports=["websocket"])
        assert client.transport() == "websocket"
        # Left connected on purpose: an open websocket must not hold the shutdown.
        code, took = server.terminate()
        assert code == 0, log_tail(server.stderr)
        assert took < STOP_WITHIN_S
        client.disconnect()
    finally:
        server.stop()
    access_log = server.stdout.read_text()
    assert '"GET /health HTTP/1.1" 200' in access_log
    assert '"POST /api/v1/auth/login HTTP/1.1" 200' in access_log


def test_serve_stops_on_sigint(central: Central) -> None:
    server = central.start("serve")
    try:
        assert call(f"{server.url}/health")[0] == 200
        code, took = server.terminate(signal.SIGINT)
        assert code == 0, log_tail(server.stderr)
        assert took < STOP_WITHIN_S
    finally:
        server.stop()


@pytest.mark.parametrize("command", ["serve", "run", "ingest"])
def test_refuses_an_unmigrated_database(tmp_path: Path, command: str) -> None:
    central = make_central(tmp_path)
    port = [] if command == "ingest" else ["--port", str(free_tcp_port())]
    done = central.cli(command, *port)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"battery-central: the database is at revision none, not the newest "
        f"({migrations.head_revision()}): run 'battery-central db upgrade' first"
    )
    assert done.stdout == ""


def test_serve_refuses_to_start_without_a_jwt_secret(central: Central) -> None:
    central.jwt_secret = None
    done = central.cli("serve", "--port", str(free_tcp_port()))
    assert done.returncode != 0
    assert "battery-central: api.jwt_secret is required" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_options_are_checked(tmp_path: Path) -> None:
    central = make_central(tmp_path)
    for option in (["--port", "0"], ["--port", "65536"], ["--threads", "0"]):
        done = central.cli("serve", *option)
        assert done.returncode == 2
        assert "error: argument" in done.stderr


def _telemetry(site: str) -> TelemetryBatch:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    return TelemetryBatch(
        site_id=site,
        agent_id="agent-1",
        seq_first=1,
        seq_last=3,
        readings=[
            Reading(battery_id=ids.battery_id(site, 1, 1, i), ts=t0 + timedelta(minutes=i))
            for i in (1, 2, 3)
        ],
    )


def _stored_readings(database_url: str) -> int:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return connection.scalar(select(func.count()).select_from(Telemetry))
    finally:
        engine.dispose()


@pytest.fixture
def publisher(mqtt_broker) -> Iterator[mqtt.Client]:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(mqtt_broker.host, mqtt_broker.port)
    client.loop_start()
    yield client
    client.loop_stop()
    client.disconnect()


def test_run_serves_the_api_and_stores_telemetry(
    tmp_path: Path, mqtt_broker, publisher: mqtt.Client
) -> None:
    topics = Topics(f"t{uuid.uuid4().hex[:8]}/v1")
    central = make_central(
        tmp_path,
        BRM_CENTRAL_MQTT__HOST=mqtt_broker.host,
        BRM_CENTRAL_MQTT__PORT=str(mqtt_broker.port),
        BRM_CENTRAL_MQTT__TOPIC_PREFIX=topics.prefix,
        BRM_CENTRAL_MQTT__CLIENT_ID=f"run-{uuid.uuid4().hex[:8]}",
    )
    central.prepare()
    assert central.cli("load-fleet").returncode == 0
    site = "DC-CNX-01"
    payload = encode(_telemetry(site))
    server = central.start("run")
    try:
        status, ready = call(f"{server.url}/health/ready")
        assert (status, ready["broker"]) == (200, "connected")
        assert login(server)["access_token"]
        # Published until stored: a message sent before ingest has subscribed is not queued
        # for it; a repeat is stored once (a reading's identity is battery and time).
        deadline = time.monotonic() + 20
        while _stored_readings(central.database_url) < 3:
            assert time.monotonic() < deadline, log_tail(server.stderr)
            publisher.publish(topics.telemetry(site), payload, qos=1).wait_for_publish(5)
            time.sleep(0.5)
        assert _stored_readings(central.database_url) == 3

        code, took = server.terminate()
        assert code == 0, log_tail(server.stderr)
        assert took < STOP_WITHIN_S
    finally:
        server.stop()
    log = server.stderr.read_text()
    started = [line for line in log.splitlines() if "ingest started in the worker" in line]
    assert len(started) == 1, log
    assert f"[{server.process.pid}]" not in started[0]  # the worker's, not the arbiter's
    assert "ingest stopped: " in log
