"""The outbox on real SQLite files: sequence numbers, the bound, batches, events, refusals."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from common.schemas import Event, EventKind, Events, Reading, TelemetryBatch, decode
from edge_agent.outbox import MAX_EVENTS, Outbox, OutboxError, contiguous_prefix

SITE = "DC-CNX-01"
AGENT = "agent-1"
T0 = datetime(2025, 11, 30, 8, 0, tzinfo=UTC)


def readings(count: int, start_minute: int = 0) -> list[Reading]:
    """``count`` readings of 36 blocks of one string, minute after minute."""
    return [
        Reading(
            battery_id=f"BAT-{SITE}-UPS-01-STR-01-{i % 36 + 1:03d}",
            ts=T0 + timedelta(minutes=start_minute + i // 36),
            voltage=13.5 + i % 7 / 100,
            current=-1.25,
            temperature=None if i % 5 == 0 else 24.5,
            internal_resistance=0.0045,
            soc_pct=100.0,
            soh_pct=97.5,
        )
        for i in range(count)
    ]


def run(coroutine):
    return asyncio.run(coroutine)


async def opened(path: Path, max_readings: int = 1_000_000, **owner: str) -> Outbox:
    return await Outbox.open(path, owner.get("site", SITE), owner.get("agent", AGENT), max_readings)


def test_append_gives_one_seq_per_reading_strictly_increasing_across_reopen(tmp_path):
    path = tmp_path / "outbox.sqlite3"

    async def scenario() -> None:
        outbox = await opened(path)
        assert await outbox.append([]) is None
        assert await outbox.append(readings(3)) == (1, 3)
        assert await outbox.append(readings(2)) == (4, 5)
        await outbox.delete(1, 5)  # everything acknowledged: numbers are still never reused
        assert outbox.depth() == 0
        await outbox.close()

        outbox = await opened(path)
        assert (outbox.last_seq(), outbox.depth()) == (5, 0)
        assert await outbox.append(readings(4)) == (6, 9)
        await outbox.close()

    run(scenario())


def test_concurrent_appends_get_disjoint_ranges(tmp_path):
    async def scenario() -> None:
        outbox = await opened(tmp_path / "outbox.sqlite3")
        ranges = await asyncio.gather(*(outbox.append(readings(36)) for _ in range(20)))
        numbers = sorted(n for first, last in ranges for n in range(first, last + 1))
        assert numbers == list(range(1, 20 * 36 + 1))
        await outbox.close()

    run(scenario())


def test_full_outbox_drops_the_oldest_and_the_count_survives_reopen(tmp_path):
    path = tmp_path / "outbox.sqlite3"

    async def scenario() -> None:
        outbox = await opened(path, max_readings=1000)
        await outbox.append(readings(900))
        await outbox.append(readings(250))  # 150 too many
        assert (outbox.depth(), outbox.dropped_total()) == (1000, 150)
        batch = await outbox.batch(0, 10)
        assert batch is not None and batch.seq_first == 151
        await outbox.close()

        outbox = await opened(path, max_readings=1000)
        assert (outbox.depth(), outbox.dropped_total()) == (1000, 150)
        await outbox.append(readings(36))
        assert outbox.dropped_total() == 186
        await outbox.close()

    run(scenario())


def test_batch_is_contiguous_cut_at_holes_and_bounded_by_up_to(tmp_path):
    async def scenario() -> None:
        outbox = await opened(tmp_path / "outbox.sqlite3")
        await outbox.append(readings(100))
        await outbox.delete(41, 50)  # a hole: acknowledged out of order
        spans = []
        after = 0
        while (batch := await outbox.batch(after, 30, up_to=90)) is not None:
            spans.append((batch.seq_first, batch.seq_last))
            after = batch.seq_last
        assert spans == [(1, 30), (31, 40), (51, 80), (81, 90)]
        assert await outbox.batch(90, 30) is not None  # without up_to: up to the last seq
        assert await outbox.batch(100, 30) is None
        await outbox.close()

    run(scenario())


def test_payload_is_a_valid_telemetry_batch_with_the_readings_as_taken(tmp_path):
    taken = readings(72)

    async def scenario() -> None:
        outbox = await opened(tmp_path / "outbox.sqlite3")
        await outbox.append(taken)
        batch = await outbox.batch(0, 1000)
        await outbox.close()
        return batch

    batch = run(scenario())
    message = decode(TelemetryBatch, batch.payload)
    assert (message.site_id, message.agent_id) == (SITE, AGENT)
    assert (message.seq_first, message.seq_last, batch.count) == (1, 72, 72)
    assert message.readings == taken


def test_delete_is_idempotent_and_tolerates_rows_already_dropped(tmp_path):
    async def scenario() -> None:
        outbox = await opened(tmp_path / "outbox.sqlite3", max_readings=1000)
        await outbox.append(readings(1000))
        await outbox.delete(1, 10)
        await outbox.delete(1, 10)
        assert outbox.depth() == 990
        await outbox.append(readings(20))  # drops 11..20 (and 1..10 are gone already)
        await outbox.delete(5, 30)
        assert outbox.depth() == 1000 - 10
        first = await outbox.batch(0, 1)
        assert first is not None and first.seq_first == 31
        await outbox.close()

    run(scenario())


def test_refuses_the_outbox_of_another_site_or_agent_and_leaves_it_intact(tmp_path):
    path = tmp_path / "outbox.sqlite3"

    async def scenario() -> None:
        outbox = await opened(path)
        await outbox.append(readings(5))
        await outbox.close()
        with pytest.raises(OutboxError, match="belongs to site DC-CNX-01 agent agent-1"):
            await opened(path, site="DC-BKK-01")
        with pytest.raises(OutboxError, match="belongs to"):
            await opened(path, agent="agent-2")
        outbox = await opened(path)
        assert outbox.depth() == 5
        await outbox.close()

    run(scenario())


def test_corrupt_file_is_refused_never_replaced(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    garbage = b"this is not a database, it is a log file\n" * 200
    path.write_bytes(garbage)
    with pytest.raises(OutboxError, match="corrupt or not an outbox"):
        run(opened(path))
    assert path.read_bytes() == garbage


def test_damaged_pages_are_refused_at_open(tmp_path):
    path = tmp_path / "outbox.sqlite3"

    async def fill() -> None:
        outbox = await opened(path)
        await outbox.append(readings(5000))
        await outbox.close()

    run(fill())
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = b"\xff" * 4096
    path.write_bytes(bytes(data))
    with pytest.raises(OutboxError, match=r"corrupt"):
        run(opened(path))


def test_another_sqlite_database_is_not_taken_for_an_outbox(tmp_path):
    path = tmp_path / "other.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE things (x)")
    db.close()
    with pytest.raises(OutboxError, match="not an agent outbox"):
        run(opened(path))


def test_unopenable_path_is_a_clear_error(tmp_path):
    with pytest.raises(OutboxError, match="cannot open outbox"):
        run(opened(tmp_path / "missing-dir" / "outbox.sqlite3"))


def test_a_second_process_cannot_share_the_outbox(tmp_path):
    path = tmp_path / "outbox.sqlite3"

    async def scenario() -> None:
        outbox = await opened(path)
        try:
            other = await asyncio.to_thread(_open_in_child, path)
        finally:
            await outbox.close()
        assert "in use by another process" in other

    run(scenario())


def _open_in_child(path: Path) -> str:
    code = (
        "import asyncio, sys\n"
        "from edge_agent.outbox import Outbox, OutboxError\n"
        "try:\n"
        f"    asyncio.run(Outbox.open({str(path)!r}, {SITE!r}, {AGENT!r}, 1000))\n"
        "except OutboxError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    return done.stdout + done.stderr


CHILD_APPENDS = """
import asyncio, sys
from tests.edge_agent.test_outbox import AGENT, SITE, readings
from edge_agent.outbox import Outbox

