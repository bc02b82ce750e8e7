"""The poller's schedule, its log-once state changes and its invalid-value events."""

import asyncio
import logging
from datetime import UTC, datetime

import pytest

from common.schemas import EventKind, Reading
from edge_agent.drivers.base import DeviceError, InvalidValue, PollResult
from edge_agent.metrics import AgentMetrics
from edge_agent.poller import InvalidTracker, Poller, Schedule, Sinks

BAT = "BAT-DC-CNX-01-UPS-01-STR-01-001"
TS = datetime(2025, 11, 30, 8, 0, tzinfo=UTC)


def test_backoff_doubles_up_to_the_cap():
    schedule = Schedule(interval_s=10, timeout_s=2, max_backoff_s=60)
    assert [schedule.backoff(n) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]


def test_a_slow_poll_skips_slots_instead_of_drifting():
    schedule = Schedule(interval_s=10, timeout_s=2, max_backoff_s=60)
    assert schedule.next_due(110.0, 105.0) == 110.0
    assert schedule.next_due(110.0, 125.5) == 130.0
    assert schedule.next_due(110.0, 110.0) == 120.0


def _result(*invalid, batteries=(BAT,)):
    return PollResult([Reading(battery_id=b, ts=TS) for b in batteries], list(invalid))


def test_invalid_values_are_reported_on_change_only():
    tracker = InvalidTracker("STR-DC-CNX-01-UPS-01-01")
    dropout = InvalidValue(BAT, "voltage", "not available")
    first = tracker.events(TS, _result(dropout))
    assert [(e.kind, e.battery_id) for e in first] == [(EventKind.INVALID_VALUE, BAT)]
    assert "voltage: not available" in first[0].message
    assert tracker.events(TS, _result(dropout)) == []
    garbage = InvalidValue(BAT, "voltage", "out of range: 65.5 V")
    assert [e.kind for e in tracker.events(TS, _result(garbage))] == [EventKind.INVALID_VALUE]
    assert [e.kind for e in tracker.events(TS, _result())] == [EventKind.VALUE_RESTORED]
    assert tracker.events(TS, _result()) == []


def test_restored_only_when_the_battery_was_read():
    tracker = InvalidTracker("STR-DC-CNX-01-UPS-01-01")
    tracker.events(TS, _result(InvalidValue(BAT, "temperature", "not available")))
    assert tracker.events(TS, _result(batteries=())) == []


class ScriptedDevice:
    """Stands in for site hardware: answers or fails as scripted, counting what it is asked."""

    device_id = "STR-DC-CNX-01-UPS-01-01"

    def __init__(self, script):
        self.script = list(script)
        self.inventory_calls = 0
        self.closed = 0

    async def inventory(self):
        self.inventory_calls += 1
        return []

    async def poll(self, ts):
        step = self.script.pop(0) if self.script else "ok"
        if step == "fail":
            raise DeviceError("connection refused")
        if step == "hang":
            await asyncio.sleep(3600)
        return PollResult([Reading(battery_id=BAT, ts=ts, voltage=13.5)])

    async def close(self):
        self.closed += 1


def _poller(device, collected, interval_s=10.0):
    async def readings(batch):
        collected["readings"].extend(batch)

    async def events(batch):
        collected["events"].extend(batch)

    async def inventory(device_id, strings):
        collected["inventory"].append(device_id)

    return Poller(
        device,
        Schedule(interval_s=interval_s, timeout_s=1, max_backoff_s=60),
        Sinks(readings, events, inventory),
        AgentMetrics(),
    )


def test_failure_and_recovery_are_logged_and_reported_once(caplog):
    device = ScriptedDevice(["fail", "fail", "fail", "ok", "ok"])
    collected = {"readings": [], "events": [], "inventory": []}
    poller = _poller(device, collected)
    caplog.set_level(logging.DEBUG, logger="edge_agent.poller")

    async def run():
        return [await poller.poll_once() for _ in range(5)]

    assert asyncio.run(run()) == [False, False, False, True, True]
    kinds = [e.kind for e in collected["events"]]
    assert kinds == [EventKind.COMMUNICATION_LOST, EventKind.COMMUNICATION_RESTORED]
    assert collected["events"][0].message == "connection refused"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(warnings) == 1 and "stopped answering" in warnings[0].getMessage()
    assert len(infos) == 1 and "answers again after 3 failed polls" in infos[0].getMessage()
    assert len(collected["readings"]) == 2
    assert device.closed == 3  # reconnect after every failure
    assert device.inventory_calls == 4  # re-read after each failure: the device may be new


def test_a_hanging_device_is_cut_off_at_its_interval():
    device = ScriptedDevice(["hang"])
    collected = {"readings": [], "events": [], "inventory": []}
    poller = _poller(device, collected, interval_s=0.2)
    assert asyncio.run(poller.poll_once()) is False
    assert poller.last_error == "timed out"
    assert [e.kind for e in collected["events"]] == [EventKind.COMMUNICATION_LOST]


def test_run_keeps_polling_and_closes_the_driver_when_cancelled():
    interval = 0.05
    device = ScriptedDevice([])
    collected = {"readings": [], "events": [], "inventory": []}
    poller = _poller(device, collected, interval_s=interval)

    async def run_a_while():
        task = asyncio.create_task(poller.run())
        while len(collected["readings"]) < 3:
            await asyncio.sleep(interval / 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(run_a_while(), 10))
    assert device.closed == 1
    assert {r.battery_id for r in collected["readings"]} == {BAT}


def test_a_store_that_cannot_commit_does_not_stop_the_poller(caplog):
    """Regression: an outbox error used to end the poller's task without a word."""
    from edge_agent.poller import SinkError

    device = ScriptedDevice([])
    failures = iter([True, True])
    stored = []

    async def readings(batch):
        if next(failures, False):
            raise SinkError("disk I/O error")
        stored.extend(batch)

    async def nothing(*_args):
        return None

    poller = Poller(
        device,
        Schedule(interval_s=0.05, timeout_s=0.04, max_backoff_s=1),
        Sinks(readings, nothing, nothing),
        AgentMetrics(),
    )
    caplog.set_level(logging.INFO, logger="edge_agent.poller")

    async def run_a_while():
        task = asyncio.create_task(poller.run())
        while len(stored) < 2:
            assert not task.done()
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(run_a_while(), 10))
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        f"{device.device_id}: readings not taken, the agent cannot store them: disk I/O error"
    ]
    assert any("stored again" in r.getMessage() for r in caplog.records)
    assert poller.available is True  # the device answered; the store failed
