"""``battery-sim`` as a technician runs it: real processes, real ports, the fault commands."""

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support import free_tcp_port, free_udp_port, stop_process, wait_for_tcp

pytestmark = pytest.mark.integration

BATTERY_SIM = Path(sys.executable).with_name("battery-sim")
BAT = "BAT-DC-CNX-01-UPS-02-STR-03-010"


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BATTERY_SIM), *args], capture_output=True, text=True, timeout=60, check=False
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_help_documents_every_command():
    for command in ("modbus", "snmp", "site", "fleet"):
        text = _cli(command, "--help").stdout
        assert "--time-scale" in text
        assert "--control-port" in text
    inject = _cli("fault", "inject", "--help").stdout
    for kind in ("mains_outage", "overcharge", "capacity_loss", "accelerated_ageing", "--since"):
        assert kind in inject


def test_fault_commands_drive_a_running_site(simulated_site):
    control = ("fault", "--control", simulated_site.control_url)
    before = simulated_site.snapshot()["internal_resistance"][5][9]
    fault = json.loads(
        _cli(*control, "inject", "resistance_jump", BAT, "--param", "factor=2").stdout
    )
    assert fault["target"] == BAT
    assert simulated_site.snapshot()["internal_resistance"][5][9] == pytest.approx(
        2 * before, rel=0.05
    )
    listing = json.loads(_cli(*control, "list", "--site", "DC-CNX-01").stdout)
    assert [f["id"] for f in listing["faults"] if f["end"] is None] == [fault["id"]]
    _cli(*control, "clear", "--site", "DC-CNX-01", str(fault["id"]))
    assert simulated_site.snapshot()["internal_resistance"][5][9] == pytest.approx(before, rel=0.05)


def test_a_fault_injected_since_a_past_time_starts_then(simulated_site):
    control = ("fault", "--control", simulated_site.control_url)
    before = simulated_site.snapshot()["voltage"][5][9]
    since = "2025-06-01T00:00:00Z"
    args = ("overcharge", BAT, "--param", "delta_v_per_cell=0.1", "--since", since)
    fault = json.loads(_cli(*control, "inject", *args).stdout)
    assert fault["start"] == 1_748_736_000.0
    assert fault["params"] == {"delta_v_per_cell": 0.1}
    assert simulated_site.snapshot()["voltage"][5][9] == pytest.approx(before + 0.6, abs=0.05)
    future = _cli(
        *control, "inject", "overcharge", BAT, "--since", "2030-01-01T00:00:00Z", check=False
    )
    assert future.returncode != 0
    assert "error 422" in future.stderr and "not a time before now" in future.stderr


def test_fault_command_errors_are_plain(simulated_site):
    control = ("fault", "--control", simulated_site.control_url)
    bad = _cli(*control, "inject", "overheating", "BAT-DC-CNX-01-UPS-09-STR-01-001", check=False)
    assert bad.returncode != 0
    assert "error 422" in bad.stderr
    unreachable = _cli(
        "fault",
        "--control",
        f"http://127.0.0.1:{free_tcp_port()}",
        "list",
        "--site",
        "DC-CNX-01",
        check=False,
    )
    assert unreachable.returncode != 0
    assert "cannot reach the control API" in unreachable.stderr


def test_fleet_serves_consecutive_ports_and_stops_cleanly(tmp_path):
    base = free_tcp_port()
    control = free_tcp_port()
    log = (tmp_path / "fleet.log").open("wb")
    process = subprocess.Popen(
        [
            str(BATTERY_SIM),
            "fleet",
            "--sites",
            "2",
            "--modbus-port",
            str(base),
            "--snmp-port",
            str(base),
            "--control-port",
            str(control),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_tcp(control, timeout=30)
        wait_for_tcp(base)
        wait_for_tcp(base + 1)
        with urllib.request.urlopen(f"http://127.0.0.1:{control}/health", timeout=5) as response:
            assert json.load(response)["sites"] == ["DC-BKK-01", "DC-CNX-01"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        stop_process(process)
        log.close()
    assert "stopped" in (tmp_path / "fleet.log").read_text()


def test_unknown_site_is_refused():
    result = _cli("modbus", "--site", "DC-XXX-01", "--port", str(free_tcp_port()), check=False)
    assert result.returncode != 0
    assert "DC-XXX-01" in result.stderr


def test_settings_file_and_environment(tmp_path):
    """SNMP keys from the settings file, the community from the environment, flags on top."""
    from tests.referees import snmpget_v2c

    port = free_udp_port()
    config = tmp_path / "sim.yaml"
    config.write_text("seed: 3\nsnmp: {v3_auth_key: site-auth-key, v3_priv_key: site-priv-key}\n")
    env = {**os.environ, "BRM_SIM_SNMP__COMMUNITY": "s3cret"}
    log = (tmp_path / "snmp.log").open("wb")
    process = subprocess.Popen(
        [
            str(BATTERY_SIM),
            "snmp",
            "--site",
            "DC-CNX-01",
            "--port",
            str(port),
            "--config",
            str(config),
            "--control-port",
            str(free_tcp_port()),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        assert snmpget_v2c(port, "s3cret", "1.3.6.1.2.1.1.5.0", retries=20) == "DC-CNX-01-UPS-01"
        assert snmpget_v2c(port, "public", "1.3.6.1.2.1.1.5.0", retries=0) is None
        v3 = subprocess.run(
            [
                "snmpget",
                "-v3",
                "-l",
                "authPriv",
                "-u",
                "brm",
                "-a",
                "SHA",
                "-A",
                "site-auth-key",
                "-x",
                "AES",
                "-X",
                "site-priv-key",
                "-On",
                "-Oqv",
                "-t",
                "2",
                "-r",
                "1",
                f"127.0.0.1:{port}",
                "1.3.6.1.2.1.1.5.0",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert v3.stdout.strip().strip('"') == "DC-CNX-01-UPS-01", v3.stderr
    finally:
        stop_process(process)
        log.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--time-scale", "0"), "must be a positive number"),
        (("--time-scale", "nan"), "must be a positive number"),
        (("--config", "/nonexistent/sim.yaml"), "cannot read the file"),
    ],
)
def test_bad_settings_are_explained(args, message):
    result = _cli("site", "--site", "DC-CNX-01", *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr
