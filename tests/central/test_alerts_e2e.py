"""Alerts from simulator faults, on real parts: the simulated site with faults injected through its
control API, a real ``battery-agent``, the session's Mosquitto, and a real
``battery-central ingest`` on a fresh PostgreSQL schema, configured through its environment
(a short hold, a baseline of three readings). Only the ``alerts`` rows count."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from central.db.engine import make_engine
from central.db.models import Alert, BatteryAnalytics, BatteryLatest
from common import ids
from tests.central.fleet_support import StoredAlerts
from tests.edge_agent.conftest import AgentProcess, agent_settings
from tests.support import pg_schema as private_schema
from tests.support import stop_process
from tests.test_system_e2e import Central, Child

pytestmark = pytest.mark.integration

POLL_INTERVAL_S = 1
HOLD_S = 4
DEADLINE_S = 60.0
HOT = "BAT-DC-CNX-01-UPS-01-STR-01-005"  # read over Modbus
SHORTED = "BAT-DC-CNX-01-UPS-02-STR-01-010"  # read over SNMP
WORN = "BAT-DC-CNX-01-UPS-01-STR-02-020"
STARTED = ("connected to", "alerts: hold")  # in ingest's log once it runs
SITE = "DC-CNX-01"
# communication_lost: every device polled each 2 s, lost after 3 missed polls (6 s), 3 s hold.
COMM_POLL_S = 2
COMM_MISSED_POLLS = 3
COMM_HOLD_S = 3
COMM_AFTER_S = COMM_POLL_S * COMM_MISSED_POLLS
SILENT_MODBUS = "STR-DC-CNX-01-UPS-01-02"  # a string monitor read over Modbus (unit 2)
SILENT_SNMP = "DC-CNX-01-UPS-02"  # a UPS read over SNMP: its three strings


@dataclass
class Running(StoredAlerts):
    engine: Engine
    ingest: Child
    agent: AgentProcess

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while not condition():
            for name, process in (("ingest", self.ingest.process), ("agent", self.agent.process)):
                if process is None or process.poll() is not None:
                    pytest.fail(f"{name} died while waiting for {what}\n{self.logs()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{what} not within {DEADLINE_S:g} s\n{self.logs()}")
            time.sleep(0.2)

    def logs(self) -> str:
        return f"{self.ingest.log()}\n--- agent ---\n{self.agent.log()}"

    def active_of(self, alert_type: str) -> dict[str, Alert]:
        """The active alerts of ``alert_type``, by battery."""
        with Session(self.engine) as session:
            rows = session.scalars(
                select(Alert).where(Alert.alert_type == alert_type, Alert.resolved_at.is_(None))
            )
            return {row.battery_id: row for row in rows}

    def all_of(self, alert_type: str) -> list[Alert]:
        with Session(self.engine) as session:
            return list(session.scalars(select(Alert).where(Alert.alert_type == alert_type)))

    def last_data(self) -> dict[str, datetime]:
        """When central last received a reading of each battery (its own clock)."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(BatteryLatest.battery_id, BatteryLatest.updated_at))
            return {battery_id: at for battery_id, at in rows}

    def baseline(self, battery_id: str) -> float | None:
        with self.engine.connect() as connection:
            return connection.scalar(
                select(BatteryAnalytics.resistance_baseline_ohm).where(
                    BatteryAnalytics.battery_id == battery_id
                )
            )

    def reporting(self, battery_id: str) -> bool:
        with self.engine.connect() as connection:
            return (
                connection.scalar(
                    select(BatteryLatest.ts).where(BatteryLatest.battery_id == battery_id)
                )
                is not None
            )


@pytest.fixture
def pg_schema(pg_database_url: str) -> Iterator[str]:
    with private_schema(pg_database_url, "alerts") as url:
        yield url


