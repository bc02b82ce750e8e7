"""Central over TLS: ingest and the readiness probe reach a broker that demands a password over
TLS (the agent's test broker), and refuse one whose certificate their CA did not sign."""

from __future__ import annotations

import logging
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from central.api.extensions import db
from central.db.engine import make_engine, make_session_factory
from central.db.inventory import load_fleet_locations
from central.db.models import Telemetry
from central.ingest.mqtt import IngestConnection, probe_broker
from central.ingest.service import IngestService
from central.settings import CentralSettings, IngestSettings, MqttSettings
from common import ids
from common.fleet import demo_fleet_path, load_fleet
from common.schemas import Reading, TelemetryBatch, encode
from common.settings import load_settings
from common.topics import Topics
from tests.central.api_support import make_app
from tests.edge_agent.test_broker_security import secure_broker  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration

SITE = "DC-CNX-01"
# paho 2.2 leaves the socket of a failed TLS handshake to the garbage collector
# (Client._ssl_wrap_socket raises without closing it), which closes it with a ResourceWarning.
PAHO_LEAVES_FAILED_HANDSHAKE_SOCKET = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <ssl.SSLSocket:pytest.PytestUnraisableExceptionWarning"
)


def _settings(port: int, certs: Path, ca_name: str = "site", **changes: object) -> MqttSettings:
    settings = {
        "host": "127.0.0.1",
        "port": port,
        "username": "reader",
        "password": "r3ad",
        "topic_prefix": f"t{uuid.uuid4().hex[:8]}/v1",
        "client_id": f"ingest-{uuid.uuid4().hex[:8]}",
        "tls": {"enabled": True, "ca_file": str(certs / f"{ca_name}-ca.crt")},
    }
    return MqttSettings.model_validate({**settings, **changes})


def _wait(condition: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _publish(port: int, certs: Path, topic: str, payload: bytes) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set("agent-cnx", "s3cret")
    client.tls_set(ca_certs=str(certs / "site-ca.crt"), cert_reqs=ssl.CERT_REQUIRED)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


Start = Callable[[MqttSettings], IngestConnection]


@pytest.fixture
def store(migrated_url: str) -> Iterator[tuple[Start, sessionmaker[Session]]]:
    """Starts ingest (connection and service) on the migrated store for given broker settings."""
    engine = make_engine(migrated_url)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        load_fleet_locations(session, load_fleet(demo_fleet_path()))
    stop = threading.Event()
    started: list[tuple[IngestConnection, threading.Thread]] = []

    def start(settings: MqttSettings) -> IngestConnection:
        topics = Topics(settings.topic_prefix)
        service = IngestService(sessions, topics, IngestSettings(batch_max_wait_s=0.05))
        connection = IngestConnection(settings, service.inbox.put)
        connection.start()
        worker = threading.Thread(target=service.run, args=(stop,))
        worker.start()
        started.append((connection, worker))
        return connection

    yield start, sessions
    stop.set()
    for connection, worker in started:
        worker.join(10)
        connection.stop()
    engine.dispose()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_ingest_over_tls_with_a_password_stores_a_batch(secure_broker, store) -> None:  # noqa: F811
    port, certs = secure_broker
    start, sessions = store
    settings = _settings(port, certs)
    connection = start(settings)
    assert connection.subscribed.wait(15)
    batch = TelemetryBatch(
        site_id=SITE,
        agent_id="agent-1",
        seq_first=1,
        seq_last=1,
        readings=[
            Reading(
                battery_id=ids.battery_id(SITE, 1, 1, 1),
                ts=datetime(2026, 3, 1, tzinfo=UTC),
                voltage=13.6,
            )
        ],
    )
    _publish(port, certs, Topics(settings.topic_prefix).telemetry(SITE), encode(batch))

    def stored() -> int:
        with sessions() as session:
            return session.scalar(select(func.count()).select_from(Telemetry))

    _wait(lambda: stored() == 1)


@PAHO_LEAVES_FAILED_HANDSHAKE_SOCKET
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_ingest_refuses_a_broker_its_ca_did_not_sign_and_says_so(
    secure_broker,  # noqa: F811
    store,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port, certs = secure_broker
    caplog.set_level(logging.ERROR, logger="central.ingest.mqtt")
    connection = store[0](_settings(port, certs, ca_name="other"))

    def refusals() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "central.ingest.mqtt"]

    _wait(lambda: bool(refusals()))
    assert refusals()[0].startswith(
        f"cannot connect to the broker 127.0.0.1:{port}: TLS handshake failed ("
    )
    assert "CERTIFICATE_VERIFY_FAILED" in refusals()[0]
    assert refusals()[0].endswith("; check mqtt.tls")
    assert not connection.subscribed.is_set()


@PAHO_LEAVES_FAILED_HANDSHAKE_SOCKET
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_readiness_probe_reaches_the_broker_over_tls(secure_broker, migrated_url: str) -> None:  # noqa: F811
    port, certs = secure_broker
    broker = _settings(port, certs)
    assert probe_broker(broker) is None
    app = make_app(migrated_url, BRM_READY_BROKER=broker)
    try:
        assert app.test_client().get("/health/ready").get_json()["broker"] == "connected"
    finally:
        db.engine(app).dispose()
    untrusted = probe_broker(_settings(port, certs, ca_name="other"))
    assert untrusted.startswith(f"cannot connect to 127.0.0.1:{port}:")
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted
    missing = certs / "missing-ca.crt"
    assert probe_broker(
        _settings(port, certs, tls={"enabled": True, "ca_file": str(missing)})
    ).startswith(f"mqtt.tls (ca_file={missing}): ")


def test_tls_and_proxy_settings_come_from_the_environment(monkeypatch) -> None:
    assert CentralSettings().mqtt.tls.enabled is False
    assert CentralSettings().api.proxy_hops == 0
    monkeypatch.setenv("BRM_CENTRAL_MQTT__TLS__ENABLED", "true")
    monkeypatch.setenv("BRM_CENTRAL_MQTT__TLS__CA_FILE", "/etc/brm/ca.crt")
    monkeypatch.setenv("BRM_CENTRAL_API__PROXY_HOPS", "1")
    settings = load_settings(CentralSettings)
    assert settings.mqtt.tls.enabled is True
    assert settings.mqtt.tls.ca_file == Path("/etc/brm/ca.crt")
    assert settings.mqtt.tls.insecure_skip_verify is False
    assert settings.api.proxy_hops == 1
