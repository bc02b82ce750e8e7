"""The alert engine in ingest, on SQLite and PostgreSQL: crafted telemetry through
``IngestService`` walks each alert type from raise to escalate to auto-resolve; flapping, restarts,
manual resolves and the live events. The harness here (a fake clock, a recording ``LiveEvents``)
serves ``test_ingest_rul`` too."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from central.alerts import AlertSettings
from central.db.models import Alert
from central.ingest import alert_rows
from central.ingest.alerting import LIVE_READINGS_PER_BATCH
from central.ingest.mqtt import Inbound
from central.ingest.service import IngestService
from central.settings import IngestSettings
from common import ids
from common.schemas import AgentStatus, Reading, State, TelemetryBatch, encode
from common.topics import Topics

SITE = "DC-CNX-01"
BATTERY = ids.battery_id(SITE, 1, 1, 1)
OTHER = ids.battery_id(SITE, 1, 1, 2)
T0 = datetime(2026, 3, 1, tzinfo=UTC)
TOPICS = Topics("test/brm/v1")
HEALTHY = {
    "voltage": 13.6,
    "current": 0.2,
    "temperature": 25.0,
    "internal_resistance": 0.005,
    "soc_pct": 100.0,
    "soh_pct": 95.0,
}
# Short hold and few baseline readings, so a test walks a lifecycle in a few readings a minute
# apart: a clear run resolves at its third reading.
SETTINGS = AlertSettings(hold_s=120, baseline_readings=3, poll_interval_s=60, missed_polls=3)


def minute(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


@dataclass
class Clock:
    """Central's clock (receive times, sweeps), moved by hand."""

    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def set(self, at: datetime) -> None:
        self.now = at


class Recorder:
    """A ``LiveEvents`` that keeps every call: (event, location, battery, payload[, timestamp])."""

    listening = True

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def telemetry_update(
        self, location_id: str, battery_id: str, data: dict[str, Any], timestamp: str
    ) -> None:
        self.calls.append(("telemetry_update", location_id, battery_id, data, timestamp))

    def alert(self, location_id: str, battery_id: str, alert: dict[str, Any]) -> None:
        self.calls.append(("alert", location_id, battery_id, alert))

    def battery_status_update(
        self, location_id: str, battery_id: str, data: dict[str, Any], timestamp: str
    ) -> None:
        self.calls.append(("battery_status_update", location_id, battery_id, data, timestamp))

    def of(self, event: str) -> list[tuple[Any, ...]]:
        return [call for call in self.calls if call[0] == event]

    def alerts(self) -> list[dict[str, Any]]:
        return [call[3] for call in self.of("alert")]

    def statuses(self) -> list[str]:
        return [call[3]["status"] for call in self.of("battery_status_update")]

    def clear(self) -> None:
        self.calls.clear()


@dataclass
class Harness:
    """One ingest service on a migrated store, fed by hand."""

    sessions: Callable[[], Session]
    clock: Clock = field(default_factory=Clock)
    events: Recorder = field(default_factory=Recorder)
    settings: AlertSettings = SETTINGS
    service: IngestService = field(init=False)
    _seq: itertools.count = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.service = self.restart()

    def restart(self) -> IngestService:
        """A new service on the same store, as after a restart of ingest."""
        self.service = IngestService(
            self.sessions,
            TOPICS,
            IngestSettings(),
            events=self.events,
            alerts=self.settings,
            clock=self.clock,
        )
        return self.service

    def send(self, *readings: Reading) -> None:
        """One telemetry message with ``readings``, received at the clock's time."""
        first = next(self._seq)
        for _ in readings[1:]:
            next(self._seq)
        batch = TelemetryBatch(
            site_id=SITE,
            agent_id="agent-1",
            seq_first=first,
            seq_last=first + len(readings) - 1,
            readings=list(readings),
        )
        self.deliver(TOPICS.telemetry(SITE), encode(batch))

    def at(self, n: float, battery: str = BATTERY, **values: float | None) -> None:
        """A reading of ``battery`` at minute ``n``, received then: healthy but for ``values``."""
        self.clock.set(minute(n))
        self.send(reading(n, battery, **values))

    def state(self, status: AgentStatus) -> None:
        state = State(site_id=SITE, agent_id="agent-1", status=status, ts=self.clock.now)
        self.deliver(TOPICS.state(SITE), encode(state))

    def deliver(self, topic: str, payload: bytes) -> None:
        self.service.process([Inbound(topic, payload, lambda: None)])

    def alerts(self, alert_type: str | None = None, battery: str = BATTERY) -> list[Alert]:
        """The battery's alert rows (of one type), oldest first."""
        with self.sessions() as session:
            query = select(Alert).where(Alert.battery_id == battery)
            if alert_type is not None:
                query = query.where(Alert.alert_type == alert_type)
            return list(session.scalars(query.order_by(Alert.triggered_at, Alert.created_at)))


