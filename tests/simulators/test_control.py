"""The fault-control API, in-process over real HTTP, against the real twin."""

import http.client
import json
import math
from http import HTTPStatus

import pytest

from common.fleet import demo_fleet_path, load_fleet
from simulators.clock import SimClock
from simulators.control import ControlApi, ControlError, ControlServer
from simulators.live import LiveSite
from simulators.twin import SiteTwin
from tests.support import QUIET_EPOCH

BAT = "BAT-DC-CNX-01-UPS-01-STR-01-007"


@pytest.fixture
def api():
    location = load_fleet(demo_fleet_path()).get("DC-CNX-01")
    return ControlApi(
        {"DC-CNX-01": LiveSite(SiteTwin(location, seed=1), SimClock(epoch=QUIET_EPOCH), 0.0)}
    )


def _temperature(document, k=0, b=6):
    return document["temperature"][k][b]


def test_snapshot_describes_the_whole_site(api):
    status, document = api.handle("GET", "/sites/DC-CNX-01/snapshot", None)
    assert status == HTTPStatus.OK
    assert len(document["battery_ids"]) == 6
    assert len(document["battery_ids"][0]) == 36
    assert document["battery_ids"][0][6] == BAT
    assert sum(document["voltage"][0]) == pytest.approx(486.0, abs=3.0)
    assert all(13.0 < v < 14.0 for row in document["voltage"] for v in row)
    json.dumps(document, allow_nan=False)  # standard JSON: no NaN anywhere


def test_inject_shows_then_clear_removes(api):
    _, before = api.handle("GET", "/sites/DC-CNX-01/snapshot", None)
    status, fault = api.handle(
        "POST",
        "/sites/DC-CNX-01/faults",
        {"kind": "overheating", "target": BAT, "params": {"delta_c": 20}},
    )
    assert status == HTTPStatus.CREATED
    assert fault["kind"] == "overheating"
    _, during = api.handle("GET", "/sites/DC-CNX-01/snapshot", None)
    assert _temperature(during) == pytest.approx(_temperature(before) + 20, abs=1.0)
    _, listing = api.handle("GET", "/sites/DC-CNX-01/faults", None)
    assert [f["id"] for f in listing["faults"]] == [fault["id"]]
    status, cleared = api.handle("DELETE", f"/sites/DC-CNX-01/faults/{fault['id']}", None)
    assert status == HTTPStatus.OK
    assert cleared["end"] is not None
    _, after = api.handle("GET", "/sites/DC-CNX-01/snapshot", None)
    assert _temperature(after) == pytest.approx(_temperature(before), abs=1.0)


def test_a_fault_may_have_started_in_the_past(api):
    """A block that has aged three times as fast for a year is already a year worse today."""
    _, before = api.handle("GET", "/sites/DC-CNX-01/snapshot", None)
    status, fault = api.handle(
        "POST",
        "/sites/DC-CNX-01/faults",
        {
            "kind": "accelerated_ageing",
            "target": BAT,
            "params": {"factor": 3},
            "start": "2025-01-01T00:00:00Z",
        },
    )
    assert status == HTTPStatus.CREATED
    assert fault["start"] == 1_735_689_600.0
    _, after = api.handle("GET", "/sites/DC-CNX-01/snapshot", None)
    lost = before["soh_pct"][0][6] - after["soh_pct"][0][6]
    assert 2.0 < lost < 6.0  # two more years' worth of a ~1.7 %/year fade, give or take noise
    assert after["soh_pct"][0][5] == pytest.approx(before["soh_pct"][0][5], abs=2.0)
    _, seconds = api.handle(
        "POST",
        "/sites/DC-CNX-01/faults",
        {"kind": "overheating", "target": BAT, "start": QUIET_EPOCH - 3600},
    )
    assert seconds["start"] == QUIET_EPOCH - 3600


def test_a_replaced_block_reads_new_and_the_replacement_cannot_be_cleared(api):
    """A block aged fast for a year is swapped: the snapshot reads the new one, the fault says
    what it is, and the ageing fault, the old block's, ended with it."""
    faults = "/sites/DC-CNX-01/faults"
    _, ageing = api.handle(
        "POST",
        faults,
        {"kind": "accelerated_ageing", "target": BAT, "params": {"factor": 8}, "start": 0},
    )
    _, old = api.handle("GET", "/sites/DC-CNX-01/snapshot", None)
    assert old["soh_pct"][0][6] < 80.0
    status, fault = api.handle("POST", faults, {"kind": "block_replaced", "target": BAT})
    assert status == HTTPStatus.CREATED
    assert fault["end"] == fault["start"]
    assert set(fault["params"]) == {"soh_pct", "resistance_ohm"}
    _, new = api.handle("GET", "/sites/DC-CNX-01/snapshot", None)
    assert new["soh_pct"][0][6] == pytest.approx(fault["params"]["soh_pct"], abs=1.5)
    assert new["internal_resistance"][0][6] == pytest.approx(
        fault["params"]["resistance_ohm"], rel=0.05
    )
    assert new["internal_resistance"][0][6] < 0.8 * old["internal_resistance"][0][6]
    _, listing = api.handle("GET", faults, None)
    ends = {f["id"]: f["end"] for f in listing["faults"]}
    assert ends == {ageing["id"]: fault["start"], fault["id"]: fault["start"]}
    with pytest.raises(ControlError) as refused:
        api.handle("DELETE", f"{faults}/{fault['id']}", None)
    assert (refused.value.status, refused.value.code) == (HTTPStatus.CONFLICT, "ALREADY_CLEARED")


