"""Central's settings: built once at start-up from an optional YAML file and ``BRM_CENTRAL_*``.

``database_url`` defaults to ``sqlite:///var/brm-central.sqlite3``, a SQLite file under ``var/`` in
the working directory (created on first use; ``var/`` is git-ignored). Production points it at
PostgreSQL: ``BRM_CENTRAL_DATABASE_URL=postgresql://user@host:5432/brm``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from central.alerts import AlertSettings
from common.fleet import demo_fleet_path
from common.mqtt_tls import TlsSettings
from common.settings import ProgramSettings
from common.topics import DEFAULT_PREFIX

DEFAULT_DATABASE_URL = "sqlite:///var/brm-central.sqlite3"


class MqttSettings(BaseModel):
    """The broker ingest reads from (``BRM_CENTRAL_MQTT__HOST`` and so on)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    topic_prefix: str = DEFAULT_PREFIX
    # Fixed, so that the broker keeps this worker's session (and its queue) across restarts;
    # each worker of a scaled-out ingest needs its own.
    client_id: str = Field("brm-central-ingest-1", min_length=1, max_length=128)
    shared_group: str = Field("central", min_length=1, pattern=r"^[^/+#]+$")
    session_expiry_s: int = Field(7 * 24 * 3600, ge=0)
    keepalive_s: int = Field(30, ge=5)
    # "3.1.1" for brokers without MQTT v5 (the demo's embedded amqtt): no shared subscription,
    # so one ingest worker only; the session persists through clean_session=False instead.
    protocol: Literal["5", "3.1.1"] = "5"
    # The agent's options (BRM_CENTRAL_MQTT__TLS__ENABLED, __CA_FILE, ...): central need not
    # share the broker's host to keep its password off the wire.
    tls: TlsSettings = Field(default_factory=TlsSettings)


class IngestSettings(BaseModel):
    """How ingest groups messages into one transaction each."""

    model_config = ConfigDict(extra="forbid")

    # A backlog of agents' 500-reading messages stores ~20 % more per second in transactions of
    # 100 than of 50 (the alert engine judges each battery once per transaction); the byte
    # bound keeps a transaction of the largest messages (3 MB each) in memory's reach.
    batch_max_messages: int = Field(100, ge=1, le=10_000)
    batch_max_bytes: int = Field(16 * 1024 * 1024, ge=1)
    # How long the first message of a transaction waits for company: bounds live latency (a
    # backlog fills batch_max_messages at once, so throughput does not need a long wait).
    batch_max_wait_s: float = Field(0.02, gt=0, le=10)
    # A battery's RUL is refitted at most this often, and only after new readings.
    rul_refresh_s: float = Field(300.0, gt=0)


class ApiSettings(BaseModel):
    """The REST API (``BRM_CENTRAL_API__JWT_SECRET`` and so on).

    ``jwt_secret`` has no default: the server refuses to start without one (tests pass their own).
    """

    model_config = ConfigDict(extra="forbid")

    jwt_secret: SecretStr | None = Field(None, min_length=32)
    access_token_expires_s: int = Field(1800, ge=60)
    refresh_token_expires_s: int = Field(7 * 24 * 3600, ge=60)
    login_rate_limit: str = Field("5 per minute", min_length=1)
    # Every other API route, counted per user (per address before login).
    rate_limit: str = Field("100 per minute", min_length=1)
    # A battery counts as active (locations' active_batteries) if it reported this recently.
    active_within_s: int = Field(900, ge=60)
    # Where flask-limiter counts requests; "memory://" holds for one process only.
    rate_limit_storage_uri: str = Field("memory://", min_length=1)
    environment: str = Field("production", min_length=1)
    max_request_bytes: int = Field(1024 * 1024, ge=1024)
    # Socket.IO across processes (ingest emitting to API servers, several servers), e.g.
    # "redis://127.0.0.1:6379/0"; None: one process holds every session.
    socketio_message_queue: str | None = Field(None, min_length=1)
    # The queue's channel: processes share events only on the same one (one per deployment).
    socketio_channel: str = Field("flask-socketio", min_length=1, max_length=200)
    # Origins allowed to open Socket.IO connections; empty: same origin only; ["*"]: any.
    cors_allowed_origins: list[str] = Field(default_factory=list)
    # Whether /health/ready also requires the MQTT broker (``mqtt``) to accept a connection.
    ready_checks_broker: bool = True
    # Reverse proxies in front that set X-Forwarded-For/-Proto/-Host (nginx: 1); 0 trusts none,
    # so that a client cannot pick the address its login allowance is counted against.
    proxy_hops: int = Field(0, ge=0, le=5)
    # Bearer token a Prometheus scrape of /metrics must send; None: /metrics is open (keep it off
    # the public proxy then, as deploy/nginx does).
    metrics_token: SecretStr | None = Field(None, min_length=16)


class ResearchSettings(BaseModel):
    """Research uploads (``BRM_CENTRAL_RESEARCH__MAX_UPLOAD_BYTES`` and so on)."""

    model_config = ConfigDict(extra="forbid")

    # The research reference's limit: 100 MB (MiB); a larger request gets 413.
    max_upload_bytes: int = Field(100 * 1024 * 1024, ge=1024)
    # Where uploads are streamed while they are parsed (deleted after); None: the system's temp.
    upload_dir: Path | None = None
    # A dataset's end of life: SoH below this fraction (PATCH ``eol_threshold`` changes one).
    eol_threshold: float = Field(0.8, gt=0, lt=1)
    # Decompressed size a file may claim (zlib streams, HDF5 datasets) before it is refused.
    max_decompressed_bytes: int = Field(512 * 1024**2, ge=1024 * 1024)
    # Each upload is parsed in a child process with this much address space and this long.
    parse_memory_bytes: int = Field(2 * 1024**3, ge=256 * 1024**2)
    parse_timeout_s: float = Field(300.0, gt=0)


class CentralSettings(ProgramSettings):
    """Everything the central processes read from their environment."""

    model_config = SettingsConfigDict(
        env_prefix="BRM_CENTRAL_", env_nested_delimiter="__", extra="forbid"
    )

    database_url: str = Field(DEFAULT_DATABASE_URL, min_length=1)
    fleet_file: Path = Field(default_factory=demo_fleet_path)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    research: ResearchSettings = Field(default_factory=ResearchSettings)