async def main():
    outbox = await Outbox.open(sys.argv[1], SITE, AGENT, 10_000_000)
    while True:
        first, last = await outbox.append(readings(36))
        print(first, last, flush=True)

asyncio.run(main())
"""


def test_every_commit_survives_sigkill(tmp_path):
    """A reading counts as taken once committed: SIGKILL right after must not lose it."""
    path = tmp_path / "outbox.sqlite3"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_APPENDS, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    committed = [child.stdout.readline() for _ in range(300)]
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    child.stdout.close()
    last_reported = int(committed[-1].split()[1])

    async def reopen() -> tuple[int, int]:
        outbox = await opened(path, max_readings=10_000_000)
        try:
            return outbox.last_seq(), outbox.depth()
        finally:
            await outbox.close()

    last_seq, depth = run(reopen())
    assert last_seq >= last_reported
    assert depth == last_seq  # nothing half-written, nothing missing


def test_events_round_trip_and_delete(tmp_path):
    events = [
        Event(ts=T0, kind=EventKind.COMMUNICATION_LOST, device_id="DC-CNX-01-UPS-02", message="x"),
        Event(
            ts=T0 + timedelta(seconds=5),
            kind=EventKind.INVALID_VALUE,
            device_id="STR-DC-CNX-01-UPS-01-01",
            message="voltage out of range",
            battery_id=f"BAT-{SITE}-UPS-01-STR-01-007",
        ),
    ]

    async def scenario() -> None:
        path = tmp_path / "outbox.sqlite3"
        outbox = await opened(path)
        await outbox.append_events(events)
        await outbox.close()
        outbox = await opened(path)
        found = await outbox.event_batch(1)
        assert found is not None and found[0] == [1]
        ids, payload = await outbox.event_batch(10)
        message = decode(Events, payload)
        assert (message.site_id, message.agent_id, message.events) == (SITE, AGENT, events)
        await outbox.delete_events(ids)
        await outbox.delete_events(ids)
        assert await outbox.event_batch(10) is None
        await outbox.close()

    run(scenario())


def test_events_are_capped_oldest_first_and_never_touch_readings(tmp_path):
    event = Event(ts=T0, kind=EventKind.COMMUNICATION_LOST, device_id="d", message="m")

    async def scenario() -> None:
        outbox = await opened(tmp_path / "outbox.sqlite3", max_readings=1000)
        await outbox.append(readings(1000))
        await outbox.append_events([event] * (MAX_EVENTS + 5))
        ids, payload = await outbox.event_batch(MAX_EVENTS + 100)
        assert (len(ids), ids[0]) == (MAX_EVENTS, 6)
        assert len(json.loads(payload)["events"]) == MAX_EVENTS
        assert (outbox.depth(), outbox.dropped_total()) == (1000, 0)
        await outbox.close()

    run(scenario())


def test_contiguous_prefix():
    assert contiguous_prefix([]) == []
    rows = [(5, "a"), (6, "b"), (8, "c")]
    assert contiguous_prefix(rows) == rows[:2]
    assert contiguous_prefix(rows[:2]) == rows[:2]
    assert contiguous_prefix([(3, "a"), (5, "b"), (6, "c")]) == [(3, "a")]


def test_a_cancelled_append_leaves_the_outbox_consistent(tmp_path):
    """Regression: cancelling append() mid-commit left the counters behind the file, so every
    later append collided with an existing seq."""
    path = tmp_path / "outbox.sqlite3"

    async def scenario() -> None:
        outbox = await opened(path)
        for steps in range(12):
            task = asyncio.create_task(outbox.append(readings(36)))
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await outbox.append(readings(36))
        depth, last = outbox.depth(), outbox.last_seq()
        await outbox.close()
        outbox = await opened(path)
        assert (outbox.depth(), outbox.last_seq()) == (depth, last)
        await outbox.close()

    run(scenario())
