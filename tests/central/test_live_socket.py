"""Socket.IO against ``battery-central serve`` with a real python-socketio client: who may
connect, ``connected`` and ``ping``/``pong``, subscriptions and their errors, and the live events
that an emitter in another process (this one) sends through the Redis message queue to the rooms
it names; then the extension and ``live_events_for`` without a server."""

from __future__ import annotations

import logging
import queue
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio
from flask import Flask

from central import migrations
from central.api import create_app
from central.api import live as live_module
from central.api.extensions import db
from central.api.live import cors_origins
from central.api.live import socketio as extension
from central.db.engine import make_engine, make_session_factory
from central.db.inventory import load_fleet_locations, upsert_birth
from central.live_events import (
    LiveEvents,
    NoLiveEvents,
    SocketIOLiveEvents,
    live_events_for,
    message_queue_emitter,
)
from central.settings import CentralSettings
from common import ids
from common.fleet import demo_fleet_path, load_fleet
from tests.central.api_support import PASSWORD, SECRET, add_user, make_app
from tests.central.fleet_support import demo_birth
from tests.central.test_server import Server, call, login, make_central

RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
REFUSED = {"message": "Could not validate credentials"}
WAIT_S = 10
REDIS_URL = "redis://127.0.0.1:6379/0"
integration = pytest.mark.integration

SITE = "DC-CNX-01"
OTHER_SITE = "DC-BKK-01"
B1 = ids.battery_id(SITE, 1, 1, 1)
B2 = ids.battery_id(SITE, 1, 1, 2)
B_OTHER = ids.battery_id(OTHER_SITE, 1, 1, 1)
PROBE = ids.battery_id(SITE, 1, 1, 3)  # only the queue probe emits for it
END = "2026-03-01T00:59:59.000Z"  # the timestamp of the last event a test emits

Event = tuple[str, Any]


def populate(database_url: str) -> None:
    """The demo fleet's locations; the batteries of SITE and OTHER_SITE."""
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine).begin() as session:
            load_fleet_locations(session, load_fleet(demo_fleet_path()))
            upsert_birth(session, demo_birth(site=SITE))
            upsert_birth(session, demo_birth(site=OTHER_SITE))
    finally:
        engine.dispose()


def unique_channel() -> str:
    """A Redis channel of this test's own: Redis pub/sub ignores the database number, so tests
    (and anyone else using the same Redis) are kept apart by channel."""
    return f"brm-test-{uuid.uuid4().hex}"


def live_env(channel: str) -> dict[str, str]:
    return {
        "BRM_CENTRAL_API__SOCKETIO_MESSAGE_QUEUE": REDIS_URL,
        "BRM_CENTRAL_API__SOCKETIO_CHANNEL": channel,
    }


class Recorder:
    """A Socket.IO client that queues every event it receives, as (name, data)."""

    def __init__(self) -> None:
        self.client = socketio.Client(reconnection=False)
        self.events: queue.Queue[Event] = queue.Queue()
        self.client.on("*", lambda name, data=None: self.events.put((name, data)))
        for name in ("connect_error", "disconnect"):
            self.client.on(name, lambda *a, name=name: self.events.put((name, a[0] if a else None)))

    def connect(self, server: Server, auth: dict | None, transport: str = "websocket") -> None:
        self.client.connect(server.url, auth=auth, transports=[transport], wait_timeout=WAIT_S)

    def join(self, server: Server, token: str | None = None) -> Recorder:
        """Connect with a valid token (``admin``'s by default) and take the greeting."""
        self.connect(server, {"token": token or login(server)["access_token"]})
        self.next("connected")
        return self

    def next(self, name: str) -> Any:
        got, data = self.events.get(timeout=WAIT_S)
        assert got == name, (got, data)
        return data

    def ask(self, event: str, *data: object, answer: str) -> Any:
        """Emit ``event`` with the arguments ``data`` (none, one or more); the next event, which
        must be ``answer``."""
        self.client.emit(event, data[0] if len(data) == 1 else (data or None))
        return self.next(answer)

    def subscribe(self, kind: str, target_id: str) -> None:
        answer = self.ask(f"subscribe_{kind}", {f"{kind}_id": target_id}, answer="subscribed")
        assert answer["type"] == kind

    def until(self, last: Callable[[str, Any], bool]) -> list[Event]:
        """Every event up to and including the first that ``last`` accepts."""
        events = []
        while True:
            events.append(self.events.get(timeout=WAIT_S))
            if last(*events[-1]):
                return events

    def until_end(self) -> list[Event]:
        return self.until(
            lambda _name, data: isinstance(data, dict) and data.get("timestamp") == END
        )

    def silent(self, seconds: float) -> None:
        with pytest.raises(queue.Empty):
            got = self.events.get(timeout=seconds)
            pytest.fail(f"unexpected event {got}")

    def close(self) -> None:
        self.client.disconnect()


