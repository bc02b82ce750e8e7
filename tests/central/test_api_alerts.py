"""``/api/v1/alerts``: fleet-api.md's Alerts section on a known set of alerts, on SQLite and
PostgreSQL: every filter and its counts, pagination bounds, statistics windows, the detail with
its battery's context, acknowledge and resolve field by field, every documented error with its
message, and each role."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import insert, select

from central.api.extensions import db
from central.api.live import socketio
from central.db.inventory import load_fleet_locations, upsert_birth
from central.db.models import Alert
from common import ids
from common.fleet import demo_fleet_path, load_fleet
from common.timeutil import utc_now
from tests.central.api_support import (
    TIMESTAMP,
    add_user,
    assert_error,
    bearer,
    logged_in,
    login,
    make_app,
)
from tests.central.fleet_support import SITE, demo_birth

BKK = "DC-BKK-01"
B1, B2, B3, B4, B5 = (ids.battery_id(SITE, 1, 1, p) for p in range(1, 6))
BKK_BATTERY = ids.battery_id(BKK, 1, 1, 7)  # its site never sent a birth: not in the inventory
ALERT_KEYS = {
    "id",
    "alert_id",
    "battery_id",
    "alert_type",
    "severity",
    "message",
    "threshold_value",
    "actual_value",
    "triggered_at",
    "resolved_at",
    "is_acknowledged",
    "acknowledged_at",
    "acknowledged_by",
    "acknowledgment_note",
    "created_at",
    "updated_at",
    "is_active",
    "is_pending",
}
CONTEXT_KEYS = {"battery_serial", "battery_position", "location_id", "location_name"}
NOT_VALID = "Could not validate credentials"
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)

# name: battery, location, type, severity, triggered (before now), resolved (before now or
# None: active), acknowledged by (or None), note. Newest first: A5 A1 A2 A3 A8 A4 A6 A7.
ALERTS: dict[str, tuple] = {
    "A1": (B1, SITE, "temperature_high", "warning", HOUR, None, None, None),
    "A2": (B2, SITE, "soh_degraded", "critical", 2 * HOUR, None, "engineer1", "ordered"),
    "A3": (B3, SITE, "voltage_high", "info", 3 * DAY, 2 * DAY, "admin", None),
    "A4": (B1, SITE, "temperature_high", "critical", 10 * DAY, 9 * DAY, None, None),
    "A5": (BKK_BATTERY, BKK, "communication_lost", "info", 30 * MINUTE, None, None, None),
    "A6": (B4, SITE, "resistance_drift", "warning", 20 * DAY, None, None, None),
    "A7": (B2, SITE, "rul_warning", "info", 400 * DAY, 390 * DAY, "admin", "x"),
    "A8": (B5, SITE, "voltage_low", "warning", 5 * DAY, 4 * DAY, None, None),
}  # fmt: skip
NEWEST_FIRST = ["A5", "A1", "A2", "A3", "A8", "A4", "A6", "A7"]


def _uuid(name: str) -> str:
    return f"00000000-0000-4000-8000-0000000000{name[1]}{name[1]}"


def _alert_id(name: str) -> str:
    battery, _, alert_type, *_ = ALERTS[name]
    return f"ALT-{battery}-{alert_type}-{name}"


def _row(name: str, now: datetime) -> dict:
    battery, location, alert_type, severity, ago, resolved, by, note = ALERTS[name]
    triggered = now - ago
    return {
        "id": _uuid(name),
        "alert_id": _alert_id(name),
        "battery_id": battery,
        "location_id": location,
        "alert_type": alert_type,
        "severity": severity,
        "message": f"{alert_type} on {battery}",
        "threshold_value": 45.0,
        "actual_value": 45.2,
        "triggered_at": triggered,
        "resolved_at": None if resolved is None else now - resolved,
        "is_acknowledged": by is not None,
        "acknowledged_at": None if by is None else triggered + timedelta(minutes=5),
        "acknowledged_by": by,
        "acknowledgment_note": note,
        "created_at": triggered,
        "updated_at": triggered + timedelta(minutes=5),
    }


def _z(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def now(migrated_url: str) -> datetime:
    """The demo locations, DC-CNX-01's inventory and the alerts above; the time they count from."""
    now = utc_now().replace(microsecond=0)
    app = make_app(migrated_url)
    with app.app_context():
        load_fleet_locations(db.session, load_fleet(demo_fleet_path()))
        upsert_birth(db.session, demo_birth())
        db.session.execute(insert(Alert), [_row(name, now) for name in ALERTS])
        db.session.commit()
    db.engine(app).dispose()
    add_user(migrated_url, "viewer1", "viewer")
    add_user(migrated_url, "engineer1", "engineer")
    return now


