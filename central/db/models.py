"""The store's tables as SQLAlchemy 2 typed models; the migrations create them, never these.

Every timestamp is timezone-aware UTC (``UtcDateTime``): PostgreSQL stores ``timestamptz``,
SQLite stores the UTC wall time and gets the zone back on read.

``telemetry`` and ``battery_latest`` carry no foreign key to ``batteries``: ingest may see a
reading before the site's birth message, and a key on the largest table would cost every insert.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.timeutil import ensure_utc, utc_now

ID = 64  # longest ID column (battery IDs are ~32 characters)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware datetime, stored as UTC; a naive value is refused rather than guessed at."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = ensure_utc(value)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# Stable constraint names, so that migrations can refer to them on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: dict[Any, Any] = {  # noqa: RUF012 (SQLAlchemy reads it as a class attribute)
        datetime: UtcDateTime(),
        float: Double(),
        date: Date(),
    }


def _created() -> Mapped[datetime]:
    return mapped_column(default=utc_now)


def _updated() -> Mapped[datetime]:
    return mapped_column(default=utc_now, onupdate=utc_now)


class Location(Base):
    """A data-center site, loaded from the fleet file."""

    __tablename__ = "locations"

    location_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    region: Mapped[str] = mapped_column(String(100))
    city: Mapped[str] = mapped_column(String(100))
    country: Mapped[str] = mapped_column(String(100))
    latitude: Mapped[float]
    longitude: Mapped[float]
    temp_offset_c: Mapped[float]
    humidity_offset_pct: Mapped[float]
    power_outage_frequency_per_year: Mapped[float]
    ups_count: Mapped[int]
    strings_per_ups: Mapped[int]
    blocks_per_string: Mapped[int]
    installed_date: Mapped[date]
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class UpsUnit(Base):
    __tablename__ = "ups_units"

    ups_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    location_id: Mapped[str] = mapped_column(ForeignKey("locations.location_id"), index=True)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class BatteryString(Base):
    __tablename__ = "strings"

    string_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    ups_id: Mapped[str] = mapped_column(ForeignKey("ups_units.ups_id"), index=True)
    location_id: Mapped[str] = mapped_column(ForeignKey("locations.location_id"), index=True)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class Battery(Base):
    """One 12 V block; ``location_id`` is kept so that listing a site needs no join."""

    __tablename__ = "batteries"

    battery_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    string_id: Mapped[str] = mapped_column(ForeignKey("strings.string_id"), index=True)
    location_id: Mapped[str] = mapped_column(ForeignKey("locations.location_id"))
    position: Mapped[int]
    serial_number: Mapped[str] = mapped_column(String(64))
    manufacturer: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    nominal_voltage_v: Mapped[float]
    nominal_capacity_ah: Mapped[float]
    installed_date: Mapped[date]
    warranty_months: Mapped[int]
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()

    # Paginating one site's batteries in ID order reads this index only.
    __table_args__ = (Index("ix_batteries_location_id_battery_id", "location_id", "battery_id"),)


class _Measurements:
    """The measured values of a reading; ``None`` where the device gave none."""

    voltage: Mapped[float | None]
    current: Mapped[float | None]
    temperature: Mapped[float | None]
    internal_resistance: Mapped[float | None]
    soc_pct: Mapped[float | None]
    soh_pct: Mapped[float | None]


class Telemetry(_Measurements, Base):
    """Every reading once, keyed by ``(battery_id, ts)``.

    The primary key serves "one battery over a time range" and, read backwards, "latest of one
    battery". On PostgreSQL the table is partitioned by month on ``ts`` (see the migrations).
    """

    __tablename__ = "telemetry"

    battery_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    ts: Mapped[datetime] = mapped_column(primary_key=True)


class BatteryLatest(_Measurements, Base):
    """Each battery's latest reading (one row each), so list endpoints never scan telemetry."""

    __tablename__ = "battery_latest"

    battery_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    ts: Mapped[datetime]
    updated_at: Mapped[datetime] = _updated()


class Role(StrEnum):
    ADMIN = "admin"
    ENGINEER = "engineer"
    VIEWER = "viewer"


class User(Base):
    __tablename__ = "users"

    user_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    email: Mapped[str] = mapped_column(String(254))
    full_name: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    is_active: Mapped[bool] = mapped_column(default=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()

    __table_args__ = (CheckConstraint("role IN ('admin', 'engineer', 'viewer')", name="role"),)


class RevokedToken(Base):
    """A token revoked by logout; rows past ``expires_at`` can be purged."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class QuarantinedMessage(Base):
    """A message ingest refused, kept with its reason and raw payload."""

    __tablename__ = "quarantined_messages"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    received_at: Mapped[datetime] = mapped_column(default=utc_now, index=True)
    topic: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)


class AgentSequence(Base):
    """Per agent: the highest outbox sequence number seen, and the gaps and duplicates counted."""

    __tablename__ = "agent_sequences"

    agent_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(ID), index=True)
    highest_seq: Mapped[int] = mapped_column(BigInteger)
    gaps: Mapped[int] = mapped_column(BigInteger, default=0)
    missing_readings: Mapped[int] = mapped_column(BigInteger, default=0)
    duplicates: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = _updated()
