"""Fixtures shared by every test package: a real broker, a real database, the simulators."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pytest

from tests.support import (
    QUIET_START,
    free_tcp_port,
    free_udp_port,
    log_tail,
    stop_process,
    wait_for_tcp,
)

PG_SERVER_URL = os.environ.get("BRM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass
class MosquittoBroker:
    """A private Mosquitto on a free port; ``stop``/``start`` keep its persisted sessions."""

    workdir: Path
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_tcp_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 100000\n"
            "user root\n"
            f"log_dest file {self.workdir}/mosquitto.log\n"
        )
        self.process = subprocess.Popen(["mosquitto", "-c", str(conf)])
        try:
            wait_for_tcp(self.port, self.host)
        except TimeoutError as exc:
            raise RuntimeError(log_tail(self.workdir / "mosquitto.log")) from exc

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    if shutil.which("mosquitto") is None:
        pytest.fail("mosquitto is not installed (.ci/run installs it)")
    broker = MosquittoBroker(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A database created for this test session on the local server, dropped afterwards.

    ``BRM_TEST_PG_URL`` names the server (any existing database on it to connect through).
    """
    import psycopg2
    from psycopg2 import sql

    name = f"brm_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(PG_SERVER_URL)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base, _, _ = PG_SERVER_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        admin.close()


@dataclass
class SimulatedSite:
    """A ``battery-sim site`` process on free ports, steered through its control API."""

    site_id: str
    workdir: Path
    time_scale: float = 1.0
    host: str = "127.0.0.1"
    modbus_port: int = field(default_factory=free_tcp_port)
    snmp_port: int = field(default_factory=free_udp_port)
    control_port: int = field(default_factory=free_tcp_port)
    process: subprocess.Popen[bytes] | None = None
    log: BinaryIO | None = None

    @property
    def control_url(self) -> str:
        return f"http://{self.host}:{self.control_port}"

    def start(self) -> None:
        self.log = log = (self.workdir / f"sim-{self.site_id}.log").open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "simulators.cli",
                "site",
                "--site",
                self.site_id,
                "--host",
                self.host,
                "--modbus-port",
                str(self.modbus_port),
                "--snmp-port",
                str(self.snmp_port),
                "--control-port",
                str(self.control_port),
                "--seed",
                "1",
                "--time-scale",
                str(self.time_scale),
                "--start",
                QUIET_START,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_tcp(self.control_port, self.host, timeout=30)
            wait_for_tcp(self.modbus_port, self.host, timeout=30)
        except TimeoutError as exc:
            raise RuntimeError(log_tail(Path(log.name))) from exc

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None
        if self.log is not None:
            self.log.close()
            self.log = None

    def request(self, path: str, method: str = "GET", body: object = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.control_url}{path}", data=data, method=method)
        with urllib.request.urlopen(req, timeout=10) as response:
            return json.load(response)

    def snapshot(self) -> dict:
        return self.request(f"/sites/{self.site_id}/snapshot")

    def inject(self, kind: str, target: str, **params: float | str) -> dict:
        body = {"kind": kind, "target": target, "params": params}
        return self.request(f"/sites/{self.site_id}/faults", "POST", body)

    def clear_all(self) -> None:
        self.request(f"/sites/{self.site_id}/faults", "DELETE")


@pytest.fixture(scope="session")
def _site_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedSite]:
    site = SimulatedSite("DC-CNX-01", tmp_path_factory.mktemp("simulator"))
    site.start()
    yield site
    site.stop()


@pytest.fixture
def simulated_site(_site_process: SimulatedSite) -> Iterator[SimulatedSite]:
    """The session's simulated DC-CNX-01 (Modbus + SNMP + control), with no fault left over."""
    process = _site_process.process
    if process is None or process.poll() is not None:
        pytest.fail(
            "the simulator process has died: "
            + log_tail(_site_process.workdir / f"sim-{_site_process.site_id}.log")
        )
    yield _site_process
    _site_process.clear_all()
