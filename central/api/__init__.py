"""Central's HTTP API: ``create_app`` builds the Flask app (the fleet reference's REST contract)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from central import dashboard
from central.api import (
    alerts,
    auth,
    batteries,
    health,
    locations,
    metrics,
    openapi,
    research,
    users,
)
from central.api.errors import init_errors
from central.api.extensions import db, jwt, limiter
from central.api.formats import OrjsonProvider
from central.api.live import init_socketio
from central.api.metrics import TOKEN_KEY, init_metrics
from central.api.schemas import check_path
from central.api.uploads import UPLOAD_DIR_KEY, DiskUploadRequest
from central.settings import CentralSettings
from common.settings import load_settings


class ApiConfigError(ValueError):
    """Settings the API server cannot start with."""


def _config(settings: CentralSettings) -> dict[str, Any]:
    api = settings.api
    return {
        "BRM_DATABASE_URL": settings.database_url,
        "BRM_ENVIRONMENT": api.environment,
        "BRM_LOGIN_RATE_LIMIT": api.login_rate_limit,
        "BRM_ACTIVE_WITHIN_S": api.active_within_s,
        "BRM_RATE_LIMIT": api.rate_limit,
        "JWT_SECRET_KEY": api.jwt_secret.get_secret_value() if api.jwt_secret else None,
        "JWT_ACCESS_TOKEN_EXPIRES": timedelta(seconds=api.access_token_expires_s),
        "JWT_REFRESH_TOKEN_EXPIRES": timedelta(seconds=api.refresh_token_expires_s),
        "JWT_TOKEN_LOCATION": ["headers"],
        "RATELIMIT_STORAGE_URI": api.rate_limit_storage_uri,
        "RATELIMIT_HEADERS_ENABLED": True,
        "MAX_CONTENT_LENGTH": api.max_request_bytes,
        "BRM_SOCKETIO_MESSAGE_QUEUE": api.socketio_message_queue,
        "BRM_SOCKETIO_CHANNEL": api.socketio_channel,
        "BRM_CORS_ALLOWED_ORIGINS": api.cors_allowed_origins,
        "BRM_READY_BROKER": settings.mqtt if api.ready_checks_broker else None,
        "BRM_RESEARCH": settings.research,
        TOKEN_KEY: api.metrics_token.get_secret_value() if api.metrics_token else None,
        UPLOAD_DIR_KEY: settings.research.upload_dir,
    }


def create_app(
    settings: CentralSettings | None = None, test_config: dict[str, Any] | None = None
) -> Flask:
    """The API app; ``settings`` default to the environment's, ``test_config`` overrides last."""
    app = Flask(__name__)
    app.request_class = DiskUploadRequest
    app.json = OrjsonProvider(app)
    settings = settings or load_settings(CentralSettings)
    app.config.from_mapping(_config(settings))
    if test_config is not None:
        app.config.from_mapping(test_config)
    if not app.config["JWT_SECRET_KEY"]:
        raise ApiConfigError("api.jwt_secret is required (BRM_CENTRAL_API__JWT_SECRET)")

    db.init_app(app, app.config["BRM_DATABASE_URL"])
    jwt.init_app(app)
    limiter.init_app(app)
    init_errors(app)
    init_metrics(app)
    app.before_request(check_path)
    init_socketio(app)
    hops = settings.api.proxy_hops
    if hops:  # outside Socket.IO's middleware, so that its requests get the client's address too
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    limiter.exempt(health.bp)
    limiter.exempt(openapi.bp)
    limiter.exempt(metrics.bp)
    limiter.exempt(dashboard.bp)
    for blueprint in (
        health.bp,
        auth.bp,
        users.bp,
        locations.bp,
        batteries.bp,
        alerts.bp,
        research.bp,
        openapi.bp,
        metrics.bp,
        dashboard.bp,
    ):
        app.register_blueprint(blueprint)
    return app
