"""Liveness and readiness probes: ``/health`` and ``/health/ready`` (public).

Readiness needs the database and, unless ``api.ready_checks_broker`` is off, the MQTT broker. The
broker's answer is cached for a few seconds, so that a load balancer polling readiness costs the
broker one connection per interval, however many pollers there are.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from central.api import responses
from central.api.extensions import db
from central.api.openapi import operation
from central.ingest.mqtt import probe_broker
from central.settings import MqttSettings

API_VERSION = "1.0.0"
SERVICE = "backend-api"
BROKER_CHECK_TTL_S = 5.0
_BROKER_CHECK_KEY = "brm_broker_check"

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__, url_prefix="/health")


class CachedCheck:
    """A check's outcome (None when fine, else why not), reused for ``ttl_s`` seconds.

    Callers arriving while the check runs wait for its outcome rather than starting their own.
    """

    def __init__(
        self,
        check: Callable[[], str | None],
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._expires = -math.inf
        self._outcome: str | None = None

    def __call__(self) -> str | None:
        with self._lock:
            if self._clock() >= self._expires:
                self._outcome = self._check()
                self._expires = self._clock() + self._ttl_s
            return self._outcome


def _broker_check(broker: MqttSettings) -> CachedCheck:
    """The app's cached broker check, made on first use."""
    check = current_app.extensions.get(_BROKER_CHECK_KEY)
    if check is None:
        fresh = CachedCheck(lambda: probe_broker(broker), BROKER_CHECK_TTL_S)
        check = current_app.extensions.setdefault(_BROKER_CHECK_KEY, fresh)
    return check


def _not_ready(error: str) -> ResponseReturnValue:
    return jsonify(status="not_ready", service=SERVICE, error=error), 503


@bp.get("")
@operation(
    summary="Liveness",
    tag="health",
    response=responses.Health,
    public=True,
    rate_limited=False,
)
def health() -> ResponseReturnValue:
    return jsonify(
        status="healthy",
        service=SERVICE,
        version=API_VERSION,
        environment=current_app.config["BRM_ENVIRONMENT"],
    )


@bp.get("/ready")
@operation(
    summary="Readiness: the database and the MQTT broker answer",
    tag="health",
    response=responses.Ready,
    public=True,
    rate_limited=False,
    other_responses={503: responses.Ready},
)
def ready() -> ResponseReturnValue:
    try:
        with db.engine(current_app).connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        log.warning("readiness check: database unreachable: %s", exc.__class__.__name__)
        return _not_ready("Database connection failed")
    body = {"status": "ready", "service": SERVICE, "database": "connected"}
    broker: MqttSettings | None = current_app.config["BRM_READY_BROKER"]
    if broker is not None:
        reason = _broker_check(broker)()
        if reason is not None:
            log.warning("readiness check: broker unreachable: %s", reason)
            return _not_ready("Broker connection failed")
        body["broker"] = "connected"
    return jsonify(body)