@pytest.fixture
def as_user(client: FlaskClient, now) -> Callable[[str], dict[str, str]]:
    """Bearer headers of a user, logged in once per test."""
    return logged_in(client)


@pytest.fixture
def viewer(as_user) -> dict[str, str]:
    return as_user("viewer1")


@pytest.fixture
def engineer(as_user) -> dict[str, str]:
    return as_user("engineer1")


def _names(body: dict) -> list[str]:
    by_id = {_alert_id(name): name for name in ALERTS}
    return [by_id[alert["alert_id"]] for alert in body["alerts"]]


def _counts(body: dict) -> tuple[int, int, int]:
    return body["total"], body["active_count"], body["pending_count"]


# ------------------------------------------------------------------------------------- list


def test_list_defaults_to_active_alerts_newest_first(client: FlaskClient, viewer, now) -> None:
    response = client.get("/api/v1/alerts", headers=viewer)
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"alerts", "total", "active_count", "pending_count"}
    assert _names(body) == ["A5", "A1", "A2", "A6"]
    assert _counts(body) == (4, 4, 3)
    assert all(set(alert) == ALERT_KEYS for alert in body["alerts"])
    a2 = body["alerts"][2]
    triggered = now - timedelta(hours=2)
    assert a2 == {
        "id": _uuid("A2"),
        "alert_id": _alert_id("A2"),
        "battery_id": B2,
        "alert_type": "soh_degraded",
        "severity": "critical",
        "message": f"soh_degraded on {B2}",
        "threshold_value": 45.0,
        "actual_value": 45.2,
        "triggered_at": _z(triggered),
        "resolved_at": None,
        "is_acknowledged": True,
        "acknowledged_at": _z(triggered + timedelta(minutes=5)),
        "acknowledged_by": "engineer1",
        "acknowledgment_note": "ordered",
        "created_at": _z(triggered),
        "updated_at": _z(triggered + timedelta(minutes=5)),
        "is_active": True,
        "is_pending": False,
    }
    a1 = body["alerts"][1]
    assert (a1["is_active"], a1["is_pending"], a1["acknowledged_at"]) == (True, True, None)


@pytest.mark.parametrize(
    ("query", "names", "counts"),
    [
        ({"active_only": "false"}, NEWEST_FIRST, (8, 4, 3)),
        ({"active_only": "true"}, ["A5", "A1", "A2", "A6"], (4, 4, 3)),
        (
            {"location_id": SITE, "active_only": "false"},
            ["A1", "A2", "A3", "A8", "A4", "A6", "A7"],
            (7, 3, 2),
        ),
        ({"location_id": BKK}, ["A5"], (1, 1, 1)),
        ({"location_id": "DC-XXX-99"}, [], (0, 0, 0)),
        ({"severity": "critical", "active_only": "false"}, ["A2", "A4"], (2, 1, 0)),
        ({"severity": "warning"}, ["A1", "A6"], (2, 2, 2)),
        ({"severity": "info"}, ["A5"], (1, 1, 1)),
        ({"alert_type": "temperature_high", "active_only": "false"}, ["A1", "A4"], (2, 1, 1)),
        ({"alert_type": "no_such_type"}, [], (0, 0, 0)),
        ({"battery_id": B1, "active_only": "false"}, ["A1", "A4"], (2, 1, 1)),
        ({"battery_id": B2}, ["A2"], (1, 1, 0)),
        ({"battery_id": B2, "location_id": BKK}, [], (0, 0, 0)),
        ({"battery_id": "BAT-NOPE"}, [], (0, 0, 0)),
        # active_count and pending_count ignore active_only and acknowledged
        ({"acknowledged": "true", "active_only": "false"}, ["A2", "A3", "A7"], (3, 4, 3)),
        ({"acknowledged": "true"}, ["A2"], (1, 4, 3)),
        ({"acknowledged": "false"}, ["A5", "A1", "A6"], (3, 4, 3)),
        (
            {"acknowledged": "false", "active_only": "false"},
            ["A5", "A1", "A8", "A4", "A6"],
            (5, 4, 3),
        ),
        (
            {"location_id": SITE, "severity": "warning", "acknowledged": "false",
             "active_only": "false"},
            ["A1", "A8", "A6"],
            (3, 2, 2),
        ),
    ],
)  # fmt: skip
def test_list_filters_and_counts(client: FlaskClient, viewer, query, names, counts) -> None:
    body = client.get("/api/v1/alerts", query_string=query, headers=viewer).get_json()
    assert _names(body) == names
    assert _counts(body) == counts