def reading(n: float, battery: str = BATTERY, **values: float | None) -> Reading:
    return Reading(battery_id=battery, ts=minute(n), **{**HEALTHY, **values})


# --------------------------------------------------------------------------- tests


@pytest.fixture
def harness(sessions) -> Harness:
    return Harness(sessions)


# (warning values, critical values, clear values, warning threshold, critical threshold)
LIFECYCLES = {
    "temperature_high": ({"temperature": 47.0}, {"temperature": 57.0}, {}, 45.0, 55.0),
    "voltage_high": ({"voltage": 14.5}, {"voltage": 14.8}, {}, 14.4, 14.7),
    "voltage_low": ({"voltage": 12.5}, {"voltage": 11.5}, {}, 12.6, 12.0),
    "soh_degraded": ({"soh_pct": 84.0}, {"soh_pct": 79.0}, {}, 85.0, 80.0),
    "resistance_drift": (
        {"internal_resistance": 0.0065},  # +30 % over the 5 mΩ baseline
        {"internal_resistance": 0.008},  # +60 %
        {},
        25.0,
        50.0,
    ),
}


@pytest.mark.parametrize("alert_type", list(LIFECYCLES))
def test_a_reading_rule_raises_escalates_and_resolves_after_the_hold(harness, alert_type):
    warning, critical, clear, warning_at, critical_at = LIFECYCLES[alert_type]
    for n in range(3):  # healthy; the resistance baseline (three readings) is taken
        harness.at(n)
    assert harness.alerts() == []

    harness.at(3, **warning)
    (raised,) = harness.alerts(alert_type)
    assert (raised.severity, raised.threshold_value) == ("warning", warning_at)
    assert raised.triggered_at == minute(3)
    assert raised.resolved_at is None
    assert raised.location_id == SITE
    assert raised.alert_id.startswith(f"ALT-{BATTERY}-2026-03-01-{alert_type}-")

    harness.at(4, **critical)
    (escalated,) = harness.alerts(alert_type)
    assert escalated.id == raised.id
    assert (escalated.severity, escalated.threshold_value) == ("critical", critical_at)
    assert escalated.triggered_at == minute(3)

    for n in (5, 6):  # clear for less than the hold (120 s)
        harness.at(n, **clear)
        assert harness.alerts(alert_type)[0].resolved_at is None
    harness.at(7, **clear)
    (resolved,) = harness.alerts(alert_type)
    assert resolved.resolved_at == minute(7)
    assert [a.alert_type for a in harness.alerts()] == [alert_type]  # nothing else on the way

    alerts = harness.events.alerts()
    assert [(a["alert_type"], a["severity"], a["is_active"]) for a in alerts] == [
        (alert_type, "warning", True),
        (alert_type, "critical", True),
        (alert_type, "critical", False),
    ]
    assert {a["id"] for a in alerts} == {raised.id}
    assert all(a["location_id"] == SITE and a["battery_id"] == BATTERY for a in alerts)
    assert alerts[2]["resolved_at"] == "2026-03-01T00:07:00Z"
    assert harness.events.statuses() == ["warning", "critical", "healthy"]


def test_the_message_reads_like_the_reference(harness):
    harness.at(0, temperature=45.2)
    (alert,) = harness.alerts()
    assert alert.message == "Battery temperature 45.2°C exceeds threshold 45.0°C"
    assert alert.actual_value == 45.2


def test_a_worse_value_at_the_same_severity_updates_the_alert_silently(harness):
    harness.at(0, temperature=46.0)
    harness.at(1, temperature=48.5)
    (alert,) = harness.alerts()
    assert (alert.severity, alert.actual_value) == ("warning", 48.5)
    assert "48.5°C" in alert.message
    assert len(harness.events.alerts()) == 1  # raise only: an update is no live event


