"""Ingest's writes: telemetry once per ``(battery_id, ts)``, latest readings, agent sequence
bookkeeping, site states and events, quarantine rows. Every function takes the caller's session;
the caller commits.

The telemetry of all the messages of one ingest transaction is written together, as if the
messages had been stored one after another: each ``(battery_id, ts)`` once, its first occurrence.

On PostgreSQL the readings go in through COPY (the bulk path LIBRARY-NOTES measured at several
times the speed of an INSERT). Usually every reading is new, and one COPY straight into
``telemetry``, its rows in key order, does it. A key already stored, or twice in the
transaction, fails that COPY (inside a savepoint); the readings then go, in delivery order,
through a staging table and ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, whose keys tell
which readings were new. On SQLite multi-row
inserts of that kind take every transaction. Either way a redelivered batch, or two workers
racing on the same batch, store each reading once.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Connection, insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from central.db.models import (
    AgentSequence,
    BatteryLatest,
    QuarantinedMessage,
    SiteEvent,
    SiteState,
    Telemetry,
)
from common.schemas import Events, Reading, State, TelemetryBatch
from common.timeutil import utc_now
from common.units import MEASUREMENTS

Key = tuple[str, datetime]
Grouped = dict[str, list[Reading]]

COLUMNS = ("battery_id", "ts", *MEASUREMENTS)
STAGING = "telemetry_staging"
# Created once per connection, emptied at every commit. ``n`` numbers the readings in delivery
# order (COPY's row order): of two readings with one key in a transaction, the first is stored.
CREATE_STAGING = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING} "
    "(LIKE telemetry, n bigint GENERATED ALWAYS AS IDENTITY) ON COMMIT DELETE ROWS"
)
COPY_STAGING = f"COPY {STAGING} ({', '.join(COLUMNS)}) FROM STDIN"
COPY_TELEMETRY = f"COPY telemetry ({', '.join(COLUMNS)}) FROM STDIN"
# unique_violation, deadlock_detected: the straight COPY gives way to the staging path.
RETRY_STAGED = frozenset({"23505", "40P01"})
# Within one INSERT, ON CONFLICT DO NOTHING also refuses a key seen earlier in the same
# statement. The staging rows are deleted by the statement that moves them, so a second call in
# the same transaction starts empty. Key order takes the index entries in the same order in
# every worker: two workers inserting overlapping batches wait for each other, never deadlock.
MOVE_STAGING = f"""
WITH staged AS (DELETE FROM {STAGING} RETURNING *)
INSERT INTO telemetry ({", ".join(COLUMNS)})
SELECT {", ".join(COLUMNS)} FROM staged ORDER BY battery_id, ts, n
ON CONFLICT (battery_id, ts) DO NOTHING
RETURNING battery_id, ts
"""
# Each battery's newest reading of a transaction, staged like its telemetry, replaces the
# stored one where it is newer; battery order, as ``newest_of`` gives it, is the lock order.
MOVE_LATEST = f"""
WITH staged AS (DELETE FROM {STAGING} RETURNING *)
INSERT INTO battery_latest ({", ".join(COLUMNS)}, updated_at)
SELECT {", ".join(COLUMNS)}, %(now)s FROM staged ORDER BY n
ON CONFLICT (battery_id) DO UPDATE SET
{", ".join(f"{c} = excluded.{c}" for c in (*COLUMNS[1:], "updated_at"))}
WHERE battery_latest.ts < excluded.ts
"""
COPY_BUFFER_BYTES = 1 << 20
NULL = b"\\N"
_ROW = attrgetter(*COLUMNS)
_TS = attrgetter("ts")
_COMMA_TO_TAB = bytes.maketrans(b",", b"\t")


@dataclass(frozen=True)
class TelemetryResult:
    """One batch's count of readings stored and refused as duplicates; ``stored`` tells which
    (one flag per reading of the batch, in its order)."""

    inserted: int
    duplicates: int
    stored: tuple[bool, ...] = field(default=(), compare=False, repr=False)


class Gathering:
    """The telemetry messages of one ingest transaction, with the text their COPYs send worked
    out beforehand: ingest's decoding thread does that while the storing thread waits on the
    database for the transaction before."""

    def __init__(self, batches: Sequence[TelemetryBatch]) -> None:
        self.batches = batches
        self.readings = [reading for batch in batches for reading in batch.readings]
        self._groups: Grouped | None = None
        self._texts: CopyTexts | None = None

    def prepare(self, *, copy: bool) -> None:
        """Work out now what storing will need: the groups, and with ``copy`` the COPY texts."""
        if copy:
            self.copy_texts()
        else:
            self.groups()

    def groups(self) -> Grouped:
        """The readings per battery (``by_battery``), worked out at the first call."""
        if self._groups is None:
            self._groups = by_battery(self.readings)
        return self._groups

    def copy_texts(self) -> CopyTexts:
        """What the COPYs send, worked out at the first call."""
        if self._texts is None:
            delivered = copy_text(self.readings)
            newest = copy_text(newest_of(self.groups()))
            self._texts = CopyTexts(delivered, in_key_order(delivered), newest)
        return self._texts


class CopyTexts(NamedTuple):
    """A transaction's readings in COPY's text format: as delivered (for the staging path,
    where row order decides which of two readings with one key is kept), in key order (for the
    straight COPY, which fails on any such pair), and each battery's newest reading."""

    delivered: bytes
    in_key_order: bytes
    newest: bytes