@pytest.mark.parametrize(
    ("start", "end", "names", "counts"),
    [
        (timedelta(days=4), timedelta(minutes=90), ["A2", "A3"], (2, 1, 0)),
        (timedelta(days=6), None, ["A5", "A1", "A2", "A3", "A8"], (5, 3, 2)),
        (None, timedelta(days=7), ["A4", "A6", "A7"], (3, 1, 1)),
    ],
)
def test_list_filters_by_trigger_time(
    client: FlaskClient, viewer, now, start, end, names, counts
) -> None:
    query = {"active_only": "false"}
    if start is not None:
        query["start_date"] = _z(now - start)
    if end is not None:
        query["end_date"] = _z(now - end)
    body = client.get("/api/v1/alerts", query_string=query, headers=viewer).get_json()
    assert _names(body) == names
    assert _counts(body) == counts


def test_trigger_time_bounds_are_inclusive_and_naive_is_utc(
    client: FlaskClient, viewer, now
) -> None:
    a3, a2 = now - timedelta(days=3), now - timedelta(hours=2)
    forms = [
        (_z(a3), _z(a2)),
        (a3.strftime("%Y-%m-%dT%H:%M:%S"), a2.strftime("%Y-%m-%dT%H:%M:%S")),  # no zone: UTC
        ((a3 + timedelta(hours=7)).strftime("%Y-%m-%dT%H:%M:%S+07:00"), _z(a2)),
    ]
    for start, end in forms:
        query = {"active_only": "false", "start_date": start, "end_date": end}
        body = client.get("/api/v1/alerts", query_string=query, headers=viewer).get_json()
        assert _names(body) == ["A2", "A3"], (start, end)
    just_after = {"active_only": "false", "start_date": _z(a3 + timedelta(seconds=1))}
    body = client.get("/api/v1/alerts", query_string=just_after, headers=viewer).get_json()
    assert "A3" not in _names(body)


def test_start_date_after_end_date_is_refused(client: FlaskClient, viewer, now) -> None:
    query = {"start_date": _z(now), "end_date": _z(now - timedelta(days=1))}
    response = client.get("/api/v1/alerts", query_string=query, headers=viewer)
    body = assert_error(
        response, 422, "start_date: start_date is after end_date", "VALIDATION_ERROR"
    )
    assert body["error"]["details"][0]["field"] == "start_date"


