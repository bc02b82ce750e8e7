"""What to do with one MQTT message: a pure decision from its topic and payload, no I/O.

Every message ends as exactly one decision; anything outside the contract becomes a
``Quarantine`` with a reason, so nothing a site publishes can stop ingest.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.schemas import Birth, Events, SchemaError, State, TelemetryBatch, decode
from common.topics import InvalidTopicError, TopicKind, Topics


@dataclass(frozen=True)
class StoreTelemetry:
    batch: TelemetryBatch


@dataclass(frozen=True)
class UpsertBirth:
    birth: Birth


@dataclass(frozen=True)
class RecordState:
    state: State


@dataclass(frozen=True)
class RecordEvents:
    events: Events


@dataclass(frozen=True)
class Quarantine:
    reason: str


Decision = StoreTelemetry | UpsertBirth | RecordState | RecordEvents | Quarantine

_MODELS: dict[TopicKind, type[TelemetryBatch | Birth | State | Events]] = {
    TopicKind.TELEMETRY: TelemetryBatch,
    TopicKind.BIRTH: Birth,
    TopicKind.STATE: State,
    TopicKind.EVENTS: Events,
}


def decide(topics: Topics, topic: str, payload: bytes) -> Decision:
    """The decision for ``payload`` received on ``topic``.

    Batteries of another site are refused by the schema itself (``TelemetryBatch`` checks each
    ``battery_id`` against ``site_id``), so they arrive here as a schema failure.
    """
    try:
        site, kind = topics.parse(topic)
    except InvalidTopicError as exc:
        return Quarantine(f"topic: {exc}")
    try:
        message = decode(_MODELS[kind], payload)
    except SchemaError as exc:
        return Quarantine(f"schema: {exc.reason}")
    if message.site_id != site:
        return Quarantine(f"site mismatch: topic site {site}, payload site_id {message.site_id}")
    if isinstance(message, TelemetryBatch):
        return StoreTelemetry(message)
    if isinstance(message, Birth):
        return UpsertBirth(message)
    if isinstance(message, State):
        return RecordState(message)
    return RecordEvents(message)
