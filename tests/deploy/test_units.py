"""The systemd units of deploy/systemd: systemd's own checker accepts them without a warning,
their hardening keeps systemd's exposure score low, and they name what the rest of the
deployment provides (the env files, the install path, the state directories)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.support import INSTALLED_BIN, UNITS, VENV_BIN, render

integration = pytest.mark.integration  # the tests that run systemd-analyze

SERVICES = ["battery-central-serve.service", "battery-central-ingest.service"]
TEMPLATE = "battery-agent@.service"
INSTANCE = "battery-agent@DC-CNX-01.service"
# systemd-analyze security's overall exposure, times ten (its --threshold scale): the units
# score 1.3 ("OK"); anything above 2.0 means some hardening went missing.
EXPOSURE_THRESHOLD = "20"


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    return tool


@pytest.fixture
def units(tmp_path: Path) -> list[Path]:
    """Copies of the units whose commands run this virtualenv's programs (systemd-analyze
    verify requires each ExecStart program to exist), and an instance of the agent template."""
    made = []
    for name in [*SERVICES, TEMPLATE]:
        text = (UNITS / name).read_text()
        uses = text.count(INSTALLED_BIN + "/")
        assert uses >= 1, f"{name} does not run the programs of {INSTALLED_BIN}"
        copy = tmp_path / (INSTANCE if name == TEMPLATE else name)
        copy.write_text(text.replace(INSTALLED_BIN + "/", f"{VENV_BIN}/"))
        made.append(copy)
    return made


@integration
def test_systemd_verifies_every_unit_without_a_warning(units: list[Path]) -> None:
    tool = _systemd_analyze()
    for unit in units:
        done = subprocess.run(
            [tool, "verify", str(unit)], capture_output=True, text=True, check=False, timeout=60
        )
        # Unknown keys and bad values are only warnings (exit 0): any output is a defect.
        assert (done.returncode, done.stderr.strip(), done.stdout.strip()) == (0, "", ""), unit.name


@integration
def test_verify_notices_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key and a missing program are reported."""
    tool = _systemd_analyze()
    text = (UNITS / "battery-central-ingest.service").read_text()
    broken = tmp_path / "broken.service"
    broken.write_text(render(text, {"NoNewPrivileges=yes": "NoNewPrivilege=yes"}, "ingest unit"))
    done = subprocess.run(
        [tool, "verify", str(broken)], capture_output=True, text=True, check=False, timeout=60
    )
    assert "Unknown key" in done.stderr
    assert "is not executable" in done.stderr  # /opt/battery-rul is not installed here
    assert done.returncode != 0


@integration
def test_hardening_keeps_the_exposure_score_low(units: list[Path]) -> None:
    tool = _systemd_analyze()
    for unit in units:
        done = subprocess.run(
            [tool, "security", "--offline=true", f"--threshold={EXPOSURE_THRESHOLD}", str(unit)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert done.returncode == 0, f"{unit.name}:\n{done.stdout}{done.stderr}"
        assert f"Overall exposure level for {unit.name}" in done.stdout


def _settings(name: str) -> dict[str, list[str]]:
    """Each ``Key=`` of a unit file with all its values, in order."""
    found: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            found.setdefault(key, []).append(value)
    return found


@pytest.mark.parametrize("name", [*SERVICES, TEMPLATE])
def test_units_run_unprivileged_with_their_secrets_in_env_files(name: str) -> None:
    settings = _settings(name)
    assert settings["User"] == ["brm"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["CapabilityBoundingSet"] == [""]
    (environment_file,) = settings["EnvironmentFile"]
    assert environment_file.startswith("/etc/battery-rul/")
    assert not environment_file.startswith("-"), "a missing secrets file must stop the start"
    # The only writable place is the unit's own state directory.
    state = "/var/lib/" + settings["StateDirectory"][0]
    assert settings["ReadWritePaths"] == [state]
    sysusers = (UNITS / "battery-rul.sysusers.conf").read_text()
    assert "u brm - " in sysusers


def test_serve_migrates_before_it_starts_and_ingest_starts_after_it() -> None:
    serve = _settings("battery-central-serve.service")
    assert serve["ExecStartPre"] == [f"{INSTALLED_BIN}/battery-central db upgrade"]
    assert serve["ExecStart"][0].startswith(f"{INSTALLED_BIN}/battery-central serve ")
    ingest = _settings("battery-central-ingest.service")
    assert ingest["ExecStart"] == [f"{INSTALLED_BIN}/battery-central ingest"]
    assert "battery-central-serve.service" in " ".join(ingest["After"])


def test_the_agent_template_ties_site_credentials_and_state_to_the_instance() -> None:
    agent = _settings(TEMPLATE)
    assert agent["EnvironmentFile"] == ["/etc/battery-rul/agent-%i.env"]
    assert agent["ExecStart"] == [
        f"{INSTALLED_BIN}/battery-agent --config /etc/battery-rul/agent-%i.yaml"
    ]
    assert set(agent["Environment"]) >= {
        "BRM_AGENT_SITE_ID=%i",
        "BRM_AGENT_MQTT__USERNAME=%i",
        "BRM_AGENT_OUTBOX__PATH=/var/lib/battery-rul/agent-%i/outbox.sqlite3",
    }
    assert agent["StateDirectory"] == ["battery-rul/agent-%i"]
