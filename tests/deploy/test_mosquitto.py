"""The shipped Mosquitto configuration (deploy/mosquitto/mosquitto.conf and acl), running with
credentials made by the shipped ``add-site`` and a certificate made here: what each site and
central may do over real TLS and the loopback listener.

Every negative check has a positive one on the same connection or broker, so that "nothing
arrived" means refused, not broken."""

from __future__ import annotations

import contextlib
import queue
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from paho.mqtt.reasoncodes import ReasonCode

from central.ingest.mqtt import Inbound, IngestConnection
from central.settings import MqttSettings
from tests.deploy.mqtt_client import Client
from tests.deploy.support import (
    ADD_SITE,
    BROKER_SETUP,
    COMPOSE_LISTENER,
    REPO,
    ShippedBroker,
    printed_setting,
    render,
    run_add_site,
)
from tests.edge_agent.conftest import AgentProcess, agent_settings
from tests.edge_agent.test_broker_security import make_certificates
from tests.support import free_tcp_port, stop_process

pytestmark = pytest.mark.integration

SITE_A = "DC-CNX-01"  # also the simulated site the agent test reads
SITE_B = "DC-BKK-01"
PASSWORD_B = "site-b-password-0123"
PASSWORD_CENTRAL = "central-password-0123"
KINDS = ("telemetry", "birth", "state", "events")
# After the last expected message: how long to keep listening for one that must not come. The
# broker delivers one publisher's messages in order, and each refused message is sent before
# the allowed one it is compared with, so this only has to cover scheduling noise.
SETTLE_S = 1.0
ARRIVAL_S = 10.0


def topic(site: str, kind: str) -> str:
    return f"brm/v1/{site}/{kind}"


def refused(reason: ReasonCode) -> bool:
    """The PUBACK of a message the ACL does not allow (MQTT v5 tells the publisher)."""
    return str(reason) == "Not authorized"


@dataclass(frozen=True)
class Credentials:
    """A certificate for 127.0.0.1 and a password file written by ``add-site``."""

    directory: Path
    passwd_file: Path
    password_a: str  # generated and printed by add-site
    printed_a: str  # everything add-site printed for site A

    @property
    def ca(self) -> Path:
        return self.directory / "broker-ca.crt"


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    for tool in ("mosquitto", "mosquitto_passwd", "openssl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (.ci/run installs it)")
    directory = tmp_path_factory.mktemp("broker-credentials")
    make_certificates(directory, "broker")
    passwd = directory / "passwd"
    added = run_add_site(passwd, SITE_A)
    assert added.returncode == 0, added.stderr
    for name, password in ((SITE_B, PASSWORD_B), ("central", PASSWORD_CENTRAL)):
        done = run_add_site(passwd, name, password)
        assert done.returncode == 0, done.stderr
    central = run_add_site(passwd, "central", PASSWORD_CENTRAL)  # again: a rotation to the same
    assert printed_setting(central.stdout, "BRM_CENTRAL_MQTT__PASSWORD") == PASSWORD_CENTRAL
    assert printed_setting(central.stdout, "BRM_CENTRAL_MQTT__USERNAME") == "central"
    users = [line.split(":")[0] for line in passwd.read_text().splitlines()]
    assert users == [SITE_A, SITE_B, "central"]
    password_a = printed_setting(added.stdout, "BRM_AGENT_MQTT__PASSWORD")
    assert len(password_a) == 32
    return Credentials(directory, passwd, password_a, added.stdout)


@pytest.fixture
def broker(credentials: Credentials, tmp_path: Path) -> Iterator[ShippedBroker]:
    """A fresh broker per test, on its own copy of the password file."""
    passwd = tmp_path / "passwd"
    shutil.copy(credentials.passwd_file, passwd)
    d = credentials.directory
    shipped = ShippedBroker(tmp_path, d / "broker.crt", d / "broker.key", credentials.ca, passwd)
    shipped.start()
    yield shipped
    shipped.stop()


