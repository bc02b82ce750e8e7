"""Central as the shipped deployment runs it: PostgreSQL prepared by deploy/postgres/setup.sql,
the settings of deploy/central/central.env.example (test values only where it says CHANGE-ME,
plus this machine's services), and the ExecStartPre/ExecStart commands of
battery-central-serve.service. One REST round trip and one Socket.IO round trip, including an
event sent through Redis as a separate ingest process sends it."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
import redis
from psycopg2 import sql

from central.live_events import message_queue_emitter
from tests.central.api_support import PASSWORD, SECRET
from tests.central.test_live_socket import Recorder
from tests.central.test_server import Server, call
from tests.conftest import PG_SERVER_URL, MosquittoBroker
from tests.deploy.support import (
    CENTRAL_ENV,
    SETUP_SQL,
    UNITS,
    VENV_BIN,
    read_env_file,
    unit_commands,
)
from tests.support import log_tail, wait_for_tcp

pytestmark = pytest.mark.integration

SITE = "DC-CNX-01"
BATTERY = "BAT-DC-CNX-01-UPS-01-STR-01-001"
WAIT_S = 10.0


@dataclass(frozen=True)
class Database:
    """A database and its role, made by the shipped setup.sql on the local server."""

    name: str
    role: str

    @property
    def url(self) -> str:
        base = PG_SERVER_URL.rpartition("@")[2].rpartition("/")[0]  # host:port
        return f"postgresql://{self.role}@{base}/{self.name}"


def _psql(*args: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(
        ["psql", PG_SERVER_URL, "-v", "ON_ERROR_STOP=1", "-q", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture
def database() -> Iterator[Database]:
    if shutil.which("psql") is None:
        pytest.fail("psql is not installed (Debian package postgresql-client)")
    suffix = uuid.uuid4().hex[:10]
    made = Database(f"brm_deploy_{suffix}", f"brm_deploy_{suffix}")
    variables = ["-v", f"db_name={made.name}", "-v", f"db_role={made.role}"]
    env = {**os.environ, "BRM_DB_PASSWORD": "role-password-from-the-environment"}
    try:
        for _ in range(2):  # the second run must change nothing and fail on nothing
            _psql(*variables, "-f", str(SETUP_SQL), env=env)
        yield made
    finally:
        admin = psycopg2.connect(PG_SERVER_URL)
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(made.name))
            )
            cursor.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(made.role)))
        admin.close()


def _role_flags(role: str) -> tuple[bool, bool, bool, bool]:
    """(can log in, superuser, may create databases, has a password) of ``role``."""
    admin = psycopg2.connect(PG_SERVER_URL)
    try:
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT rolcanlogin, rolsuper, rolcreatedb, rolpassword IS NOT NULL"
                " FROM pg_authid WHERE rolname = %s",
                (role,),
            )
            return cursor.fetchone()
    finally:
        admin.close()


def production_env(database: Database, broker: MosquittoBroker, workdir: Path) -> dict[str, str]:
    """The shipped env file as systemd passes it, with test values for its placeholders and for
    what differs on this machine (the database, a private broker, a Redis channel of its own)."""
    shipped = read_env_file(CENTRAL_ENV)
    placeholders = {key for key, value in shipped.items() if "CHANGE-ME" in value}
    assert placeholders == {"BRM_CENTRAL_API__JWT_SECRET", "BRM_CENTRAL_MQTT__PASSWORD"}
    overrides = {
        "BRM_CENTRAL_API__JWT_SECRET": SECRET,
        "BRM_CENTRAL_MQTT__PASSWORD": "unused-by-an-open-broker",
        "BRM_CENTRAL_DATABASE_URL": database.url,
        "BRM_CENTRAL_MQTT__HOST": broker.host,
        "BRM_CENTRAL_MQTT__PORT": str(broker.port),
        # Redis pub/sub ignores the database number: other tests' servers must not hear ours.
        "BRM_CENTRAL_API__SOCKETIO_CHANNEL": f"brm-deploy-{uuid.uuid4().hex}",
        # Not in the env file (the default, 5 per minute, holds in production): repeated runs
        # of this test within a minute must not be refused.
        "BRM_CENTRAL_API__LOGIN_RATE_LIMIT": "100 per minute",
    }
    assert set(overrides) - {"BRM_CENTRAL_API__LOGIN_RATE_LIMIT"} <= set(shipped)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRM_CENTRAL_")}
    # systemd starts the service with PATH and little else: no virtualenv activation.
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    env["HOME"] = str(workdir)
    return {**env, **shipped, **overrides}


def test_serve_runs_as_the_unit_and_env_file_say(
    database: Database, mqtt_broker: MosquittoBroker, tmp_path: Path
) -> None:
    assert _role_flags(database.role) == (True, False, False, True)
    env = production_env(database, mqtt_broker, tmp_path)
    assert env["BRM_CENTRAL_API__SOCKETIO_MESSAGE_QUEUE"].startswith("redis://")
    assert env["BRM_CENTRAL_API__RATE_LIMIT_STORAGE_URI"].startswith("redis://")
    unit = UNITS / "battery-central-serve.service"
    (pre,) = unit_commands(unit, "ExecStartPre")
    (start,) = unit_commands(unit, "ExecStart")
    assert pre[1:] == ["db", "upgrade"]

    def central(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [str(VENV_BIN / "battery-central"), *args],
            env=env,
            cwd=tmp_path,
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert done.returncode == 0, f"battery-central {' '.join(args)}: {done.stderr}"
        return done.stdout

    # The operator's steps, in the order the README gives them, as the service's role.
    assert "(head)" in central(*pre[1:])  # what ExecStartPre runs
    assert "9 created" in central("load-fleet")
    admin = f"admin-{uuid.uuid4().hex[:8]}"  # its own key in the Redis rate-limit counters
    central(
        "create-admin", "--username", admin, "--email", f"{admin}@example.com",
        "--password-stdin", stdin=PASSWORD + "\n",
    )  # fmt: skip

    server = Server(tmp_path / "serve")
    assert start[1] == "serve"
    assert start[start.index("--host") + 1] == "127.0.0.1"  # behind the reverse proxy only
    start[start.index("--port") + 1] = str(server.port)
    with server.stdout.open("wb") as out, server.stderr.open("wb") as err:
        server.process = subprocess.Popen(start, env=env, cwd=tmp_path, stdout=out, stderr=err)
    try:
        try:
            wait_for_tcp(server.port, timeout=30)
        except TimeoutError:
            pytest.fail(f"battery-central serve did not listen:\n{log_tail(server.stderr)}")
        _rest_round_trip(server, admin, env)
        _socketio_round_trip(server, admin, env)
        code, took = server.terminate()  # SIGTERM, as systemctl stop sends it
        assert code == 0, log_tail(server.stderr)
        assert took < 45, "longer than the unit's TimeoutStopSec"
    finally:
        server.stop()


def _login(server: Server, username: str) -> str:
    status, body = call(
        f"{server.url}/api/v1/auth/login", {"username": username, "password": PASSWORD}
    )
    assert status == 200, body
    return body["access_token"]


def _rest_round_trip(server: Server, admin: str, env: dict[str, str]) -> None:
    status, ready = call(f"{server.url}/health/ready")
    assert (status, ready["database"], ready["broker"]) == (200, "connected", "connected"), ready
    status, health = call(f"{server.url}/health")
    assert (status, health["environment"]) == (200, "production")
    token = _login(server, admin)
    status, me = call(f"{server.url}/api/v1/auth/me", token=token)
    assert (status, me["username"], me["role"]) == (200, admin, "admin")
    status, locations = call(f"{server.url}/api/v1/locations", token=token)
    assert status == 200, locations
    assert SITE in {location["location_id"] for location in locations["locations"]}
    # The per-user counter is in Redis, where the env file says, not in the process.
    counters = redis.Redis.from_url(env["BRM_CENTRAL_API__RATE_LIMIT_STORAGE_URI"])
    try:
        assert list(counters.scan_iter(f"*user:{admin}*")), "no rate-limit counter in Redis"
    finally:
        counters.close()


def _socketio_round_trip(server: Server, admin: str, env: dict[str, str]) -> None:
    recorder = Recorder()
    try:
        recorder.connect(server, {"token": _login(server, admin)})
        recorder.next("connected")
        recorder.client.emit("ping", {})
        assert set(recorder.next("pong")) == {"timestamp"}
        recorder.subscribe("location", SITE)
        # What battery-central ingest does in its own process: emit through the message queue.
        emitter = message_queue_emitter(
            env["BRM_CENTRAL_API__SOCKETIO_MESSAGE_QUEUE"],
            env["BRM_CENTRAL_API__SOCKETIO_CHANNEL"],
        )
        # The server's queue listener subscribes to Redis in the background once it has a
        # client: emit until one arrives.
        deadline = time.monotonic() + WAIT_S
        while True:
            emitter.telemetry_update(SITE, BATTERY, {"voltage": 13.5}, "2026-01-01T00:00:00.000Z")
            try:
                name, data = recorder.events.get(timeout=0.5)
                break
            except queue.Empty:
                assert time.monotonic() < deadline, "no event through Redis within 10 s"
        assert name == "telemetry_update", (name, data)
        assert (data["battery_id"], data["data"]) == (BATTERY, {"voltage": 13.5})
    finally:
        recorder.close()
