"""Broker TLS settings and their application to a paho client, shared by the agent and central.

Paho itself is not imported here (only the protocol adapter modules may): ``configure_tls`` takes
any client with paho's ``tls_set`` and ``tls_insecure_set``.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, model_validator


class TlsSettings(BaseModel):
    """Broker TLS; with no ``ca_file`` the system's trust store is used."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (client certificate)")
        return self


class TlsClient(Protocol):
    def tls_set(
        self,
        ca_certs: str | None = ...,
        certfile: str | None = ...,
        keyfile: str | None = ...,
        cert_reqs: ssl.VerifyMode | None = ...,
    ) -> None: ...

    def tls_insecure_set(self, value: bool) -> None: ...


class TlsConfigError(Exception):
    """TLS settings that cannot work (a file missing or unreadable), named in the message."""


def configure_tls(client: TlsClient, tls: TlsSettings) -> None:
    """Apply ``tls`` to ``client`` now, so that an unusable file is reported before connecting."""
    insecure = tls.insecure_skip_verify
    try:
        client.tls_set(
            ca_certs=None if tls.ca_file is None else str(tls.ca_file),
            certfile=None if tls.cert_file is None else str(tls.cert_file),
            keyfile=None if tls.key_file is None else str(tls.key_file),
            cert_reqs=ssl.CERT_NONE if insecure else ssl.CERT_REQUIRED,
        )
        client.tls_insecure_set(insecure)
    except (OSError, ssl.SSLError, ValueError) as exc:
        files = ", ".join(
            f"{name}={path}"
            for name, path in (
                ("ca_file", tls.ca_file),
                ("cert_file", tls.cert_file),
                ("key_file", tls.key_file),
            )
            if path is not None
        )
        raise TlsConfigError(f"mqtt.tls ({files or 'system trust store'}): {exc}") from exc