def test_a_value_flapping_around_a_threshold_raises_one_alert(harness):
    for n, celsius in enumerate([45.5, 44.5, 45.6, 44.2, 45.3, 44.9, 45.8, 44.5]):
        harness.at(n, temperature=celsius)
    (alert,) = harness.alerts()
    assert alert.resolved_at is None  # never clear: 44.x is within the 1 °C margin
    for n in (8, 9, 10):
        harness.at(n, temperature=40.0)
    (alert,) = harness.alerts()
    assert alert.resolved_at == minute(10)
    assert len(harness.events.alerts()) == 2


def test_an_ingest_restart_keeps_the_active_alert(harness):
    harness.at(0, temperature=47.0)
    (raised,) = harness.alerts()
    harness.restart()
    harness.events.clear()

    harness.at(1, temperature=47.5)  # still present: no second alert
    assert [a.id for a in harness.alerts()] == [raised.id]
    assert harness.events.alerts() == []
    harness.at(2, temperature=57.0)  # worse: the same alert escalates
    (escalated,) = harness.alerts()
    assert (escalated.id, escalated.severity) == (raised.id, "critical")
    for n in (3, 4, 5):
        harness.at(n, temperature=25.0)
    assert harness.alerts()[0].resolved_at == minute(5)
    assert [a["severity"] for a in harness.events.alerts()] == ["critical", "critical"]


def _resolve_by_hand(sessions, alert_id: str, at: datetime) -> None:
    """What the API's resolve does to the row (in another process, as far as ingest knows)."""
    with sessions.begin() as session:
        session.execute(update(Alert).where(Alert.id == alert_id).values(resolved_at=at))


def test_a_manual_resolve_is_honoured_until_the_condition_worsens(harness, sessions):
    harness.at(0, temperature=47.0)
    (first,) = harness.alerts()
    _resolve_by_hand(sessions, first.id, minute(0.5))

    harness.at(1, temperature=47.5)  # still present, no worse: the engineer's word stands
    assert [(a.id, a.resolved_at) for a in harness.alerts()] == [(first.id, minute(0.5))]
    harness.at(2, temperature=57.0)  # critical: worse than what was resolved
    old, new = harness.alerts()
    assert (old.id, old.resolved_at) == (first.id, minute(0.5))
    assert (new.severity, new.resolved_at, new.triggered_at) == ("critical", None, minute(2))


def test_after_a_manual_resolve_a_new_episode_raises_again(harness, sessions):
    harness.at(0, temperature=47.0)
    (first,) = harness.alerts()
    _resolve_by_hand(sessions, first.id, minute(0.5))
    harness.at(1, temperature=40.0)  # seen clear once: the suppression is lifted
    harness.at(2, temperature=47.0)
    assert [a.triggered_at for a in harness.alerts()] == [minute(0), minute(2)]


def test_a_manual_resolve_survives_an_ingest_restart(harness, sessions):
    harness.at(0, temperature=47.0)
    (first,) = harness.alerts()
    _resolve_by_hand(sessions, first.id, minute(0.5))
    harness.restart()
    harness.at(1, temperature=47.5)
    assert [a.id for a in harness.alerts()] == [first.id]


def test_live_events_follow_the_stored_readings(harness):
    a = [reading(0, BATTERY), reading(1, BATTERY, voltage=13.7)]
    b = [reading(0, OTHER), reading(1, OTHER, temperature=26.0)]
    harness.send(*a, *b)
    updates = harness.events.of("telemetry_update")
    assert [(u[1], u[2], u[4]) for u in updates] == [
        (SITE, BATTERY, "2026-03-01T00:00:00.000Z"),
        (SITE, BATTERY, "2026-03-01T00:01:00.000Z"),
        (SITE, OTHER, "2026-03-01T00:00:00.000Z"),
        (SITE, OTHER, "2026-03-01T00:01:00.000Z"),
    ]
    assert [u[3] for u in updates] == [
        HEALTHY,
        {**HEALTHY, "voltage": 13.7},
        HEALTHY,
        {**HEALTHY, "temperature": 26.0},
    ]
    harness.events.clear()
    harness.send(*a)  # a redelivery stores nothing, so tells nothing
    assert harness.events.calls == []

    harness.at(2, temperature=47.0)
    (status,) = harness.events.of("battery_status_update")
    assert status[1:3] == (SITE, BATTERY)
    assert status[3] == {
        "status": "warning",
        "previous_status": "healthy",
        "soh_pct": 95.0,
        "active_alerts": 1,
        "worst_severity": "warning",
    }
    assert [call[0] for call in harness.events.calls] == [
        "telemetry_update",
        "alert",
        "battery_status_update",
    ]


