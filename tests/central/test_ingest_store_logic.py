"""The pure parts of ingest's store, without a database: who stored a reading, sequence
bookkeeping, each battery's newest reading, and the COPY text PostgreSQL reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from central.ingest.store import (
    SequenceCounts,
    book,
    by_battery,
    copy_text,
    in_key_order,
    newest_of,
    stored_by,
)
from common import ids
from common.schemas import Reading, TelemetryBatch
from common.units import MEASUREMENTS

SITE = "DC-CNX-01"
T0 = datetime(2026, 3, 1, tzinfo=UTC)
B1, B2 = ids.battery_id(SITE, 1, 1, 1), ids.battery_id(SITE, 1, 1, 2)


def reading(battery: str, minute: int, voltage: float | None = 13.6) -> Reading:
    return Reading(battery_id=battery, ts=T0 + timedelta(minutes=minute), voltage=voltage)


def batch(seq_first: int, *readings: Reading) -> TelemetryBatch:
    return TelemetryBatch(
        site_id=SITE,
        agent_id="agent-1",
        seq_first=seq_first,
        seq_last=seq_first + len(readings) - 1,
        readings=list(readings),
    )


def test_a_key_is_stored_by_its_first_occurrence_only():
    first = batch(1, reading(B1, 1), reading(B1, 2))
    again = batch(3, reading(B1, 2), reading(B2, 2))
    new_keys = {(B1, T0 + timedelta(minutes=2)), (B2, T0 + timedelta(minutes=2))}
    assert stored_by([first, again, first], new_keys) == [
        [False, True],  # minute 1 was stored before
        [False, True],
        [False, False],
    ]


def test_a_jump_counts_one_gap_and_a_late_batch_fills_it():
    start = SequenceCounts(highest_seq=2, gaps=0, missing_readings=0, duplicates=0)
    jumped = book(start, batch(6, reading(B1, 6)), [True])
    assert jumped == SequenceCounts(highest_seq=6, gaps=1, missing_readings=3, duplicates=0)
    late = book(jumped, batch(3, reading(B1, 3), reading(B1, 4), reading(B1, 5)), [True] * 3)
    assert late == SequenceCounts(highest_seq=6, gaps=1, missing_readings=0, duplicates=0)


def test_readings_at_or_below_the_highest_not_new_are_redeliveries():
    start = SequenceCounts(highest_seq=4, gaps=0, missing_readings=0, duplicates=1)
    overlapping = batch(3, reading(B1, 3), reading(B1, 4), reading(B1, 5))
    assert book(start, overlapping, [False, False, True]) == SequenceCounts(
        highest_seq=5, gaps=0, missing_readings=0, duplicates=3
    )


def test_newest_reading_per_battery_in_battery_order():
    readings = [reading(B2, 1), reading(B1, 3), reading(B1, 2), reading(B2, 1, voltage=12.0)]
    assert newest_of(by_battery(readings)) == [readings[1], readings[0]]


def test_readings_by_battery_keep_their_delivery_order():
    readings = [reading(B2, 5), reading(B1, 3), reading(B2, 1), reading(B1, 4)]
    assert by_battery(readings) == {
        B2: [readings[0], readings[2]],
        B1: [readings[1], readings[3]],
    }


def test_rows_in_key_order_are_by_battery_then_time():
    readings = [reading(B2, 1), reading(B1, 2), reading(B2, 0), reading(B1, 10), reading(B1, 1)]
    rows = in_key_order(copy_text(readings)).decode().splitlines()
    assert [row.split("\t")[:2] for row in rows] == [
        [r.battery_id, r.ts.isoformat()]
        for r in sorted(readings, key=lambda r: (r.battery_id, r.ts))
    ]
    assert in_key_order(b"") == b""


def test_copy_text_keeps_utc_nulls_and_exact_floats():
    late = Reading(
        battery_id=B1,
        ts=datetime(
            2026, 3, 1, 7, 0, 0, 123000, tzinfo=timezone(timedelta(hours=7))
        ),  # Bangkok time
        voltage=0.1 + 0.2,
        current=-2.5,
        soh_pct=1e-05,
    )
    assert copy_text([reading(B2, 0, voltage=None), late]).decode().splitlines() == [
        f"{B2}\t2026-03-01T00:00:00+00:00\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N",
        f"{B1}\t2026-03-01T00:00:00.123000+00:00\t0.30000000000000004\t-2.5\t\\N\t\\N\t\\N\t0.00001",
    ]
    assert copy_text([]) == b""


def test_copy_text_reads_back_as_the_same_values():
    """Every field as COPY's text format parses it: the very floats, the instant, nulls."""
    readings = [
        Reading(battery_id=B1, ts=T0, voltage=13.267, current=-0.0, internal_resistance=1e-7),
        Reading(battery_id=B2, ts=T0, temperature=-40.0, internal_resistance=1 / 3, soc_pct=100),
    ]
    for line, r in zip(copy_text(readings).decode().splitlines(), readings, strict=True):
        fields = line.split("\t")
        assert fields[0] == r.battery_id
        assert datetime.fromisoformat(fields[1]) == r.ts
        values = [None if f == "\\N" else float(f) for f in fields[2:]]
        assert values == [getattr(r, name) for name in MEASUREMENTS]
