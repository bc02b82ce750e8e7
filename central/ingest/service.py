"""The ingest loop: gather messages into small batches, write each batch in one transaction (the
telemetry of all its messages in one go), acknowledge its messages only after the commit.

A message the store cannot take even on its own (a database error tied to that message) is
quarantined with the error, so no payload can wedge ingest; when the database itself is down,
nothing is acknowledged and the batch is retried with backoff.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from central.db.inventory import UnknownLocationError, upsert_birth
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
from central.ingest.store import quarantine, record_events, record_state, store_telemetry
from central.live_events import LiveEvents, NoLiveEvents
from central.settings import IngestSettings
from common.schemas import TelemetryBatch
from common.topics import Topics

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0

Decided = tuple[Inbound, Decision]


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
        events: LiveEvents | None = None,
    ) -> None:
        self._sessions = sessions
        self._topics = topics
        self._settings = settings
        self._events: LiveEvents = events if events is not None else NoLiveEvents()
        self.inbox: queue.Queue[Inbound] = queue.Queue()
        self.stats = IngestStats()

    def run(self, stop: threading.Event) -> None:
        """Process until ``stop`` is set; the batch in hand is finished first.

        A helper thread gathers and decodes the next batch while this one stores the last:
        decoding is CPU work and storing mostly waits on the database (the driver releases the
        GIL meanwhile), so the two overlap. A batch decoded but not stored when ``stop`` comes is
        not acknowledged, so the broker delivers it again.
        """
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-decode") as decoder:
            upcoming = decoder.submit(self._next_batch)
            while not stop.is_set():
                decided = upcoming.result()
                upcoming = decoder.submit(self._next_batch)
                if decided:
                    self._process(decided, stop)

    def _next_batch(self) -> list[Decided]:
        return [(m, decide(self._topics, m.topic, m.payload)) for m in self._gather()]

    def _gather(self) -> list[Inbound]:
        try:
            batch = [self.inbox.get(timeout=self._settings.batch_max_wait_s)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self._settings.batch_max_wait_s
        while len(batch) < self._settings.batch_max_messages:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self.inbox.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _process(self, decided: list[Decided], stop: threading.Event) -> None:
        backoff = 0.5
        while True:
            try:
                stats = self._commit(decided)
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
                self._commit([(message, decision)])
            except SQLAlchemyError as exc:
                try:
                    self._commit_quarantine(message, exc)
                except SQLAlchemyError:
                    return None
        return self.stats

    def _commit(self, decided: list[Decided]) -> IngestStats:
        """One transaction; the telemetry of all its messages is written in one go at the end."""
        delta = IngestStats(messages=len(decided))
        telemetry: list[TelemetryBatch] = []
        with self._sessions() as session, session.begin():
            for message, decision in decided:
                if isinstance(decision, StoreTelemetry):
                    telemetry.append(decision.batch)
                else:
                    self._apply(session, message, decision, delta)
            for result in store_telemetry(session, telemetry):
                delta.readings_inserted += result.inserted
                delta.readings_duplicate += result.duplicates
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
        if isinstance(decision, RecordState):
            record_state(session, decision.state)
            delta.states += 1
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