def in_key_order(text: bytes) -> bytes:
    """COPY text with its rows sorted as text, which is by battery, then time: the IDs have one
    width, the times one format and offset. One battery's rows then go to the same pages of the
    key: the ingest bench's raw COPY takes rows grouped so 1.7-2.4 times as fast as rows as
    agents send them (each poll cycles through the blocks). Sorting costs about a tenth of
    making the text."""
    if not text:
        return text
    return b"\n".join(sorted(text[:-1].split(b"\n"))) + b"\n"


@dataclass(frozen=True)
class SequenceCounts:
    """An agent's outbox bookkeeping, as ``agent_sequences`` stores it."""

    highest_seq: int
    gaps: int
    missing_readings: int
    duplicates: int


def _insert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def stored_by(batches: Iterable[TelemetryBatch], new_keys: set[Key]) -> list[list[bool]]:
    """Per batch, whether each reading was stored by it, given the keys the insert stored: a key
    is stored by its first occurrence in delivery order, as one message after another would."""
    claimed: set[Key] = set()
    result = []
    for batch in batches:
        flags = []
        for reading in batch.readings:
            key = (reading.battery_id, reading.ts)
            flags.append(key in new_keys and key not in claimed)
            claimed.add(key)
        result.append(flags)
    return result


def by_battery(readings: Iterable[Reading]) -> dict[str, list[Reading]]:
    """The readings of each battery, in delivery order."""
    groups: dict[str, list[Reading]] = {}
    for reading in readings:
        group = groups.get(reading.battery_id)
        if group is None:
            groups[reading.battery_id] = [reading]
        else:
            group.append(reading)
    return groups


def newest_of(groups: Mapping[str, Sequence[Reading]]) -> list[Reading]:
    """Each battery's newest reading, of several at its time the first (as telemetry keeps
    the first), in battery order (one lock order for every worker)."""
    return [max(groups[battery], key=_TS) for battery in sorted(groups)]


def book(counts: SequenceCounts, batch: TelemetryBatch, inserted: Sequence[bool]) -> SequenceCounts:
    """Count ``batch``'s gaps and redeliveries of the agent's outbox sequence.

    Reading ``i`` of the batch has sequence number ``seq_first + i``. Numbers above the highest
    seen so far advance it (a jump counts one gap and its missing readings); numbers at or below
    it are redeliveries, unless their reading was new: then a late message filled a gap.
    """
    highest = counts.highest_seq
    gaps, missing = counts.gaps, counts.missing_readings
    if batch.seq_first > highest + 1:
        gaps += 1
        missing += batch.seq_first - highest - 1
    old = max(0, min(len(inserted), highest - batch.seq_first + 1))
    filled = sum(inserted[:old])
    return SequenceCounts(
        highest_seq=max(highest, batch.seq_last),
        gaps=gaps,
        missing_readings=max(0, missing - filled),
        duplicates=counts.duplicates + old - filled,
    )


def copy_text(readings: Sequence[Reading]) -> bytes:
    """``readings`` in COPY's text format, in ``COLUMNS`` order: tab-separated, ``\\N`` for a
    missing value; floats in their shortest exact form, which reads back as the same double.

    orjson writes the rows as one JSON array of arrays, and a few passes over the whole text
    turn that into COPY's format, so no Python code runs per value (formatting each field in
    Python cost more than decoding the messages). This holds because nothing inside a row
    contains JSON's punctuation or ``null``: battery IDs passed the schema's pattern (upper case,
    digits, hyphens), timestamps are ISO 8601 with their UTC offset (so the server's time zone
    cannot shift them), numbers are plain.
    """
    text = orjson.dumps(list(map(_ROW, readings)))[2:-2]  # '[[...],[...]]' -> '...],[...'
    text = text.replace(b"],[", b"\n").translate(_COMMA_TO_TAB, b'"').replace(b"null", NULL)
    return text + b"\n" if text else b""


