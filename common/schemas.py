"""Versioned MQTT message schemas shared by the agent (encode) and central (decode).

Every payload carries ``"schema": 1``. A payload that fails here is what central quarantines, so
errors name the field and the problem in plain words.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

from common import ids
from common.timeutil import ensure_utc, to_rfc3339, truncate_ms
from common.units import MEASUREMENTS

SCHEMA_VERSION = 1
MAX_READINGS_PER_BATCH = 10_000
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024


class SchemaError(ValueError):
    """A payload that is not a valid message of the contract; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _utc_ms(value: datetime) -> datetime:
    return truncate_ms(ensure_utc(value))


Timestamp = Annotated[
    datetime,
    AfterValidator(_utc_ms),
    PlainSerializer(to_rfc3339, return_type=str, when_used="json"),
]
LocationId = Annotated[str, AfterValidator(ids.validate_location_id)]


def _string_id(value: str) -> str:
    ids.parse_string_id(value)
    return value


def _ups_id(value: str) -> str:
    ids.parse_ups_id(value)
    return value


# The battery ID rules of ``common.ids`` (numbers count from 1: no all-zero UPS, string or
# position) as one pattern that pydantic-core matches in Rust, with no Python call per reading;
# ``describe_errors`` turns a mismatch back into the ID module's own message.
_FROM_01 = "(?:0[1-9]|[1-9][0-9])"
_FROM_001 = "(?:00[1-9]|0[1-9][0-9]|[1-9][0-9]{2})"
BATTERY_ID_PATTERN = rf"^BAT-DC-[A-Z]{{3}}-[0-9]{{2}}-UPS-{_FROM_01}-STR-{_FROM_01}-{_FROM_001}$"
BatteryId = Annotated[str, Field(pattern=BATTERY_ID_PATTERN)]
StringId = Annotated[str, AfterValidator(_string_id)]
UpsId = Annotated[str, AfterValidator(_ups_id)]
AgentId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]


def _measurement(name: str) -> object:
    spec = MEASUREMENTS[name]
    return Field(None, ge=spec.minimum, le=spec.maximum, allow_inf_nan=False)


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _reading_time(ts: datetime) -> datetime:
    """UTC (``datetime.UTC`` itself) with whole milliseconds, like ``Timestamp``, in one call.

    pydantic parses a ``Z`` into a zone object of its own per reading: equal to UTC, but
    comparing two such times calls back into each zone (~10 times the cost of comparing two
    ``datetime.UTC`` times), and ingest sorts and compares every reading's time.
    """
    if ts.microsecond % 1000:
        return truncate_ms(ts)
    if ts.tzinfo is UTC:
        return ts
    return ts.astimezone(UTC)  # half the cost of ``replace(tzinfo=UTC)`` even for a ``Z``


# Checked in Rust (aware, or refused), then normalised by one plain function: a model validator
# doing the same cost a fifth more of a telemetry message's whole decoding.
ReadingTimestamp = Annotated[
    AwareDatetime,
    AfterValidator(_reading_time),
    PlainSerializer(to_rfc3339, return_type=str, when_used="json"),
]


class Reading(_Message):
    """One block's measurements at one instant; ``None`` where the device gave no value."""

    battery_id: BatteryId
    ts: ReadingTimestamp
    voltage: float | None = _measurement("voltage")
    current: float | None = _measurement("current")
    temperature: float | None = _measurement("temperature")
    internal_resistance: float | None = _measurement("internal_resistance")
    soc_pct: float | None = _measurement("soc_pct")
    soh_pct: float | None = _measurement("soh_pct")


class TelemetryBatch(_Message):
    """A batch of readings with its range in the agent's outbox sequence (one number each)."""

    schema_: Literal[1] = Field(SCHEMA_VERSION, alias="schema")
    site_id: LocationId
    agent_id: AgentId
    seq_first: int = Field(ge=0)
    seq_last: int = Field(ge=0)
    readings: list[Reading] = Field(min_length=1, max_length=MAX_READINGS_PER_BATCH)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _consistent(self) -> TelemetryBatch:
        if self.seq_last - self.seq_first + 1 != len(self.readings):
            raise ValueError(
                f"seq_first..seq_last ({self.seq_first}..{self.seq_last}) does not match "
                f"{len(self.readings)} readings"
            )
        # Each battery_id is already valid, so its site is the part after "BAT-".
        prefix = f"BAT-{self.site_id}-"
        foreign = [r.battery_id for r in self.readings if not r.battery_id.startswith(prefix)]
        if foreign:
            raise ValueError(f"battery {foreign[0]} does not belong to site {self.site_id}")
        return self


class BatteryInfo(_Message):
    battery_id: BatteryId
    serial_number: str = Field(min_length=1, max_length=64)
    manufacturer: str = Field(min_length=1, max_length=64)
    model: str = Field(min_length=1, max_length=64)
    nominal_voltage_v: float = Field(gt=0, le=1000)
    nominal_capacity_ah: float = Field(gt=0, le=100_000)
    installed_date: date
    warranty_months: int = Field(ge=0, le=600)
    position: int = Field(ge=1, le=999)