class Central:
    """Central's own ingest connection (``central.ingest.mqtt``) with central's credentials on
    the loopback listener: the subscriptions ingest makes, shared ones included."""

    def __init__(self, broker: ShippedBroker) -> None:
        self.received: queue.Queue[tuple[str, bytes]] = queue.Queue()
        settings = MqttSettings(
            host="127.0.0.1",
            port=broker.plain_port,
            username="central",
            password=PASSWORD_CENTRAL,
            client_id=f"ingest-{time.monotonic_ns()}",
            session_expiry_s=0,
        )
        self.connection = IngestConnection(settings, self._deliver)
        self.connection.start()
        if not self.connection.subscribed.wait(ARRIVAL_S):
            self.connection.stop()
            raise AssertionError(
                f"central's subscriptions were not all granted within {ARRIVAL_S} s\n"
                + broker.log()
            )

    def _deliver(self, inbound: Inbound) -> None:
        self.received.put((inbound.topic, inbound.payload))
        inbound.ack()

    def collect(
        self, expected: set[tuple[str, bytes]], *, watch: AgentProcess | None = None
    ) -> set[tuple[str, bytes]]:
        """Everything received until each of ``expected`` has come (at most ARRIVAL_S) and then
        SETTLE_S more; fails early if ``watch`` (a process) dies."""
        got: set[tuple[str, bytes]] = set()
        deadline = time.monotonic() + ARRIVAL_S
        settle_until = None
        while settle_until is None or time.monotonic() < settle_until:
            if settle_until is None and expected <= got:
                settle_until = time.monotonic() + SETTLE_S
            if settle_until is None and time.monotonic() > deadline:
                missing = sorted(t for t, _ in expected - got)
                raise AssertionError(f"central did not receive {missing} within {ARRIVAL_S} s")
            if watch is not None and (watch.process is None or watch.process.poll() is not None):
                raise AssertionError(f"the agent stopped:\n{watch.log()}")
            with contextlib.suppress(queue.Empty):
                got.add(self.received.get(timeout=0.05))
        return got

    def close(self) -> None:
        self.connection.stop()


@pytest.fixture
def central(broker: ShippedBroker) -> Iterator[Central]:
    reader = Central(broker)
    yield reader
    reader.close()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    """Clients a test opens; all closed at the end."""
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.close()


def site_client(
    broker: ShippedBroker,
    credentials: Credentials,
    clients: list[Client],
    site: str,
    password: str | None = None,
    **options: object,
) -> Client:
    """A client of ``site``'s credentials on the TLS listener (its own password by default)."""
    if password is None:
        password = credentials.password_a if site == SITE_A else PASSWORD_B
    client = Client(broker.tls_port, site, password, ca_file=credentials.ca, **options)
    clients.append(client)
    return client


def test_each_site_publishes_only_its_own_topics_and_central_reads_every_site(
    broker: ShippedBroker, credentials: Credentials, central: Central, clients: list[Client]
) -> None:
    site_a = site_client(broker, credentials, clients, SITE_A).connected()
    site_b = site_client(broker, credentials, clients, SITE_B).connected()
    # Refused first: the broker answers QoS 1 with "Not authorized" and forwards nothing.
    for kind in KINDS:
        assert refused(site_a.publish(topic(SITE_B, kind), b"forged by A"))
    assert refused(site_a.publish(topic(SITE_A, "commands"), b"not a contract topic"))
    assert refused(site_a.publish(f"other/{SITE_A}/telemetry", b"outside the tree"))

    expected = set()
    for kind in KINDS:
        for site, client in ((SITE_A, site_a), (SITE_B, site_b)):
            payload = f"{site} {kind}".encode()
            retain = kind in {"birth", "state"}
            assert not client.publish(topic(site, kind), payload, retain=retain).is_failure
            expected.add((topic(site, kind), payload))
    assert central.collect(expected) == expected


def test_a_will_on_another_sites_state_is_never_published(
    broker: ShippedBroker, credentials: Credentials, central: Central, clients: list[Client]
) -> None:
    forged = (topic(SITE_B, "state"), b'{"status": "offline", "forged": true}')
    own = (topic(SITE_A, "state"), b'{"status": "offline"}')
    for will in (forged, own):  # one after the other: one site id is one connection
        site_client(broker, credentials, clients, SITE_A, will=will).connected()
        clients[-1].disconnect_with_will()
    assert central.collect({own}) == {own}


def test_a_site_cannot_read_another_sites_messages(
    broker: ShippedBroker, credentials: Credentials, clients: list[Client]
) -> None:
    site_b = site_client(broker, credentials, clients, SITE_B).connected()
    birth = (topic(SITE_B, "birth"), b'{"inventory": "serial numbers of B"}')
    assert not site_b.publish(*birth, retain=True).is_failure

    site_a = site_client(broker, credentials, clients, SITE_A).connected()
    site_a.subscribe("brm/v1/#")  # granted or not, nothing of B's may be delivered
    reader = Client(broker.plain_port, "central", PASSWORD_CENTRAL)
    clients.append(reader)
    assert reader.connected().subscribe(topic("+", "birth")) == ["Granted QoS 1"]
    assert reader.messages.get(timeout=ARRIVAL_S) == birth  # the retained copy: it is there
    with pytest.raises(queue.Empty):
        leaked = site_a.messages.get(timeout=SETTLE_S)
        pytest.fail(f"site A received {leaked}")


