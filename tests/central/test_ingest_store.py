"""Ingest writes on SQLite and PostgreSQL: readings once, latest readings, sequence bookkeeping,
site states and events. PostgreSQL takes telemetry through COPY, SQLite through a multi-row insert;
the results must not tell the two apart."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from central.db.engine import make_engine, make_session_factory
from central.db.models import (
    AgentSequence,
    BatteryLatest,
    QuarantinedMessage,
    SiteEvent,
    SiteState,
    Telemetry,
)
from central.ingest import store
from central.ingest.store import (
    TelemetryResult,
    quarantine,
    record_events,
    record_state,
    store_telemetry,
)
from common import ids
from common.schemas import (
    AgentStatus,
    Event,
    EventKind,
    Events,
    Reading,
    State,
    TelemetryBatch,
)

SITE = "DC-CNX-01"
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def batch(
    seq_first: int,
    count: int,
    start: int | None = None,
    voltage: float = 13.6,
    agent: str = "agent-1",
) -> TelemetryBatch:
    """``count`` readings of one battery, a minute apart, from minute ``start`` (= seq_first)."""
    start = seq_first if start is None else start
    readings = [
        Reading(
            battery_id=ids.battery_id(SITE, 1, 1, 1),
            ts=T0 + timedelta(minutes=start + i),
            voltage=voltage,
            temperature=None,
        )
        for i in range(count)
    ]
    return TelemetryBatch(
        site_id=SITE,
        agent_id=agent,
        seq_first=seq_first,
        seq_last=seq_first + count - 1,
        readings=readings,
    )


def _count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def _sequence(session, agent: str = "agent-1") -> AgentSequence:
    return session.scalars(
        select(AgentSequence)
        .where(AgentSequence.agent_id == agent)
        .execution_options(populate_existing=True)
    ).one()


def test_a_redelivered_batch_is_stored_once_and_counted(session):
    [first] = store_telemetry(session, [batch(1, 3)])
    session.commit()
    [again] = store_telemetry(session, [batch(1, 3)])
    session.commit()
    assert first == TelemetryResult(inserted=3, duplicates=0)
    assert again == TelemetryResult(inserted=0, duplicates=3)
    assert _count(session, Telemetry) == 3
    sequence = _sequence(session)
    assert (sequence.highest_seq, sequence.gaps, sequence.duplicates) == (3, 0, 3)


def test_null_values_stay_null(session):
    store_telemetry(session, [batch(1, 1)])
    session.commit()
    row = session.scalars(select(Telemetry)).one()
    assert row.temperature is None
    assert row.voltage == 13.6
    assert row.ts == T0 + timedelta(minutes=1)


def test_a_jump_in_sequence_counts_a_gap_and_a_late_batch_fills_it(session):
    store_telemetry(session, [batch(1, 2)])
    store_telemetry(session, [batch(6, 2)])
    session.commit()
    sequence = _sequence(session)
    assert (sequence.highest_seq, sequence.gaps, sequence.missing_readings) == (7, 1, 3)
    store_telemetry(session, [batch(3, 3)])  # the missing batch, delivered late
    session.commit()
    sequence = _sequence(session)
    assert (sequence.gaps, sequence.missing_readings, sequence.duplicates) == (1, 0, 0)


def test_a_partly_overlapping_batch_counts_only_the_overlap(session):
    store_telemetry(session, [batch(1, 3)])
    [result] = store_telemetry(session, [batch(2, 4)])
    session.commit()
    assert result == TelemetryResult(inserted=2, duplicates=2)
    sequence = _sequence(session)
    assert (sequence.highest_seq, sequence.duplicates, sequence.gaps) == (5, 2, 0)


def test_latest_reading_moves_only_forward(session):
    store_telemetry(session, [batch(10, 2, voltage=13.5)])
    session.commit()
    store_telemetry(session, [batch(20, 1, start=1, voltage=12.0)])  # older readings, new seq
    session.commit()
    latest = session.scalars(select(BatteryLatest).execution_options(populate_existing=True)).one()
    assert (latest.ts, latest.voltage) == (T0 + timedelta(minutes=11), 13.5)
    store_telemetry(session, [batch(21, 1, start=30, voltage=13.7)])
    session.commit()
    latest = session.scalars(select(BatteryLatest).execution_options(populate_existing=True)).one()
    assert (latest.ts, latest.voltage) == (T0 + timedelta(minutes=30), 13.7)


def test_quarantine_keeps_topic_reason_and_raw_bytes(session):
    quarantine(session, "brm/v1/DC-CNX-01/telemetry", b"\xff\x00junk", "schema: not JSON")
    session.commit()
    row = session.scalars(select(QuarantinedMessage)).one()
    assert (row.topic, row.reason, row.payload) == (
        "brm/v1/DC-CNX-01/telemetry",
        "schema: not JSON",
        b"\xff\x00junk",
    )


def test_a_message_twice_in_one_gathering_and_again_later_is_stored_once(session):
    gathered = store_telemetry(session, [batch(1, 3), batch(1, 3), batch(4, 2)])
    session.commit()
    later = store_telemetry(session, [batch(4, 2), batch(1, 3)])
    session.commit()
    assert gathered == [
        TelemetryResult(inserted=3, duplicates=0),
        TelemetryResult(inserted=0, duplicates=3),
        TelemetryResult(inserted=2, duplicates=0),
    ]
    assert later == [
        TelemetryResult(inserted=0, duplicates=2),
        TelemetryResult(inserted=0, duplicates=3),
    ]
    assert _count(session, Telemetry) == 5
    sequence = _sequence(session)
    assert (sequence.highest_seq, sequence.gaps, sequence.duplicates) == (5, 0, 8)


def test_one_gathering_books_each_agent_as_if_its_messages_came_one_by_one(session):
    store_telemetry(session, [batch(1, 2, start=100, agent="agent-2")])
    session.commit()
    results = store_telemetry(
        session,
        [
            batch(1, 2),  # agent-1 first seen
            batch(3, 1, start=150, agent="agent-2"),
            batch(6, 2),  # a gap of 3 readings ...
            batch(3, 3),  # ... filled late, in the same gathering
            batch(1, 2, start=100, agent="agent-2"),  # a redelivery
        ],
    )
    session.commit()
    assert [r.inserted for r in results] == [2, 1, 2, 3, 0]
    assert [r.duplicates for r in results] == [0, 0, 0, 0, 2]
    one = _sequence(session)
    assert (one.highest_seq, one.gaps, one.missing_readings, one.duplicates) == (7, 1, 0, 0)
    two = _sequence(session, "agent-2")
    assert (two.highest_seq, two.gaps, two.missing_readings, two.duplicates) == (3, 0, 0, 2)


def test_of_two_readings_with_one_key_in_one_gathering_the_first_is_kept(session):
    results = store_telemetry(
        session, [batch(1, 1, voltage=13.1), batch(2, 1, start=1, voltage=12.0)]
    )
    session.commit()
    assert results == [TelemetryResult(1, 0), TelemetryResult(0, 1)]
    assert session.scalars(select(Telemetry.voltage)).all() == [13.1]
    assert session.scalars(select(BatteryLatest.voltage)).all() == [13.1]


def test_batteries_interleaved_with_a_key_twice_keep_the_first_delivered(session):
    """The key seen twice keeps its first delivery, and each message is told which of its
    readings it stored, whatever the other battery's readings between them."""
    one, two = ids.battery_id(SITE, 1, 1, 1), ids.battery_id(SITE, 1, 1, 2)

    def message(seq: int, *readings: tuple[str, int, float]) -> TelemetryBatch:
        return TelemetryBatch(
            site_id=SITE,
            agent_id="agent-1",
            seq_first=seq,
            seq_last=seq + len(readings) - 1,
            readings=[
                Reading(battery_id=b, ts=T0 + timedelta(minutes=m), voltage=v)
                for b, m, v in readings
            ],
        )

    results = store_telemetry(
        session,
        [
            message(1, (two, 1, 13.1), (one, 1, 13.2)),
            message(3, (one, 2, 13.3), (two, 1, 12.0), (one, 3, 13.4)),
        ],
    )
    session.commit()
    assert [r.stored for r in results] == [(True, True), (True, False, True)]
    rows = session.execute(
        select(Telemetry.battery_id, Telemetry.ts, Telemetry.voltage).order_by(
            Telemetry.battery_id, Telemetry.ts
        )
    ).all()
    assert [(b, v) for b, _, v in rows] == [(one, 13.2), (one, 13.3), (one, 13.4), (two, 13.1)]


