"""The ingest loop: gather messages into small batches, write each batch in one transaction (the
telemetry of all its messages in one go), acknowledge its messages only after the commit.

The alert engine (``central.ingest.alerting``) runs inside that transaction on the readings the
batch stored, so alert rows commit or roll back with their telemetry; live events go out after the
commit. Between batches the loop sweeps for silent batteries (communication_lost) about every poll
interval, in a transaction of its own; a background thread refreshes RUL
(``central.ingest.rul_refresh``), whose results the next transaction judges.

A message the store cannot take even on its own (a database error tied to that message) is
quarantined with the error, so no payload can wedge ingest; when the database itself is down,
nothing is acknowledged and the batch is retried with backoff.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from central.alerts import AlertSettings
from central.db.inventory import UnknownLocationError, upsert_birth
from central.ingest.alerting import AlertEngine
from central.ingest.mqtt import Inbound
from central.ingest.process import (
    Decision,
    Quarantine,
    RecordEvents,
    RecordState,
    StoreTelemetry,
    UpsertBirth,
    decide,
)
from central.ingest.rul_refresh import RUL_REFRESH_S, RulRefresher
from central.ingest.store import (
    Gathering,
    Grouped,
    TelemetryResult,
    by_battery,
    quarantine,
    record_events,
    record_state,
    store_telemetry,
)
from central.live_events import LiveEvents, NoLiveEvents
from central.settings import IngestSettings
from common.schemas import AgentStatus, TelemetryBatch
from common.timeutil import utc_now
from common.topics import Topics

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0

Decided = tuple[Inbound, Decision]


@dataclass(frozen=True)
class Decoded:
    """One transaction's messages with their decisions, and its telemetry ready to write."""

    decided: list[Decided]
    telemetry: Gathering

    @classmethod
    def of(cls, decided: list[Decided]) -> Decoded:
        batches = [d.batch for _, d in decided if isinstance(d, StoreTelemetry)]
        return cls(decided, Gathering(batches))


NO_LIVE_EVENTS = NoLiveEvents()
DEFAULT_ALERTS = AlertSettings()


@dataclass
class IngestStats:
    messages: int = 0
    readings_inserted: int = 0
    readings_duplicate: int = 0
    quarantined: int = 0
    births: int = 0
    states: int = 0
    events: int = 0


