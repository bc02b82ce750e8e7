"""Liveness and readiness probes: ``/health`` and ``/health/ready`` (public)."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from central.api.extensions import db

API_VERSION = "1.0.0"
SERVICE = "backend-api"

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__, url_prefix="/health")


@bp.get("")
def health() -> ResponseReturnValue:
    return jsonify(
        status="healthy",
        service=SERVICE,
        version=API_VERSION,
        environment=current_app.config["BRM_ENVIRONMENT"],
    )


@bp.get("/ready")
def ready() -> ResponseReturnValue:
    try:
        with db.engine(current_app).connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        log.warning("readiness check: database unreachable: %s", exc.__class__.__name__)
        body = {"status": "not_ready", "service": SERVICE, "error": "Database connection failed"}
        return jsonify(body), 503
    return jsonify(status="ready", service=SERVICE, database="connected")
