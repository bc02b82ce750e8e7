"""Settings of ``battery-sim``: a YAML file (``--config``) and ``BRM_SIM_*`` environment overrides.

Command-line flags override both. SNMP keys belong here or in the environment rather than on the
command line, where any local user could read them in the process list.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import SettingsConfigDict

from common.settings import ProgramSettings
from common.timeutil import ensure_utc


class SnmpAccess(BaseModel):
    """Who may read the simulated UPS cards; the defaults are published, for the simulator only."""

    model_config = ConfigDict(extra="forbid")

    community: str = Field("public", min_length=1)
    v3_user: str = Field("brm", min_length=1)
    v3_auth_key: str = Field("brm-auth-key", min_length=8)
    v3_priv_key: str = Field("brm-priv-key", min_length=8)


class SimulatorSettings(ProgramSettings):
    model_config = SettingsConfigDict(env_prefix="BRM_SIM_")

    host: str = "127.0.0.1"
    fleet: Path | None = None
    seed: int = Field(0, ge=0)
    time_scale: float = Field(1.0, gt=0, allow_inf_nan=False)
    start: datetime | None = None  # simulated time at start-up (RFC 3339); default: now
    snmp: SnmpAccess = SnmpAccess()

    @field_validator("start")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return None if value is None else ensure_utc(value)