def wait_for_queue(server: Server, emitter: LiveEvents) -> None:
    """Emit until the server delivers: its queue listener starts with its first connection and
    subscribes to Redis in the background, so events sent before then reach nobody."""
    probe = Recorder().join(server)
    try:
        probe.subscribe("battery", PROBE)
        deadline = time.monotonic() + WAIT_S
        while True:
            emitter.telemetry_update(SITE, PROBE, {}, END)
            try:
                probe.next("telemetry_update")
                return
            except queue.Empty:
                assert time.monotonic() < deadline, "the server never delivered through Redis"
    finally:
        probe.close()


@pytest.fixture(scope="module")
def channel() -> str:
    return unique_channel()


@pytest.fixture(scope="module")
def emitter(channel: str) -> LiveEvents:
    """Ingest's side, in this process: a write-only emitter on the servers' queue."""
    return message_queue_emitter(REDIS_URL, channel)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, channel: str, emitter: LiveEvents
) -> Iterator[Server]:
    central = make_central(tmp_path_factory.mktemp("live"), **live_env(channel))
    central.prepare()
    populate(central.database_url)
    served = central.start("serve")
    try:
        wait_for_queue(served, emitter)
        yield served
    finally:
        served.stop()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.close()


@pytest.fixture
def recorders() -> Iterator[Callable[[], Recorder]]:
    """Makes as many recorders as a test needs; closes them all."""
    made: list[Recorder] = []

    def make() -> Recorder:
        made.append(Recorder())
        return made[-1]

    yield make
    for recorder in made:
        recorder.close()


@integration
@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_valid_token_connects_and_is_greeted(
    server: Server, recorder: Recorder, transport: str
) -> None:
    recorder.connect(server, {"token": login(server)["access_token"]}, transport)
    greeting = recorder.next("connected")
    assert isinstance(greeting, dict)
    assert set(greeting) == {"message", "timestamp"}
    assert greeting["message"] == "Connected to Battery RUL Monitoring"
    assert RFC3339_MS.match(greeting["timestamp"])
    assert recorder.client.transport() == transport


@integration
def test_ping_answers_pong(server: Server, recorder: Recorder) -> None:
    recorder.connect(server, {"token": login(server)["access_token"]})
    recorder.next("connected")
    recorder.client.emit("ping", {})
    pong = recorder.next("pong")
    assert isinstance(pong, dict)
    assert set(pong) == {"timestamp"}
    assert RFC3339_MS.match(pong["timestamp"])


def _refused(server: Server, recorder: Recorder, auth: dict | None) -> None:
    with pytest.raises(socketio.exceptions.ConnectionError):
        recorder.connect(server, auth)
    assert recorder.next("connect_error") == REFUSED
    assert not recorder.client.connected


@integration
@pytest.mark.parametrize(
    "auth",
    [None, {}, {"token": ""}, {"token": 42}, {"token": "garbage"}, {"token": "a.b.c"}],
    ids=["no-auth", "no-token", "empty", "not-a-string", "garbage", "not-a-jwt"],
)
def test_connection_without_a_valid_token_is_refused(
    server: Server, recorder: Recorder, auth: dict | None
) -> None:
    _refused(server, recorder, auth)


