"""Settings for every program: a YAML file, overridden by environment variables.

This is the only module that reads the environment. Each program declares its settings as a
subclass of ``ProgramSettings`` with an ``env_prefix`` (``BRM_AGENT_``, ``BRM_CENTRAL_``, …);
nested keys are joined with ``__``: ``BRM_AGENT_MQTT__HOST=broker`` overrides ``mqtt.host``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class SettingsError(ValueError):
    """Settings that cannot be used; ``problems`` lists each as ``path.in.file: what is wrong``."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems


class ProgramSettings(BaseSettings):
    """Base of each program's settings; environment variables win over the file."""

    model_config = SettingsConfigDict(env_nested_delimiter="__", extra="forbid")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)


S = TypeVar("S", bound=ProgramSettings)


def problems_of(exc: ValidationError) -> list[str]:
    """Each validation error as ``path.in.file: message``, in the file's own terms."""
    problems = []
    for error in exc.errors():
        path = ".".join(str(p) for p in error["loc"]) or "(top level)"
        problems.append(f"{path}: {error['msg']}")
    return problems


def read_yaml_mapping(path: Path) -> dict[str, object]:
    """A YAML file's top-level mapping; an empty file is an empty mapping."""
    try:
        with path.open(encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise SettingsError(str(path), [f"cannot read the file: {exc.strerror}"]) from exc
    except yaml.YAMLError as exc:
        raise SettingsError(str(path), [f"not valid YAML: {exc}"]) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(str(path), ["the file must hold a mapping of settings"])
    return data


def load_settings(cls: type[S], path: str | Path | None = None) -> S:
    """Build ``cls`` from ``path`` (optional) plus the environment; raise ``SettingsError``."""
    source = str(path) if path is not None else "settings"
    data = read_yaml_mapping(Path(path)) if path is not None else {}
    try:
        return cls(**data)
    except ValidationError as exc:
        raise SettingsError(source, problems_of(exc)) from exc