class StringInfo(_Message):
    string_id: StringId
    batteries: list[BatteryInfo]


class UpsInfo(_Message):
    ups_id: UpsId
    strings: list[StringInfo]


class Birth(_Message):
    """A site's inventory, retained, so central learns it whenever it (re)connects."""

    schema_: Literal[1] = Field(SCHEMA_VERSION, alias="schema")
    site_id: LocationId
    agent_id: AgentId
    ts: Timestamp
    ups: list[UpsInfo]

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _all_of_this_site(self) -> Birth:
        for ups in self.ups:
            for string in ups.strings:
                for battery in string.batteries:
                    ref = ids.parse_battery_id(battery.battery_id)
                    if ref.location_id != self.site_id or ref.string_id != string.string_id:
                        raise ValueError(
                            f"battery {battery.battery_id} is listed under {string.string_id}"
                            f" of {self.site_id}"
                        )
                if ids.parse_string_id(string.string_id)[:2] != ids.parse_ups_id(ups.ups_id):
                    raise ValueError(f"string {string.string_id} is listed under {ups.ups_id}")
            if ids.parse_ups_id(ups.ups_id)[0] != self.site_id:
                raise ValueError(f"UPS {ups.ups_id} does not belong to site {self.site_id}")
        return self


class AgentStatus(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class State(_Message):
    """The agent's retained state; the broker's last will publishes the ``offline`` form."""

    schema_: Literal[1] = Field(SCHEMA_VERSION, alias="schema")
    site_id: LocationId
    agent_id: AgentId
    status: AgentStatus
    ts: Timestamp | None = None
    buffer_depth: int | None = Field(None, ge=0)
    dropped_count: int | None = Field(None, ge=0)
    devices_up: int | None = Field(None, ge=0)
    devices_down: int | None = Field(None, ge=0)
    unavailable_devices: list[str] = Field(default_factory=list)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class EventKind(StrEnum):
    COMMUNICATION_LOST = "communication_lost"
    COMMUNICATION_RESTORED = "communication_restored"
    INVALID_VALUE = "invalid_value"
    VALUE_RESTORED = "value_restored"


class Event(_Message):
    ts: Timestamp
    kind: EventKind
    device_id: str = Field(min_length=1, max_length=128)
    message: str = Field(max_length=1000)
    battery_id: BatteryId | None = None


class Events(_Message):
    schema_: Literal[1] = Field(SCHEMA_VERSION, alias="schema")
    site_id: LocationId
    agent_id: AgentId
    events: list[Event] = Field(min_length=1)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


Message = TelemetryBatch | Birth | State | Events
M = TypeVar("M", TelemetryBatch, Birth, State, Events)


def encode(message: Message) -> bytes:
    """Compact JSON bytes for the wire."""
    return message.model_dump_json(by_alias=True).encode()


def decode(model: type[M], payload: bytes | str) -> M:
    """Parse a payload as ``model``; raise ``SchemaError`` with a readable reason.

    A valid payload is parsed and validated by pydantic-core in one pass, with no Python object
    for the JSON in between (about half the cost of telemetry's decoding). Whatever that refuses,
    or a message without its ``schema`` field (which the models default for the agent's own
    construction), takes the step-by-step path, whose reasons name the problem.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise SchemaError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        message = model.model_validate_json(payload)
    except ValidationError:
        pass
    else:
        if "schema_" in message.model_fields_set:
            return message
    try:
        raw = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"payload is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise SchemaError("payload is not a JSON object")
    version = raw.get("schema")
    if version != SCHEMA_VERSION:
        raise SchemaError(f"unsupported schema version {version!r} (expected {SCHEMA_VERSION})")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise SchemaError(describe_errors(exc)) from exc


def describe_errors(exc: ValidationError, limit: int = 5) -> str:
    """``readings.3.voltage: Input should be ...; ...`` — each error by its path."""
    parts = []
    for error in exc.errors()[:limit]:
        path = ".".join(str(p) for p in error["loc"]) or "(message)"
        parts.append(f"{path}: {_reason(error)}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def _reason(error: ErrorDetails) -> str:
    """pydantic's message, except for the checks done in Rust for speed: for those, the words
    the ID and time rules use everywhere else."""
    kind, value = error["type"], error.get("input")
    if kind == "string_pattern_mismatch" and error["ctx"]["pattern"] == BATTERY_ID_PATTERN:
        try:
            ids.validate_battery_id(value)
        except ids.InvalidIdError as exc:
            return f"Value error, {exc}"
    if kind == "timezone_aware":
        text = value.isoformat() if isinstance(value, datetime) else value
        return f"Value error, timestamp {text} has no time zone"
    return error["msg"]