def store_telemetry(
    session: Session,
    batches: Sequence[TelemetryBatch] | Gathering,
    now: datetime | None = None,
) -> list[TelemetryResult]:
    """Store the readings of ``batches`` not yet stored, refresh latest readings, book each
    agent's sequence; one result per batch, as if the batches had been stored one by one."""
    gathering = batches if isinstance(batches, Gathering) else Gathering(batches)
    batches = gathering.batches
    if not batches:
        return []
    now = now or utc_now()
    if session.get_bind().dialect.name == "postgresql":
        texts = gathering.copy_texts()
        inserted = _copy_readings(session, batches, texts)
        _copy_latest(session, texts.newest, now)
    else:
        inserted = _insert_readings(session, batches, gathering.readings)
        _update_latest(session, newest_of(gathering.groups()), now)
    _book_sequences(session, batches, inserted, now)
    return [
        TelemetryResult(
            inserted=sum(flags), duplicates=len(flags) - sum(flags), stored=tuple(flags)
        )
        for flags in inserted
    ]


def _copy_readings(
    session: Session, batches: Sequence[TelemetryBatch], texts: CopyTexts
) -> list[list[bool]]:
    """PostgreSQL: which readings were stored. Usually every one is new, and one COPY straight
    into ``telemetry`` stores them, inside a savepoint; a key already there (or twice in the
    gathering) fails that COPY, and the staging path sorts out which readings were new.

    The straight COPY costs the server about half of what staging and moving the rows does.
    Two workers COPYing overlapping keys may deadlock: the server breaks it by failing one
    COPY, which then takes the staging path and waits its turn there.
    """
    try:
        with session.begin_nested():
            _copy(session.connection(), COPY_TELEMETRY, texts.in_key_order)
    except DBAPIError as exc:
        if getattr(exc.orig, "pgcode", None) not in RETRY_STAGED:
            raise
    else:
        return [[True] * len(batch.readings) for batch in batches]
    connection = session.connection()
    connection.exec_driver_sql(CREATE_STAGING)
    _copy(connection, COPY_STAGING, texts.delivered)
    result = connection.exec_driver_sql(MOVE_STAGING)
    if result.rowcount == sum(len(batch.readings) for batch in batches):
        return [[True] * len(batch.readings) for batch in batches]
    return stored_by(batches, {(battery_id, ts) for battery_id, ts in result})


def _copy(connection: Connection, statement: str, text: bytes) -> None:
    """``COPY ... FROM STDIN`` of ``text`` on the DBAPI connection of the session's transaction
    (so it commits or rolls back with it); its errors become SQLAlchemy's, as the caller expects
    of every statement."""
    dbapi = connection.dialect.loaded_dbapi
    try:
        with connection.connection.dbapi_connection.cursor() as cursor:
            cursor.copy_expert(statement, io.BytesIO(text), COPY_BUFFER_BYTES)
    except dbapi.Error as exc:
        raise DBAPIError.instance(statement, None, exc, dbapi.Error) from exc


def _insert_readings(
    session: Session, batches: Sequence[TelemetryBatch], readings: Sequence[Reading]
) -> list[list[bool]]:
    """SQLite: multi-row inserts, rows in delivery order; which stored what."""
    statement = (
        _insert(session)(Telemetry.__table__)
        .on_conflict_do_nothing(index_elements=["battery_id", "ts"])
        .returning(Telemetry.battery_id, Telemetry.ts)
    )
    # Executemany with RETURNING: SQLAlchemy sends multi-row VALUES pages ("insertmanyvalues").
    rows = [reading.model_dump() for reading in readings]
    return stored_by(batches, {(b, ts) for b, ts in session.execute(statement, rows)})


def _copy_latest(session: Session, newest: bytes, now: datetime) -> None:
    """PostgreSQL: each battery's ``newest`` reading (COPY text) replaces the stored one where
    it is newer, through the staging table (a tenth of the cost of the multi-row upsert)."""
    connection = session.connection()
    connection.exec_driver_sql(CREATE_STAGING)
    _copy(connection, COPY_STAGING, newest)
    connection.exec_driver_sql(MOVE_LATEST, {"now": now})


def _update_latest(session: Session, newest: Sequence[Reading], now: datetime) -> None:
    """SQLite: upsert each battery's ``newest`` reading where it is newer than the stored one.

    A Core insert of the table, with a RETURNING clause for its side effect: SQLAlchemy sends
    an ON CONFLICT DO UPDATE executemany as multi-row statements only when it returns rows (else
    one statement per row), and an ORM insert would split the rows wherever a value is missing.
    """
    statement = _insert(session)(BatteryLatest.__table__)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["battery_id"],
            set_={c: statement.excluded[c] for c in (*COLUMNS[1:], "updated_at")},
            where=BatteryLatest.ts < statement.excluded.ts,
        ).returning(BatteryLatest.battery_id),
        [{**r.model_dump(), "updated_at": now} for r in newest],
    )