def test_latest_reading_is_the_newest_of_the_whole_gathering(session):
    store_telemetry(session, [batch(1, 2, start=5, voltage=13.1), batch(3, 2, voltage=12.9)])
    session.commit()
    latest = session.scalars(select(BatteryLatest)).one()
    assert (latest.ts, latest.voltage) == (T0 + timedelta(minutes=6), 13.1)


def test_values_and_timestamps_come_back_exactly(session):
    reading = Reading(
        battery_id=ids.battery_id(SITE, 2, 3, 36),
        ts=datetime(2026, 3, 1, 23, 59, 59, 999000, tzinfo=UTC),
        voltage=0.1 + 0.2,
        current=-1234.5678901234567,
        temperature=-0.0,
        internal_resistance=1e-7,
        soc_pct=None,
        soh_pct=100.0,
    )
    one = TelemetryBatch(site_id=SITE, agent_id="a", seq_first=0, seq_last=0, readings=[reading])
    store_telemetry(session, [one])
    session.commit()
    row = session.scalars(select(Telemetry)).one()
    assert Reading.model_validate(row, from_attributes=True) == reading


@pytest.mark.integration
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_copy_timestamps_do_not_depend_on_the_session_time_zone(session):
    session.execute(text("SET TIME ZONE 'America/St_Johns'"))  # UTC-03:30
    store_telemetry(session, [batch(1, 1)])
    session.commit()
    session.execute(text("SET TIME ZONE 'UTC'"))
    stored = session.scalar(text("SELECT to_char(ts, 'YYYY-MM-DD HH24:MI:SS') FROM telemetry"))
    assert stored == "2026-03-01 00:01:00"