@integration
def test_refresh_token_is_refused(server: Server, recorder: Recorder) -> None:
    _refused(server, recorder, {"token": login(server)["refresh_token"]})


@integration
def test_token_revoked_by_logout_is_refused(server: Server, recorder: Recorder) -> None:
    token = login(server)["access_token"]
    status, _ = call(f"{server.url}/api/v1/auth/logout", {}, token=token)
    assert status == 200
    _refused(server, recorder, {"token": token})


@integration
def test_token_of_a_deactivated_user_is_refused(server: Server, recorder: Recorder) -> None:
    admin = login(server)["access_token"]
    user = {"user_id": "leaver", "username": "leaver", "email": "l@example.com"}
    status, body = call(f"{server.url}/api/v1/auth/users", {**user, "password": PASSWORD}, admin)
    assert status == 201, body
    token = login(server, "leaver")["access_token"]
    status, body = call(
        f"{server.url}/api/v1/auth/users/leaver", {"is_active": False}, admin, method="PATCH"
    )
    assert status == 200, body
    _refused(server, recorder, {"token": token})


# --- Subscriptions ------------------------------------------------------------------------


@integration
@pytest.mark.parametrize(("kind", "target_id"), [("location", SITE), ("battery", B1)])
def test_subscribe_and_unsubscribe_are_answered(
    server: Server, recorder: Recorder, kind: str, target_id: str
) -> None:
    recorder.join(server)
    key = f"{kind}_id"
    for event, answer in [
        (f"subscribe_{kind}", "subscribed"),
        (f"subscribe_{kind}", "subscribed"),  # again: the same answer, one membership
        (f"unsubscribe_{kind}", "unsubscribed"),
        (f"unsubscribe_{kind}", "unsubscribed"),  # not subscribed any more: still answered
    ]:
        data = recorder.ask(event, {key: target_id}, answer=answer)
        assert isinstance(data, dict)
        assert set(data) == {"type", key, "timestamp"}
        assert data["type"] == kind
        assert data[key] == target_id
        assert RFC3339_MS.match(data["timestamp"])
    recorder.silent(0.2)


TELEMETRY = {"voltage": 13.52, "temperature": 28.5, "internal_resistance": 0.0041, "soh_pct": 97.0}
STATUS = {"status": "warning", "soh_pct": 84.5}
ALERT = {
    "id": "5b0c6d7e-0000-4000-8000-000000000001",
    "alert_id": f"ALT-{B2}-2026-03-01-temperature_high",
    "battery_id": B2,
    "alert_type": "temperature_high",
    "severity": "warning",
    "message": "Battery temperature 45.2°C exceeds threshold 45.0°C",
    "threshold_value": 45.0,
    "actual_value": 45.2,
    "triggered_at": "2026-03-01T00:00:02Z",
    "resolved_at": None,
    "is_acknowledged": False,
    "acknowledged_at": None,
    "acknowledged_by": None,
    "acknowledgment_note": None,
    "created_at": "2026-03-01T00:00:02Z",
    "updated_at": "2026-03-01T00:00:02Z",
    "is_active": True,
    "is_pending": True,
}


def telemetry(battery_id: str, timestamp: str, data: dict | None = None) -> Event:
    """A ``telemetry_update`` as a client receives it."""
    data = TELEMETRY if data is None else data
    return "telemetry_update", {"battery_id": battery_id, "data": data, "timestamp": timestamp}


def emit_mixed(emitter: LiveEvents) -> None:
    """Events for SITE's B1 and B2 and for OTHER_SITE's B_OTHER, then the END of each site."""
    emitter.telemetry_update(SITE, B1, TELEMETRY, "2026-03-01T00:00:01.000Z")
    emitter.telemetry_update(SITE, B2, TELEMETRY, "2026-03-01T00:00:02.000Z")
    emitter.alert(SITE, B2, ALERT)
    emitter.battery_status_update(OTHER_SITE, B_OTHER, STATUS, "2026-03-01T00:00:03.000Z")
    emitter.telemetry_update(SITE, B1, {}, END)
    emitter.telemetry_update(OTHER_SITE, B_OTHER, {}, END)


