"""The agent's outbox: every reading taken, in one SQLite file, until the broker acknowledges it.

A reading counts as taken only once its transaction has committed here. Each reading gets one
sequence number, strictly increasing for the life of the file (``AUTOINCREMENT`` never reuses a
number, even after deletion), so central can tell a gap from a redelivery. Rows keep their wire
JSON, so a batch is built by joining strings, never by validating again.

Durability: WAL with ``synchronous=NORMAL``. A commit is in the WAL file before ``append``
returns, so killing the process (SIGKILL, OOM) loses nothing committed; a power cut may lose
the last second or so of commits, which the operating system had not yet written to disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiosqlite

from common.schemas import SCHEMA_VERSION, Event, Reading

log = logging.getLogger(__name__)

FILE_FORMAT = 1
MAX_EVENTS = 10_000  # events are a few per device state change; beyond this, drop the oldest
_Rows = TypeVar("_Rows")

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value NOT NULL) WITHOUT ROWID;
CREATE TABLE readings (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
"""


class OutboxError(Exception):
    """The outbox file cannot be used: corrupt, unreadable, in use, or another site's."""


@dataclass(frozen=True)
class OutboxBatch:
    """Readings ``seq_first..seq_last`` (contiguous) as one complete telemetry payload."""

    seq_first: int
    seq_last: int
    payload: bytes

    @property
    def count(self) -> int:
        return self.seq_last - self.seq_first + 1


