"""A real ``battery-agent`` process per test, configured for the simulated site and the broker."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support import free_tcp_port, log_tail, stop_process, wait_for_tcp

BATTERY_AGENT = Path(sys.executable).with_name("battery-agent")


class AgentProcess:
    def __init__(self, workdir: Path, settings: dict) -> None:
        self.workdir = workdir
        self.settings = settings
        self.http_port = settings["http"]["port"]
        self.config = workdir / "site.yaml"
        self.config.write_text(yaml.safe_dump(settings))
        self.log_path = workdir / "agent.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, wait_ready: bool = True) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(BATTERY_AGENT), "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        if not wait_ready:
            return
        try:
            wait_for_tcp(self.http_port, timeout=30)
        except TimeoutError as exc:
            raise RuntimeError(self.log()) from exc

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as a power cut or the OOM killer would do."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.process = None

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(30)
        self.process = None
        return code

    def log(self) -> str:
        return log_tail(self.log_path, 60)

    def metrics(self) -> dict[str, float]:
        """Prometheus samples as ``name{labels}`` → value."""
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        samples = {}
        for line in text.splitlines():
            if match := re.match(r"^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)$", line):
                samples[match[1]] = float(match[2])
        return samples

    def health(self) -> dict:
        url = f"http://127.0.0.1:{self.http_port}/health"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)


def agent_settings(site, broker, workdir: Path, prefix: str, **overrides) -> dict:
    """UPS 01's strings over Modbus, UPS 02 over SNMP v2c, everything at 1 s."""
    devices = [
        {
            "type": "modbus",
            "id": f"STR-DC-CNX-01-UPS-01-0{n}",
            "host": "127.0.0.1",
            "port": site.modbus_port,
            "unit_id": n,
            "interval_s": 1,
            "timeout_s": 0.5,
        }
        for n in (1, 2, 3)
    ]
    devices.append(
        {
            "type": "snmp",
            "id": "DC-CNX-01-UPS-02",
            "host": "127.0.0.1",
            "port": site.snmp_port,
            "community": "public@2",
            "interval_s": 1,
            "timeout_s": 0.5,
        }
    )
    settings = {
        "site_id": "DC-CNX-01",
        "agent_id": "agent-test",
        "devices": devices,
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "topic_prefix": prefix,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1,
        },
        "outbox": {"path": str(workdir / "outbox.sqlite3")},
        "publish": {"state_interval_s": 2},
        "http": {"port": free_tcp_port()},
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            settings[key] = {**settings.get(key, {}), **value}
        else:
            settings[key] = value
    return settings


@pytest.fixture
def agent_factory(tmp_path) -> Iterator:
    started: list[AgentProcess] = []

    def make(settings: dict) -> AgentProcess:
        agent = AgentProcess(tmp_path, settings)
        started.append(agent)
        return agent

    yield make
    for agent in started:
        if agent.process is not None:
            stop_process(agent.process)
