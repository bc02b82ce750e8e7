"""Alerts from simulator faults, on real parts: the simulated site with faults injected through its
control API, a real ``battery-agent``, the session's Mosquitto, and a real
``battery-central ingest`` on a fresh PostgreSQL schema, configured through its environment
(a short hold, a baseline of three readings). Only the ``alerts`` rows count."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from central.db.engine import make_engine
from central.db.models import Alert, BatteryAnalytics, BatteryLatest
from tests.edge_agent.conftest import AgentProcess, agent_settings
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


@dataclass
class Running:
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

    def alerts(self, battery_id: str, alert_type: str) -> list[Alert]:
        with Session(self.engine) as session:
            return list(
                session.scalars(
                    select(Alert)
                    .where(Alert.battery_id == battery_id, Alert.alert_type == alert_type)
                    .order_by(Alert.triggered_at)
                )
            )

    def active(self, battery_id: str, alert_type: str) -> Alert | None:
        rows = [a for a in self.alerts(battery_id, alert_type) if a.resolved_at is None]
        return rows[0] if rows else None

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
    schema = f"alerts_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(pg_database_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        yield f"{pg_database_url}?options=-csearch_path%3D{schema}"
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    finally:
        admin.close()


@pytest.fixture
def running(simulated_site, mqtt_broker, pg_schema: str, tmp_path: Path) -> Iterator[Running]:
    prefix = f"alerts-{uuid.uuid4().hex[:8]}/brm/v1"
    central = Central(tmp_path, pg_schema, mqtt_broker.host, mqtt_broker.port, prefix)
    assert "(head)" in central.cli("db", "upgrade")
    assert "locations:" in central.cli("load-fleet")
    ingest = central.child("ingest", "ingest")
    ingest.env.update(
        {
            "BRM_CENTRAL_ALERTS__HOLD_S": str(HOLD_S),
            "BRM_CENTRAL_ALERTS__BASELINE_READINGS": "3",
            "BRM_CENTRAL_ALERTS__POLL_INTERVAL_S": str(POLL_INTERVAL_S),
            "BRM_CENTRAL_ALERTS__MISSED_POLLS": "30",  # no communication_lost from a slow start
        }
    )
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    settings = agent_settings(simulated_site, mqtt_broker, agent_dir, prefix)
    for device in settings["devices"]:
        device.update(interval_s=POLL_INTERVAL_S, timeout_s=0.8)
    agent = AgentProcess(agent_dir, settings)
    engine = make_engine(pg_schema)
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
        if f"alerts: hold {HOLD_S:g} s," not in ingest.log_path.read_text(errors="replace"):
            pytest.fail(
                "battery-central ingest ignores BRM_CENTRAL_ALERTS__* (central/server.py's "
                f"IngestLoop must pass alerts=settings.alerts to IngestService)\n{ingest.log()}"
            )
        stack.callback(lambda: agent.process and stop_process(agent.process))
        agent.start()
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
