"""The agent's settings: one YAML file per site (``--config``), ``BRM_AGENT_*`` overrides.

Every setting is documented in the README; ``battery-agent check-config`` explains each error by
its path in the file (``devices.2.port: ...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from common import ids
from common.mqtt_tls import TlsSettings
from common.settings import ProgramSettings
from common.topics import DEFAULT_PREFIX

Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MqttSettings(_Section):
    host: str = "127.0.0.1"
    port: Port = 1883
    username: str | None = None
    password: str | None = None
    client_id: str | None = None  # default: brm-agent-{agent_id}
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    topic_prefix: str = DEFAULT_PREFIX
    # "3.1.1" for brokers without MQTT v5 (the demo's embedded amqtt).
    protocol: Literal["5", "3.1.1"] = "5"
    tls: TlsSettings = TlsSettings()
    reconnect_min_s: Seconds = 1.0
    reconnect_max_s: Seconds = 30.0


class OutboxSettings(_Section):
    path: Path = Path("outbox.sqlite3")
    max_readings: Annotated[int, Field(ge=1000)] = 2_000_000  # ~9 days of a 216-block site at 1/min


class PublishSettings(_Section):
    batch_readings: Annotated[int, Field(ge=1, le=10_000)] = 500
    max_in_flight: Annotated[int, Field(ge=1, le=1000)] = 20
    backlog_readings_per_s: Annotated[float, Field(gt=0)] = 20_000.0
    state_interval_s: Seconds = 30.0


class HttpSettings(_Section):
    """Prometheus ``/metrics`` and ``/health``; localhost only unless deliberately changed."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9108


class _Device(_Section):
    id: str
    host: str
    interval_s: Seconds = 60.0
    timeout_s: Seconds = 5.0
    max_backoff_s: Seconds = 300.0

    @model_validator(mode="after")
    def _timeout_fits(self) -> _Device:
        if self.timeout_s >= self.interval_s:
            raise ValueError(f"timeout_s ({self.timeout_s}) must be shorter than interval_s")
        return self


class ModbusDevice(_Device):
    """One battery-string monitor behind a Modbus TCP gateway; ``id`` is its string ID."""

    type: Literal["modbus"]
    port: Port = 502
    unit_id: Annotated[int, Field(ge=1, le=247)] = 1
    profile: str = "brm-monitor-v1"

    @field_validator("id")
    @classmethod
    def _string_id(cls, value: str) -> str:
        ids.parse_string_id(value)
        return value


class SnmpV3(_Section):
    user: str
    auth_key: str = Field(min_length=8)
    priv_key: str = Field(min_length=8)
    auth_protocol: Literal["SHA", "SHA-224", "SHA-256", "SHA-384", "SHA-512"] = "SHA"
    priv_protocol: Literal["AES", "AES-192", "AES-256"] = "AES"


class SnmpDevice(_Device):
    """One UPS's SNMP card (UPS-MIB plus the per-battery table); ``id`` is its UPS ID."""

    type: Literal["snmp"]
    port: Port = 161
    version: Literal["v2c", "v3"] = "v2c"
    community: str = "public"
    context: str | None = None  # v3 context; default ups-NN of the UPS ID
    v3: SnmpV3 | None = None

    @field_validator("id")
    @classmethod
    def _ups_id(cls, value: str) -> str:
        ids.parse_ups_id(value)
        return value

    @model_validator(mode="after")
    def _v3_credentials(self) -> SnmpDevice:
        if self.version == "v3" and self.v3 is None:
            raise ValueError("version v3 needs a v3 section (user, auth_key, priv_key)")
        return self


Device = Annotated[ModbusDevice | SnmpDevice, Field(discriminator="type")]


class AgentSettings(ProgramSettings):
    model_config = SettingsConfigDict(env_prefix="BRM_AGENT_")

    site_id: str
    agent_id: str = Field(pattern=r"^[A-Za-z0-9._:-]{1,128}$")
    devices: list[Device] = Field(min_length=1)
    mqtt: MqttSettings = MqttSettings()
    outbox: OutboxSettings = OutboxSettings()
    publish: PublishSettings = PublishSettings()
    http: HttpSettings = HttpSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("site_id")
    @classmethod
    def _site(cls, value: str) -> str:
        return ids.validate_location_id(value)

    @model_validator(mode="after")
    def _devices_of_this_site(self) -> AgentSettings:
        seen: set[str] = set()
        snmp_ups = {d.id for d in self.devices if isinstance(d, SnmpDevice)}
        for device in self.devices:
            site = (
                ids.parse_string_id(device.id)[0]
                if isinstance(device, ModbusDevice)
                else ids.parse_ups_id(device.id)[0]
            )
            if site != self.site_id:
                raise ValueError(f"device {device.id} is not part of site {self.site_id}")
            if device.id in seen:
                raise ValueError(f"device {device.id} is listed twice")
            seen.add(device.id)
            if isinstance(device, ModbusDevice):
                location, ups, _ = ids.parse_string_id(device.id)
                if ids.ups_id(location, ups) in snmp_ups:
                    raise ValueError(
                        f"string {device.id} would be read twice: its UPS is also an SNMP device"
                    )
        return self

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"brm-agent-{self.agent_id}"
