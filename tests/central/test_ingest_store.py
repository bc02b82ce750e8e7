"""Ingest writes on SQLite and PostgreSQL: readings once, latest readings, sequence bookkeeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from central.db.models import AgentSequence, BatteryLatest, QuarantinedMessage, Telemetry
from central.ingest.store import TelemetryResult, quarantine, store_telemetry
from common import ids
from common.schemas import Reading, TelemetryBatch

SITE = "DC-CNX-01"
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def batch(seq_first: int, count: int, start: int | None = None, voltage: float = 13.6):
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
        agent_id="agent-1",
        seq_first=seq_first,
        seq_last=seq_first + count - 1,
        readings=readings,
    )


def _count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def _sequence(session) -> AgentSequence:
    return session.scalars(select(AgentSequence).execution_options(populate_existing=True)).one()


def test_a_redelivered_batch_is_stored_once_and_counted(session):
    first = store_telemetry(session, batch(1, 3))
    session.commit()
    again = store_telemetry(session, batch(1, 3))
    session.commit()
    assert first == TelemetryResult(inserted=3, duplicates=0)
    assert again == TelemetryResult(inserted=0, duplicates=3)
    assert _count(session, Telemetry) == 3
    sequence = _sequence(session)
    assert (sequence.highest_seq, sequence.gaps, sequence.duplicates) == (3, 0, 3)


def test_null_values_stay_null(session):
    store_telemetry(session, batch(1, 1))
    session.commit()
    row = session.scalars(select(Telemetry)).one()
    assert row.temperature is None
    assert row.voltage == 13.6
    assert row.ts == T0 + timedelta(minutes=1)


def test_a_jump_in_sequence_counts_a_gap_and_a_late_batch_fills_it(session):
    store_telemetry(session, batch(1, 2))
    store_telemetry(session, batch(6, 2))
    session.commit()
    sequence = _sequence(session)
    assert (sequence.highest_seq, sequence.gaps, sequence.missing_readings) == (7, 1, 3)
    store_telemetry(session, batch(3, 3))  # the missing batch, delivered late
    session.commit()
    sequence = _sequence(session)
    assert (sequence.gaps, sequence.missing_readings, sequence.duplicates) == (1, 0, 0)


def test_a_partly_overlapping_batch_counts_only_the_overlap(session):
    store_telemetry(session, batch(1, 3))
    result = store_telemetry(session, batch(2, 4))
    session.commit()
    assert result == TelemetryResult(inserted=2, duplicates=2)
    sequence = _sequence(session)
    assert (sequence.highest_seq, sequence.duplicates, sequence.gaps) == (5, 2, 0)


def test_latest_reading_moves_only_forward(session):
    store_telemetry(session, batch(10, 2, voltage=13.5))
    session.commit()
    store_telemetry(session, batch(20, 1, start=1, voltage=12.0))  # older readings, new seq
    session.commit()
    latest = session.scalars(select(BatteryLatest).execution_options(populate_existing=True)).one()
    assert (latest.ts, latest.voltage) == (T0 + timedelta(minutes=11), 13.5)
    store_telemetry(session, batch(21, 1, start=30, voltage=13.7))
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