def test_list_pagination(client: FlaskClient, viewer) -> None:
    def page(**query) -> dict:
        query["active_only"] = "false"
        return client.get("/api/v1/alerts", query_string=query, headers=viewer).get_json()

    assert _names(page(limit=3)) == NEWEST_FIRST[:3]
    assert _names(page(skip=2, limit=3)) == NEWEST_FIRST[2:5]
    assert _names(page(skip=7)) == ["A7"]
    assert _counts(page(skip=7)) == (8, 4, 3)  # counts do not depend on the page
    assert page(skip=8) == {"alerts": [], "total": 8, "active_count": 4, "pending_count": 3}
    assert _names(page(limit=1000)) == NEWEST_FIRST
    assert _names(page(limit=1)) == ["A5"]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/alerts?severity=urgent", "severity"),
        ("/api/v1/alerts?severity=CRITICAL", "severity"),
        ("/api/v1/alerts?limit=0", "limit"),
        ("/api/v1/alerts?limit=1001", "limit"),
        ("/api/v1/alerts?skip=-1", "skip"),
        ("/api/v1/alerts?active_only=perhaps", "active_only"),
        ("/api/v1/alerts?acknowledged=maybe", "acknowledged"),
        ("/api/v1/alerts?start_date=yesterday", "start_date"),
        ("/api/v1/alerts?end_date=2025-13-01T00:00:00Z", "end_date"),
        ("/api/v1/alerts?start_date=0001-01-01T00:00:00Z", "start_date"),
        (f"/api/v1/alerts?location_id={'X' * 65}", "location_id"),
        (f"/api/v1/alerts?battery_id={'X' * 65}", "battery_id"),
        ("/api/v1/alerts/stats?days=0", "days"),
        ("/api/v1/alerts/stats?days=366", "days"),
        ("/api/v1/alerts/stats?days=week", "days"),
    ],
)
def test_parameter_bounds(client: FlaskClient, viewer, path: str, field: str) -> None:
    response = client.get(path, headers=viewer)
    body = assert_error(response, 422, response.get_json()["detail"], "VALIDATION_ERROR")
    assert [d["field"] for d in body["error"]["details"]] == [field]
    assert body["error"]["details"][0]["loc"] == ["query", field]


# ------------------------------------------------------------------------------------ stats


def test_stats_of_the_last_seven_days(client: FlaskClient, viewer) -> None:
    response = client.get("/api/v1/alerts/stats", headers=viewer)
    assert response.status_code == 200
    assert response.get_json() == {
        "total_alerts": 5,  # A5 A1 A2 A3 A8
        "active_alerts": 4,  # A5 A1 A2, and A6 triggered 20 days ago
        "critical_alerts": 1,  # A2
        "warning_alerts": 2,  # A1 A6
        "info_alerts": 1,  # A5
        "acknowledged_alerts": 2,  # A2 A3
        "alerts_by_type": {
            "communication_lost": 1,
            "soh_degraded": 1,
            "temperature_high": 1,
            "voltage_high": 1,
            "voltage_low": 1,
        },
        "alerts_by_location": {BKK: 1, SITE: 4},
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            {"days": 1},
            {
                "total_alerts": 3,
                "acknowledged_alerts": 1,
                "alerts_by_type": {
                    "communication_lost": 1, "soh_degraded": 1, "temperature_high": 1,
                },
                "alerts_by_location": {BKK: 1, SITE: 2},
            },
        ),
        (
            {"days": 30},
            {
                "total_alerts": 7,
                "acknowledged_alerts": 2,
                "alerts_by_type": {
                    "temperature_high": 2, "communication_lost": 1, "resistance_drift": 1,
                    "soh_degraded": 1, "voltage_high": 1, "voltage_low": 1,
                },
                "alerts_by_location": {BKK: 1, SITE: 6},
            },
        ),
        (
            {"days": 365},
            {
                "total_alerts": 7,  # A7, 400 days old, is outside even the longest window
                "acknowledged_alerts": 2,
                "alerts_by_type": {
                    "temperature_high": 2, "communication_lost": 1, "resistance_drift": 1,
                    "soh_degraded": 1, "voltage_high": 1, "voltage_low": 1,
                },
                "alerts_by_location": {BKK: 1, SITE: 6},
            },
        ),
    ],
)  # fmt: skip
def test_stats_windows(client: FlaskClient, viewer, query, expected) -> None:
    body = client.get("/api/v1/alerts/stats", query_string=query, headers=viewer).get_json()
    # the active counts are of now, whatever the window
    active = {"active_alerts": 4, "critical_alerts": 1, "warning_alerts": 2, "info_alerts": 1}
    assert body == {**expected, **active}
    # most frequent type first
    assert list(body["alerts_by_type"]) == list(expected["alerts_by_type"])