class IngestService:
    """Takes messages from ``inbox`` (filled by the MQTT connection) and stores them."""

    def __init__(
        self,
        sessions: Callable[[], Session],
        topics: Topics,
        settings: IngestSettings,
        *,
        events: LiveEvents = NO_LIVE_EVENTS,
        alerts: AlertSettings = DEFAULT_ALERTS,
        rul_refresh_s: float = RUL_REFRESH_S,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._sessions = sessions
        self._topics = topics
        self._settings = settings
        self._events = events
        self._alerts = alerts
        self._clock = clock
        self.inbox: queue.Queue[Inbound] = queue.Queue()
        self._copies = False  # whether the store takes COPY text: learnt at the first commit
        self.stats = IngestStats()
        self.alerting = AlertEngine(alerts, live=events.listening)
        # More queued than one transaction takes: a backlog, which RUL fits wait for.
        self.rul = RulRefresher(
            sessions,
            rul_refresh_s,
            baseline_readings=alerts.baseline_readings,
            busy=lambda: self.inbox.qsize() >= settings.batch_max_messages,
        )
        # No sweep before ingest has run as long as a battery may be silent: after an outage of
        # ingest, the broker's backlog refreshes every battery's receive time first.
        self._sweep_from = time.monotonic() + alerts.communication_after_s
        self._next_sweep = self._sweep_from

    def run(self, stop: threading.Event) -> None:
        """Process until ``stop`` is set; the batch in hand is finished first.

        A helper thread gathers and decodes the next batch while this one stores the last:
        decoding is CPU work and storing mostly waits on the database (the driver releases the
        GIL meanwhile), so the two overlap. A batch decoded but not stored when ``stop`` comes is
        not acknowledged, so the broker delivers it again.
        """
        alerts = self._alerts
        log.info(
            "alerts: hold %g s, communication lost after %g s, baseline of %d readings; "
            "RUL refreshed every %g s at most",
            alerts.hold_s,
            alerts.communication_after_s,
            alerts.baseline_readings,
            self.rul.refresh_s,
        )
        halt = threading.Event()
        refresher = threading.Thread(target=self.rul.run, args=(halt,), name="rul-refresh")
        refresher.start()
        try:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-decode") as decoder:
                upcoming = decoder.submit(self._next_batch)
                while not stop.is_set():
                    decoded = upcoming.result()
                    upcoming = decoder.submit(self._next_batch)
                    if decoded.decided:
                        self._process(decoded, stop)
                    self._maybe_sweep()
        finally:
            halt.set()
            refresher.join()

    def process(self, messages: list[Inbound]) -> None:
        """Decode and store ``messages`` as one batch, as ``run`` does with each it gathers."""
        self._process(self._decode(messages), threading.Event())

    def sweep(self, now: datetime | None = None) -> None:
        """communication_lost for every known battery at ``now``, and RUL estimates waiting."""
        self._take_rul()
        self.alerting.begin()
        try:
            with self._sessions() as session, session.begin():
                self.alerting.sweep(session, now or self._clock())
        except BaseException:
            self.alerting.rollback()
            raise
        self.alerting.commit(self._events)

    def _maybe_sweep(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._alerts.poll_interval_s
        try:
            self.sweep()
        except SQLAlchemyError as exc:
            log.warning(
                "communication sweep failed (%s); next in %.0f s", exc, self._alerts.poll_interval_s
            )

    def _take_rul(self) -> None:
        while True:
            try:
                self.alerting.offer_rul(self.rul.results.get_nowait())
            except queue.Empty:
                return

    def _next_batch(self) -> Decoded:
        return self._decode(self._gather())

    def _decode(self, messages: list[Inbound]) -> Decoded:
        """Decide each message, and work out what storing their telemetry needs (the readings
        per battery; on PostgreSQL the COPY texts too): CPU work, done here in the decoding
        thread while the storing one waits on the database."""
        decoded = Decoded.of([(m, decide(self._topics, m.topic, m.payload)) for m in messages])
        decoded.telemetry.prepare(copy=self._copies)
        return decoded

    def _gather(self) -> list[Inbound]:
        """The next transaction's messages: up to ``batch_max_messages`` or ``batch_max_bytes``
        of payload (the message that reaches it included), whatever arrives within
        ``batch_max_wait_s`` of the first."""
        settings = self._settings
        try:
            batch = [self.inbox.get(timeout=settings.batch_max_wait_s)]
        except queue.Empty:
            return []
        size = len(batch[0].payload)
        deadline = time.monotonic() + settings.batch_max_wait_s
        while len(batch) < settings.batch_max_messages and size < settings.batch_max_bytes:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self.inbox.get(timeout=remaining))
            except queue.Empty:
                break
            size += len(batch[-1].payload)
        return batch

    def _process(self, decoded: Decoded, stop: threading.Event) -> None:
        decided = decoded.decided
        backoff = 0.5
        while True:
            try:
                stats = self._commit(decoded)
            except SQLAlchemyError as exc:
                if len(decided) == 1:
                    try:
                        stats = self._commit_quarantine(decided[0][0], exc)
                    except SQLAlchemyError:
                        stats = None
                else:
                    stats = self._one_by_one(decided)
                if stats is None:
                    log.error("database unavailable (%s); retrying in %.1f s", exc, backoff)
                    if stop.wait(backoff):
                        return  # unacknowledged: the broker redelivers after restart
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                    continue
            break
        for message, _ in decided:
            message.ack()

    def _one_by_one(self, decided: list[Decided]) -> IngestStats | None:
        """Each message alone, so one bad message cannot hold back the others."""
        for message, decision in decided:
            try:
                self._commit(Decoded.of([(message, decision)]))
            except SQLAlchemyError as exc:
                try:
                    self._commit_quarantine(message, exc)
                except SQLAlchemyError:
                    return None
        return self.stats

    def _commit(self, decoded: Decoded) -> IngestStats:
        """One transaction; the telemetry of all its messages is written in one go, then the
        alert engine judges the readings it stored; live events once it has committed."""
        delta = IngestStats(messages=len(decoded.decided))
        self._take_rul()
        self.alerting.begin()
        now = self._clock()
        try:
            with self._sessions() as session, session.begin():
                self._copies = session.get_bind().dialect.name == "postgresql"
                for message, decision in decoded.decided:
                    if not isinstance(decision, StoreTelemetry):
                        self._apply(session, message, decision, delta)
                results = store_telemetry(session, decoded.telemetry, now)
                delta.readings_inserted = sum(result.inserted for result in results)
                delta.readings_duplicate = sum(result.duplicates for result in results)
                if delta.readings_duplicate:
                    new = _stored(decoded.telemetry.batches, results)
                else:
                    new = decoded.telemetry.groups()
                self.alerting.on_readings(session, new, now)
        except BaseException:
            self.alerting.rollback()
            raise
        self.alerting.commit(self._events)
        self.rul.note(new.keys())
        self._add(delta)
        return self.stats

    def _commit_quarantine(self, message: Inbound, exc: SQLAlchemyError) -> IngestStats:
        reason = f"store: {str(getattr(exc, 'orig', None) or exc).strip().splitlines()[0]}"
        with self._sessions() as session, session.begin():
            quarantine(session, message.topic, message.payload, reason)
        log.warning("quarantined a message on %s: %s", message.topic, reason)
        self._add(IngestStats(messages=1, quarantined=1))
        return self.stats

    def _apply(
        self, session: Session, message: Inbound, decision: Decision, delta: IngestStats
    ) -> None:
        """Store one message other than telemetry."""
        if isinstance(decision, UpsertBirth):
            try:
                upsert_birth(session, decision.birth)
            except UnknownLocationError as exc:
                decision = Quarantine(f"birth: {exc}")
            else:
                delta.births += 1
                self.alerting.forget_models(decision.birth.site_id)
        if isinstance(decision, RecordState):
            record_state(session, decision.state, self._clock())
            delta.states += 1
            if decision.state.status is AgentStatus.OFFLINE:  # judged at once, not in a minute
                self._next_sweep = max(self._sweep_from, time.monotonic())
            log.info("site %s is %s", decision.state.site_id, decision.state.status.value)
        elif isinstance(decision, RecordEvents):
            record_events(session, decision.events)
            delta.events += len(decision.events.events)
            for event in decision.events.events:
                log.info("site %s: %s %s", decision.events.site_id, event.kind.value, event.message)
        elif isinstance(decision, Quarantine):
            quarantine(session, message.topic, message.payload, decision.reason)
            delta.quarantined += 1
            log.warning("quarantined a message on %s: %s", message.topic, decision.reason)

    def _add(self, delta: IngestStats) -> None:
        for name, value in vars(delta).items():
            setattr(self.stats, name, getattr(self.stats, name) + value)


def _stored(batches: Sequence[TelemetryBatch], results: Sequence[TelemetryResult]) -> Grouped:
    """The readings ``batches`` stored, per battery (``results`` tell which)."""
    return by_battery(
        reading
        for batch, result in zip(batches, results, strict=True)
        for reading, stored in zip(batch.readings, result.stored, strict=True)
        if stored
    )