def test_events_nobody_can_hear_are_not_built(harness):
    """Ingest without a live feed (no message queue) builds no events, yet still raises the
    alert: the engine leaves out only what it would have told."""
    harness.events.listening = False
    harness.restart()
    harness.at(0)
    harness.at(1, temperature=47.0)
    assert harness.events.calls == []
    assert [a.alert_type for a in harness.alerts()] == ["temperature_high"]


def test_a_backlog_goes_live_as_its_newest_readings_oldest_first(harness):
    """An agent back from an outage delivers hours in one batch: the feed carries the newest
    LIVE_READINGS_PER_BATCH of it in time order, whatever order the batch held them in."""
    backlog = [reading(m, BATTERY) for m in range(30)]
    harness.send(*reversed(backlog))
    stamps = [u[4] for u in harness.events.of("telemetry_update")]
    assert stamps == [
        f"2026-03-01T00:{m:02d}:00.000Z" for m in range(30 - LIVE_READINGS_PER_BATCH, 30)
    ]


def test_a_failed_transaction_stores_no_alert_and_tells_nothing(harness, monkeypatch):
    harness.at(0)
    harness.events.clear()
    real = alert_rows.insert_alert

    def broken(*args, **kwargs):
        raise OperationalError("INSERT INTO alerts", {}, Exception("connection lost"))

    monkeypatch.setattr(alert_rows, "insert_alert", broken)
    harness.at(1, temperature=47.0)  # the message is quarantined: no reading, no alert
    assert harness.alerts() == []
    assert harness.events.calls == []
    assert harness.service.stats.quarantined == 1
    monkeypatch.setattr(alert_rows, "insert_alert", real)
    harness.at(2, temperature=47.0)
    (alert,) = harness.alerts()
    assert alert.triggered_at == minute(2)
    assert len(harness.events.alerts()) == 1


def test_communication_lost_after_missed_polls_resolves_once_data_is_back(harness):
    harness.at(0)
    harness.service.sweep(minute(3))  # 180 s of silence: not beyond 3 poll intervals yet
    assert harness.alerts() == []
    harness.service.sweep(minute(3.5))
    (lost,) = harness.alerts()
    assert (lost.alert_type, lost.severity, lost.triggered_at) == (
        "communication_lost",
        "warning",
        minute(3.5),
    )
    assert lost.message == (
        "No data from battery for 3 poll intervals (last reading 2026-03-01T00:00:00Z)"
    )
    harness.service.sweep(minute(4.5))  # still silent: the same alert
    assert len(harness.alerts()) == 1
    for n in (5, 6):
        harness.at(n)
        harness.service.sweep(minute(n))
        assert harness.alerts()[0].resolved_at is None
    harness.at(7)
    harness.service.sweep(minute(7))
    assert harness.alerts()[0].resolved_at == minute(7)
    assert [a["is_active"] for a in harness.events.alerts()] == [True, False]


def test_a_site_whose_agent_goes_offline_loses_communication(harness):
    harness.at(0)
    harness.at(0, OTHER)
    harness.clock.set(minute(0.5))
    harness.state(AgentStatus.OFFLINE)
    harness.service.sweep(minute(0.5))
    lost = {a.battery_id: a for a in harness.alerts() + harness.alerts(battery=OTHER)}
    assert set(lost) == {BATTERY, OTHER}
    assert lost[BATTERY].message.startswith("Site agent offline since 2026-03-01T00:00:30Z")
    harness.clock.set(minute(1))
    harness.state(AgentStatus.ONLINE)
    for n in (1, 2, 3):
        harness.at(n)
        harness.service.sweep(minute(n))
    assert harness.alerts()[0].resolved_at == minute(3)
    assert harness.alerts(battery=OTHER)[0].resolved_at is None  # OTHER is silent still


def test_the_ingest_loop_sweeps_about_every_poll_interval(sessions):
    harness = Harness(sessions, settings=AlertSettings(poll_interval_s=0.2, missed_polls=2))
    harness.at(0)
    harness.clock.set(minute(1))  # a minute of silence on central's clock
    stop = threading.Event()
    worker = threading.Thread(target=harness.service.run, args=(stop,))
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while not harness.alerts("communication_lost"):
            assert time.monotonic() < deadline, "no sweep within 10 s"
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(10)
    (lost,) = harness.alerts("communication_lost")
    assert lost.message.startswith("No data from battery for 300 poll intervals")