def _book_sequences(
    session: Session,
    batches: Sequence[TelemetryBatch],
    inserted: Sequence[Sequence[bool]],
    now: datetime,
) -> None:
    """Book every batch on its agent's row, agent by agent and in delivery order.

    An agent seen for the first time starts at its first batch's ``seq_last`` with nothing
    counted. Rows are locked in agent order: workers of one shared subscription may hold the
    same agents.
    """
    by_agent: dict[str, list[tuple[TelemetryBatch, Sequence[bool]]]] = {}
    for batch, flags in zip(batches, inserted, strict=True):
        by_agent.setdefault(batch.agent_id, []).append((batch, flags))
    first_sight = _first_sight(session, [entries[0][0] for entries in by_agent.values()], now)
    pending = {
        agent: entries[1:] if agent in first_sight else entries
        for agent, entries in by_agent.items()
    }
    pending = {agent: entries for agent, entries in pending.items() if entries}
    if not pending:
        return
    sequences = session.scalars(
        select(AgentSequence)
        .where(AgentSequence.agent_id.in_(sorted(pending)))
        .order_by(AgentSequence.agent_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    for sequence in sequences:
        counts = SequenceCounts(
            highest_seq=sequence.highest_seq,
            gaps=sequence.gaps,
            missing_readings=sequence.missing_readings,
            duplicates=sequence.duplicates,
        )
        for batch, flags in pending[sequence.agent_id]:
            counts = book(counts, batch, flags)
        sequence.highest_seq = counts.highest_seq
        sequence.gaps = counts.gaps
        sequence.missing_readings = counts.missing_readings
        sequence.duplicates = counts.duplicates
        sequence.site_id = pending[sequence.agent_id][-1][0].site_id
        sequence.updated_at = now
    session.flush()


def _first_sight(session: Session, firsts: Sequence[TelemetryBatch], now: datetime) -> set[str]:
    """Insert a row for each agent not seen before, from its first batch; those agents."""
    rows = [
        {
            "agent_id": batch.agent_id,
            "site_id": batch.site_id,
            "highest_seq": batch.seq_last,
            "gaps": 0,
            "missing_readings": 0,
            "duplicates": 0,
            "updated_at": now,
        }
        for batch in sorted(firsts, key=lambda batch: batch.agent_id)
    ]
    statement = (
        _insert(session)(AgentSequence)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["agent_id"])
        .returning(AgentSequence.agent_id)
    )
    return set(session.scalars(statement))


def record_state(session: Session, state: State, now: datetime | None = None) -> None:
    """Upsert the site's state row, unless the stored state is newer.

    State is retained, so a reconnecting ingest may get an old copy after a newer one; a state
    without ``ts`` (the broker's last will, set long before it fires) always counts as newest.
    """
    statement = _insert(session)(SiteState).values(
        site_id=state.site_id,
        agent_id=state.agent_id,
        status=state.status.value,
        ts=state.ts,
        buffer_depth=state.buffer_depth,
        dropped_count=state.dropped_count,
        devices_up=state.devices_up,
        devices_down=state.devices_down,
        unavailable_devices=",".join(state.unavailable_devices),
        received_at=now or utc_now(),
    )
    excluded = statement.excluded
    columns = [c.name for c in SiteState.__table__.columns if c.name != "site_id"]
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["site_id"],
            set_={c: excluded[c] for c in columns},
            where=or_(SiteState.ts.is_(None), excluded.ts.is_(None), SiteState.ts <= excluded.ts),
        )
    )


def record_events(session: Session, events: Events, now: datetime | None = None) -> None:
    """One ``site_events`` row per event of the message."""
    received_at = now or utc_now()
    session.execute(
        insert(SiteEvent),
        [
            {
                "site_id": events.site_id,
                "agent_id": events.agent_id,
                "ts": event.ts,
                "kind": event.kind.value,
                "device_id": event.device_id,
                "battery_id": event.battery_id,
                "message": event.message,
                "received_at": received_at,
            }
            for event in events.events
        ],
    )


def quarantine(
    session: Session, topic: str, payload: bytes, reason: str, now: datetime | None = None
) -> None:
    """Keep a refused message with its reason and raw payload."""
    session.add(
        QuarantinedMessage(
            received_at=now or utc_now(), topic=topic, reason=reason, payload=bytes(payload)
        )
    )
    session.flush()
