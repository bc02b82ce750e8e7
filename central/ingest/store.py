"""Ingest's writes: telemetry once per ``(battery_id, ts)``, latest readings, agent sequence
bookkeeping, quarantine rows. Every function takes the caller's session; the caller commits.

Inserts are portable upserts (``INSERT ... ON CONFLICT DO NOTHING`` on PostgreSQL and SQLite),
so a redelivered batch, or two workers racing on the same batch, store each reading once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from central.db.models import AgentSequence, BatteryLatest, QuarantinedMessage, Telemetry
from common.schemas import TelemetryBatch
from common.timeutil import utc_now
from common.units import MEASUREMENTS


@dataclass(frozen=True)
class TelemetryResult:
    inserted: int
    duplicates: int


def _insert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def store_telemetry(
    session: Session, batch: TelemetryBatch, now: datetime | None = None
) -> TelemetryResult:
    """Insert ``batch``'s readings not yet stored, refresh latest readings, book the sequence."""
    now = now or utc_now()
    rows = [reading.model_dump() for reading in batch.readings]
    insert = _insert(session)
    statement = (
        insert(Telemetry)
        .on_conflict_do_nothing(index_elements=["battery_id", "ts"])
        .returning(Telemetry.battery_id, Telemetry.ts)
    )
    # Executemany with RETURNING: SQLAlchemy sends multi-row VALUES pages ("insertmanyvalues").
    new_keys = {tuple(key) for key in session.execute(statement, rows)}
    inserted = [(row["battery_id"], row["ts"]) in new_keys for row in rows]
    _update_latest(session, rows, now)
    _book_sequence(session, batch, inserted, now)
    count = sum(inserted)
    return TelemetryResult(inserted=count, duplicates=len(rows) - count)


def _update_latest(session: Session, rows: list[dict[str, Any]], now: datetime) -> None:
    """Upsert each battery's newest reading of ``rows``, only where it is newer than stored."""
    newest: dict[str, dict[str, Any]] = {}
    for row in rows:
        held = newest.get(row["battery_id"])
        if held is None or row["ts"] > held["ts"]:
            newest[row["battery_id"]] = row
    statement = _insert(session)(BatteryLatest)
    columns = ("ts", *MEASUREMENTS, "updated_at")
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["battery_id"],
            set_={c: statement.excluded[c] for c in columns},
            where=BatteryLatest.ts < statement.excluded.ts,
        ),
        [{**row, "updated_at": now} for row in newest.values()],
    )


def _book_sequence(
    session: Session, batch: TelemetryBatch, inserted: list[bool], now: datetime
) -> None:
    """Count gaps and redeliveries of the agent's outbox sequence.

    Reading ``i`` of the batch has sequence number ``seq_first + i``. Numbers above the highest
    seen so far advance it (a jump counts one gap and its missing readings); numbers at or below
    it are redeliveries, unless their reading was new: then a late message filled a gap.
    """
    first_sight = session.execute(
        _insert(session)(AgentSequence)
        .values(
            agent_id=batch.agent_id,
            site_id=batch.site_id,
            highest_seq=batch.seq_last,
            gaps=0,
            missing_readings=0,
            duplicates=0,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["agent_id"])
        .returning(AgentSequence.agent_id)
    ).first()
    if first_sight is not None:
        return
    # Row lock on PostgreSQL: workers of one shared subscription may hold the same agent.
    sequence = session.scalars(
        select(AgentSequence)
        .where(AgentSequence.agent_id == batch.agent_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    highest = sequence.highest_seq
    if batch.seq_first > highest + 1:
        sequence.gaps += 1
        sequence.missing_readings += batch.seq_first - highest - 1
    old = [new for i, new in enumerate(inserted) if batch.seq_first + i <= highest]
    filled = sum(old)
    sequence.duplicates += len(old) - filled
    sequence.missing_readings = max(0, sequence.missing_readings - filled)
    sequence.highest_seq = max(highest, batch.seq_last)
    sequence.site_id = batch.site_id
    sequence.updated_at = now
    session.flush()


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
