"""``/api/v1/locations`` and ``/api/v1/batteries``: fleet-api.md field by field, every documented
error with its message, pagination bounds, and each role, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import insert

from central.api.batteries import warranty_state
from central.api.extensions import db
from central.db.inventory import load_fleet_locations, upsert_birth
from central.db.models import Alert, BatteryAnalytics, BatteryLatest, Telemetry
from central.rul import RulEstimate, RulStatus
from common import ids
from common.fleet import demo_fleet_path, load_fleet
from common.timeutil import utc_now
from tests.central.api_support import (
    TIMESTAMP,
    add_user,
    assert_error,
    bearer,
    login,
    make_app,
)
from tests.central.fleet_support import SITE, demo_birth

B1 = ids.battery_id(SITE, 1, 1, 1)  # healthy, with an hour of readings
B2 = ids.battery_id(SITE, 1, 1, 2)  # SoH in the warning band
B3 = ids.battery_id(SITE, 1, 1, 3)  # SoH critical
B4 = ids.battery_id(SITE, 1, 1, 4)  # healthy SoH but an active critical alert
B5 = ids.battery_id(SITE, 1, 1, 5)  # reported long ago (not active)
BATTERY_KEYS = {
    "battery_id",
    "serial_number",
    "position",
    "manufacturer",
    "model",
    "nominal_voltage_v",
    "nominal_capacity_ah",
    "installed_date",
    "warranty_months",
    "string_id",
    "created_at",
    "updated_at",
    "latest_telemetry",
    "status",
    "active_alerts",
}
TELEMETRY_KEYS = {
    "timestamp",
    "voltage",
    "current",
    "temperature",
    "internal_resistance",
    "soc_pct",
    "soh_pct",
}
LOCATION_KEYS = {
    "location_id",
    "name",
    "region",
    "city",
    "country",
    "latitude",
    "longitude",
    "temp_offset_c",
    "humidity_offset_pct",
    "power_outage_frequency_per_year",
}
STATS_KEYS = {
    "total_batteries",
    "active_batteries",
    "critical_batteries",
    "average_soh",
    "active_alerts",
}


def _reading(battery_id: str, ts: datetime, soh: float) -> dict:
    return {
        "battery_id": battery_id,
        "ts": ts,
        "voltage": 13.52,
        "current": -2.5,
        "temperature": 28.5,
        "internal_resistance": 0.0045,
        "soc_pct": 95.0,
        "soh_pct": soh,
    }


def _alert(battery_id: str, severity: str, resolved: bool = False) -> dict:
    now = utc_now()
    return {
        "id": str(uuid.uuid4()),
        "alert_id": f"ALT-{uuid.uuid4().hex}",
        "battery_id": battery_id,
        "location_id": SITE,
        "alert_type": f"type_{uuid.uuid4().hex[:6]}",
        "severity": severity,
        "message": "m",
        "triggered_at": now,
        "resolved_at": now if resolved else None,
        "is_acknowledged": False,
        "created_at": now,
        "updated_at": now,
    }


@pytest.fixture
def fleet(migrated_url: str) -> dict[str, datetime]:
    """The demo fleet's locations, DC-CNX-01's 216 batteries, some readings and alerts."""
    now = utc_now().replace(microsecond=0)
    app = make_app(migrated_url)
    with app.app_context():
        session = db.session
        load_fleet_locations(session, load_fleet(demo_fleet_path()))
        upsert_birth(session, demo_birth())
        history = [_reading(B1, now - timedelta(minutes=m), 95.0) for m in range(60)]
        session.execute(insert(Telemetry), history)
        latest = [
            _reading(B1, now, 95.0),
            _reading(B2, now, 83.0),
            _reading(B3, now, 78.0),
            _reading(B4, now, 96.0),
            _reading(B5, now - timedelta(days=2), 91.0),
        ]
        session.execute(insert(BatteryLatest), [{**r, "updated_at": now} for r in latest])
        session.execute(
            insert(Alert),
            [
                _alert(B4, "critical"),
                _alert(B2, "warning"),
                _alert(B2, "info"),
                _alert(B1, "critical", resolved=True),
            ],
        )
        session.commit()
    db.engine(app).dispose()
    add_user(migrated_url, "viewer1", "viewer")
    add_user(migrated_url, "engineer1", "engineer")
    return {"now": now}


@pytest.fixture
def viewer(client: FlaskClient, fleet) -> dict[str, str]:
    return bearer(login(client, "viewer1").get_json()["access_token"])


def test_locations_list_with_statistics(client: FlaskClient, viewer) -> None:
    response = client.get("/api/v1/locations", headers=viewer)
    assert response.status_code == 200
    body = response.get_json()
    assert body["total"] == 9 == len(body["locations"])
    by_id = {loc["location_id"]: loc for loc in body["locations"]}
    cnx = by_id[SITE]
    assert set(cnx) == LOCATION_KEYS | STATS_KEYS
    assert cnx["name"] == "Chiang Mai Data Center"
    assert (cnx["region"], cnx["city"], cnx["country"]) == ("northern", "Chiang Mai", "Thailand")
    assert (cnx["latitude"], cnx["longitude"]) == (18.7883, 98.9853)
    assert (cnx["temp_offset_c"], cnx["humidity_offset_pct"]) == (-2.0, -5.0)
    assert cnx["power_outage_frequency_per_year"] == 2
    assert cnx["total_batteries"] == 216
    assert cnx["active_batteries"] == 4  # B5 last reported two days ago
    assert cnx["critical_batteries"] == 2  # B3 by SoH, B4 by its critical alert
    assert cnx["average_soh"] == pytest.approx((95 + 83 + 78 + 96 + 91) / 5, abs=0.05)
    assert cnx["active_alerts"] == 3
    empty = by_id["DC-BKK-01"]
    assert (empty["total_batteries"], empty["active_alerts"], empty["average_soh"]) == (0, 0, None)


def test_locations_without_statistics(client: FlaskClient, viewer) -> None:
    body = client.get("/api/v1/locations?include_stats=false", headers=viewer).get_json()
    assert all(set(loc) == LOCATION_KEYS for loc in body["locations"])
    response = client.get("/api/v1/locations?include_stats=perhaps", headers=viewer)
    body = assert_error(response, 422, response.get_json()["detail"], "VALIDATION_ERROR")
    assert body["error"]["details"][0]["field"] == "include_stats"


def test_location_detail_and_not_found(client: FlaskClient, viewer) -> None:
    body = client.get(f"/api/v1/locations/{SITE}", headers=viewer).get_json()
    assert set(body) == LOCATION_KEYS | STATS_KEYS
    assert body["total_batteries"] == 216
    response = client.get("/api/v1/locations/DC-XXX-99", headers=viewer)
    assert_error(response, 404, "Location DC-XXX-99 not found", "RESOURCE_NOT_FOUND")
    response = client.get("/api/v1/locations/DC-XXX-99/batteries", headers=viewer)
    assert_error(response, 404, "Location DC-XXX-99 not found", "RESOURCE_NOT_FOUND")


def test_location_batteries_paginate(client: FlaskClient, viewer) -> None:
    first = client.get(f"/api/v1/locations/{SITE}/batteries", headers=viewer).get_json()
    assert first["total"] == 216
    assert len(first["batteries"]) == 100  # default limit
    assert first["batteries"][0]["battery_id"] == B1
    page = client.get(
        f"/api/v1/locations/{SITE}/batteries?skip=210&limit=50", headers=viewer
    ).get_json()
    assert [b["battery_id"] for b in page["batteries"]][-1] == ids.battery_id(SITE, 2, 3, 36)
    assert len(page["batteries"]) == 6
    empty = client.get("/api/v1/locations/DC-BKK-01/batteries", headers=viewer).get_json()
    assert empty == {"batteries": [], "total": 0}


def test_battery_list_fields_status_and_alerts(client: FlaskClient, viewer, fleet) -> None:
    body = client.get("/api/v1/batteries?limit=1000", headers=viewer).get_json()
    assert body["total"] == 216 == len(body["batteries"])
    by_id = {b["battery_id"]: b for b in body["batteries"]}
    first = by_id[B1]
    assert set(first) == BATTERY_KEYS
    assert first["serial_number"] == "CSB-11001"
    assert first["position"] == 1
    assert (first["manufacturer"], first["model"]) == ("CSB", "HX12-120")
    assert (first["nominal_voltage_v"], first["nominal_capacity_ah"]) == (12.0, 120.0)
    assert first["installed_date"] == "2023-01-15"
    assert first["warranty_months"] == 60
    assert first["string_id"] == "STR-DC-CNX-01-UPS-01-01"
    assert TIMESTAMP.match(first["created_at"]) and TIMESTAMP.match(first["updated_at"])
    assert first["latest_telemetry"] == {
        "timestamp": fleet["now"].strftime("%Y-%m-%dT%H:%M:%SZ"),
        "voltage": 13.52,
        "current": -2.5,
        "temperature": 28.5,
        "internal_resistance": 0.0045,
        "soc_pct": 95.0,
        "soh_pct": 95.0,
    }
    assert (first["status"], first["active_alerts"]) == ("healthy", 0)  # its alert is resolved
    assert (by_id[B2]["status"], by_id[B2]["active_alerts"]) == ("warning", 2)
    assert (by_id[B3]["status"], by_id[B3]["active_alerts"]) == ("critical", 0)
    assert (by_id[B4]["status"], by_id[B4]["active_alerts"]) == ("critical", 1)
    never = by_id[ids.battery_id(SITE, 2, 3, 36)]
    assert (never["latest_telemetry"], never["status"]) == (None, "unknown")


def test_battery_list_filters_by_location(client: FlaskClient, viewer) -> None:
    body = client.get(f"/api/v1/batteries?location_id={SITE}&limit=5", headers=viewer).get_json()
    assert body["total"] == 216 and len(body["batteries"]) == 5
    other = client.get("/api/v1/batteries?location_id=DC-BKK-01", headers=viewer).get_json()
    assert other == {"batteries": [], "total": 0}


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/batteries?limit=0", "limit"),
        ("/api/v1/batteries?limit=1001", "limit"),
        ("/api/v1/batteries?skip=-1", "skip"),
        ("/api/v1/batteries?limit=ten", "limit"),
        (f"/api/v1/locations/{SITE}/batteries?limit=1001", "limit"),
        ("/api/v1/auth/users?limit=1001", "limit"),
        (f"/api/v1/batteries/{B1}/telemetry?limit=10001", "limit"),
        (f"/api/v1/batteries/{B1}/telemetry?limit=0", "limit"),
        (f"/api/v1/batteries/{B1}/telemetry?start=yesterday", "start"),
        (f"/api/v1/batteries/{B1}/telemetry?end=2025-13-01T00:00:00Z", "end"),
    ],
)
def test_pagination_and_parameter_bounds(client: FlaskClient, fleet, path, field) -> None:
    admin = bearer(login(client).get_json()["access_token"])
    response = client.get(path, headers=admin)
    body = assert_error(response, 422, response.get_json()["detail"], "VALIDATION_ERROR")
    assert [d["field"] for d in body["error"]["details"]] == [field]
    assert body["error"]["details"][0]["loc"] == ["query", field]


def test_largest_pages_are_accepted(client: FlaskClient, viewer) -> None:
    assert client.get("/api/v1/batteries?limit=1000", headers=viewer).status_code == 200
    path = f"/api/v1/batteries/{B1}/telemetry?limit=10000"
    assert client.get(path, headers=viewer).status_code == 200


def test_battery_detail(client: FlaskClient, viewer) -> None:
    body = client.get(f"/api/v1/batteries/{B2}", headers=viewer).get_json()
    assert set(body) == BATTERY_KEYS | {
        "age_days",
        "is_in_warranty",
        "string_info",
        "location_info",
        "rul",
    }
    assert body["rul"] is None  # no estimate stored
    age, in_warranty = warranty_state(date(2023, 1, 15), 60, utc_now().date())
    assert (body["age_days"], body["is_in_warranty"]) == (age, in_warranty)
    assert body["string_info"] == {
        "string_id": "STR-DC-CNX-01-UPS-01-01",
        "position": 1,
        "ups_id": "DC-CNX-01-UPS-01",
    }
    assert body["location_info"] == {"location_id": SITE, "name": "Chiang Mai Data Center"}
    assert (body["status"], body["active_alerts"]) == ("warning", 2)
    response = client.get("/api/v1/batteries/BAT-NOPE", headers=viewer)
    assert_error(response, 404, "Battery BAT-NOPE not found", "RESOURCE_NOT_FOUND")


RUL_KEYS = {
    "status",
    "rul_days",
    "rul_low_days",
    "rul_high_days",
    "interval_pct",
    "predicted_eol_date",
    "soh_now_pct",
    "fade_pct_per_year",
    "n_points",
    "n_days",
    "method",
    "computed_at",
}


def _analytics(battery_id: str, now: datetime, **changes: object) -> dict:
    row = {
        "battery_id": battery_id,
        "resistance_baseline_ohm": 0.0045,
        "rul_status": "fading",
        "rul_days": 412.3456,
        "rul_low_days": 301.04,
        "rul_high_days": 598.96,
        "rul_interval_pct": 80,
        "predicted_eol_date": date(2027, 3, 1),
        "soh_now_pct": 86.123456,
        "fade_pct_per_year": 5.43219,
        "rul_n_points": 129600,
        "rul_n_days": 90,
        "rul_method": "huber-linear",
        "rul_computed_at": now.replace(microsecond=250000),
        "updated_at": now,
    }
    return {**row, **changes}


def test_battery_detail_shows_the_rul_estimate(app: Flask, client: FlaskClient, viewer) -> None:
    now = datetime(2026, 1, 19, 8, 0, tzinfo=UTC)
    b4_open = {"rul_status": "open_ended", "rul_days": None, "rul_low_days": None}
    b4_open |= {"rul_high_days": None, "predicted_eol_date": None, "fade_pct_per_year": -0.2}
    with app.app_context():
        rows = [
            _analytics(B1, now),
            _analytics(B2, now, rul_status=None),  # a resistance baseline, no estimate yet
            _analytics(B3, now, rul_status="end_of_life", rul_days=0.0, rul_low_days=0.0),
            _analytics(B4, now, **b4_open),
            _analytics(B5, now, rul_computed_at=None),  # incomplete: not shown
        ]
        db.session.execute(insert(BatteryAnalytics), rows)
        db.session.commit()

    def rul(battery_id: str) -> dict | None:
        body = client.get(f"/api/v1/batteries/{battery_id}", headers=viewer).get_json()
        return body["rul"]

    expected = {
        "status": "fading",
        "rul_days": 412.3,
        "rul_low_days": 301.0,
        "rul_high_days": 599.0,
        "interval_pct": 80,
        "predicted_eol_date": "2027-03-01",
        "soh_now_pct": 86.12,
        "fade_pct_per_year": 5.432,
        "n_points": 129600,
        "n_days": 90,
        "method": "huber-linear",
        "computed_at": "2026-01-19T08:00:00.250Z",
    }
    assert rul(B1) == expected
    estimate = RulEstimate(
        status=RulStatus.FADING,
        rul_days=412.3456,
        rul_low_days=301.04,
        rul_high_days=598.96,
        interval=0.8,
        predicted_eol_date=date(2027, 3, 1),
        soh_now_pct=86.123456,
        fade_pct_per_year=5.43219,
        n_points=129600,
        n_days=90,
        method="huber-linear",
        computed_at=now.replace(microsecond=250000),
    )
    assert set(expected) == RUL_KEYS
    assert rul(B1) == estimate.to_json()  # the shape central.rul gives it
    assert rul(B2) is None
    assert rul(B3) == {**expected, "status": "end_of_life", "rul_days": 0.0, "rul_low_days": 0.0}
    assert rul(B4) == {
        **expected,
        "status": "open_ended",
        "rul_days": None,
        "rul_low_days": None,
        "rul_high_days": None,
        "predicted_eol_date": None,
        "fade_pct_per_year": -0.2,
    }
    assert rul(B5) is None
    assert rul(ids.battery_id(SITE, 2, 3, 36)) is None  # no analytics row at all


def test_warranty_runs_to_the_same_day_months_later() -> None:
    assert warranty_state(date(2023, 1, 15), 60, date(2028, 1, 14)) == (1825, True)
    assert warranty_state(date(2023, 1, 15), 60, date(2028, 1, 15)) == (1826, False)
    # 31 January + 1 month ends on the last day of February.
    assert warranty_state(date(2024, 1, 31), 1, date(2024, 2, 28)) == (28, True)
    assert warranty_state(date(2024, 1, 31), 1, date(2024, 2, 29)) == (29, False)


def test_telemetry_defaults_to_the_last_24_hours(client: FlaskClient, viewer, fleet) -> None:
    body = client.get(f"/api/v1/batteries/{B1}/telemetry", headers=viewer).get_json()
    assert set(body) == {"battery_id", "start", "end", "data", "count"}
    assert body["battery_id"] == B1
    start = datetime.fromisoformat(body["start"])
    end = datetime.fromisoformat(body["end"])
    assert end - start == timedelta(hours=24)
    assert abs(end - utc_now()) < timedelta(minutes=1)
    assert body["count"] == 60 == len(body["data"])
    assert set(body["data"][0]) == TELEMETRY_KEYS
    stamps = [point["timestamp"] for point in body["data"]]
    assert stamps == sorted(stamps)
    assert stamps[-1] == (fleet["now"]).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_telemetry_range_and_limit_keep_the_newest(client: FlaskClient, viewer, fleet) -> None:
    now = fleet["now"]
    start = (now - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    end = (now - timedelta(minutes=10)).isoformat()
    path = f"/api/v1/batteries/{B1}/telemetry"
    body = client.get(path, query_string={"start": start, "end": end}, headers=viewer).get_json()
    assert body["count"] == 21  # both ends included
    assert body["start"] == start
    limited = client.get(
        path, query_string={"start": start, "end": end, "limit": 5}, headers=viewer
    ).get_json()
    assert [p["timestamp"] for p in limited["data"]] == [p["timestamp"] for p in body["data"][-5:]]
    naive = client.get(
        path, query_string={"start": start[:-1], "end": end}, headers=viewer
    ).get_json()
    assert naive["count"] == 21  # a timestamp without zone is UTC
    backwards = client.get(path, query_string={"start": end, "end": start}, headers=viewer)
    assert_error(backwards, 422, "start: start is after end", "VALIDATION_ERROR")


def test_telemetry_of_an_unknown_battery(client: FlaskClient, viewer) -> None:
    response = client.get("/api/v1/batteries/BAT-NOPE/telemetry", headers=viewer)
    assert_error(response, 404, "Battery BAT-NOPE not found", "RESOURCE_NOT_FOUND")


def test_telemetry_needs_the_battery_not_just_its_readings(
    client: FlaskClient, viewer, fleet, migrated_url: str
) -> None:
    """Readings of a battery no birth has listed (the store keeps them) are not served, and a
    known battery with nothing in the range gets an empty series, not a 404."""
    unknown = "BAT-DC-CNX-01-UPS-09-STR-01-001"
    app = make_app(migrated_url)
    with app.app_context():
        db.session.execute(insert(Telemetry), [_reading(unknown, fleet["now"], 90.0)])
        db.session.commit()
    db.engine(app).dispose()
    response = client.get(f"/api/v1/batteries/{unknown}/telemetry", headers=viewer)
    assert_error(response, 404, f"Battery {unknown} not found", "RESOURCE_NOT_FOUND")
    empty = client.get(
        f"/api/v1/batteries/{B1}/telemetry",
        query_string={"end": "2020-01-01T00:00:00Z"},
        headers=viewer,
    )
    assert empty.status_code == 200
    assert (empty.get_json()["count"], empty.get_json()["data"]) == (0, [])


@pytest.mark.parametrize("role", ["viewer", "engineer", "admin"])
def test_every_role_reads_the_fleet(client: FlaskClient, fleet, role: str) -> None:
    user = {"viewer": "viewer1", "engineer": "engineer1", "admin": "admin"}[role]
    headers = bearer(login(client, user).get_json()["access_token"])
    for path in (
        "/api/v1/locations",
        f"/api/v1/locations/{SITE}",
        f"/api/v1/locations/{SITE}/batteries",
        "/api/v1/batteries",
        f"/api/v1/batteries/{B1}",
        f"/api/v1/batteries/{B1}/telemetry",
    ):
        assert client.get(path, headers=headers).status_code == 200, path


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/locations",
        f"/api/v1/locations/{SITE}",
        f"/api/v1/locations/{SITE}/batteries",
        "/api/v1/batteries",
        f"/api/v1/batteries/{B1}",
        f"/api/v1/batteries/{B1}/telemetry",
    ],
)
def test_fleet_reads_need_a_valid_token(client: FlaskClient, fleet, path: str) -> None:
    assert_error(client.get(path), 401, "Could not validate credentials", "UNAUTHORIZED")
    garbage = bearer("not.a.token")
    assert_error(
        client.get(path, headers=garbage), 401, "Could not validate credentials", "UNAUTHORIZED"
    )


def test_an_inactive_user_is_refused(app: Flask, client: FlaskClient, migrated_url, fleet) -> None:
    add_user(migrated_url, "leaver", "viewer")
    headers = bearer(login(client, "leaver").get_json()["access_token"])
    admin = bearer(login(client).get_json()["access_token"])
    client.patch("/api/v1/auth/users/leaver", json={"is_active": False}, headers=admin)
    response = client.get("/api/v1/batteries", headers=headers)
    assert_error(response, 401, "User account is inactive", "UNAUTHORIZED")


def test_requests_are_limited_per_user(migrated_url: str, fleet) -> None:
    app = make_app(migrated_url, BRM_RATE_LIMIT="3 per minute")
    try:
        client = app.test_client()
        viewer = bearer(login(client, "viewer1").get_json()["access_token"])
        engineer = bearer(login(client, "engineer1").get_json()["access_token"])
        for _ in range(3):
            assert client.get("/api/v1/locations", headers=viewer).status_code == 200
        refused = client.get("/api/v1/batteries", headers=viewer)
        assert_error(refused, 429, refused.get_json()["detail"], "RATE_LIMIT_EXCEEDED")
        assert "3 per 1 minute" in refused.get_json()["detail"]
        # Another user from the same address has an allowance of their own.
        assert client.get("/api/v1/locations", headers=engineer).status_code == 200
        # Health stays reachable for probes.
        assert client.get("/health").status_code == 200
    finally:
        db.engine(app).dispose()


def test_default_rate_limit_is_100_per_minute(app: Flask) -> None:
    assert app.config["BRM_RATE_LIMIT"] == "100 per minute"


def test_timestamps_are_utc_with_z() -> None:
    from central.wire_format import timestamp

    assert timestamp(datetime(2025, 11, 30, 8, 0, tzinfo=UTC)) == "2025-11-30T08:00:00Z"
    with_ms = datetime(2025, 11, 30, 8, 0, 0, 123456, tzinfo=UTC)
    assert timestamp(with_ms) == "2025-11-30T08:00:00Z"
    assert timestamp(with_ms, ms=True) == "2025-11-30T08:00:00.123Z"
