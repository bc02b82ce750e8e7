"""compose.yaml, the Dockerfile and .dockerignore: compose validates the file, refuses to run
without each secret, and what compose cannot check without a daemon is checked here (each
``service_healthy`` dependency has a healthcheck, each mounted file exists, each file the
Dockerfile copies is in the build context)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.support import DEPLOY, REPO, read_env_file

COMPOSE = REPO / "compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
ENV_EXAMPLE = DEPLOY / "compose" / "env.example"
SECRETS = {
    key: f"test-{key.lower()}-0123456789abcdef0123456789" for key in read_env_file(ENV_EXAMPLE)
}


def _compose_command() -> list[str]:
    """``docker compose`` (the plugin), else the standalone ``docker-compose``."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker client is not installed")
    plugin = subprocess.run(
        [docker, "compose", "version"], capture_output=True, check=False, timeout=60
    )
    if plugin.returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone is None:
        pytest.skip("docker is installed without compose (neither the plugin nor docker-compose)")
    return [standalone]


def _config(secrets: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRM_", "COMPOSE_"))}
    return subprocess.run(
        [*_compose_command(), "-f", str(COMPOSE), "config", "-q"],
        env={**env, **secrets},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _services() -> dict[str, dict]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


@pytest.mark.integration
def test_compose_validates_the_file() -> None:
    done = _config(SECRETS)
    assert done.returncode == 0, done.stderr


@pytest.mark.integration
def test_compose_refuses_to_run_without_each_secret() -> None:
    for missing in SECRETS:
        done = _config({k: v for k, v in SECRETS.items() if k != missing})
        assert done.returncode != 0, f"compose ran without {missing}"
        assert f"set {missing}" in done.stderr, done.stderr


def test_the_env_example_lists_every_variable_compose_reads_and_holds_no_secret() -> None:
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    assert used == set(SECRETS)
    assert set(read_env_file(ENV_EXAMPLE).values()) == {"CHANGE-ME"}


def test_every_service_a_service_waits_for_can_report_its_state() -> None:
    services = _services()
    for name, service in services.items():
        for target, rule in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on an unknown {target}"
            if rule["condition"] == "service_healthy":
                check = services[target].get("healthcheck", {})
                assert check.get("test") and not check.get("disable"), (name, target)
            else:
                assert rule["condition"] == "service_completed_successfully", (name, rule)
                assert services[target]["restart"] == "no", f"{target} runs once"


def test_the_system_is_all_there_and_runs_the_shipped_configuration() -> None:
    services = _services()
    assert {
        "mosquitto", "postgres", "redis", "central-serve", "central-ingest", "sim",
        "agent-dc-cnx-01",
    } <= set(services)  # fmt: skip
    mounts = services["mosquitto"]["volumes"]
    assert "./deploy/mosquitto/mosquitto.conf:/etc/mosquitto/mosquitto.conf:ro" in mounts
    assert "./deploy/mosquitto/acl:/etc/mosquitto/acl:ro" in mounts
    assert services["central-serve"]["command"][:2] == ["battery-central", "serve"]
    assert services["central-ingest"]["command"] == ["battery-central", "ingest"]
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).is_file(), f"{name} mounts a missing {source}"


def _stage(name: str) -> str:
    """The text of one ``FROM ... AS name`` stage of the Dockerfile."""
    text = DOCKERFILE.read_text()
    stages = re.split(r"^(?=FROM )", text, flags=re.MULTILINE)
    (stage,) = [s for s in stages if re.match(rf"FROM \S+ AS {name}\n", s)]
    return stage


def test_the_app_image_is_slim_unprivileged_without_test_tools_and_checks_its_health() -> None:
    text = DOCKERFILE.read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    last_from = [line for line in text.splitlines() if line.startswith("FROM ")][-1]
    assert last_from == "FROM ${PYTHON_IMAGE} AS app", "the default target must be the app"
    app = _stage("app")
    assert "USER brm" in app
    assert "HEALTHCHECK" in app
    assert "http://127.0.0.1:8000/health" in app
    build = _stage("build")
    assert "pip install ." in build
    assert "[test]" not in text


def test_every_file_the_dockerfile_copies_is_in_the_build_context() -> None:
    rules = [line for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")]
    allowed = {rule[1:] for rule in rules}
    patterns = [line for line in DOCKERIGNORE.read_text().splitlines() if line and line[0] != "#"]
    assert patterns[0] == "*", "the context is an allow-list: everything else stays out"
    sources = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    assert sources
    for source in sources:
        assert source in allowed, f"COPY {source}: excluded by .dockerignore"
        assert (REPO / source).exists(), f"COPY {source}: no such file"
    for secret_or_bulk in (".git", ".venv", "tests", ".env"):
        assert secret_or_bulk not in allowed


@pytest.mark.integration
def test_nginx_accepts_the_site_example(tmp_path: Path) -> None:
    nginx = shutil.which("nginx")
    if nginx is None:
        pytest.skip("nginx is not installed")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=battery.example.net", "-keyout", "site.key", "-out", "site.pem"],
        cwd=tmp_path, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    site = (DEPLOY / "nginx" / "battery-rul.conf").read_text()
    for old, new in (
        ("/etc/ssl/certs/battery.example.net.pem", tmp_path / "site.pem"),
        ("/etc/ssl/private/battery.example.net.key", tmp_path / "site.key"),
    ):
        assert site.count(old) == 1
        site = site.replace(old, str(new))
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n    include {tmp_path}/site.conf;\n}}\n"
    )
    done = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
         "-e", str(tmp_path / "error.log")],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr
    for needed in ("ip_hash;", "proxy_set_header Upgrade $http_upgrade;", "location /socket.io/"):
        assert needed in site
