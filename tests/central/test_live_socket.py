"""Socket.IO: who may connect, ``connected`` and ``ping``/``pong``, against ``battery-central
serve`` with a real python-socketio client; the extension's settings without a server."""

from __future__ import annotations

import queue
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import socketio

from central.api import create_app
from central.api.extensions import db
from central.api.live import cors_origins
from central.api.live import socketio as extension
from central.settings import CentralSettings
from tests.central.api_support import PASSWORD, SECRET
from tests.central.test_server import Server, call, login, make_central

RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
REFUSED = {"message": "Could not validate credentials"}
WAIT_S = 10
integration = pytest.mark.integration


class Recorder:
    """A Socket.IO client that queues every event it receives, as (name, data)."""

    def __init__(self) -> None:
        self.client = socketio.Client(reconnection=False)
        self.events: queue.Queue[tuple[str, object]] = queue.Queue()
        for name in ("connected", "pong", "connect_error"):
            self.client.on(name, lambda data, name=name: self.events.put((name, data)))

    def connect(self, server: Server, auth: dict | None, transport: str = "websocket") -> None:
        self.client.connect(server.url, auth=auth, transports=[transport], wait_timeout=WAIT_S)

    def next(self, name: str) -> object:
        got, data = self.events.get(timeout=WAIT_S)
        assert got == name, (got, data)
        return data

    def close(self) -> None:
        self.client.disconnect()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    central = make_central(tmp_path_factory.mktemp("live"))
    central.prepare()
    served = central.start("serve")
    yield served
    served.stop()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
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

    assert isinstance(manager("redis://127.0.0.1:6379/0"), socketio.RedisManager)
    # An app without a queue after one with: the queue's manager must not carry over.
    assert type(manager(None)) is socketio.Manager