def test_stats_of_one_location(client: FlaskClient, viewer) -> None:
    query = {"location_id": SITE, "days": 7}
    body = client.get("/api/v1/alerts/stats", query_string=query, headers=viewer).get_json()
    assert body == {
        "total_alerts": 4,  # A1 A2 A3 A8
        "active_alerts": 3,  # A1 A2 A6
        "critical_alerts": 1,
        "warning_alerts": 2,
        "info_alerts": 0,
        "acknowledged_alerts": 2,
        "alerts_by_type": {
            "soh_degraded": 1,
            "temperature_high": 1,
            "voltage_high": 1,
            "voltage_low": 1,
        },
        "alerts_by_location": {SITE: 4},
    }
    unknown = client.get("/api/v1/alerts/stats?location_id=DC-XXX-99", headers=viewer)
    assert unknown.get_json() == {
        "total_alerts": 0,
        "active_alerts": 0,
        "critical_alerts": 0,
        "warning_alerts": 0,
        "info_alerts": 0,
        "acknowledged_alerts": 0,
        "alerts_by_type": {},
        "alerts_by_location": {},
    }


# ----------------------------------------------------------------------------------- detail


def test_detail_by_alert_id_or_by_id_with_battery_context(client: FlaskClient, viewer) -> None:
    listed = client.get("/api/v1/alerts", headers=viewer).get_json()["alerts"]
    a1 = next(alert for alert in listed if alert["alert_id"] == _alert_id("A1"))
    by_alert_id = client.get(f"/api/v1/alerts/{_alert_id('A1')}", headers=viewer)
    assert by_alert_id.status_code == 200
    body = by_alert_id.get_json()
    assert set(body) == ALERT_KEYS | CONTEXT_KEYS
    assert body == {
        **a1,
        "battery_serial": "CSB-11001",
        "battery_position": 1,
        "location_id": SITE,
        "location_name": "Chiang Mai Data Center",
    }
    assert client.get(f"/api/v1/alerts/{_uuid('A1')}", headers=viewer).get_json() == body
    b5 = client.get(f"/api/v1/alerts/{_alert_id('A8')}", headers=viewer).get_json()
    assert (b5["battery_serial"], b5["battery_position"]) == ("CSB-11005", 5)
    assert (b5["is_active"], b5["resolved_at"] is not None) == (False, True)


def test_detail_of_a_battery_missing_from_the_inventory(client: FlaskClient, viewer) -> None:
    body = client.get(f"/api/v1/alerts/{_alert_id('A5')}", headers=viewer).get_json()
    assert body["battery_id"] == BKK_BATTERY
    assert (body["battery_serial"], body["battery_position"]) == (None, None)
    assert (body["location_id"], body["location_name"]) == (BKK, "Bangkok Data Center")


@pytest.mark.parametrize(
    ("method", "suffix"), [("get", ""), ("post", "/acknowledge"), ("post", "/resolve")]
)
def test_unknown_alert(client: FlaskClient, engineer, method: str, suffix: str) -> None:
    for key in ("ALT-NOPE", "00000000-0000-4000-8000-000000000000"):
        kwargs = {"json": {}} if suffix == "/acknowledge" else {}
        response = getattr(client, method)(
            f"/api/v1/alerts/{key}{suffix}", headers=engineer, **kwargs
        )
        assert_error(response, 404, f"Alert {key} not found", "RESOURCE_NOT_FOUND")


# ------------------------------------------------------------------------------ acknowledge


def _window(response, started: datetime, field: str) -> datetime:
    value = response.get_json()[field]
    assert TIMESTAMP.match(value), value
    stamp = datetime.fromisoformat(value)
    assert started.replace(microsecond=0) <= stamp <= utc_now()
    return stamp


