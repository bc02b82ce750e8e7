"""What ingest tells live clients, as fleet-api.md's WebSocket section names the events.

Ingest calls a ``LiveEvents``; ``SocketIOLiveEvents`` emits each event to the rooms of its
location (``location:{location_id}``) and battery (``battery:{battery_id}``), through Redis when
ingest and the API servers are separate processes. The API's side of Socket.IO (connections,
subscriptions) is ``central.api.live``; this module loads none of the API, so neither does
``battery-central ingest``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from central.settings import CentralSettings

if TYPE_CHECKING:
    from flask_socketio import SocketIO

DEFAULT_CHANNEL = "flask-socketio"

log = logging.getLogger(__name__)


def location_room(location_id: str) -> str:
    return f"location:{location_id}"


def battery_room(battery_id: str) -> str:
    return f"battery:{battery_id}"


class LiveEvents(Protocol):
    # False where no client can hear: ingest then builds no events at all.
    listening: bool

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

    listening = False

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


class SocketIOLiveEvents:
    """``LiveEvents`` over Socket.IO: each event once to the battery's and the location's rooms.

    ``socketio`` is either the app's extension (ingest in the server's process: ``run``) or a
    write-only ``SocketIO(message_queue=...)`` (ingest in a process of its own), whose events
    reach the clients of every server on the same queue and channel. A client in both rooms gets
    an event once (python-socketio merges the rooms' members). Emitting never raises into
    ingest: the store is the record, the live feed is best effort (failures are logged).
    """

    listening = True

    def __init__(self, socketio: SocketIO) -> None:
        self._socketio = socketio

    def telemetry_update(
        self, location_id: str, battery_id: str, data: dict[str, Any], timestamp: str
    ) -> None:
        payload = {"battery_id": battery_id, "data": data, "timestamp": timestamp}
        self._emit("telemetry_update", payload, location_id, battery_id)

    def alert(self, location_id: str, battery_id: str, alert: dict[str, Any]) -> None:
        payload = {**alert, "battery_id": battery_id, "location_id": location_id}
        self._emit("alert", payload, location_id, battery_id)

    def battery_status_update(
        self, location_id: str, battery_id: str, data: dict[str, Any], timestamp: str
    ) -> None:
        payload = {"battery_id": battery_id, "data": data, "timestamp": timestamp}
        self._emit("battery_status_update", payload, location_id, battery_id)

    def _emit(self, event: str, payload: dict[str, Any], location_id: str, battery_id: str) -> None:
        try:
            self._socketio.emit(
                event, payload, to=[battery_room(battery_id), location_room(location_id)]
            )
        except Exception:
            log.exception("could not emit %s for battery %s", event, battery_id)


def message_queue_emitter(url: str, channel: str = DEFAULT_CHANNEL) -> SocketIOLiveEvents:
    """Events for the servers listening on the queue ``url`` (``redis://...``) and ``channel``,
    from a process that serves no client (it never reads the queue). Socket.IO is loaded here:
    it takes a quarter of a second, which ingest without a queue need not spend."""
    from flask_socketio import SocketIO

    return SocketIOLiveEvents(SocketIO(message_queue=url, channel=channel, async_mode="threading"))


def live_events_for(settings: CentralSettings, *, in_server: bool = False) -> LiveEvents:
    """What ingest reports to: the app's Socket.IO when ingest runs in the server's worker
    (``in_server``: ``battery-central run``, after the app is loaded), else a write-only emitter
    on ``api.socketio_message_queue``, else (no queue: no server can hear) nothing."""
    if in_server:
        from central.api.live import socketio  # loaded with the app that serves the clients

        if socketio.server is None:
            raise RuntimeError("the app's Socket.IO is not initialised: create the app first")
        return SocketIOLiveEvents(socketio)
    queue = settings.api.socketio_message_queue
    if queue is None:
        return NoLiveEvents()
    return message_queue_emitter(queue, settings.api.socketio_channel)
