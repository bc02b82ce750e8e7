"""``/health`` and ``/health/ready``."""

from __future__ import annotations

import socket

import pytest

from central.api import create_app
from central.api.extensions import db
from central.api.health import CachedCheck
from central.ingest.mqtt import probe_broker
from central.settings import CentralSettings, MqttSettings
from tests.central.api_support import SECRET, make_app
from tests.support import free_tcp_port


def test_health(migrated_url: str) -> None:
    app = make_app(migrated_url)
    try:
        response = app.test_client().get("/health")
        assert response.status_code == 200
        assert response.get_json() == {
            "status": "healthy",
            "service": "backend-api",
            "version": "1.0.0",
            "environment": "test",
        }
        assert response.headers["X-Request-ID"].startswith("req_")
        ready = app.test_client().get("/health/ready")
        assert ready.status_code == 200
        assert ready.get_json() == {
            "status": "ready",
            "service": "backend-api",
            "database": "connected",
        }
    finally:
        db.engine(app).dispose()


def test_ready_reports_an_unreachable_database(tmp_path) -> None:
    app = make_app(f"sqlite:///{tmp_path}")  # a directory: SQLite cannot open it
    try:
        response = app.test_client().get("/health/ready")
        assert response.status_code == 503
        assert response.get_json() == {
            "status": "not_ready",
            "service": "backend-api",
            "error": "Database connection failed",
        }
    finally:
        db.engine(app).dispose()


def test_cached_check_asks_again_only_after_its_ttl() -> None:
    now = [100.0]
    outcomes = iter(["down", None])
    calls = []

    def check() -> str | None:
        calls.append(now[0])
        return next(outcomes)

    cached = CachedCheck(check, ttl_s=5.0, clock=lambda: now[0])
    assert cached() == "down"
    now[0] = 104.9
    assert cached() == "down"
    now[0] = 105.0
    assert cached() is None
    assert calls == [100.0, 105.0]


def test_probe_reports_why_a_broker_cannot_be_reached() -> None:
    closed = MqttSettings(port=free_tcp_port())
    assert probe_broker(closed).startswith(f"cannot connect to 127.0.0.1:{closed.port}:")
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        port = silent.getsockname()[1]
        assert probe_broker(MqttSettings(port=port), timeout_s=0.3) == "no answer within 0.3 s"


def test_ready_checks_the_broker_by_default(tmp_path) -> None:
    settings = CentralSettings(database_url=f"sqlite:///{tmp_path / 'x.sqlite3'}")
    app = create_app(settings, {"JWT_SECRET_KEY": SECRET})
    try:
        assert settings.api.ready_checks_broker is True
        assert app.config["BRM_READY_BROKER"] == settings.mqtt
    finally:
        db.engine(app).dispose()


@pytest.mark.integration
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_ready_reports_the_broker(migrated_url: str, mqtt_broker) -> None:
    broker = MqttSettings(host=mqtt_broker.host, port=mqtt_broker.port)
    app = make_app(migrated_url, BRM_READY_BROKER=broker)
    try:
        response = app.test_client().get("/health/ready")
        assert response.status_code == 200
        assert response.get_json() == {
            "status": "ready",
            "service": "backend-api",
            "database": "connected",
            "broker": "connected",
        }
        mqtt_broker.stop()
        try:
            # Within the cache's few seconds, the last answer stands; a fresh app asks again.
            assert app.test_client().get("/health/ready").status_code == 200
            fresh = make_app(migrated_url, BRM_READY_BROKER=broker)
            try:
                response = fresh.test_client().get("/health/ready")
            finally:
                db.engine(fresh).dispose()
            assert response.status_code == 503
            assert response.get_json() == {
                "status": "not_ready",
                "service": "backend-api",
                "error": "Broker connection failed",
            }
        finally:
            mqtt_broker.start()
    finally:
        db.engine(app).dispose()