def expected_mixed(*rooms: str) -> list[Event]:
    """What ``emit_mixed`` delivers to a client in ``rooms`` (``location:``/``battery:`` IDs)."""
    b1, b2, other = (
        {f"location:{SITE}", f"battery:{B1}"} & set(rooms),
        {f"location:{SITE}", f"battery:{B2}"} & set(rooms),
        {f"location:{OTHER_SITE}", f"battery:{B_OTHER}"} & set(rooms),
    )
    events: list[Event] = []
    if b1:
        events.append(telemetry(B1, "2026-03-01T00:00:01.000Z"))
    if b2:
        events.append(telemetry(B2, "2026-03-01T00:00:02.000Z"))
        events.append(("alert", {**ALERT, "location_id": SITE}))
    if other:
        status = {"battery_id": B_OTHER, "data": STATUS, "timestamp": "2026-03-01T00:00:03.000Z"}
        events.append(("battery_status_update", status))
        events.append(telemetry(B_OTHER, END, {}))
    if b1:
        events.append(telemetry(B1, END, {}))
    return events


@integration
def test_events_reach_the_subscribers_of_their_rooms_only(
    server: Server, emitter: LiveEvents, recorders: Callable[[], Recorder]
) -> None:
    token = login(server)["access_token"]
    clients = {
        (f"location:{SITE}",): [("location", SITE)],
        (f"battery:{B1}",): [("battery", B1)],
        (f"location:{SITE}", f"battery:{B1}"): [("location", SITE), ("battery", B1)],
        (f"location:{OTHER_SITE}",): [("location", OTHER_SITE)],
        (f"battery:{B2}", f"location:{OTHER_SITE}"): [("battery", B2), ("location", OTHER_SITE)],
    }
    joined = {}
    for rooms, subscriptions in clients.items():
        joined[rooms] = recorders().join(server, token)
        for kind, target_id in subscriptions:
            joined[rooms].subscribe(kind, target_id)
    bystander = recorders().join(server, token)  # subscribed to nothing

    emit_mixed(emitter)
    for rooms, recorder in joined.items():
        expected = expected_mixed(*rooms)
        got = recorder.until(lambda name, data, last=expected[-1]: (name, data) == last)
        assert got == expected, rooms  # field by field; in both rooms, each event once
    # The client in the rooms of B1's site and of B1 got B1's reading once:
    both = joined[(f"location:{SITE}", f"battery:{B1}")]
    both.silent(0.3)
    bystander.silent(0.1)


@integration
def test_unsubscribing_stops_the_flow(
    server: Server, emitter: LiveEvents, recorders: Callable[[], Recorder]
) -> None:
    token = login(server)["access_token"]
    client = recorders().join(server, token)
    witness = recorders().join(server, token)
    witness.subscribe("battery", B1)
    client.subscribe("location", SITE)
    client.subscribe("battery", B1)

    client.ask("unsubscribe_location", {"location_id": SITE}, answer="unsubscribed")
    emit_mixed(emitter)  # B2's events went to SITE's room only
    assert client.until_end() == expected_mixed(f"battery:{B1}")
    assert witness.until_end() == expected_mixed(f"battery:{B1}")

    client.ask("unsubscribe_battery", {"battery_id": B1}, answer="unsubscribed")
    emit_mixed(emitter)
    assert witness.until_end() == expected_mixed(f"battery:{B1}")
    client.silent(0.5)

    client.subscribe("battery", B1)  # and subscribing again resumes it
    emit_mixed(emitter)
    assert client.until_end() == expected_mixed(f"battery:{B1}")


@integration
@pytest.mark.parametrize(
    ("event", "payload", "message"),
    [
        ("subscribe_location", {"location_id": "DC-XXX-99"}, "Location DC-XXX-99 not found"),
        ("subscribe_location", {"location_id": B1}, f"Location {B1} not found"),
        ("subscribe_battery", {"battery_id": "BAT-NOPE"}, "Battery BAT-NOPE not found"),
        ("subscribe_battery", {"battery_id": SITE}, f"Battery {SITE} not found"),
    ],
)
def test_subscribing_to_what_does_not_exist_is_an_error(
    server: Server, recorder: Recorder, event: str, payload: dict, message: str
) -> None:
    recorder.join(server)
    assert recorder.ask(event, payload, answer="error") == {"message": message}
    assert set(recorder.ask("ping", {}, answer="pong")) == {"timestamp"}  # still connected