@pytest.mark.parametrize("user", ["engineer1", "admin"])
def test_acknowledge(client: FlaskClient, as_user, user: str) -> None:
    headers = as_user(user)
    before = client.get(f"/api/v1/alerts/{_alert_id('A1')}", headers=headers).get_json()
    started = utc_now()
    response = client.post(
        f"/api/v1/alerts/{_alert_id('A1')}/acknowledge",
        json={"note": "Battery temperature normalized after HVAC repair"},
        headers=headers,
    )
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == ALERT_KEYS
    at = _window(response, started, "acknowledged_at")
    unchanged = ALERT_KEYS - {
        "is_acknowledged",
        "acknowledged_at",
        "acknowledged_by",
        "acknowledgment_note",
        "updated_at",
        "is_pending",
    }
    assert {k: body[k] for k in unchanged} == {k: before[k] for k in unchanged}
    assert body["is_acknowledged"] is True
    assert body["acknowledged_by"] == user
    assert body["acknowledgment_note"] == "Battery temperature normalized after HVAC repair"
    assert body["updated_at"] == body["acknowledged_at"] == _z(at)
    assert body["updated_at"] != before["updated_at"]
    assert (body["is_active"], body["is_pending"], body["resolved_at"]) == (True, False, None)
    # the stored alert says the same, and the list's pending count drops
    after = client.get(f"/api/v1/alerts/{_alert_id('A1')}", headers=headers).get_json()
    assert {k: after[k] for k in ALERT_KEYS} == body
    listed = client.get("/api/v1/alerts", headers=headers).get_json()
    assert _counts(listed) == (4, 4, 2)


def test_acknowledging_twice_is_refused_and_keeps_the_first(client: FlaskClient, engineer) -> None:
    path = f"/api/v1/alerts/{_alert_id('A1')}/acknowledge"
    first = client.post(path, json={"note": "first"}, headers=engineer).get_json()
    again = client.post(path, json={"note": "second"}, headers=engineer)
    assert_error(again, 400, "Alert has already been acknowledged", "BAD_REQUEST")
    # acknowledged already in the data set, and by its uuid
    already = client.post(f"/api/v1/alerts/{_uuid('A2')}/acknowledge", json={}, headers=engineer)
    assert_error(already, 400, "Alert has already been acknowledged", "BAD_REQUEST")
    now = client.get(f"/api/v1/alerts/{_alert_id('A1')}", headers=engineer).get_json()
    assert now["acknowledgment_note"] == "first"
    assert now["acknowledged_at"] == first["acknowledged_at"]


@pytest.mark.parametrize("body", [{}, {"note": None}, {"note": ""}, {"note": "n" * 2000}])
def test_the_note_is_optional(client: FlaskClient, engineer, body: dict) -> None:
    response = client.post(f"/api/v1/alerts/{_uuid('A6')}/acknowledge", json=body, headers=engineer)
    assert response.status_code == 200
    result = response.get_json()
    assert result["alert_id"] == _alert_id("A6")
    assert result["acknowledgment_note"] == body.get("note")
    assert (result["is_acknowledged"], result["acknowledged_by"]) == (True, "engineer1")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"json": {"note": "n" * 2001}}, "note: String should have at most 2000 characters"),
        ({"json": {"note": 5}}, "note: Input should be a valid string"),
        ({"json": ["note"]}, "body: Expected a JSON object"),
        ({}, "body: Expected a JSON object"),
        ({"data": "{not json", "content_type": "application/json"}, "body: Expected a JSON object"),
    ],
)
def test_acknowledge_body_errors(client: FlaskClient, engineer, kwargs, message) -> None:
    path = f"/api/v1/alerts/{_alert_id('A1')}/acknowledge"
    assert_error(client.post(path, headers=engineer, **kwargs), 422, message, "VALIDATION_ERROR")
    assert (
        client.get(f"/api/v1/alerts/{_alert_id('A1')}", headers=engineer).get_json()[
            "is_acknowledged"
        ]
        is False
    )


def test_a_resolved_alert_may_still_be_acknowledged(client: FlaskClient, engineer) -> None:
    response = client.post(
        f"/api/v1/alerts/{_alert_id('A4')}/acknowledge", json={"note": "seen"}, headers=engineer
    )
    assert response.status_code == 200
    body = response.get_json()
    assert (body["is_acknowledged"], body["is_active"], body["is_pending"]) == (True, False, False)
    assert body["resolved_at"] is not None


