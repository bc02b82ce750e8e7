"""The shipped settings examples mean what they say: each key of the central env file is a
setting central reads (an unknown top-level one would be ignored without a word), its
placeholders stop the server, and the agent examples agree with the unit and compose.yaml."""

from __future__ import annotations

import pytest
import yaml
from pydantic import BaseModel

from central.db.engine import make_engine
from central.settings import CentralSettings
from common.settings import SettingsError, load_settings
from edge_agent.config import AgentSettings
from tests.deploy.support import CENTRAL_ENV, DEPLOY, REPO, UNITS, read_env_file

AGENT_EXAMPLE = DEPLOY / "agent" / "site-DC-CNX-01.yaml"


def _is_setting(model: type[BaseModel], path: list[str]) -> bool:
    field = model.model_fields.get(path[0])
    if field is None:
        return False
    if len(path) == 1:
        return True
    nested = field.annotation
    return (
        isinstance(nested, type) and issubclass(nested, BaseModel) and _is_setting(nested, path[1:])
    )


def test_every_key_of_the_central_env_file_is_a_setting() -> None:
    assert not _is_setting(CentralSettings, ["api", "jwt_secrte"])  # the check can fail
    assert not _is_setting(CentralSettings, ["database_url", "host"])
    for key in read_env_file(CENTRAL_ENV):
        assert key.startswith("BRM_CENTRAL_"), key
        path = key.removeprefix("BRM_CENTRAL_").lower().split("__")
        assert _is_setting(CentralSettings, path), f"{key} is not a setting of central"


def test_the_placeholders_stop_central_and_real_values_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shipped = read_env_file(CENTRAL_ENV)
    for key, value in shipped.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError, match=r"api\.jwt_secret"):
        load_settings(CentralSettings)
    monkeypatch.setenv("BRM_CENTRAL_API__JWT_SECRET", "x" * 64)
    settings = load_settings(CentralSettings)
    assert settings.api.socketio_message_queue == "redis://127.0.0.1:6379/0"
    assert settings.api.rate_limit_storage_uri.startswith("redis://")
    assert (settings.mqtt.username, settings.mqtt.port) == ("central", 1883)
    # The socket URL is one SQLAlchemy and psycopg2 accept (no connection is made here).
    engine = make_engine(settings.database_url)
    try:
        assert engine.url.query["host"] == "/var/run/postgresql"
        assert (engine.url.username, engine.url.database) == ("brm", "brm")
    finally:
        engine.dispose()


def test_the_real_site_example_uses_tls_its_own_username_and_the_units_outbox() -> None:
    settings = load_settings(AgentSettings, AGENT_EXAMPLE)
    site = settings.site_id
    assert (settings.mqtt.port, settings.mqtt.tls.enabled) == (8883, True)
    assert settings.mqtt.tls.ca_file is not None
    assert not settings.mqtt.tls.insecure_skip_verify
    assert settings.mqtt.username == site  # what the broker's ACL requires
    assert settings.mqtt.password is None  # it comes from the unit's EnvironmentFile
    unit = (UNITS / "battery-agent@.service").read_text()
    assert "BRM_AGENT_OUTBOX__PATH=/var/lib/battery-rul/agent-%i/outbox.sqlite3" in unit
    assert str(settings.outbox.path) == f"/var/lib/battery-rul/agent-{site}/outbox.sqlite3"
    assert settings.http.host == "127.0.0.1"


def test_the_compose_agent_reaches_the_compose_broker_over_tls() -> None:
    settings = load_settings(AgentSettings, DEPLOY / "compose" / "agent-DC-CNX-01.yaml")
    assert (settings.mqtt.host, settings.mqtt.port, settings.mqtt.tls.enabled) == (
        "mosquitto", 8883, True,
    )  # fmt: skip
    services = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]
    agent = services["agent-dc-cnx-01"]
    ca_dir = str(settings.mqtt.tls.ca_file.parent)
    assert f"broker-ca:{ca_dir}:ro" in agent["volumes"]
    assert all(device.host == "sim" for device in settings.devices)
    assert str(settings.outbox.path).startswith("/var/lib/battery-rul/")
    assert "agent-data:/var/lib/battery-rul" in agent["volumes"]