MALFORMED = [
    pytest.param((), id="no-payload"),
    pytest.param((None,), id="null"),
    pytest.param(("DC-CNX-01",), id="bare-string"),
    pytest.param((["DC-CNX-01"],), id="list"),
    pytest.param(({},), id="empty-object"),
    pytest.param(({"id": "DC-CNX-01"},), id="wrong-key"),
    pytest.param(({"KEY": 42},), id="number"),
    pytest.param(({"KEY": None},), id="key-null"),
    pytest.param(({"KEY": ""},), id="empty-string"),
    pytest.param(({"KEY": "X" * 65},), id="too-long"),
]
SUBSCRIPTION_EVENTS = [
    "subscribe_location",
    "unsubscribe_location",
    "subscribe_battery",
    "unsubscribe_battery",
]


@integration
@pytest.mark.parametrize("payload", MALFORMED)
@pytest.mark.parametrize("event", SUBSCRIPTION_EVENTS)
def test_malformed_payloads_are_answered_with_an_error(
    server: Server, recorder: Recorder, event: str, payload: tuple
) -> None:
    key = f"{event.split('_')[1]}_id"
    # "KEY" stands for the event's own key (location_id or battery_id).
    args = [{key: arg["KEY"]} if isinstance(arg, dict) and "KEY" in arg else arg for arg in payload]
    recorder.join(server)
    message = f'{event} needs {{"{key}": "..."}}: a non-empty string of at most 64 characters'
    assert recorder.ask(event, *args, answer="error") == {"message": message}
    assert set(recorder.ask("ping", {}, answer="pong")) == {"timestamp"}  # still connected
    recorder.silent(0.1)


@integration
@pytest.mark.parametrize("event", SUBSCRIPTION_EVENTS)
def test_arguments_after_the_payload_are_ignored(
    server: Server, recorder: Recorder, event: str
) -> None:
    kind = event.split("_")[1]
    target_id = SITE if kind == "location" else B1
    recorder.join(server)
    answer = "subscribed" if event.startswith("subscribe") else "unsubscribed"
    data = recorder.ask(event, {f"{kind}_id": target_id}, "extra", answer=answer)
    assert (data["type"], data[f"{kind}_id"]) == (kind, target_id)


@integration
def test_a_connection_whose_token_is_revoked_is_closed_at_its_next_event(
    server: Server, recorder: Recorder
) -> None:
    token = login(server)["access_token"]
    recorder.join(server, token)
    recorder.subscribe("location", SITE)
    status, _ = call(f"{server.url}/api/v1/auth/logout", {}, token=token)
    assert status == 200
    assert recorder.ask("subscribe_battery", {"battery_id": B1}, answer="error") == REFUSED
    recorder.next("disconnect")
    deadline = time.monotonic() + WAIT_S
    while recorder.client.connected:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_cors_origins_empty_means_same_origin_only() -> None:
    assert cors_origins([]) is None
    assert cors_origins(["https://ops.example.com"]) == ["https://ops.example.com"]


def test_message_queue_setting_chooses_the_client_manager(tmp_path: Path) -> None:
    def manager(queue_url: str | None) -> socketio.Manager:
        settings = CentralSettings(
            database_url=f"sqlite:///{tmp_path / 'x.sqlite3'}",
            api={"jwt_secret": SECRET, "socketio_message_queue": queue_url},
        )
        app = create_app(settings)
        db.engine(app).dispose()
        assert extension.server is not None
        return extension.server.manager

    assert isinstance(manager(REDIS_URL), socketio.RedisManager)
    # An app without a queue after one with: the queue's manager must not carry over.
    assert type(manager(None)) is socketio.Manager


# --- Without a server: the app's own Socket.IO (``run``) and Flask-SocketIO's test client -----