@contextmanager
def run_system(
    simulated_site,
    mqtt_broker,
    database_url: str,
    workdir: Path,
    *,
    poll_interval_s: float,
    hold_s: float,
    missed_polls: int,
    max_backoff_s: float | None = None,
) -> Iterator[Running]:
    """Migrate, load the fleet, start ingest with these alert timings (checked in its log), then
    the agent, every device polled each ``poll_interval_s``; everything stopped on the way out."""
    prefix = f"alerts-{uuid.uuid4().hex[:8]}/brm/v1"
    central = Central(workdir, database_url, mqtt_broker.host, mqtt_broker.port, prefix)
    assert "(head)" in central.cli("db", "upgrade")
    assert "locations:" in central.cli("load-fleet")
    ingest = central.child("ingest", "ingest")
    ingest.env.update(
        {
            "BRM_CENTRAL_ALERTS__HOLD_S": str(hold_s),
            "BRM_CENTRAL_ALERTS__BASELINE_READINGS": "3",
            "BRM_CENTRAL_ALERTS__POLL_INTERVAL_S": str(poll_interval_s),
            "BRM_CENTRAL_ALERTS__MISSED_POLLS": str(missed_polls),
        }
    )
    agent_dir = workdir / "agent"
    agent_dir.mkdir()
    settings = agent_settings(simulated_site, mqtt_broker, agent_dir, prefix)
    for device in settings["devices"]:
        device.update(interval_s=poll_interval_s, timeout_s=0.8)
        if max_backoff_s is not None:
            device["max_backoff_s"] = max_backoff_s
    agent = AgentProcess(agent_dir, settings)
    engine = make_engine(database_url)
    with ExitStack() as stack:
        stack.callback(engine.dispose)
        stack.callback(ingest.stop)
        ingest.start()
        system = Running(engine, ingest, agent)
        deadline = time.monotonic() + 30
        while not all(text in ingest.log_path.read_text(errors="replace") for text in STARTED):
            if time.monotonic() > deadline or ingest.process.poll() is not None:
                pytest.fail(f"ingest did not start\n{ingest.log()}")
            time.sleep(0.1)
        lost_after = poll_interval_s * missed_polls
        expected = f"alerts: hold {hold_s:g} s, communication lost after {lost_after:g} s"
        if expected not in ingest.log_path.read_text(errors="replace"):
            pytest.fail(
                "battery-central ingest ignores BRM_CENTRAL_ALERTS__* (central/server.py's "
                f"IngestLoop must pass alerts=settings.alerts to IngestService)\n{ingest.log()}"
            )
        stack.callback(lambda: agent.process and stop_process(agent.process))
        agent.start()
        yield system


@pytest.fixture
def running(simulated_site, mqtt_broker, pg_schema: str, tmp_path: Path) -> Iterator[Running]:
    # MISSED_POLLS 30: no communication_lost from a slow start.
    with run_system(
        simulated_site,
        mqtt_broker,
        pg_schema,
        tmp_path,
        poll_interval_s=POLL_INTERVAL_S,
        hold_s=HOLD_S,
        missed_polls=30,
    ) as system:
        yield system


def _index(snapshot: dict, battery_id: str) -> tuple[int, int]:
    for k, row in enumerate(snapshot["battery_ids"]):
        if battery_id in row:
            return k, row.index(battery_id)
    raise KeyError(battery_id)


def test_simulator_faults_raise_escalate_and_resolve_alerts(running: Running, simulated_site):
    """Overheating walks temperature_high from warning to critical and back; a shorted cell
    raises voltage_low, a resistance jump resistance_drift (warning, then critical); once the
    faults are cleared, each alert resolves after the hold."""
    running.wait_until(
        lambda: all(running.baseline(b) is not None for b in (HOT, SHORTED, WORN)),
        "the resistance baselines of the three blocks",
    )
    snapshot = simulated_site.snapshot()
    k, b = _index(snapshot, HOT)
    ambient = snapshot["temperature"][k][b]
    assert ambient < 40.0, "the block must start well below the warning threshold"
    for battery_id in (HOT, SHORTED, WORN):
        assert running.alerts(battery_id, "temperature_high") == []
        assert running.alerts(battery_id, "voltage_low") == []
        assert running.alerts(battery_id, "resistance_drift") == []

    # Warning level: 50 °C (warning above 45), +35 % resistance (warning above +25 %).
    simulated_site.inject("overheating", HOT, delta_c=50.0 - ambient)
    simulated_site.inject("shorted_cell", SHORTED, cells=1)
    simulated_site.inject("resistance_jump", WORN, factor=1.35)
    running.wait_until(lambda: running.active(HOT, "temperature_high") is not None, "warning")
    hot = running.active(HOT, "temperature_high")
    assert hot.severity == "warning"
    assert hot.message.startswith("Battery temperature ")
    assert hot.message.endswith("°C exceeds threshold 45.0°C")
    running.wait_until(lambda: running.active(SHORTED, "voltage_low") is not None, "voltage_low")
    shorted = running.active(SHORTED, "voltage_low")
    assert shorted.severity == "critical"  # one cell of six gone: ~11.3 V, under 12.0 V
    running.wait_until(
        lambda: running.active(WORN, "resistance_drift") is not None, "resistance_drift"
    )
    worn = running.active(WORN, "resistance_drift")
    assert worn.severity == "warning"
    assert 25.0 < worn.actual_value < 50.0

    # Critical level: 62 °C (critical above 55); 1.35 × 1.25 ≈ +69 % (critical above +50 %).
    simulated_site.inject("overheating", HOT, delta_c=12.0)
    simulated_site.inject("resistance_jump", WORN, factor=1.25)
    running.wait_until(
        lambda: running.active(HOT, "temperature_high").severity == "critical", "escalation"
    )
    running.wait_until(
        lambda: running.active(WORN, "resistance_drift").severity == "critical", "escalation"
    )
    assert running.active(HOT, "temperature_high").id == hot.id  # the same alert, escalated
    assert running.active(WORN, "resistance_drift").id == worn.id

    simulated_site.clear_all()
    cleared = time.monotonic()
    for battery_id, alert_type in (
        (HOT, "temperature_high"),
        (SHORTED, "voltage_low"),
        (WORN, "resistance_drift"),
    ):
        running.wait_until(
            lambda b=battery_id, t=alert_type: running.active(b, t) is None,
            f"{alert_type} resolved",
        )
        (alert,) = running.alerts(battery_id, alert_type)  # one alert for the whole episode
        assert alert.resolved_at is not None
        assert (alert.resolved_at - alert.triggered_at).total_seconds() >= HOLD_S
    assert time.monotonic() - cleared >= HOLD_S  # not before the hold


