import pytest
from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from common.settings import ProgramSettings, SettingsError, load_settings


class _Broker(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)


class _Settings(ProgramSettings):
    model_config = SettingsConfigDict(env_prefix="BRM_TEST_")

    broker: _Broker = _Broker()
    interval_s: float = 60.0


def test_defaults_without_a_file(monkeypatch):
    monkeypatch.delenv("BRM_TEST_INTERVAL_S", raising=False)
    assert load_settings(_Settings).interval_s == 60.0


def test_file_then_environment(tmp_path, monkeypatch):
    path = tmp_path / "site.yaml"
    path.write_text("broker:\n  host: broker.example\n  port: 8883\ninterval_s: 5\n")
    monkeypatch.setenv("BRM_TEST_BROKER__PORT", "1884")
    settings = load_settings(_Settings, path)
    assert settings.broker.host == "broker.example"
    assert settings.broker.port == 1884
    assert settings.interval_s == 5.0


def test_every_problem_is_named_by_its_path(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("broker:\n  port: 70000\ninterval_s: soon\ncolour: blue\n")
    with pytest.raises(SettingsError) as info:
        load_settings(_Settings, path)
    problems = info.value.problems
    assert any(p.startswith("broker.port:") for p in problems)
    assert any(p.startswith("interval_s:") for p in problems)
    assert any(p.startswith("colour:") and "Extra" in p for p in problems)


@pytest.mark.parametrize(
    ("text", "problem"),
    [("broker: [unclosed", "not valid YAML"), ("- a\n- b\n", "must hold a mapping")],
)
def test_unusable_files(tmp_path, text, problem):
    path = tmp_path / "site.yaml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=problem):
        load_settings(_Settings, path)


def test_missing_file(tmp_path):
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(_Settings, tmp_path / "absent.yaml")


def test_empty_file_means_defaults(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("")
    assert load_settings(_Settings, path).broker.port == 1883
