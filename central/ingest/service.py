"""The ingest loop: gather messages into small batches, write each batch in one transaction,
acknowledge its messages only after the commit.

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
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from central.db.inventory import UnknownLocationError, upsert_birth
from central.ingest.mqtt import Inbound
from central.ingest.process import (
    Quarantine,
    RecordEvents,
    RecordState,
    StoreTelemetry,
    UpsertBirth,
    decide,
)
from central.ingest.store import quarantine, store_telemetry
from central.settings import IngestSettings
from common.schemas import State
from common.topics import Topics

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0


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
    ) -> None:
        self._sessions = sessions
        self._topics = topics
        self._settings = settings
        self.inbox: queue.Queue[Inbound] = queue.Queue()
        self.stats = IngestStats()
        self.site_states: dict[str, State] = {}

    def run(self, stop: threading.Event) -> None:
        """Process until ``stop`` is set; the batch in hand is finished first."""
        while not stop.is_set():
            batch = self._gather()
            if batch:
                self._process(batch, stop)

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

    def _process(self, batch: list[Inbound], stop: threading.Event) -> None:
        backoff = 0.5
        while True:
            try:
                stats = self._commit(batch)
            except SQLAlchemyError as exc:
                if len(batch) == 1:
                    try:
                        stats = self._commit_quarantine(batch[0], exc)
                    except SQLAlchemyError:
                        stats = None
                else:
                    stats = self._one_by_one(batch)
                if stats is None:
                    log.error("database unavailable (%s); retrying in %.1f s", exc, backoff)
                    if stop.wait(backoff):
                        return  # unacknowledged: the broker redelivers after restart
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                    continue
            break
        for message in batch:
            message.ack()

    def _one_by_one(self, batch: list[Inbound]) -> IngestStats | None:
        """Each message alone, so one bad message cannot hold back the others."""
        for message in batch:
            try:
                self._commit([message])
            except SQLAlchemyError as exc:
                try:
                    self._commit_quarantine(message, exc)
                except SQLAlchemyError:
                    return None
        return self.stats

    def _commit(self, batch: list[Inbound]) -> IngestStats:
        delta = IngestStats()
        with self._sessions() as session, session.begin():
            for message in batch:
                self._apply(session, message, delta)
        self._add(delta)
        return self.stats

    def _commit_quarantine(self, message: Inbound, exc: SQLAlchemyError) -> IngestStats:
        reason = f"store: {str(getattr(exc, 'orig', None) or exc).strip().splitlines()[0]}"
        with self._sessions() as session, session.begin():
            quarantine(session, message.topic, message.payload, reason)
        log.warning("quarantined a message on %s: %s", message.topic, reason)
        self._add(IngestStats(messages=1, quarantined=1))
        return self.stats

    def _apply(self, session: Session, message: Inbound, delta: IngestStats) -> None:
        delta.messages += 1
        decision = decide(self._topics, message.topic, message.payload)
        if isinstance(decision, UpsertBirth):
            try:
                upsert_birth(session, decision.birth)
            except UnknownLocationError as exc:
                decision = Quarantine(f"birth: {exc}")
            else:
                delta.births += 1
        if isinstance(decision, StoreTelemetry):
            result = store_telemetry(session, decision.batch)
            delta.readings_inserted += result.inserted
            delta.readings_duplicate += result.duplicates
        elif isinstance(decision, RecordState):
            delta.states += 1
            self.site_states[decision.state.site_id] = decision.state
            log.info("site %s is %s", decision.state.site_id, decision.state.status.value)
        elif isinstance(decision, RecordEvents):
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