def test_wrong_password_no_password_and_plain_mqtt_on_the_tls_port_are_refused(
    broker: ShippedBroker, credentials: Credentials, clients: list[Client]
) -> None:
    assert not site_client(broker, credentials, clients, SITE_A).connect().is_failure

    wrong = site_client(broker, credentials, clients, SITE_A, password=credentials.password_a + "x")
    reason = wrong.connect()
    assert reason is not None
    assert reason.is_failure, reason
    anonymous = Client(broker.tls_port, None, None, ca_file=credentials.ca)
    clients.append(anonymous)
    reason = anonymous.connect()
    assert reason is not None
    assert reason.is_failure, reason
    plain = Client(broker.tls_port, SITE_A, credentials.password_a)  # right password, no TLS
    clients.append(plain)
    reason = plain.connect()
    assert reason is None or reason.is_failure, reason

    central_wrong = Client(broker.plain_port, "central", PASSWORD_CENTRAL + "x")
    central_right = Client(broker.plain_port, "central", PASSWORD_CENTRAL)
    clients.extend([central_wrong, central_right])
    reason = central_wrong.connect()
    assert reason is not None
    assert reason.is_failure, reason
    assert not central_right.connect().is_failure


def test_a_site_cannot_take_over_another_sites_connection(
    broker: ShippedBroker, credentials: Credentials, clients: list[Client]
) -> None:
    site_b = site_client(broker, credentials, clients, SITE_B, client_id="brm-agent-b").connected()
    site_a = site_client(broker, credentials, clients, SITE_A, client_id="brm-agent-b").connected()
    assert not site_b.disconnected.wait(SETTLE_S), "site A's connection threw site B's off"
    # The same credentials do take the connection over (the client id is the username): the
    # check above would have seen it.
    site_client(broker, credentials, clients, SITE_A, client_id="anything").connected()
    assert site_a.disconnected.wait(ARRIVAL_S), "a second connection of site A was not noticed"
    assert not site_b.disconnected.is_set()


def test_a_rotated_password_replaces_the_old_one_once_the_broker_reloads(
    broker: ShippedBroker, credentials: Credentials, clients: list[Client]
) -> None:
    before = site_client(broker, credentials, clients, SITE_A).connected()
    rotated = run_add_site(broker.passwd_file, SITE_A)
    assert rotated.returncode == 0, rotated.stderr
    assert f"{SITE_A}: password changed" in rotated.stdout
    new_password = printed_setting(rotated.stdout, "BRM_AGENT_MQTT__PASSWORD")
    assert new_password != credentials.password_a
    assert not before.disconnected.wait(SETTLE_S), "the file alone changed nothing yet"
    broker.reload()
    # The broker checks connected clients again: the agent must restart with the new password
    # (its outbox keeps every reading meanwhile).
    assert before.disconnected.wait(ARRIVAL_S), "the old password's connection survived"
    old = site_client(broker, credentials, clients, SITE_A).connect()
    assert old is not None
    assert old.is_failure, old
    site_client(broker, credentials, clients, SITE_A, password=new_password).connected()
    site_client(broker, credentials, clients, SITE_B).connected()  # the others are untouched


