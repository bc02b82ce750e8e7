"""``GET /api/v1/batteries/{id}/soh-history``: the daily SoH medians the RUL fit sees, beside the
stored estimate, on SQLite and PostgreSQL; window, roles and errors."""

from __future__ import annotations

import statistics
from datetime import UTC, date, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import insert

from central.api.extensions import db
from central.db.inventory import load_fleet_locations, upsert_birth
from central.db.models import BatteryAnalytics, Telemetry
from central.rul import RulEstimate, RulStatus
from common import ids
from common.fleet import demo_fleet_path, load_fleet
from common.timeutil import utc_now
from tests.central.api_support import add_user, assert_error, bearer, login
from tests.central.fleet_support import SITE, demo_birth

B1 = ids.battery_id(SITE, 1, 1, 1)
B2 = ids.battery_id(SITE, 1, 1, 2)  # in the inventory, never reported
PATH = f"/api/v1/batteries/{B1}/soh-history"


def _reading(ts: datetime, soh: float | None) -> dict:
    return {"battery_id": B1, "ts": ts, "voltage": 13.5, "temperature": 25.0, "soh_pct": soh}


@pytest.fixture
def history(app: Flask, migrated_url: str) -> dict[date, list[float]]:
    """Four readings a day for the last 10 days (day k: SoH 90 - k/10 plus a spread), one
    reading without SoH, and an older day outside a 10-day window."""
    today = utc_now().replace(hour=0, minute=0, second=0, microsecond=0)
    by_day: dict[date, list[float]] = {}
    rows = []
    for k in range(-1, 10):  # k = -1: eleven days ago
        day = today - timedelta(days=9 - k)
        values = [90 - k / 10 + spread for spread in (-0.3, 0.0, 0.1, 0.5)]
        by_day[day.date()] = values
        rows += [_reading(day + timedelta(hours=2 + 5 * i), v) for i, v in enumerate(values)]
    rows.append(_reading(today + timedelta(minutes=1), None))  # counted nowhere
    with app.app_context():
        load_fleet_locations(db.session, load_fleet(demo_fleet_path()))
        upsert_birth(db.session, demo_birth())
        db.session.execute(insert(Telemetry), rows)
        db.session.commit()
    add_user(migrated_url, "viewer1", "viewer")
    return by_day


@pytest.fixture
def viewer(client: FlaskClient, history) -> dict[str, str]:
    return bearer(login(client, "viewer1").get_json()["access_token"])


def test_daily_medians_over_the_window(client: FlaskClient, viewer, history) -> None:
    body = client.get(PATH, query_string={"days": 10}, headers=viewer).get_json()
    assert set(body) == {"battery_id", "days", "points", "rul"}
    assert (body["battery_id"], body["days"], body["rul"]) == (B1, 10, None)
    days = sorted(history)[-10:]  # the eleventh day back is outside the window
    assert [p["date"] for p in body["points"]] == [d.isoformat() for d in days]
    for point, day in zip(body["points"], days, strict=True):
        assert set(point) == {"date", "t", "soh_pct", "n"}
        assert point["n"] == 4
        assert point["soh_pct"] == pytest.approx(statistics.median(history[day]), abs=1e-3)
        mean_time = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=9.5)
        assert point["t"] == mean_time.strftime("%Y-%m-%dT%H:%M:%SZ")
    everything = client.get(PATH, headers=viewer).get_json()
    assert everything["days"] == 730  # the default window
    assert len(everything["points"]) == 11


def test_the_stored_estimate_comes_along(app: Flask, client: FlaskClient, viewer) -> None:
    now = utc_now().replace(microsecond=0)
    estimate = RulEstimate(
        status=RulStatus.FADING,
        rul_days=200.0,
        rul_low_days=150.0,
        rul_high_days=260.0,
        interval=0.8,
        predicted_eol_date=now.date() + timedelta(days=200),
        soh_now_pct=89.1,
        fade_pct_per_year=4.0,
        n_points=44,
        n_days=11,
        method="huber-linear",
        computed_at=now,
    )
    row = {
        "battery_id": B1,
        "rul_status": "fading",
        "rul_days": 200.0,
        "rul_low_days": 150.0,
        "rul_high_days": 260.0,
        "rul_interval_pct": 80,
        "predicted_eol_date": estimate.predicted_eol_date,
        "soh_now_pct": 89.1,
        "fade_pct_per_year": 4.0,
        "rul_n_points": 44,
        "rul_n_days": 11,
        "rul_method": "huber-linear",
        "rul_computed_at": now,
        "updated_at": now,
    }
    with app.app_context():
        db.session.execute(insert(BatteryAnalytics), [row])
        db.session.commit()
    body = client.get(PATH, headers=viewer).get_json()
    assert body["rul"] == estimate.to_json()
    detail = client.get(f"/api/v1/batteries/{B1}", headers=viewer).get_json()
    assert body["rul"] == detail["rul"]


def test_a_battery_without_readings_has_no_points(client: FlaskClient, viewer) -> None:
    body = client.get(f"/api/v1/batteries/{B2}/soh-history", headers=viewer).get_json()
    assert (body["points"], body["rul"]) == ([], None)


@pytest.mark.parametrize("days", ["0", "3651", "a week"])
def test_a_bad_window_is_refused(client: FlaskClient, viewer, days: str) -> None:
    response = client.get(PATH, query_string={"days": days}, headers=viewer)
    body = assert_error(response, 422, response.get_json()["detail"], "VALIDATION_ERROR")
    assert body["error"]["details"][0]["field"] == "days"


def test_unknown_battery_and_missing_token(client: FlaskClient, viewer) -> None:
    response = client.get("/api/v1/batteries/BAT-NOPE/soh-history", headers=viewer)
    assert_error(response, 404, "Battery BAT-NOPE not found", "RESOURCE_NOT_FOUND")
    assert_error(client.get(PATH), 401, "Could not validate credentials", "UNAUTHORIZED")


@pytest.mark.parametrize("role", ["engineer", "admin"])
def test_every_role_reads_it(client: FlaskClient, migrated_url, history, role: str) -> None:
    add_user(migrated_url, f"{role}1", role)
    headers = bearer(login(client, f"{role}1").get_json()["access_token"])
    assert len(client.get(PATH, headers=headers).get_json()["points"]) == 11