@pytest.mark.integration
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_failing_copy_raises_what_ingest_handles(session, monkeypatch):
    """Ingest retries or quarantines on SQLAlchemy errors; a raw driver error would end it."""
    bad = b"BAT-DC-CNX-01-UPS-01-STR-01-001\tnot a time\t1\t1\t1\t1\t1\t1\n"
    monkeypatch.setattr(store, "copy_text", lambda readings: bad)
    with pytest.raises(SQLAlchemyError, match="invalid input syntax"):
        store_telemetry(session, [batch(1, 1)])


def keyed(agent: str, minutes: list[int]) -> TelemetryBatch:
    """Readings of battery 1 at ``minutes``, in that order, sequence numbers from 1."""
    readings = [
        Reading(battery_id=ids.battery_id(SITE, 1, 1, 1), ts=T0 + timedelta(minutes=m))
        for m in minutes
    ]
    return TelemetryBatch(
        site_id=SITE, agent_id=agent, seq_first=1, seq_last=len(minutes), readings=readings
    )


@pytest.mark.integration
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_key_already_stored_undoes_only_the_copy_not_the_transaction(session):
    """The straight COPY fails on a stored key; the rest of the transaction stays, and the
    readings are sorted out on the staging path."""
    store_telemetry(session, [batch(1, 2)])
    session.commit()
    quarantine(session, "brm/v1/DC-CNX-01/telemetry", b"junk", "schema: not JSON")
    [result] = store_telemetry(session, [batch(2, 3)])  # minute 2 is stored already
    session.commit()
    assert result == TelemetryResult(inserted=2, duplicates=1)
    assert _count(session, QuarantinedMessage) == 1
    assert _count(session, Telemetry) == 4


@pytest.mark.integration
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_workers_deadlocked_on_overlapping_keys_both_finish(migrated_url, monkeypatch):
    """Two workers COPY overlapping keys in opposite orders and deadlock: the server fails one
    COPY, that worker takes the staging path, and every key is stored once.

    A third transaction holds a key in the middle of each batch, so each worker has stored its
    first key before it waits; when the third rolls back, each wants the other's first key.
    """
    copies: list[str] = []
    real_copy = store._copy
    monkeypatch.setattr(
        store,
        "_copy",
        lambda c, statement, text: (copies.append(statement), real_copy(c, statement, text)),
    )
    engine = make_engine(migrated_url)
    sessions = make_session_factory(engine)
    try:
        with sessions() as blocker, sessions() as one, sessions() as two:
            for s in (one, two):
                s.execute(text("SET deadlock_timeout = '100ms'"))
            pids = [s.scalar(text("SELECT pg_backend_pid()")) for s in (one, two)]
            battery = ids.battery_id(SITE, 1, 1, 1)
            for m in (2, 4):
                blocker.execute(
                    text("INSERT INTO telemetry (battery_id, ts) VALUES (:b, :ts)"),
                    {"b": battery, "ts": T0 + timedelta(minutes=m)},
                )
            results: dict[str, list[TelemetryResult]] = {}

            def work(s, agent: str, minutes: list[int]) -> None:
                results[agent] = store_telemetry(s, [keyed(agent, minutes)])
                s.commit()

            threads = [
                threading.Thread(target=work, args=(one, "agent-1", [1, 2, 3])),
                threading.Thread(target=work, args=(two, "agent-2", [3, 4, 1])),
            ]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 10
            while (
                blocker.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE pid = ANY(:pids) AND wait_event_type = 'Lock'"
                    ),
                    {"pids": pids},
                )
                < 2
            ):
                assert time.monotonic() < deadline, "the workers never waited on the blocker"
                time.sleep(0.02)
            blocker.rollback()
            for thread in threads:
                thread.join(20)
            assert sorted(results) == ["agent-1", "agent-2"]
            stored = sorted(r.inserted for [r] in results.values())
            assert stored == [1, 3]  # the victim stores only minute 4 (or 2), the other all 3
            assert sum(r.duplicates for [r] in results.values()) == 2
            # Both COPYs straight into telemetry; staged: each one's latest, the victim's telemetry.
            assert copies.count(store.COPY_TELEMETRY) == 2
            assert copies.count(store.COPY_STAGING) == 3
            minutes = one.scalars(select(Telemetry.ts).order_by(Telemetry.ts)).all()
            assert minutes == [T0 + timedelta(minutes=m) for m in (1, 2, 3, 4)]
    finally:
        engine.dispose()


