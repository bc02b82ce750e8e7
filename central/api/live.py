"""Socket.IO (the fleet API's WebSocket): who may connect, the subscriptions, the live events.

A client connects with ``auth={"token": ACCESS_TOKEN}``; the token must be valid, unrevoked and
an active user's, exactly as for the REST API, else the connection is refused. The connection's
session keeps that user, and every later event is checked against it (see ``_authorized``).

Client events: ``subscribe_location``/``unsubscribe_location`` ``{"location_id": ID}`` and
``subscribe_battery``/``unsubscribe_battery`` ``{"battery_id": ID}`` join or leave the rooms
``location:{ID}``/``battery:{ID}`` and are answered ``subscribed``/``unsubscribed``; ``ping`` is
answered ``pong``. Whatever a client does wrong is answered with ``error`` ``{"message": ...}``
and the connection stays open (except for credentials that no longer hold: then it is closed).

Ingest reports readings, alerts and status changes through ``central.live_events``'s
``SocketIOLiveEvents``, which emits each event once to the battery's and its location's rooms.
Sessions live in the process that accepted them: ingest in its own process and more than one
server process need ``api.socketio_message_queue`` (Redis) and sticky sessions at the load
balancer; every process of one deployment uses the same ``api.socketio_channel``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, request
from flask_jwt_extended import decode_token
from flask_jwt_extended.exceptions import JWTExtendedException
from flask_socketio import ConnectionRefusedError as Refused
from flask_socketio import SocketIO, disconnect, emit, join_room, leave_room
from jwt import PyJWTError

from central.api import accounts
from central.api.extensions import db
from central.db.models import ID, Battery, Location, User
from central.live_events import DEFAULT_CHANNEL, battery_room, location_room
from common.timeutil import to_rfc3339, utc_now

CONNECTED_MESSAGE = "Connected to Battery RUL Monitoring"
REFUSED_MESSAGE = "Could not validate credentials"
INTERNAL_ERROR_MESSAGE = "Internal error: the event was not handled"
# Rooms one connection may be in at once (locations and batteries together): a dashboard needs a
# few sites or a few strings' blocks; this bounds what one client can make the server hold.
MAX_SUBSCRIPTIONS = 1000

log = logging.getLogger(__name__)
socketio = SocketIO()


def cors_origins(allowed: list[str]) -> list[str] | None:
    """``api.cors_allowed_origins`` as engine.io takes it: None for same origin only.

    (Engine.io reads an empty list as "no origin check at all".)
    """
    return allowed or None


def init_socketio(app: Flask) -> None:
    """Serve Socket.IO at ``/socket.io`` next to the app's routes (threads; no eventlet/gevent)."""
    queue = app.config["BRM_SOCKETIO_MESSAGE_QUEUE"]
    channel = app.config.get("BRM_SOCKETIO_CHANNEL") or DEFAULT_CHANNEL
    socketio.init_app(
        app,
        async_mode="threading",
        cors_allowed_origins=cors_origins(app.config["BRM_CORS_ALLOWED_ORIGINS"]),
        manage_session=False,  # no Flask session is used: the token authenticates
        # The extension keeps its options from one init_app to the next: without a queue, ask
        # for the in-process manager explicitly, or an earlier app's queue manager is reused.
        **({"message_queue": queue, "channel": channel} if queue else {"client_manager": None}),
    )


# --- Connections and subscriptions -----------------------------------------------------------


def _token_claims(auth: object) -> dict[str, Any] | None:
    """The claims of ``auth["token"]`` if it is a valid, unrevoked access token; else None."""
    token = auth.get("token") if isinstance(auth, dict) else None
    if not isinstance(token, str) or not token:
        return None
    try:
        claims = decode_token(token)
    except (PyJWTError, JWTExtendedException):
        return None
    if claims.get("type") != "access" or accounts.is_revoked(db.session, claims["jti"]):
        return None
    return claims


def _active_user(user_id: str) -> User | None:
    user = db.session.get(User, user_id)
    return user if user is not None and user.is_active else None


def token_user(auth: object) -> User | None:
    """The active user whose valid, unrevoked access token ``auth["token"]`` is; else None."""
    claims = _token_claims(auth)
    return None if claims is None else _active_user(claims["sub"])


def disconnect_all() -> None:
    """Close every client's connection, so that a shutting-down server need not wait for them."""
    if socketio.server is not None:
        socketio.server.eio.disconnect()


def _timestamp() -> str:
    return to_rfc3339(utc_now())


@dataclass
class _Session:
    """A connection's own state, from its ``connect`` to its ``disconnect``."""

    user_id: str
    jti: str
    expires: float | None  # the token's ``exp`` (s since the epoch)
    rooms: set[str] = field(default_factory=set)


# By Socket.IO session ID (``request.sid``), in this process: python-socketio handles each event
# in a thread of its own, so one client's events can run at the same time; the lock guards the
# map and each session's rooms between the check of the limit and the join.
_sessions: dict[str, _Session] = {}
_sessions_lock = threading.Lock()


def _session() -> _Session | None:
    with _sessions_lock:
        return _sessions.get(request.sid)