@pytest.fixture
def silenceable(simulated_site, mqtt_broker, pg_schema: str, tmp_path: Path) -> Iterator[Running]:
    """Short communication timings; a failed device is retried every poll (no longer backoff)."""
    with run_system(
        simulated_site,
        mqtt_broker,
        pg_schema,
        tmp_path,
        poll_interval_s=COMM_POLL_S,
        hold_s=COMM_HOLD_S,
        missed_polls=COMM_MISSED_POLLS,
        max_backoff_s=COMM_POLL_S,
    ) as system:
        yield system


def test_silent_devices_raise_communication_lost_until_they_answer_again(
    silenceable: Running, simulated_site
):
    """A Modbus string monitor and an SNMP UPS stop answering (``no_response``): each of their
    blocks gets one communication_lost alert (warning) once central has heard nothing of it for
    3 poll intervals, and no other block does; once they answer again, each alert resolves after
    the hold."""
    running = silenceable
    snapshot = simulated_site.snapshot()
    everyone = {battery_id for row in snapshot["battery_ids"] for battery_id in row}
    silent = {ids.battery_id(SITE, 1, 2, p) for p in range(1, 37)}
    silent |= {ids.battery_id(SITE, 2, s, p) for s in (1, 2, 3) for p in range(1, 37)}
    assert len(everyone) == 216
    assert len(silent) == 144
    assert silent < everyone
    running.wait_until(lambda: running.last_data().keys() >= everyone, "every block reporting")
    assert running.all_of("communication_lost") == []

    simulated_site.inject("no_response", SILENT_MODBUS)
    simulated_site.inject("no_response", SILENT_SNMP)
    running.wait_until(
        lambda: running.active_of("communication_lost").keys() >= silent,
        "communication_lost for every block of the silent devices",
    )
    lost = running.active_of("communication_lost")
    assert sorted(lost) == sorted(silent), "only the silent devices' blocks"
    last_data = running.last_data()
    for battery_id, alert in lost.items():
        assert alert.severity == "warning"
        assert alert.location_id == SITE
        assert alert.threshold_value == COMM_AFTER_S
        assert alert.actual_value > COMM_AFTER_S
        assert alert.message.startswith("No data from battery for "), alert.message
        assert " poll intervals (last reading " in alert.message, alert.message
        # Raised only once central had heard nothing of the block for longer than the limit.
        silence = (alert.triggered_at - last_data[battery_id]).total_seconds()
        assert silence > COMM_AFTER_S, (battery_id, silence)
    # Still silent a few sweeps later: the same alerts, none resolved, nobody else's.
    raised = {battery_id: alert.id for battery_id, alert in lost.items()}
    deadline = time.monotonic() + 2 * COMM_POLL_S
    running.wait_until(lambda: time.monotonic() > deadline, "two more sweeps")
    assert {b: a.id for b, a in running.active_of("communication_lost").items()} == raised

    simulated_site.clear_all()
    cleared = time.monotonic()
    running.wait_until(
        lambda: not running.active_of("communication_lost"), "communication_lost resolved"
    )
    assert time.monotonic() - cleared >= COMM_HOLD_S  # not before the hold
    rows = running.all_of("communication_lost")
    assert sorted(row.battery_id for row in rows) == sorted(silent)  # one alert per block
    for row in rows:
        assert row.id == raised[row.battery_id]
        assert row.resolved_at is not None
        assert (row.resolved_at - row.triggered_at).total_seconds() >= COMM_HOLD_S
    fresh = running.last_data()
    assert all(fresh[b] > last_data[b] for b in silent), "the silent blocks report again"
