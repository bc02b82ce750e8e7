"""One poller per device: its own schedule, timeouts and backoff; a failing device blocks nobody.

Like a polling coordinator: the poller only schedules and judges; the driver fetches. A device that
starts failing is logged (and reported as an event) once, and once again when it recovers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from common.schemas import Event, EventKind, Reading, StringInfo
from common.timeutil import truncate_ms, utc_now
from edge_agent.drivers.base import DeviceError, Driver, PollResult
from edge_agent.metrics import AgentMetrics

log = logging.getLogger(__name__)


class SinkError(Exception):
    """What a poller learned could not be kept (the outbox cannot commit): not taken, not lost
    silently; the poller says so and keeps its schedule."""


ReadingSink = Callable[[Sequence[Reading]], Awaitable[None]]
EventSink = Callable[[Sequence[Event]], Awaitable[None]]
InventorySink = Callable[[str, list[StringInfo]], Awaitable[None]]


@dataclass(frozen=True)
class Sinks:
    """Where a poller hands what it learns: the agent commits readings before anything else."""

    readings: ReadingSink
    events: EventSink
    inventory: InventorySink


@dataclass(frozen=True)
class Schedule:
    interval_s: float
    timeout_s: float
    max_backoff_s: float
    start_delay_s: float = 0.0

    @property
    def inventory_timeout_s(self) -> float:
        """Nameplates take many reads, once per connection: more time than one poll."""
        return max(self.interval_s, 20 * self.timeout_s)

    def backoff(self, failures: int) -> float:
        """Wait before the next try after ``failures`` failures in a row: interval, 2x, 4x, …"""
        return min(
            self.interval_s * 2 ** max(failures - 1, 0), max(self.max_backoff_s, self.interval_s)
        )

    def next_due(self, due: float, now: float) -> float:
        """The next slot on the fixed grid after ``now``: a slow poll skips slots, never drifts."""
        if due > now:
            return due
        missed = int((now - due) // self.interval_s) + 1
        return due + missed * self.interval_s


@dataclass
class InvalidTracker:
    """Turns per-poll invalid values into events only when a value goes bad or comes back."""

    device_id: str
    bad: dict[tuple[str | None, str], str] = field(default_factory=dict)

    def events(self, ts: datetime, result: PollResult) -> list[Event]:
        now_bad = {(v.battery_id, v.field): v.reason for v in result.invalid}
        events = [
            self._event(ts, EventKind.INVALID_VALUE, key, reason)
            for key, reason in now_bad.items()
            if self.bad.get(key) != reason
        ]
        present = {r.battery_id for r in result.readings}
        for key in self.bad.keys() - now_bad.keys():
            if key[0] is None or key[0] in present:
                events.append(self._event(ts, EventKind.VALUE_RESTORED, key, "valid again"))
        self.bad = now_bad
        return events

    def _event(
        self, ts: datetime, kind: EventKind, key: tuple[str | None, str], reason: str
    ) -> Event:
        battery, name = key
        subject = battery or self.device_id
        return Event(
            ts=ts,
            kind=kind,
            device_id=self.device_id,
            battery_id=battery,
            message=f"{subject} {name}: {reason}"[:1000],
        )


class Poller:
    """Polls one device forever; readings, events and inventory go to the agent's sinks."""

    def __init__(
        self,
        driver: Driver,
        schedule: Schedule,
        sinks: Sinks,
        metrics: AgentMetrics,
    ) -> None:
        self.driver = driver
        self.device_id = driver.device_id
        self.schedule = schedule
        self._sinks = sinks
        self._metrics = metrics
        self._invalid = InvalidTracker(self.device_id)
        self.available: bool | None = None  # None until the first poll has an outcome
        self.failures = 0
        self.last_error: str | None = None
        self._needs_inventory = True
        self._sink_failing = False

    async def run(self) -> None:
        await asyncio.sleep(self.schedule.start_delay_s)
        due = time.monotonic()
        try:
            while True:
                ok = await self._poll_and_keep()
                now = time.monotonic()
                if ok:
                    due = self.schedule.next_due(due + self.schedule.interval_s, now)
                else:
                    due = now + self.schedule.backoff(self.failures)
                await asyncio.sleep(max(due - time.monotonic(), 0.0))
        finally:
            await self.driver.close()

    async def _poll_and_keep(self) -> bool:
        """A poll whose results the agent could not store still leaves the poller running."""
        try:
            ok = await self.poll_once()
        except SinkError as exc:
            self._metrics.polls.labels(self.device_id, "not_stored").inc()
            if not self._sink_failing:
                log.error(
                    "%s: readings not taken, the agent cannot store them: %s", self.device_id, exc
                )
            self._sink_failing = True
            return True
        if self._sink_failing:
            log.info("%s: readings are stored again", self.device_id)
            self._sink_failing = False
        return ok

    async def poll_once(self) -> bool:
        """One poll with its outcome recorded; True when the device answered."""
        started = time.perf_counter()
        try:
            if self._needs_inventory:
                strings = await asyncio.wait_for(
                    self.driver.inventory(), self.schedule.inventory_timeout_s
                )
                await self._sinks.inventory(self.device_id, strings)
                self._needs_inventory = False
                started = time.perf_counter()
            ts = truncate_ms(utc_now())
            result = await asyncio.wait_for(self.driver.poll(ts), self.schedule.interval_s)
        except (DeviceError, TimeoutError) as exc:
            await self._failed(truncate_ms(utc_now()), str(exc) or "timed out")
            return False
        self._metrics.poll_seconds.labels(self.device_id).observe(time.perf_counter() - started)
        await self._succeeded(ts, result)
        return True

    async def _succeeded(self, ts: datetime, result: PollResult) -> None:
        if result.readings:
            await self._sinks.readings(result.readings)
        self._metrics.readings_taken.labels(self.device_id).inc(len(result.readings))
        self._metrics.polls.labels(self.device_id, "ok").inc()
        self._metrics.device_up.labels(self.device_id).set(1)
        for invalid in result.invalid:
            self._metrics.invalid_values.labels(self.device_id, invalid.field).inc()
        events = self._invalid.events(ts, result)
        if self.available is False:
            log.info("%s answers again after %d failed polls", self.device_id, self.failures)
            events.insert(0, self._communication(ts, EventKind.COMMUNICATION_RESTORED, "restored"))
        self.available, self.failures, self.last_error = True, 0, None
        if events:
            await self._sinks.events(events)

    async def _failed(self, ts: datetime, error: str) -> None:
        self.failures += 1
        self.last_error = error
        self._metrics.polls.labels(self.device_id, "failed").inc()
        self._metrics.device_up.labels(self.device_id).set(0)
        self._needs_inventory = True
        await self.driver.close()
        if self.available is not False:
            log.warning("%s stopped answering: %s", self.device_id, error)
            self.available = False
            await self._sinks.events([self._communication(ts, EventKind.COMMUNICATION_LOST, error)])
        else:
            log.debug("%s still failing (%d): %s", self.device_id, self.failures, error)

    def _communication(self, ts: datetime, kind: EventKind, message: str) -> Event:
        return Event(ts=ts, kind=kind, device_id=self.device_id, message=message[:1000])