def contiguous_prefix(rows: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The leading run of ``rows`` whose numbers follow one another without a hole."""
    if not rows or rows[-1][0] - rows[0][0] + 1 == len(rows):
        return rows
    first = rows[0][0]
    for i, (seq, _) in enumerate(rows):
        if seq != first + i:
            return rows[:i]
    return rows


class Outbox:
    """One agent's bounded, durable queue of readings and events (open with ``Outbox.open``).

    Counters (depth, last sequence number, dropped) live in memory as well as in the file, so
    ``depth()`` and ``dropped_total()`` are cheap enough for every state message. The file is
    locked exclusively: a second process using the same outbox is refused at open.
    """

    def __init__(
        self, db: aiosqlite.Connection, path: Path, site_id: str, agent_id: str, max_readings: int
    ) -> None:
        self._db = db
        self.path = path
        self.site_id = site_id
        self.agent_id = agent_id
        self.max_readings = max_readings
        self._head = (
            f'{{"schema":{SCHEMA_VERSION},"site_id":{json.dumps(site_id)},'
            f'"agent_id":{json.dumps(agent_id)},'
        )
        self._lock = asyncio.Lock()
        self._depth = 0
        self._last_seq = 0
        self._dropped = 0

    @classmethod
    async def open(cls, path: Path | str, site_id: str, agent_id: str, max_readings: int) -> Outbox:
        """Open (or create) the outbox at ``path``; refuse a corrupt file or another agent's."""
        path = Path(path)
        try:  # first in plain sqlite3: a failed aiosqlite connect leaves its thread behind
            sqlite3.connect(path).close()
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open outbox {path}: {exc}") from exc
        db = await aiosqlite.connect(path, isolation_level=None, timeout=1.0)
        outbox = cls(db, path, site_id, agent_id, max_readings)
        try:
            await outbox._prepare()
        except BaseException as exc:
            await db.close()
            if isinstance(exc, sqlite3.Error):
                raise OutboxError(_explain(path, exc)) from exc
            raise
        return outbox

    async def close(self) -> None:
        await self._db.close()

    async def _prepare(self) -> None:
        # Exclusive before WAL: no shared-memory index, and no second writer can join us.
        await self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
        mode = await self._scalar("PRAGMA journal_mode=WAL")
        if mode != "wal":
            raise OutboxError(f"outbox {self.path}: cannot use WAL mode (got {mode!r})")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA journal_size_limit=67108864")
        check = await self._scalar("PRAGMA quick_check")
        if check != "ok":
            raise OutboxError(f"outbox {self.path} is corrupt: {check}")
        tables = {row[0] for row in await self._db.execute_fetchall(_TABLES)}
        await self._db.execute("BEGIN IMMEDIATE")  # takes the exclusive lock now
        try:
            if not tables:
                await self._create()
            meta = dict(await self._db.execute_fetchall("SELECT key, value FROM meta"))
            await self._db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            await self._db.execute("ROLLBACK")
            raise OutboxError(f"{self.path} is not an agent outbox: {exc}") from exc
        self._check_owner(meta)
        self._dropped = int(meta["dropped"])
        self._depth = int(await self._scalar("SELECT count(*) FROM readings"))
        self._last_seq = int(
            await self._scalar(
                "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'readings'"
            )
        )

    async def _create(self) -> None:
        for statement in filter(str.strip, _SCHEMA.split(";")):
            await self._db.execute(statement)
        await self._db.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [
                ("format", FILE_FORMAT),
                ("site_id", self.site_id),
                ("agent_id", self.agent_id),
                ("dropped", 0),
            ],
        )

    def _check_owner(self, meta: dict[str, object]) -> None:
        if meta.get("format") != FILE_FORMAT:
            raise OutboxError(
                f"{self.path} is not an agent outbox of format {FILE_FORMAT} "
                f"(format {meta.get('format')!r})"
            )
        owner = (meta.get("site_id"), meta.get("agent_id"))
        if owner != (self.site_id, self.agent_id):
            raise OutboxError(
                f"outbox {self.path} belongs to site {owner[0]} agent {owner[1]}, not to site "
                f"{self.site_id} agent {self.agent_id}; give this agent its own outbox file"
            )

    async def _scalar(self, sql: str) -> int | str:
        rows = list(await self._db.execute_fetchall(sql))
        return rows[0][0]

    def depth(self) -> int:
        """Readings waiting (taken, not yet acknowledged by the broker)."""
        return self._depth

    def dropped_total(self) -> int:
        """Readings dropped because the outbox was full, since the file was created."""
        return self._dropped

    def last_seq(self) -> int:
        """The highest sequence number ever given (0 before the first reading)."""
        return self._last_seq

    async def append(self, readings: Sequence[Reading]) -> tuple[int, int] | None:
        """Commit ``readings`` in one transaction; their sequence range, or None if empty.

        If the outbox would exceed ``max_readings``, the oldest rows go in the same transaction
        and are added to the persisted dropped counter.
        """
        if not readings:
            return None
        bodies = [r.model_dump_json() for r in readings]
        return await asyncio.shield(self._append(bodies))  # see _transaction

    async def _append(self, bodies: list[str]) -> tuple[int, int]:
        async with self._lock:
            first = self._last_seq + 1
            rows = list(enumerate(bodies, start=first))
            dropped = await self._transaction(self._insert_readings, rows)
            self._last_seq = last = first + len(rows) - 1
            self._depth += len(rows) - dropped
            self._dropped += dropped
        if dropped:
            log.warning("outbox full: dropped the %d oldest readings", dropped)
        return first, last

    async def _insert_readings(self, rows: list[tuple[int, str]]) -> int:
        await self._db.executemany("INSERT INTO readings (seq, body) VALUES (?, ?)", rows)
        excess = self._depth + len(rows) - self.max_readings
        if excess <= 0:
            return 0
        cursor = await self._db.execute(
            "DELETE FROM readings WHERE seq IN (SELECT seq FROM readings ORDER BY seq LIMIT ?)",
            (excess,),
        )
        await self._db.execute(
            "UPDATE meta SET value = value + ? WHERE key = 'dropped'", (cursor.rowcount,)
        )
        return cursor.rowcount

    async def _locked_transaction(
        self, work: Callable[[_Rows], Awaitable[int]], rows: _Rows
    ) -> int:
        async with self._lock:
            return await self._transaction(work, rows)

    async def _transaction(self, work: Callable[[_Rows], Awaitable[int]], rows: _Rows) -> int:
        """Run ``work`` in one write transaction; the caller holds the lock.

        Writers run shielded from cancellation: a cancel arriving while COMMIT is queued on
        aiosqlite's thread would otherwise roll back nothing and leave the counters behind.
        """
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            result = await work(rows)
            await self._db.execute("COMMIT")
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise
        return result

    async def batch(
        self, lane_after: int, limit: int, up_to: int | None = None
    ) -> OutboxBatch | None:
        """The oldest readings after ``lane_after`` (at most ``up_to``), cut at the first hole."""
        high = self._last_seq if up_to is None else up_to
        async with self._lock:
            rows = list(
                await self._db.execute_fetchall(
                    "SELECT seq, body FROM readings WHERE seq > ? AND seq <= ?"
                    " ORDER BY seq LIMIT ?",
                    (lane_after, high, limit),
                )
            )
        rows = contiguous_prefix(rows)
        if not rows:
            return None
        first, last = rows[0][0], rows[-1][0]
        body = ",".join(row[1] for row in rows)
        payload = f'{self._head}"seq_first":{first},"seq_last":{last},"readings":[{body}]}}'
        return OutboxBatch(first, last, payload.encode())

    async def delete(self, seq_first: int, seq_last: int) -> None:
        """Forget readings the broker acknowledged; rows already gone are fine."""
        await asyncio.shield(self._delete(seq_first, seq_last))

    async def _delete(self, seq_first: int, seq_last: int) -> None:
        async with self._lock:
            cursor = await self._db.execute(
                "DELETE FROM readings WHERE seq BETWEEN ? AND ?", (seq_first, seq_last)
            )
            self._depth -= cursor.rowcount

    async def append_events(self, events: Sequence[Event]) -> None:
        """Commit ``events``; beyond ``MAX_EVENTS`` waiting, the oldest are dropped (logged)."""
        if not events:
            return
        rows = [(e.model_dump_json(),) for e in events]
        dropped = await asyncio.shield(self._locked_transaction(self._insert_events, rows))
        if dropped:
            log.warning("event outbox full: dropped the %d oldest events", dropped)

    async def _insert_events(self, rows: list[tuple[str]]) -> int:
        await self._db.executemany("INSERT INTO events (body) VALUES (?)", rows)
        cursor = await self._db.execute(
            "DELETE FROM events WHERE id <= "
            "(SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (MAX_EVENTS,),
        )
        return cursor.rowcount

    async def event_batch(self, limit: int) -> tuple[list[int], bytes] | None:
        """The oldest waiting events as (their ids, one complete Events payload), or None."""
        async with self._lock:
            rows = list(
                await self._db.execute_fetchall(
                    "SELECT id, body FROM events ORDER BY id LIMIT ?", (limit,)
                )
            )
        if not rows:
            return None
        body = ",".join(row[1] for row in rows)
        return [row[0] for row in rows], f'{self._head}"events":[{body}]}}'.encode()

    async def delete_events(self, ids: Sequence[int]) -> None:
        """Forget events the broker acknowledged; ids already gone are fine."""
        async with self._lock:
            await self._db.execute(
                "DELETE FROM events WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(list(ids)),),
            )


_TABLES = "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'sqlite_sequence'"


def _explain(path: Path, exc: sqlite3.Error) -> str:
    text = str(exc)
    if "locked" in text:
        return f"outbox {path} is in use by another process ({text})"
    if "not a database" in text or "malformed" in text:
        return f"outbox {path} is corrupt or not an outbox: {text}; move it aside to start afresh"
    return f"cannot use outbox {path}: {text}"
