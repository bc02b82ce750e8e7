"""MQTT topic names of the contract, built and parsed in one place."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from common.ids import InvalidIdError, validate_location_id

DEFAULT_PREFIX = "brm/v1"


class TopicKind(StrEnum):
    TELEMETRY = "telemetry"
    BIRTH = "birth"
    STATE = "state"
    EVENTS = "events"


class InvalidTopicError(ValueError):
    """A topic outside the contract."""


@dataclass(frozen=True)
class Topics:
    """The topic tree under one prefix (``brm/v1`` unless configured otherwise)."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        parts = self.prefix.split("/")
        if not self.prefix or any(not p or p in {"+", "#"} or "$" in p for p in parts):
            raise InvalidTopicError(f"invalid topic prefix {self.prefix!r}")

    def topic(self, site_id: str, kind: TopicKind) -> str:
        return f"{self.prefix}/{validate_location_id(site_id)}/{kind.value}"

    def telemetry(self, site_id: str) -> str:
        return self.topic(site_id, TopicKind.TELEMETRY)

    def birth(self, site_id: str) -> str:
        return self.topic(site_id, TopicKind.BIRTH)

    def state(self, site_id: str) -> str:
        return self.topic(site_id, TopicKind.STATE)

    def events(self, site_id: str) -> str:
        return self.topic(site_id, TopicKind.EVENTS)

    def all_sites(self, kind: TopicKind) -> str:
        """Subscription filter for one kind of message from every site."""
        return f"{self.prefix}/+/{kind.value}"

    def shared(self, group: str, kind: TopicKind) -> str:
        """MQTT v5 shared subscription so several workers split the fleet's messages."""
        if not group or any(c in group for c in "/+#"):
            raise InvalidTopicError(f"invalid shared-subscription group {group!r}")
        return f"$share/{group}/{self.all_sites(kind)}"

    def parse(self, topic: str) -> tuple[str, TopicKind]:
        """(site ID, kind) of a topic of this tree; raise ``InvalidTopicError`` otherwise."""
        head, sep, rest = topic.partition(self.prefix + "/")
        if head or not sep:
            raise InvalidTopicError(f"topic {topic!r} is not under {self.prefix}/")
        site, _, kind = rest.partition("/")
        try:
            return validate_location_id(site), TopicKind(kind)
        except (InvalidIdError, ValueError) as exc:
            raise InvalidTopicError(f"topic {topic!r} is not a {self.prefix} topic: {exc}") from exc