@pytest.fixture
def live_app(tmp_path: Path) -> Iterator[Flask]:
    url = f"sqlite:///{tmp_path / 'central.sqlite3'}"
    migrations.upgrade(url)
    add_user(url, "admin")
    populate(url)
    app = make_app(url)
    yield app
    db.engine(app).dispose()


def _test_client(app: Flask) -> Any:
    response = app.test_client().post(
        "/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
    )
    client = extension.test_client(app, auth={"token": response.get_json()["access_token"]})
    assert client.is_connected()
    assert [e["name"] for e in client.get_received()] == ["connected"]
    return client


def _ask(client: Any, event: str, data: object) -> list[tuple[str, Any]]:
    client.emit(event, data)
    deadline = time.monotonic() + WAIT_S
    while True:  # python-socketio handles each event in a thread of its own
        received = client.get_received()
        if received:
            return [(e["name"], e["args"][0]) for e in received]
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_ingest_in_the_server_emits_through_the_apps_socketio(live_app: Flask) -> None:
    both, other = _test_client(live_app), _test_client(live_app)
    for client, event, data in [
        (both, "subscribe_location", {"location_id": SITE}),
        (both, "subscribe_battery", {"battery_id": B1}),
        (other, "subscribe_location", {"location_id": OTHER_SITE}),
    ]:
        assert _ask(client, event, data)[0][0] == "subscribed"
    events = live_events_for(CentralSettings(), in_server=True)
    assert isinstance(events, SocketIOLiveEvents)
    events.telemetry_update(SITE, B1, TELEMETRY, "2026-03-01T00:00:01.000Z")
    events.alert(SITE, B1, {**ALERT, "battery_id": B1})
    events.battery_status_update(SITE, B1, STATUS, "2026-03-01T00:00:03.000Z")
    received = [(e["name"], e["args"][0]) for e in both.get_received()]
    assert received == [
        telemetry(B1, "2026-03-01T00:00:01.000Z"),
        ("alert", {**ALERT, "battery_id": B1, "location_id": SITE}),
        (
            "battery_status_update",
            {"battery_id": B1, "data": STATUS, "timestamp": "2026-03-01T00:00:03.000Z"},
        ),
    ]
    assert other.get_received() == []


def test_subscriptions_per_connection_are_limited(
    live_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_module, "MAX_SUBSCRIPTIONS", 2)
    client = _test_client(live_app)
    assert _ask(client, "subscribe_location", {"location_id": SITE})[0][0] == "subscribed"
    assert _ask(client, "subscribe_battery", {"battery_id": B1})[0][0] == "subscribed"
    assert _ask(client, "subscribe_battery", {"battery_id": B2}) == [
        ("error", {"message": "Subscription limit reached: at most 2 per connection"})
    ]
    assert _ask(client, "subscribe_battery", {"battery_id": B1})[0][0] == "subscribed"  # held
    assert _ask(client, "unsubscribe_battery", {"battery_id": B1})[0][0] == "unsubscribed"
    assert _ask(client, "subscribe_battery", {"battery_id": B2})[0][0] == "subscribed"
    assert client.is_connected()


def test_live_events_for_a_separate_ingest_needs_a_queue() -> None:
    assert isinstance(live_events_for(CentralSettings()), NoLiveEvents)
    settings = CentralSettings(
        api={"socketio_message_queue": REDIS_URL, "socketio_channel": "brm-elsewhere"}
    )
    events = live_events_for(settings)
    assert isinstance(events, SocketIOLiveEvents)
    manager = events._socketio.server.manager
    assert isinstance(manager, socketio.RedisManager)
    assert (manager.channel, manager.write_only) == ("brm-elsewhere", True)


def test_a_failing_emit_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def emit(self, *_args: object, **_kwargs: object) -> None:
            raise RuntimeError("queue gone")

    events = SocketIOLiveEvents(Broken())  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="central.live_events"):
        events.telemetry_update(SITE, B1, TELEMETRY, END)
    assert f"could not emit telemetry_update for battery {B1}" in caplog.text
