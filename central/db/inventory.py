"""Inventory store functions: locations from the fleet file, UPS/strings/batteries from births.

Each function compares what is stored with what it is given and writes only the rows that are
new or changed, as portable upserts (``INSERT ... ON CONFLICT DO UPDATE`` on PostgreSQL and
SQLite alike), so a repeated birth touches nothing and two ingest workers never collide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from central.db.models import Base, Battery, BatteryString, Location, UpsUnit
from common.fleet import Fleet
from common.schemas import Birth
from common.timeutil import utc_now


class UnknownLocationError(LookupError):
    """A birth from a site that the fleet file does not list."""


@dataclass(frozen=True)
class Changes:
    created: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass(frozen=True)
class BirthChanges:
    ups: Changes
    strings: Changes
    batteries: Changes


def _upsert(
    session: Session,
    model: type[Base],
    key: str,
    rows: Iterable[Mapping[str, Any]],
    now: datetime,
) -> Changes:
    """Write the rows of ``rows`` that differ from the stored ones; count what happened."""
    rows = list(rows)
    column = getattr(model, key)
    stored = (
        {
            row[key]: row
            for row in session.execute(
                select(*(getattr(model, c) for c in rows[0])).where(
                    column.in_([r[key] for r in rows])
                )
            ).mappings()
        }
        if rows
        else {}
    )
    created = [r for r in rows if r[key] not in stored]
    changed = [r for r in rows if r[key] in stored and dict(stored[r[key]]) != dict(r)]
    # created_at is written only by the insert: the conflict update leaves it alone.
    to_write = [{**r, "created_at": now, "updated_at": now} for r in created + changed]
    if to_write:
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert(model)
        updates = {c: statement.excluded[c] for c in rows[0] if c != key}
        updates["updated_at"] = statement.excluded.updated_at
        session.execute(
            statement.on_conflict_do_update(index_elements=[key], set_=updates), to_write
        )
    return Changes(len(created), len(changed), len(rows) - len(created) - len(changed))


def load_fleet_locations(session: Session, fleet: Fleet, now: datetime | None = None) -> Changes:
    """Upsert every location of ``fleet``; locations missing from it are left alone."""
    rows = [
        {
            "location_id": loc.location_id,
            "name": loc.name,
            "region": loc.region,
            "city": loc.city,
            "country": loc.country,
            "latitude": loc.latitude,
            "longitude": loc.longitude,
            "temp_offset_c": loc.temp_offset_c,
            "humidity_offset_pct": loc.humidity_offset_pct,
            "power_outage_frequency_per_year": loc.power_outage_frequency_per_year,
            "ups_count": loc.ups_count,
            "strings_per_ups": loc.strings_per_ups,
            "blocks_per_string": loc.blocks_per_string,
            "installed_date": loc.installed_date,
        }
        for loc in fleet.locations
    ]
    return _upsert(session, Location, "location_id", rows, now or utc_now())


def upsert_birth(session: Session, birth: Birth, now: datetime | None = None) -> BirthChanges:
    """Upsert the UPS units, strings and batteries of ``birth``'s site.

    A battery listed under another string than stored is moved; batteries the birth no longer
    lists are kept (their history stays reachable). Raises ``UnknownLocationError`` if the site
    is not a stored location.
    """
    site = birth.site_id
    if session.get(Location, site) is None:
        raise UnknownLocationError(f"site {site} is not a known location (load the fleet file)")
    now = now or utc_now()
    ups_rows = [{"ups_id": u.ups_id, "location_id": site} for u in birth.ups]
    string_rows = [
        {"string_id": s.string_id, "ups_id": u.ups_id, "location_id": site}
        for u in birth.ups
        for s in u.strings
    ]
    battery_rows = [
        {**b.model_dump(), "string_id": s.string_id, "location_id": site}
        for u in birth.ups
        for s in u.strings
        for b in s.batteries
    ]
    return BirthChanges(
        ups=_upsert(session, UpsUnit, "ups_id", ups_rows, now),
        strings=_upsert(session, BatteryString, "string_id", string_rows, now),
        batteries=_upsert(session, Battery, "battery_id", battery_rows, now),
    )