def state(status: AgentStatus, minute: int | None, down: tuple[str, ...] = ()) -> State:
    return State(
        site_id=SITE,
        agent_id="agent-1",
        status=status,
        ts=None if minute is None else T0 + timedelta(minutes=minute),
        buffer_depth=12,
        devices_up=6 - len(down),
        devices_down=len(down),
        unavailable_devices=list(down),
    )


def _site_state(session) -> tuple:
    row = session.scalars(select(SiteState).execution_options(populate_existing=True)).one()
    minute = None if row.ts is None else (row.ts - T0) // timedelta(minutes=1)
    return row.status, minute, row.devices_down, row.unavailable_devices


def test_state_is_upserted_and_an_older_one_does_not_overwrite_it(session):
    received = T0 + timedelta(hours=1)
    record_state(session, state(AgentStatus.ONLINE, 10, ("STR-A", "STR-B")), now=received)
    session.commit()
    assert _site_state(session) == ("online", 10, 2, "STR-A,STR-B")
    row = session.scalars(select(SiteState)).one()
    assert (row.agent_id, row.buffer_depth, row.devices_up, row.received_at) == (
        "agent-1",
        12,
        4,
        received,
    )
    record_state(session, state(AgentStatus.OFFLINE, 5))  # an old retained copy
    session.commit()
    assert _site_state(session) == ("online", 10, 2, "STR-A,STR-B")
    record_state(session, state(AgentStatus.ONLINE, 11))
    session.commit()
    assert _site_state(session) == ("online", 11, 0, "")
    assert _count(session, SiteState) == 1


def test_a_state_without_time_such_as_the_last_will_always_applies(session):
    record_state(session, state(AgentStatus.ONLINE, 10))
    record_state(session, State(site_id=SITE, agent_id="agent-1", status=AgentStatus.OFFLINE))
    session.commit()
    assert _site_state(session) == ("offline", None, None, "")
    record_state(session, state(AgentStatus.ONLINE, 1))
    session.commit()
    assert _site_state(session) == ("online", 1, 0, "")


def test_each_event_becomes_one_row(session):
    lost = Event(ts=T0, kind=EventKind.COMMUNICATION_LOST, device_id="STR-1", message="no answer")
    invalid = Event(
        ts=T0 + timedelta(seconds=1),
        kind=EventKind.INVALID_VALUE,
        device_id="STR-2",
        battery_id=ids.battery_id(SITE, 1, 2, 7),
        message="voltage out of range",
    )
    events = Events(site_id=SITE, agent_id="agent-1", events=[lost, invalid])
    record_events(session, events, now=T0 + timedelta(seconds=2))
    session.commit()
    rows = session.scalars(select(SiteEvent).order_by(SiteEvent.ts)).all()
    assert [(r.ts, r.kind, r.device_id, r.battery_id, r.message) for r in rows] == [
        (T0, "communication_lost", "STR-1", None, "no answer"),
        (invalid.ts, "invalid_value", "STR-2", invalid.battery_id, "voltage out of range"),
    ]
    assert {(r.site_id, r.agent_id, r.received_at) for r in rows} == {
        (SITE, "agent-1", T0 + timedelta(seconds=2))
    }