# ---------------------------------------------------------------------------------- resolve


@pytest.mark.parametrize("user", ["engineer1", "admin"])
def test_resolve(client: FlaskClient, as_user, user: str) -> None:
    headers = as_user(user)
    before = client.get(f"/api/v1/alerts/{_alert_id('A1')}", headers=headers).get_json()
    started = utc_now()
    response = client.post(f"/api/v1/alerts/{_alert_id('A1')}/resolve", headers=headers)
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == ALERT_KEYS
    at = _window(response, started, "resolved_at")
    unchanged = ALERT_KEYS - {"resolved_at", "updated_at", "is_active", "is_pending"}
    assert {k: body[k] for k in unchanged} == {k: before[k] for k in unchanged}
    assert body["updated_at"] == body["resolved_at"] == _z(at)
    assert (body["is_active"], body["is_pending"], body["is_acknowledged"]) == (False, False, False)
    listed = client.get("/api/v1/alerts", headers=headers).get_json()
    assert _names(listed) == ["A5", "A2", "A6"]
    assert _counts(listed) == (3, 3, 2)


def test_resolve_keeps_the_acknowledgement(client: FlaskClient, engineer) -> None:
    body = client.post(f"/api/v1/alerts/{_uuid('A2')}/resolve", headers=engineer).get_json()
    assert body["alert_id"] == _alert_id("A2")
    assert (body["is_acknowledged"], body["acknowledged_by"]) == (True, "engineer1")
    assert body["acknowledgment_note"] == "ordered"
    assert body["is_active"] is False


def test_resolving_twice_is_refused(app: Flask, client: FlaskClient, engineer) -> None:
    path = f"/api/v1/alerts/{_alert_id('A1')}/resolve"
    first = client.post(path, headers=engineer).get_json()
    assert_error(
        client.post(path, headers=engineer), 400, "Alert has already been resolved", "BAD_REQUEST"
    )
    resolved = client.post(f"/api/v1/alerts/{_alert_id('A3')}/resolve", headers=engineer)
    assert_error(resolved, 400, "Alert has already been resolved", "BAD_REQUEST")
    with app.app_context():
        stored = db.session.scalars(select(Alert).where(Alert.id == _uuid("A1"))).one()
        assert _z(stored.resolved_at) == first["resolved_at"]


# ------------------------------------------------------------------------------------ roles


def test_a_viewer_reads_but_may_not_act(client: FlaskClient, viewer, engineer) -> None:
    for path in ("/api/v1/alerts", "/api/v1/alerts/stats", f"/api/v1/alerts/{_alert_id('A1')}"):
        assert client.get(path, headers=viewer).status_code == 200, path
    for key in (_alert_id("A1"), "ALT-NOPE"):  # the role is checked before the alert is found
        ack = client.post(f"/api/v1/alerts/{key}/acknowledge", json={"note": "n"}, headers=viewer)
        assert_error(ack, 403, "Engineer access required", "FORBIDDEN")
        resolve = client.post(f"/api/v1/alerts/{key}/resolve", headers=viewer)
        assert_error(resolve, 403, "Engineer access required", "FORBIDDEN")
    a1 = client.get(f"/api/v1/alerts/{_alert_id('A1')}", headers=engineer).get_json()
    assert (a1["is_acknowledged"], a1["is_active"]) == (False, True)


@pytest.mark.parametrize("user", ["viewer1", "engineer1", "admin"])
def test_every_role_reads_alerts(client: FlaskClient, as_user, user: str) -> None:
    headers = as_user(user)
    for path in ("/api/v1/alerts", "/api/v1/alerts/stats", f"/api/v1/alerts/{_alert_id('A1')}"):
        assert client.get(path, headers=headers).status_code == 200, path


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/alerts"),
        ("get", "/api/v1/alerts/stats"),
        ("get", "/api/v1/alerts/ALT-X"),
        ("post", "/api/v1/alerts/ALT-X/acknowledge"),
        ("post", "/api/v1/alerts/ALT-X/resolve"),
    ],
)
def test_alerts_need_a_valid_token(client: FlaskClient, now, method: str, path: str) -> None:
    call = getattr(client, method)
    assert_error(call(path, json={}), 401, NOT_VALID, "UNAUTHORIZED")
    assert_error(call(path, json={}, headers=bearer("not.a.token")), 401, NOT_VALID, "UNAUTHORIZED")


