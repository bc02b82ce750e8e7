"""Socket.IO (the fleet API's WebSocket): who may connect, ``connected`` and ``ping``/``pong``.

A client connects with ``auth={"token": ACCESS_TOKEN}``; the token must be valid, unrevoked and
an active user's, exactly as for the REST API, else the connection is refused.

Sessions live in the process that accepted them: more than one server process needs
``api.socketio_message_queue`` (Redis) and sticky sessions at the load balancer.
"""

from __future__ import annotations

import logging

from flask import Flask
from flask_jwt_extended import decode_token
from flask_jwt_extended.exceptions import JWTExtendedException
from flask_socketio import ConnectionRefusedError as Refused
from flask_socketio import SocketIO, emit
from jwt import PyJWTError

from central.api import accounts
from central.api.extensions import db
from central.db.models import User
from common.timeutil import to_rfc3339, utc_now

CONNECTED_MESSAGE = "Connected to Battery RUL Monitoring"
REFUSED_MESSAGE = "Could not validate credentials"

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
    socketio.init_app(
        app,
        async_mode="threading",
        cors_allowed_origins=cors_origins(app.config["BRM_CORS_ALLOWED_ORIGINS"]),
        manage_session=False,  # no Flask session is used: the token authenticates
        # The extension keeps its options from one init_app to the next: without a queue, ask
        # for the in-process manager explicitly, or an earlier app's queue manager is reused.
        **({"message_queue": queue} if queue else {"client_manager": None}),
    )


def token_user(auth: object) -> User | None:
    """The active user whose valid, unrevoked access token ``auth["token"]`` is; else None."""
    token = auth.get("token") if isinstance(auth, dict) else None
    if not isinstance(token, str) or not token:
        return None
    try:
        claims = decode_token(token)
    except (PyJWTError, JWTExtendedException):
        return None
    if claims.get("type") != "access" or accounts.is_revoked(db.session, claims["jti"]):
        return None
    user = db.session.get(User, claims["sub"])
    return user if user is not None and user.is_active else None


def disconnect_all() -> None:
    """Close every client's connection, so that a shutting-down server need not wait for them."""
    if socketio.server is not None:
        socketio.server.eio.disconnect()


def _timestamp() -> str:
    return to_rfc3339(utc_now())


@socketio.on("connect")
def _connect(auth: object = None) -> None:
    user = token_user(auth)
    if user is None:
        log.info("refused a Socket.IO connection: no valid access token")
        raise Refused(REFUSED_MESSAGE)
    emit("connected", {"message": CONNECTED_MESSAGE, "timestamp": _timestamp()})


@socketio.on("ping")
def _ping(_data: object = None) -> None:
    emit("pong", {"timestamp": _timestamp()})
