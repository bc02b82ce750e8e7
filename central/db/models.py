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
    PrimaryKeyConstraint,
    String,
    Text,
    TypeDecorator,
    text,
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
    battery"; on PostgreSQL it carries the measured values too, so those reads need not visit the
    table, which is partitioned by month on ``ts`` (see ``central.migrations.pg_telemetry``).
    """

    __tablename__ = "telemetry"
    __table_args__ = (
        PrimaryKeyConstraint(
            "battery_id",
            "ts",
            name="pk_telemetry",
            # As migration 0007 made it (``pg_telemetry.COVERED_COLUMNS``: the measurements).
            postgresql_include=[name for name in _Measurements.__annotations__],
        ),
    )

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


class SiteState(Base):
    """Each site's latest agent state (the retained ``state`` topic): online or offline, stats."""

    __tablename__ = "site_states"

    site_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    ts: Mapped[datetime | None]
    buffer_depth: Mapped[int | None] = mapped_column(BigInteger)
    dropped_count: Mapped[int | None] = mapped_column(BigInteger)
    devices_up: Mapped[int | None]
    devices_down: Mapped[int | None]
    unavailable_devices: Mapped[str] = mapped_column(Text, default="")  # comma-separated IDs
    received_at: Mapped[datetime] = mapped_column(default=utc_now)


class SiteEvent(Base):
    """A device event an agent reported (communication lost/restored, invalid/restored value)."""

    __tablename__ = "site_events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    site_id: Mapped[str] = mapped_column(String(ID))
    agent_id: Mapped[str] = mapped_column(String(128))
    ts: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(32))
    device_id: Mapped[str] = mapped_column(String(128))
    battery_id: Mapped[str | None] = mapped_column(String(ID))
    message: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=utc_now)

    __table_args__ = (Index("ix_site_events_site_id_ts", "site_id", "ts"),)


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Alert(Base):
    """An alert on one battery, as the fleet reference shows it; active while ``resolved_at`` is
    null. The partial unique index keeps at most one active alert per (battery, type)."""

    __tablename__ = "alerts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(128), unique=True)
    battery_id: Mapped[str] = mapped_column(String(ID))
    location_id: Mapped[str] = mapped_column(String(ID))
    alert_type: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    threshold_value: Mapped[float | None]
    actual_value: Mapped[float | None]
    triggered_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    is_acknowledged: Mapped[bool] = mapped_column(default=False)
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(ID))
    acknowledgment_note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()

    __table_args__ = (
        CheckConstraint("severity IN ('info', 'warning', 'critical')", name="severity"),
        Index(
            "uq_alerts_active_battery_type",
            "battery_id",
            "alert_type",
            unique=True,
            postgresql_where=text("resolved_at IS NULL"),
            sqlite_where=text("resolved_at IS NULL"),
        ),
        Index("ix_alerts_location_id_triggered_at", "location_id", "triggered_at"),
        Index("ix_alerts_battery_id_triggered_at", "battery_id", "triggered_at"),
        Index("ix_alerts_triggered_at", "triggered_at"),
    )


class BatteryAnalytics(Base):
    """What central derives per battery: its resistance baseline and its latest RUL estimate
    (the ``rul`` object of the battery detail; ``rul_days`` null while open-ended)."""

    __tablename__ = "battery_analytics"

    battery_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    resistance_baseline_ohm: Mapped[float | None]
    rul_status: Mapped[str | None] = mapped_column(String(16))
    rul_days: Mapped[float | None]
    rul_low_days: Mapped[float | None]
    rul_high_days: Mapped[float | None]
    rul_interval_pct: Mapped[int | None]
    predicted_eol_date: Mapped[date | None]
    soh_now_pct: Mapped[float | None]
    fade_pct_per_year: Mapped[float | None]
    rul_n_points: Mapped[int | None]
    rul_n_days: Mapped[int | None]
    rul_method: Mapped[str | None] = mapped_column(String(64))
    rul_computed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = _updated()


class ResearchBattery(Base):
    """One cell of an uploaded ``.mat`` file (the research reference's battery object); a file
    holding several cells gives several rows sharing ``upload_id``."""

    __tablename__ = "research_batteries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    upload_id: Mapped[str] = mapped_column(String(36), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    file_sha256: Mapped[str] = mapped_column(String(64))
    cell_label: Mapped[str] = mapped_column(String(200))
    cell_index: Mapped[int]  # 1-based position of the cell in its file
    layout: Mapped[str] = mapped_column(String(32))
    total_cycles: Mapped[int]
    nominal_capacity: Mapped[float]
    manufacturer: Mapped[str | None] = mapped_column(String(200), index=True)
    chemistry: Mapped[str | None] = mapped_column(String(100))
    eol_threshold: Mapped[float]
    # The cycle life the file states (Severson's cycle_life) and its own end-of-life threshold.
    stated_cycle_life: Mapped[int | None]
    stated_life_threshold: Mapped[float | None]
    # float64 little-endian: the voltage grid every cycle's discharge_capacity curve is on.
    voltage_grid: Mapped[bytes | None] = mapped_column(LargeBinary)
    uploaded_by: Mapped[str | None] = mapped_column(String(ID))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class ResearchCycle(Base):
    """One cycle of a research battery; arrays stored as float64 little-endian bytes, not one
    row per sample. ``voltage`` null means the battery's voltage grid."""

    __tablename__ = "research_cycles"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    battery_id: Mapped[int] = mapped_column(ForeignKey("research_batteries.id", ondelete="CASCADE"))
    cycle_index: Mapped[int]
    capacity_ah: Mapped[float | None]
    soh: Mapped[float | None]
    rul: Mapped[int | None]
    ambient_temperature: Mapped[float | None]
    voltage: Mapped[bytes | None] = mapped_column(LargeBinary)
    current: Mapped[bytes] = mapped_column(LargeBinary)
    temperature: Mapped[bytes] = mapped_column(LargeBinary)
    time_s: Mapped[bytes] = mapped_column(LargeBinary)
    discharge_capacity: Mapped[bytes | None] = mapped_column(LargeBinary)

    __table_args__ = (
        Index(
            "uq_research_cycles_battery_id_cycle_index", "battery_id", "cycle_index", unique=True
        ),
    )