def test_an_inactive_engineer_is_refused(
    client: FlaskClient, migrated_url: str, as_user, now
) -> None:
    add_user(migrated_url, "leaver", "engineer")
    headers = as_user("leaver")
    client.patch("/api/v1/auth/users/leaver", json={"is_active": False}, headers=as_user("admin"))
    response = client.post(
        f"/api/v1/alerts/{_alert_id('A1')}/acknowledge", json={}, headers=headers
    )
    assert_error(response, 401, "User account is inactive", "UNAUTHORIZED")


# ---------------------------------------------------------------------------------- OpenAPI


def test_openapi_declares_the_alert_operations(client: FlaskClient) -> None:
    document = client.get("/api/v1/openapi.json").get_json()
    paths = document["paths"]
    expected = {
        ("get", "/api/v1/alerts"): {"200", "401", "422", "429"},
        ("get", "/api/v1/alerts/stats"): {"200", "401", "422", "429"},
        ("get", "/api/v1/alerts/{alert_id}"): {"200", "401", "404", "422", "429"},
        ("post", "/api/v1/alerts/{alert_id}/acknowledge"): {
            "200", "400", "401", "403", "404", "422", "429",
        },
        ("post", "/api/v1/alerts/{alert_id}/resolve"): {
            "200", "400", "401", "403", "404", "422", "429",
        },
    }  # fmt: skip
    for (method, path), statuses in expected.items():
        operation = paths[path][method]
        assert set(operation["responses"]) == statuses, path
        assert operation["security"] == [{"bearerAuth": []}]
    listing = paths["/api/v1/alerts"]["get"]
    params = {p["name"]: p["schema"] for p in listing["parameters"]}
    assert params["severity"] == {"type": "string", "enum": ["info", "warning", "critical"]}
    assert params["limit"] == {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}
    assert params["active_only"] == {"type": "boolean", "default": True}
    assert params["acknowledged"] == {"type": "boolean"}
    assert params["start_date"]["format"] == "date-time"
    assert "ignoring active_only and acknowledged" in listing["description"]
    stats = {p["name"]: p["schema"] for p in paths["/api/v1/alerts/stats"]["get"]["parameters"]}
    assert stats["days"] == {"type": "integer", "minimum": 1, "maximum": 365, "default": 7}
    acknowledge = paths["/api/v1/alerts/{alert_id}/acknowledge"]["post"]
    assert acknowledge["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AcknowledgeBody"
    }
    ok = paths["/api/v1/alerts/{alert_id}"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AlertDetail"
    }


def test_acknowledge_and_resolve_reach_live_subscribers(
    app: Flask, client: FlaskClient, engineer, now
) -> None:
    """An engineer's acknowledge and resolve go out as ``alert`` events to the location's room."""
    token = login(client, "viewer1").get_json()["access_token"]
    live = socketio.test_client(app, auth={"token": token})
    try:
        assert [e["name"] for e in live.get_received()] == ["connected"]
        live.emit("subscribe_location", {"location_id": SITE})
        deadline = time.monotonic() + 5
        while not (received := live.get_received()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [e["name"] for e in received] == ["subscribed"]
        alert_id = _alert_id("A1")
        client.post(f"/api/v1/alerts/{alert_id}/acknowledge", json={"note": "n"}, headers=engineer)
        client.post(f"/api/v1/alerts/{alert_id}/resolve", headers=engineer)
        events = [(e["name"], e["args"][0]) for e in live.get_received()]
        assert [name for name, _ in events] == ["alert", "alert"]
        first, second = (payload for _, payload in events)
        assert (first["alert_id"], first["is_acknowledged"], first["is_active"]) == (
            alert_id,
            True,
            True,
        )
        assert first["location_id"] == SITE
        assert (second["is_active"], second["resolved_at"] is not None) == (False, True)
    finally:
        live.disconnect()
