"""What ingest tells live clients, as fleet-api.md's WebSocket section names the events.

Ingest calls a ``LiveEvents``; the Socket.IO implementation (``central.api.live``) emits each
event to the rooms of its location (``location:{location_id}``) and battery
(``battery:{battery_id}``), through Redis when ingest and the API servers are separate processes.
"""

from __future__ import annotations

from typing import Any, Protocol


def location_room(location_id: str) -> str:
    return f"location:{location_id}"


def battery_room(battery_id: str) -> str:
    return f"battery:{battery_id}"


class LiveEvents(Protocol):
    def telemetry_update(
        self, location_id: str, battery_id: str, data: dict[str, Any], timestamp: str
    ) -> None:
        """A new reading: ``data`` holds the measured values (``voltage``, ``temperature``...)."""

    def alert(self, location_id: str, battery_id: str, alert: dict[str, Any]) -> None:
        """An alert raised, escalated or resolved: ``alert`` is the API's alert object."""

    def battery_status_update(
        self, location_id: str, battery_id: str, data: dict[str, Any], timestamp: str
    ) -> None:
        """A battery's status changed: ``data`` holds ``status``, ``soh_pct`` and what else."""


class NoLiveEvents:
    """For ingest without live clients (and for tests of the store alone)."""

    def telemetry_update(
        self, location_id: str, battery_id: str, data: dict[str, Any], timestamp: str
    ) -> None:
        return None

    def alert(self, location_id: str, battery_id: str, alert: dict[str, Any]) -> None:
        return None

    def battery_status_update(
        self, location_id: str, battery_id: str, data: dict[str, Any], timestamp: str
    ) -> None:
        return None
