"""schemathesis against the live OpenAPI document: generated requests to every operation, as a
logged-in admin, find no 5xx, no undocumented status and no response that breaks its schema."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, timedelta

import pytest
import schemathesis
from flask import Flask
from flask_jwt_extended import create_access_token
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import insert

from central import migrations
from central.api.alerts import ALERT_PARAM
from central.api.extensions import db
from central.db.inventory import load_fleet_locations, upsert_birth
from central.db.models import Alert, BatteryAnalytics, BatteryLatest, Telemetry
from central.research.store import UploadMetadata, store_file
from common import ids
from common.fleet import demo_fleet_path, load_fleet
from common.timeutil import utc_now
from tests.central.api_support import add_user, make_app
from tests.central.fleet_support import SITE, demo_birth
from tests.support import SHARED_DATA, pg_schema

NASA_FILE = SHARED_DATA / "nasa_pcoe" / "B0025.mat"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
)
def fuzzed_url(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[str]:
    """A SQLite file, or a private schema of the session's PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'central.sqlite3'}"
        return
    with pg_schema(request.getfixturevalue("pg_database_url"), "fuzz") as url:
        yield url


def _alerts(battery: str, now) -> list[dict]:
    """Active, acknowledged and resolved alerts; the first is the one the path example names."""
    rows = []
    for n, (alert_type, severity, acknowledged, resolved) in enumerate(
        [
            ("temperature_high", "warning", False, False),
            ("soh_degraded", "critical", True, False),
            ("voltage_high", "info", True, True),
            ("voltage_low", "warning", False, True),
        ]
    ):
        triggered = now - timedelta(hours=n + 1)
        rows.append(
            {
                "id": str(uuid.uuid4()),
                "alert_id": ALERT_PARAM["alert_id"] if n == 0 else f"ALT-{battery}-{n}",
                "battery_id": battery,
                "location_id": SITE,
                "alert_type": alert_type,
                "severity": severity,
                "message": f"{alert_type} on {battery}",
                "threshold_value": 45.0 if n % 2 else None,
                "actual_value": 45.2 if n % 2 else None,
                "triggered_at": triggered,
                "resolved_at": now if resolved else None,
                "is_acknowledged": acknowledged,
                "acknowledged_at": now if acknowledged else None,
                "acknowledged_by": "engineer1" if acknowledged else None,
                "acknowledgment_note": "noted" if acknowledged else None,
                "created_at": triggered,
                "updated_at": now,
            }
        )
    return rows


def _rul(battery: str, now) -> dict:
    return {
        "battery_id": battery,
        "rul_status": "fading",
        "rul_days": 400.0,
        "rul_low_days": 300.0,
        "rul_high_days": None,
        "rul_interval_pct": 80,
        "predicted_eol_date": date(2027, 3, 1),
        "soh_now_pct": 86.0,
        "fade_pct_per_year": 5.0,
        "rul_n_points": 1000,
        "rul_n_days": 90,
        "rul_method": "huber-linear",
        "rul_computed_at": now,
        "updated_at": now,
    }


@pytest.fixture(scope="module")
def fuzzed_app(fuzzed_url: str) -> Iterator[Flask]:
    """An app on a store holding the demo fleet, one site's batteries, some readings, alerts, an
    RUL estimate and one research dataset (a real NASA file, id 1)."""
    url = fuzzed_url
    migrations.upgrade(url)
    add_user(url, "admin", "admin")
    add_user(url, "engineer1", "engineer")
    app = make_app(url, BRM_RATE_LIMIT="1000000 per minute", BRM_LOGIN_RATE_LIMIT="1000000/minute")
    now = utc_now()
    battery = ids.battery_id(SITE, 1, 1, 1)
    with app.app_context():
        load_fleet_locations(db.session, load_fleet(demo_fleet_path()))
        upsert_birth(db.session, demo_birth())
        rows = [
            {
                "battery_id": battery,
                "ts": now - timedelta(minutes=m),
                "voltage": 13.5,
                "soh_pct": 93.0,
            }
            for m in range(30)
        ]
        db.session.execute(insert(Telemetry), rows)
        db.session.execute(insert(BatteryLatest), [{**rows[0], "updated_at": now}])
        db.session.execute(insert(Alert), _alerts(battery, now))
        db.session.execute(insert(BatteryAnalytics), [_rul(battery, now)])
        store_file(
            db.session,
            NASA_FILE,
            UploadMetadata(filename=NASA_FILE.name),
            upload_id=str(uuid.uuid4()),
            default_eol_threshold=0.8,
            max_decompressed_bytes=64 * 1024**2,
        )
        db.session.commit()
    yield app
    db.engine(app).dispose()


def test_api_conforms_to_its_openapi_document(fuzzed_app: Flask) -> None:
    """Each operation in turn, with hypothesis driving schemathesis' generated cases.

    (schemathesis' pytest plugin does not run under pytest 9, so the loop is explicit.)
    """
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", fuzzed_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 23

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def check(case: schemathesis.Case) -> None:
            # A fresh admin token per case: a generated logout must not revoke the next one's.
            with fuzzed_app.app_context():
                token = create_access_token(identity="admin")
            case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)

        check()


def test_document_covers_every_fleet_endpoint(fuzzed_app: Flask) -> None:
    document = fuzzed_app.test_client().get("/api/v1/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    operations = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    assert operations >= {
        ("POST", "/api/v1/auth/login"),
        ("POST", "/api/v1/auth/refresh"),
        ("POST", "/api/v1/auth/logout"),
        ("GET", "/api/v1/auth/me"),
        ("POST", "/api/v1/auth/change-password"),
        ("GET", "/api/v1/auth/users"),
        ("POST", "/api/v1/auth/users"),
        ("PATCH", "/api/v1/auth/users/{user_id}"),
        ("DELETE", "/api/v1/auth/users/{user_id}"),
        ("GET", "/api/v1/locations"),
        ("GET", "/api/v1/locations/{location_id}"),
        ("GET", "/api/v1/locations/{location_id}/batteries"),
        ("GET", "/api/v1/batteries"),
        ("GET", "/api/v1/batteries/{battery_id}"),
        ("GET", "/api/v1/batteries/{battery_id}/telemetry"),
        ("GET", "/health"),
        ("GET", "/health/ready"),
        ("GET", "/api/v1/research/batteries"),
        ("POST", "/api/v1/research/batteries"),
        ("GET", "/api/v1/research/batteries/{battery_id}"),
        ("PATCH", "/api/v1/research/batteries/{battery_id}"),
        ("DELETE", "/api/v1/research/batteries/{battery_id}"),
        ("GET", "/api/v1/research/batteries/{battery_id}/cycles"),
    }
    telemetry = document["paths"]["/api/v1/batteries/{battery_id}/telemetry"]["get"]
    limit = next(p for p in telemetry["parameters"] if p["name"] == "limit")
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000}
    assert telemetry["security"] == [{"bearerAuth": []}]
    login = document["paths"]["/api/v1/auth/login"]["post"]
    assert login["security"] == []
    assert login["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/LoginBody"
    }


def test_docs_page_is_served_without_a_network(fuzzed_app: Flask) -> None:
    client = fuzzed_app.test_client()
    page = client.get("/api/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "/api/v1/openapi.json" in html
    assert "https://" not in html  # everything it loads comes from this server
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        with client.get(f"/api/docs/static/{asset}") as response:
            assert response.status_code == 200
            assert len(response.get_data()) > 10_000
