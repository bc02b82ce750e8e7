"""Live events across processes: two ``battery-central serve`` processes on one Redis message
queue (and channel), and a third process emitting as a separate ingest does (``live_events_for``
with ``api.socketio_message_queue``): the clients of both servers get the same events, each in
the rooms it subscribed to only."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from central.api.live import message_queue_emitter
from tests.central.test_live_socket import (
    B1,
    B2,
    B_OTHER,
    OTHER_SITE,
    REDIS_URL,
    SITE,
    Recorder,
    emit_mixed,
    expected_mixed,
    live_env,
    populate,
    unique_channel,
    wait_for_queue,
)
from tests.central.test_server import Central, Server, login, make_central

pytestmark = pytest.mark.integration

# The separate process: ingest's emitter, built from the environment as `battery-central ingest`
# builds it, emitting what the test gives it as JSON lines on stdin: [method, args...].
EMITTER = """
import json, sys
from central.api.live import live_events_for
from central.settings import CentralSettings
events = live_events_for(CentralSettings())
assert type(events).__name__ == "SocketIOLiveEvents", events
for line in sys.stdin:
    method, *args = json.loads(line)
    getattr(events, method)(*args)
print("emitted")
"""


class Recording:
    """Records the calls ``emit_mixed`` makes, to replay them in another process."""

    def __init__(self) -> None:
        self.calls: list[list[object]] = []

    def __getattr__(self, method: str) -> Callable[..., None]:
        return lambda *args: self.calls.append([method, *args])


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Central:
    central = make_central(tmp_path_factory.mktemp("redis"), **live_env(unique_channel()))
    central.prepare()
    populate(central.database_url)
    return central


@pytest.fixture(scope="module")
def servers(setup: Central, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    """Two servers of one database and queue, each in its own working directory (logs)."""
    second = replace(setup, workdir=tmp_path_factory.mktemp("redis-second"))
    started: list[Server] = []
    try:
        for central in (setup, second):
            started.append(central.start("serve"))
        probe = message_queue_emitter(
            REDIS_URL, setup.extra_env["BRM_CENTRAL_API__SOCKETIO_CHANNEL"]
        )
        for server in started:
            wait_for_queue(server, probe)
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def recorders() -> Iterator[Callable[[], Recorder]]:
    made: list[Recorder] = []

    def make() -> Recorder:
        made.append(Recorder())
        return made[-1]

    yield make
    for recorder in made:
        recorder.close()


def emit_from_another_process(setup: Central, workdir: Path) -> None:
    recording = Recording()
    emit_mixed(recording)  # type: ignore[arg-type]
    lines = "".join(json.dumps(call) + "\n" for call in recording.calls)
    done = subprocess.run(
        [sys.executable, "-c", EMITTER],
        env=setup.env,
        cwd=workdir,
        input=lines,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "emitted\n"), done.stderr


def test_clients_of_two_servers_get_the_same_events_from_a_separate_emitter(
    setup: Central,
    servers: list[Server],
    recorders: Callable[[], Recorder],
    tmp_path: Path,
) -> None:
    first, second = servers
    subscriptions = [
        (first, [("location", SITE)]),
        (second, [("location", SITE)]),
        (first, [("battery", B1)]),
        (second, [("battery", B1)]),
        (second, [("location", SITE), ("battery", B1)]),
        (first, [("location", OTHER_SITE), ("battery", B2)]),
        (second, [("battery", B_OTHER)]),
    ]
    tokens = {server.port: login(server)["access_token"] for server in servers}
    clients = []
    for server, targets in subscriptions:
        recorder = recorders().join(server, tokens[server.port])
        for kind, target_id in targets:
            recorder.subscribe(kind, target_id)
        clients.append((recorder, [f"{kind}:{target_id}" for kind, target_id in targets]))
    bystanders = [recorders().join(server, tokens[server.port]) for server in servers]

    emit_from_another_process(setup, tmp_path)

    for recorder, rooms in clients:
        expected = expected_mixed(*rooms)
        got = recorder.until(lambda name, data, last=expected[-1]: (name, data) == last)
        assert got == expected, rooms
    for recorder, _ in clients[:2]:  # the same site on each server: nothing more than the other
        recorder.silent(0.2)
    for bystander in bystanders:
        bystander.silent(0.1)