def test_the_agent_set_up_as_add_site_prints_reaches_central(
    broker: ShippedBroker,
    credentials: Credentials,
    central: Central,
    simulated_site,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    printed = credentials.printed_a
    block = printed[printed.index("mqtt:") : printed.index("# and the password")]
    mqtt = yaml.safe_load(block)["mqtt"]
    assert mqtt == {
        "host": "127.0.0.1",
        "port": 8883,
        "username": SITE_A,
        "tls": {"enabled": True, "ca_file": "/etc/battery-rul/broker-ca.crt"},
    }
    mqtt.update(port=broker.tls_port, tls={**mqtt["tls"], "ca_file": str(credentials.ca)})
    # As the unit's EnvironmentFile and Environment= lines give them.
    monkeypatch.setenv("BRM_AGENT_MQTT__PASSWORD", credentials.password_a)
    monkeypatch.setenv("BRM_AGENT_SITE_ID", SITE_A)
    endpoint = SimpleNamespace(host="127.0.0.1", port=broker.tls_port)
    settings = agent_settings(simulated_site, endpoint, tmp_path, "brm/v1", mqtt=mqtt)
    agent = AgentProcess(tmp_path, settings)
    try:
        agent.start()
        seen: set[str] = set()
        deadline = time.monotonic() + 30
        while not {"birth", "state", "telemetry"} <= seen:
            assert time.monotonic() < deadline, f"central saw only {seen}\n{agent.log()}"
            assert agent.process is not None and agent.process.poll() is None, agent.log()
            try:
                got_topic, _ = central.received.get(timeout=0.2)
            except queue.Empty:
                continue
            site, _, kind = got_topic.removeprefix("brm/v1/").partition("/")
            assert site == SITE_A, got_topic
            seen.add(kind)
        assert agent.metrics()["brm_agent_mqtt_connected"] == 1
        assert agent.stop() == 0  # SIGTERM, as systemctl stop: the retained offline state
        offline = False
        deadline = time.monotonic() + ARRIVAL_S
        while not offline:
            assert time.monotonic() < deadline, "central never got the agent's offline state"
            with contextlib.suppress(queue.Empty):
                got_topic, payload = central.received.get(timeout=0.2)
                offline = got_topic == topic(SITE_A, "state") and b'"offline"' in payload
    finally:
        if agent.process is not None:
            stop_process(agent.process)
    assert "Not authorized" not in agent.log()


def test_add_site_refuses_a_malformed_site_id_and_writes_nothing(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    for bad in ("dc-cnx-01", "DC-CNX-1", "DC-CNXX-01", "DC-CNX-01/#", "+", "DC-CNX-01 ", "x"):
        done = run_add_site(passwd, bad, "a-good-long-password")
        assert done.returncode == 2, (bad, done.stdout, done.stderr)
        assert "invalid site id" in done.stderr
        assert "expected DC-XXX-NN" in done.stderr
        assert not passwd.exists()
    usage = subprocess.run([str(ADD_SITE)], check=False, capture_output=True, text=True, timeout=30)
    assert usage.returncode == 2
    assert usage.stderr.startswith("Usage: add-site")
    short = run_add_site(passwd, SITE_A, "short")
    assert short.returncode == 2
    assert "at least 16 characters" in short.stderr
    assert not passwd.exists()
    assert run_add_site(passwd, SITE_A, "a-good-long-password").returncode == 0  # the control
    assert passwd.read_text().startswith(f"{SITE_A}:$7$")


def test_the_compose_broker_set_up_serves_the_site_over_tls_and_central_inside(
    tmp_path: Path, clients: list[Client]
) -> None:
    """deploy/compose/broker-setup, run as compose runs it before Mosquitto (twice: a restart),
    then the shipped configuration with compose's extra listener: what compose.yaml starts,
    without Docker."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "BROKER_CERTS_DIR": str(tmp_path / "certs"),
        "MOSQUITTO_PASSWD_FILE": str(tmp_path / "credentials" / "passwd"),
        "BROKER_PUBLIC_DIR": str(tmp_path / "public"),
        "BROKER_NAMES": "mosquitto localhost",
        "CENTRAL_MQTT_PASSWORD": PASSWORD_CENTRAL,
        "SITE_ID": SITE_A,
        "SITE_MQTT_PASSWORD": PASSWORD_B,
    }
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            [str(BROKER_SETUP)], env=env, capture_output=True, text=True, check=False, timeout=120
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
        if len(outputs) == 1:
            first_certificate = (tmp_path / "certs" / "server.crt").read_bytes()
    assert "new CA" in outputs[0]
    assert "new CA" not in outputs[1]  # a restart keeps the certificate the agents trust
    assert (tmp_path / "certs" / "server.crt").read_bytes() == first_certificate
    assert not list(tmp_path.rglob("ca.key")), "the CA's key must not be kept"
    certs, public_ca = tmp_path / "certs", tmp_path / "public" / "ca.crt"
    names = subprocess.run(
        ["openssl", "x509", "-in", str(certs / "server.crt"), "-noout", "-ext", "subjectAltName"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    assert "DNS:mosquitto" in names  # the name the compose services connect to

    compose_port = free_tcp_port()
    listener = render(
        COMPOSE_LISTENER.read_text(),
        {"listener 1884\n": f"listener {compose_port} 127.0.0.1\n"},
        "mosquitto-compose.conf",
    )
    broker = ShippedBroker(
        tmp_path / "broker",
        certs / "server.crt",
        certs / "server.key",
        certs / "ca.crt",
        tmp_path / "credentials" / "passwd",
        conf_d={"compose.conf": listener},
    )
    broker.workdir.mkdir()
    broker.start()
    try:
        central = Client(compose_port, "central", PASSWORD_CENTRAL)
        site = Client(broker.tls_port, SITE_A, PASSWORD_B, ca_file=public_ca)
        clients.extend([central, site])
        assert central.connected().subscribe(topic("+", "telemetry")) == ["Granted QoS 1"]
        reading = (topic(SITE_A, "telemetry"), b"through compose's broker")
        assert not site.connected().publish(*reading).is_failure
        assert central.messages.get(timeout=ARRIVAL_S) == reading
    finally:
        broker.stop()


def test_the_shell_scripts_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (Debian package shellcheck)")
    scripts = [ADD_SITE, BROKER_SETUP, REPO / ".ci" / "run", *sorted(REPO.glob("scripts/*.sh"))]
    assert REPO / "scripts" / "vendor_dashboard.sh" in scripts
    done = subprocess.run(
        [shellcheck, *map(str, scripts)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout
