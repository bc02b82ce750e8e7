"""Agent settings: the shipped example is valid, and every mistake is named by its path."""

from pathlib import Path

import pytest

from common.settings import SettingsError, load_settings
from edge_agent.config import AgentSettings, ModbusDevice, SnmpDevice

EXAMPLE = Path(__file__).parents[2] / "deploy" / "agent" / "site-DC-CNX-01.yaml"


def test_the_example_config_is_valid():
    settings = load_settings(AgentSettings, EXAMPLE)
    assert settings.site_id == "DC-CNX-01"
    assert [type(d) for d in settings.devices] == [ModbusDevice] * 3 + [SnmpDevice]
    assert settings.client_id == "brm-agent-agent-dc-cnx-01"
    assert settings.devices[3].v3.user == "brm"


def test_password_from_the_environment(monkeypatch):
    monkeypatch.setenv("BRM_AGENT_MQTT__PASSWORD", "s3cret")
    assert load_settings(AgentSettings, EXAMPLE).mqtt.password == "s3cret"


def _problems(tmp_path, text):
    path = tmp_path / "site.yaml"
    path.write_text(text)
    with pytest.raises(SettingsError) as info:
        load_settings(AgentSettings, path)
    return info.value.problems


BASE = "site_id: DC-CNX-01\nagent_id: a1\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BASE + "devices: []\n", "devices: List should have at least 1 item"),
        (
            BASE
            + "devices:\n  - {type: modbus, id: STR-DC-CNX-01-UPS-01-01, host: h, port: 70000}\n",
            "devices.0.modbus.port: Input should be less than or equal to 65535",
        ),
        (
            BASE + "devices:\n  - {type: serial, id: x, host: h}\n",
            "devices.0: Input tag 'serial' found using 'type' does not match",
        ),
        (
            BASE + "devices:\n  - {type: modbus, id: BAT-1, host: h}\n",
            "devices.0.modbus.id: Value error, invalid string ID 'BAT-1'",
        ),
        (
            BASE + "devices:\n  - {type: snmp, id: DC-CNX-01-UPS-02, host: h, version: v3}\n",
            "devices.0.snmp: Value error, version v3 needs a v3 section",
        ),
        (
            BASE + "devices:\n  - {type: snmp, id: DC-CNX-01-UPS-01, host: h, interval_s: 5, "
            "timeout_s: 5}\n",
            "devices.0.snmp: Value error, timeout_s (5.0) must be shorter than interval_s",
        ),
        (
            BASE + "devices:\n  - {type: snmp, id: DC-BKK-01-UPS-01, host: h}\n",
            "Value error, device DC-BKK-01-UPS-01 is not part of site DC-CNX-01",
        ),
        (
            BASE + "devices:\n  - {type: snmp, id: DC-CNX-01-UPS-01, host: h}\n"
            "  - {type: modbus, id: STR-DC-CNX-01-UPS-01-02, host: h}\n",
            "would be read twice",
        ),
        (
            BASE + "devices:\n  - {type: snmp, id: DC-CNX-01-UPS-01, host: h}\n"
            "  - {type: snmp, id: DC-CNX-01-UPS-01, host: h}\n",
            "listed twice",
        ),
        (
            BASE + "mqtt: {tls: {enabled: true, cert_file: /c}}\n"
            "devices:\n  - {type: snmp, id: DC-CNX-01-UPS-01, host: h}\n",
            "mqtt.tls: Value error, cert_file and key_file go together",
        ),
        ("site_id: CNX\nagent_id: 'a b'\ndevices: []\n", "site_id: Value error, invalid location"),
        ("agent_id: a\ndevices: []\n", "site_id: Field required"),
    ],
)
def test_mistakes_are_named_by_path(tmp_path, text, expected):
    problems = _problems(tmp_path, text)
    assert any(expected in p for p in problems), problems


def test_check_config_command(tmp_path):
    import subprocess
    import sys

    agent = Path(sys.executable).with_name("battery-agent")
    ok = subprocess.run(
        [agent, "check-config", EXAMPLE], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stderr
    assert "ok — site DC-CNX-01" in ok.stdout
    assert "4 device(s) (modbus, snmp)" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "site_id: DC-CNX-01\nagent_id: a\ndevices:\n  - {type: modbus, id: x, host: h}\n"
    )
    result = subprocess.run(
        [agent, "check-config", bad], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "1 problem(s)" in result.stderr
    assert "devices.0.modbus.id: Value error, invalid string ID 'x'" in result.stderr
