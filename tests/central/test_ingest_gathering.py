"""Ingest of gathered batches on SQLite and PostgreSQL, without a broker: the messages of one
gathering share one transaction, and what it stores does not depend on how messages were grouped."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from central.db.engine import make_engine, make_session_factory
from central.db.models import AgentSequence, QuarantinedMessage, SiteEvent, SiteState, Telemetry
from central.ingest.mqtt import Inbound
from central.ingest.service import IngestService
from central.settings import IngestSettings
from common import ids
from common.schemas import (
    AgentStatus,
    Event,
    EventKind,
    Events,
    Reading,
    State,
    TelemetryBatch,
    encode,
)
from common.topics import Topics

SITE = "DC-CNX-01"
TOPICS = Topics()
T0 = datetime(2026, 3, 1, tzinfo=UTC)


class Transactions:
    """The service's session factory, counting the sessions (one per transaction) it opens."""

    def __init__(self, factory: Callable[[], Session]) -> None:
        self.factory = factory
        self.opened = 0

    def __call__(self) -> Session:
        self.opened += 1
        return self.factory()


@pytest.fixture
def sessions(migrated_url: str) -> Iterator[Transactions]:
    engine = make_engine(migrated_url)
    try:
        yield Transactions(make_session_factory(engine))
    finally:
        engine.dispose()


def telemetry(seq_first: int, count: int) -> bytes:
    readings = [
        Reading(
            battery_id=ids.battery_id(SITE, 1, 1 + i % 3, 1 + i % 36),
            ts=T0 + timedelta(minutes=seq_first + i),
            voltage=13.6,
            current=None,
        )
        for i in range(count)
    ]
    batch = TelemetryBatch(
        site_id=SITE,
        agent_id="agent-1",
        seq_first=seq_first,
        seq_last=seq_first + count - 1,
        readings=readings,
    )
    return encode(batch)


def ingest(service: IngestService, messages: list[tuple[str, bytes]]) -> list[int]:
    """Queue ``messages`` before the service starts (so they make one gathering), run it until
    each is acknowledged; the acknowledged message indexes, in order."""
    acked: list[int] = []
    for i, (topic, payload) in enumerate(messages):
        service.inbox.put(Inbound(topic, payload, lambda i=i: acked.append(i)))
    stop = threading.Event()
    worker = threading.Thread(target=service.run, args=(stop,))
    worker.start()
    try:
        deadline = time.monotonic() + 15
        while len(acked) < len(messages) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        worker.join(10)
    return acked


def _count(sessions: Transactions, model: type) -> int:
    with sessions.factory() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_a_message_twice_in_one_gathering_and_redelivered_later_is_stored_once(sessions):
    service = IngestService(sessions, TOPICS, IngestSettings(batch_max_messages=100))
    first, second = telemetry(1, 100), telemetry(101, 20)
    gathering = [(TOPICS.telemetry(SITE), p) for p in (first, first, second)]
    assert ingest(service, gathering) == [0, 1, 2]
    assert sessions.opened == 1  # one gathering, one transaction
    assert (service.stats.readings_inserted, service.stats.readings_duplicate) == (120, 100)

    assert ingest(service, [(TOPICS.telemetry(SITE), first)]) == [0]  # a later redelivery
    assert (service.stats.readings_inserted, service.stats.readings_duplicate) == (120, 200)
    assert service.stats.messages == 4
    assert _count(sessions, Telemetry) == 120
    with sessions.factory() as session:
        sequence = session.scalars(select(AgentSequence)).one()
    assert (sequence.highest_seq, sequence.gaps, sequence.duplicates) == (120, 0, 200)


def test_state_events_and_junk_share_the_gathering_with_telemetry(sessions):
    service = IngestService(sessions, TOPICS, IngestSettings(batch_max_messages=100))
    state = State(site_id=SITE, agent_id="agent-1", status=AgentStatus.ONLINE, ts=T0)
    events = Events(
        site_id=SITE,
        agent_id="agent-1",
        events=[Event(ts=T0, kind=EventKind.COMMUNICATION_LOST, device_id="STR-1", message="x")],
    )
    gathering = [
        (TOPICS.state(SITE), encode(state)),
        (TOPICS.telemetry(SITE), telemetry(1, 10)),
        (TOPICS.events(SITE), encode(events)),
        (TOPICS.telemetry(SITE), b"{not json"),
    ]
    assert ingest(service, gathering) == [0, 1, 2, 3]
    assert sessions.opened == 1
    stats = service.stats
    assert (stats.messages, stats.states, stats.events, stats.quarantined) == (4, 1, 1, 1)
    assert stats.readings_inserted == 10
    with sessions.factory() as session:
        site = session.scalars(select(SiteState)).one()
        assert (site.site_id, site.status, site.ts) == (SITE, "online", T0)
        assert session.scalars(select(SiteEvent.kind)).all() == ["communication_lost"]
        assert session.scalar(select(func.count()).select_from(QuarantinedMessage)) == 1


@pytest.mark.parametrize(
    ("limits", "transactions"),
    [
        ({"batch_max_messages": 2}, 3),  # 2 + 2 + 1 messages
        ({"batch_max_bytes": 1}, 5),  # each message reaches the bound alone
        ({}, 1),
    ],
)
def test_a_transaction_takes_messages_up_to_its_count_or_bytes(sessions, limits, transactions):
    service = IngestService(sessions, TOPICS, IngestSettings(**limits))
    backlog = [(TOPICS.telemetry(SITE), telemetry(1 + 10 * i, 10)) for i in range(5)]
    assert ingest(service, backlog) == [0, 1, 2, 3, 4]
    assert sessions.opened == transactions
    assert service.stats.readings_inserted == 50
