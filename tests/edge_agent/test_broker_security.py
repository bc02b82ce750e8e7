"""The agent reaches a broker that demands a password over TLS, and refuses one it can't trust."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from common.schemas import TelemetryBatch, decode
from tests.edge_agent.conftest import agent_settings
from tests.support import free_tcp_port, log_tail, stop_process, wait_for_tcp

pytestmark = pytest.mark.integration


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(directory: Path, name: str) -> None:
    """A CA ``{name}-ca.crt`` and a server certificate for 127.0.0.1 it signed, ``{name}.crt``."""
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN={name} test CA",
        "-keyout",
        f"{name}-ca.key",
        "-out",
        f"{name}-ca.crt",
        cwd=directory,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        cwd=directory,
    )
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{name}-ca.crt",
        "-CAkey",
        f"{name}-ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        f"{name}.crt",
        cwd=directory,
    )


@pytest.fixture
def secure_broker(tmp_path):
    make_certificates(tmp_path, "site")
    make_certificates(tmp_path, "other")  # a CA the broker's certificate does not come from
    passwords = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwords), "agent-cnx", "s3cret"],
        check=True,
        timeout=30,
    )
    subprocess.run(
        ["mosquitto_passwd", "-b", str(passwords), "reader", "r3ad"], check=True, timeout=30
    )
    port = free_tcp_port()
    conf = tmp_path / "secure.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        f"cafile {tmp_path}/site-ca.crt\ncertfile {tmp_path}/site.crt\n"
        f"keyfile {tmp_path}/site.key\n"
        f"allow_anonymous false\npassword_file {passwords}\nuser root\n"
        f"log_dest file {tmp_path}/secure-broker.log\n"
    )
    process = subprocess.Popen(["mosquitto", "-c", str(conf)])
    try:
        wait_for_tcp(port)
        yield port, tmp_path
    finally:
        stop_process(process)


def _subscribe(port: int, certs: Path, topic: str, seconds: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            "stdbuf",
            "-oL",
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "--cafile",
            str(certs / "site-ca.crt"),
            "-u",
            "reader",
            "-P",
            "r3ad",
            "-t",
            topic,
            "-C",
            "1",
            "-W",
            str(seconds),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _settings(site, port, workdir, certs, ca_name, password):
    broker = SimpleNamespace(host="127.0.0.1", port=port)
    return agent_settings(
        site,
        broker,
        workdir,
        "secure/brm/v1",
        mqtt={
            "host": "127.0.0.1",
            "port": port,
            "topic_prefix": "secure/brm/v1",
            "username": "agent-cnx",
            "password": password,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1,
            "tls": {"enabled": True, "ca_file": str(certs / f"{ca_name}-ca.crt")},
        },
    )


def test_password_and_tls(simulated_site, secure_broker, agent_factory, tmp_path):
    port, certs = secure_broker
    agent = agent_factory(_settings(simulated_site, port, tmp_path, certs, "site", "s3cret"))
    sub = _subscribe(port, certs, "secure/brm/v1/DC-CNX-01/telemetry", 20)
    time.sleep(0.5)
    agent.start()
    output, errors = sub.communicate(timeout=30)
    assert sub.returncode == 0, errors + log_tail(certs / "secure-broker.log")
    batch = decode(TelemetryBatch, output.strip())
    assert batch.site_id == "DC-CNX-01"
    assert agent.metrics()["brm_agent_mqtt_connected"] == 1


@pytest.mark.parametrize(
    ("ca_name", "password", "why"),
    [("site", "wrong", "a wrong password"), ("other", "s3cret", "a CA that did not sign it")],
)
def test_refused_broker_keeps_readings_safe(
    simulated_site, secure_broker, agent_factory, tmp_path, ca_name, password, why
):
    port, certs = secure_broker
    agent = agent_factory(_settings(simulated_site, port, tmp_path, certs, ca_name, password))
    agent.start()
    time.sleep(4)
    metrics = agent.metrics()
    assert metrics["brm_agent_mqtt_connected"] == 0, why
    assert metrics["brm_agent_outbox_readings"] > 0  # still polling, keeping every reading
    assert agent.health()["mqtt_connected"] is False
    assert agent.process.poll() is None  # and still running


def test_unusable_tls_settings_stop_the_agent_with_the_reason(
    simulated_site, mqtt_broker, agent_factory, tmp_path
):
    settings = agent_settings(
        simulated_site,
        mqtt_broker,
        tmp_path,
        "badtls/brm/v1",
        mqtt={"tls": {"enabled": True, "ca_file": str(tmp_path / "missing-ca.crt")}},
    )
    agent = agent_factory(settings)
    agent.start(wait_ready=False)  # it may be gone before its metrics port could be seen
    assert agent.process.wait(30) == 1  # a service manager restarts it; nothing is lost
    agent.process = None
    log = agent.log()
    assert "publisher stopped on its own" in log
    assert "missing-ca.crt" in log
