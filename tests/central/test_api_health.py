"""``/health`` and ``/health/ready``."""

from __future__ import annotations

from central.api.extensions import db
from tests.central.api_support import make_app


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