def test_dropout_reads_null_not_nan(api):
    api.handle("POST", "/sites/DC-CNX-01/faults", {"kind": "sensor_dropout", "target": BAT})
    _, document = api.handle("GET", "/sites/DC-CNX-01/snapshot", None)
    assert document["voltage"][0][6] is None
    assert document["voltage"][0][5] is not None and not math.isnan(document["voltage"][0][5])


def test_clear_all(api):
    for target in (BAT, "BAT-DC-CNX-01-UPS-02-STR-01-001"):
        api.handle("POST", "/sites/DC-CNX-01/faults", {"kind": "resistance_jump", "target": target})
    status, result = api.handle("DELETE", "/sites/DC-CNX-01/faults", None)
    assert status == HTTPStatus.OK
    assert len(result["cleared"]) == 2


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("GET", "/sites/DC-XXX-01/snapshot", None, 404, "RESOURCE_NOT_FOUND"),
        ("GET", "/nowhere", None, 404, "RESOURCE_NOT_FOUND"),
        ("PUT", "/sites/DC-CNX-01/faults", None, 405, "METHOD_NOT_ALLOWED"),
        ("POST", "/sites/DC-CNX-01/faults", None, 422, "VALIDATION_ERROR"),
        (
            "POST",
            "/sites/DC-CNX-01/faults",
            {"kind": "melting", "target": BAT},
            422,
            "VALIDATION_ERROR",
        ),
        (
            "POST",
            "/sites/DC-CNX-01/faults",
            {"kind": "overheating", "target": "BAT-1"},
            422,
            "VALIDATION_ERROR",
        ),
        (
            "POST",
            "/sites/DC-CNX-01/faults",
            {"kind": "overheating", "target": "BAT-DC-BKK-01-UPS-01-STR-01-001"},
            422,
            "VALIDATION_ERROR",
        ),
        (
            "POST",
            "/sites/DC-CNX-01/faults",
            {"kind": "overheating", "target": BAT, "params": {"delta_c": [1]}},
            422,
            "VALIDATION_ERROR",
        ),
        (
            "POST",
            "/sites/DC-CNX-01/faults",
            {"kind": "overheating", "target": BAT, "params": {"delta_c": -5}},
            422,
            "VALIDATION_ERROR",
        ),
        ("DELETE", "/sites/DC-CNX-01/faults/999", None, 404, "RESOURCE_NOT_FOUND"),
        (
            "POST",
            "/sites/DC-CNX-01/faults",
            {"kind": "accelerated_ageing", "target": BAT, "start": QUIET_EPOCH + 86_400},
            422,
            "VALIDATION_ERROR",
        ),
        (
            "POST",
            "/sites/DC-CNX-01/faults",
            {"kind": "accelerated_ageing", "target": BAT, "start": "last year"},
            422,
            "VALIDATION_ERROR",
        ),
        (
            "POST",
            "/sites/DC-CNX-01/faults",
            {"kind": "accelerated_ageing", "target": BAT, "start": True},
            422,
            "VALIDATION_ERROR",
        ),
        (
            "POST",
            "/sites/DC-CNX-01/faults",
            {"kind": "accelerated_ageing", "target": BAT, "params": {"start": QUIET_EPOCH}},
            422,
            "VALIDATION_ERROR",
        ),
    ],
)
def test_refusals_carry_status_and_code(api, method, path, body, status, code):
    with pytest.raises(ControlError) as info:
        api.handle(method, path, body)
    assert info.value.status == status
    assert info.value.code == code


def test_clearing_twice_is_a_conflict(api):
    _, fault = api.handle(
        "POST", "/sites/DC-CNX-01/faults", {"kind": "no_response", "target": "DC-CNX-01"}
    )
    api.handle("DELETE", f"/sites/DC-CNX-01/faults/{fault['id']}", None)
    with pytest.raises(ControlError) as info:
        api.handle("DELETE", f"/sites/DC-CNX-01/faults/{fault['id']}", None)
    assert info.value.status == HTTPStatus.CONFLICT


@pytest.fixture
def server(api):
    control = ControlServer(api.sites, "127.0.0.1", 0)
    control.start()
    yield control
    control.stop()


def _http(server, method, path, body=b"", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    document = json.loads(response.read())
    conn.close()
    return response.status, document


@pytest.mark.integration
def test_http_envelope_on_bad_input(server):
    status, document = _http(server, "POST", "/sites/DC-CNX-01/faults", b"{not json")
    assert status == 400
    assert document["error"]["code"] == "BAD_REQUEST"
    assert document["detail"] == document["error"]["message"]
    status, document = _http(
        server, "POST", "/sites/DC-CNX-01/faults", b"x", {"Content-Length": str(10**9)}
    )
    assert status == 413
    status, document = _http(server, "GET", "/health")
    assert (status, document) == (200, {"status": "ok", "sites": ["DC-CNX-01"]})


@pytest.mark.integration
def test_http_inject_round_trip(server):
    body = json.dumps({"kind": "shorted_cell", "target": BAT}).encode()
    status, fault = _http(
        server, "POST", "/sites/DC-CNX-01/faults", body, {"Content-Type": "application/json"}
    )
    assert status == 201
    status, document = _http(server, "GET", "/sites/DC-CNX-01/snapshot")
    assert status == 200
    assert document["voltage"][0][6] < 12.0  # one cell of ~2.2 V lost on float
    status, _ = _http(server, "DELETE", f"/sites/DC-CNX-01/faults/{fault['id']}")
    assert status == 200