def _error(message: str) -> None:
    emit("error", {"message": message})


def _authorized(*, recheck: bool) -> bool:
    """Whether this connection still belongs to the user who connected with a valid token.

    The session's user (stored at connect) must be there and the token unexpired; with
    ``recheck``, the user must also still be active and the token not revoked (logout), as the
    REST API would require. Otherwise the client gets ``error`` and is disconnected.
    """
    session = _session()
    valid = session is not None and (session.expires is None or time.time() < session.expires)
    if valid and recheck:
        assert session is not None
        valid = _active_user(session.user_id) is not None and not accounts.is_revoked(
            db.session, session.jti
        )
    if not valid:
        log.info("closing Socket.IO connection %s: its credentials no longer hold", request.sid)
        _error(REFUSED_MESSAGE)
        disconnect()
    return valid


@socketio.on("connect")
def _connect(auth: object = None) -> None:
    claims = _token_claims(auth)
    user = None if claims is None else _active_user(claims["sub"])
    if claims is None or user is None:
        log.info("refused a Socket.IO connection: no valid access token")
        raise Refused(REFUSED_MESSAGE)
    with _sessions_lock:
        _sessions[request.sid] = _Session(user.user_id, claims["jti"], claims.get("exp"))
    emit("connected", {"message": CONNECTED_MESSAGE, "timestamp": _timestamp()})


@socketio.on("disconnect")
def _disconnect(*_reason: object) -> None:
    with _sessions_lock:
        _sessions.pop(request.sid, None)


@socketio.on("ping")
def _ping(*_data: object) -> None:
    if _authorized(recheck=False):
        emit("pong", {"timestamp": _timestamp()})


@dataclass(frozen=True)
class _Target:
    """What a client can subscribe to: a location or a battery."""

    kind: str  # "location" or "battery"
    model: type[Location] | type[Battery]

    @property
    def key(self) -> str:
        return f"{self.kind}_id"

    def room(self, target_id: str) -> str:
        return location_room(target_id) if self.kind == "location" else battery_room(target_id)


LOCATION = _Target("location", Location)
BATTERY = _Target("battery", Battery)


def _target_id(target: _Target, event: str, data: object) -> str | None:
    """``data[target.key]`` if it is a possible ID; else None, and the client gets ``error``."""
    value = data.get(target.key) if isinstance(data, dict) else None
    if isinstance(value, str) and 0 < len(value) <= ID:
        return value
    _error(
        f'{event} needs {{"{target.key}": "..."}}: a non-empty string of at most {ID} characters'
    )
    return None


def _answer(event: str, target: _Target, target_id: str) -> None:
    emit(event, {"type": target.kind, target.key: target_id, "timestamp": _timestamp()})


def _subscribe(target: _Target, data: object) -> None:
    event = f"subscribe_{target.kind}"
    if not _authorized(recheck=True):
        return
    target_id = _target_id(target, event, data)
    if target_id is None:
        return
    if db.session.get(target.model, target_id) is None:
        _error(f"{target.kind.capitalize()} {target_id} not found")
        return
    room = target.room(target_id)
    with _sessions_lock:
        session = _sessions.get(request.sid)
        if session is None:  # disconnected meanwhile
            return
        full = room not in session.rooms and len(session.rooms) >= MAX_SUBSCRIPTIONS
        if not full:
            join_room(room)
            session.rooms.add(room)
    if full:
        _error(f"Subscription limit reached: at most {MAX_SUBSCRIPTIONS} per connection")
        return
    _answer("subscribed", target, target_id)


def _unsubscribe(target: _Target, data: object) -> None:
    """Leave the room; answered ``unsubscribed`` also when the client was not in it."""
    if not _authorized(recheck=False):
        return
    target_id = _target_id(target, f"unsubscribe_{target.kind}", data)
    if target_id is None:
        return
    room = target.room(target_id)
    with _sessions_lock:
        session = _sessions.get(request.sid)
        if session is None:  # disconnected meanwhile
            return
        leave_room(room)
        session.rooms.discard(room)
    _answer("unsubscribed", target, target_id)


@socketio.on("subscribe_location")
def _subscribe_location(data: object = None, *_more: object) -> None:
    _subscribe(LOCATION, data)


@socketio.on("unsubscribe_location")
def _unsubscribe_location(data: object = None, *_more: object) -> None:
    _unsubscribe(LOCATION, data)


@socketio.on("subscribe_battery")
def _subscribe_battery(data: object = None, *_more: object) -> None:
    _subscribe(BATTERY, data)


@socketio.on("unsubscribe_battery")
def _unsubscribe_battery(data: object = None, *_more: object) -> None:
    _unsubscribe(BATTERY, data)


@socketio.on_error_default
def _failed(exc: Exception) -> bool | None:
    """A handler's unexpected failure (e.g. the database): logged; a connection is refused, a
    connected client hears ``error`` and stays connected."""
    event = request.event.get("message")
    log.error("Socket.IO event %s failed", event, exc_info=exc)
    if event == "connect":
        return False  # python-socketio refuses the connection
    _error(INTERNAL_ERROR_MESSAGE)
    return None
