"""Prometheus ``/metrics`` and a JSON ``/health`` on localhost, served from a daemon thread."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from common.localhttp import LocalHttpServer

log = logging.getLogger(__name__)

Health = Callable[[], dict[str, object]]


def _handler(registry: CollectorRegistry, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
            elif path == "/health":
                document = health()
                status = 200 if document.get("status") in {"ok", "degraded"} else 503
                self._send(status, "application/json", json.dumps(document).encode())
            else:
                self._send(404, "application/json", b'{"detail": "not found"}')

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("http: " + format, *args)

    return Handler


class MetricsServer(LocalHttpServer):
    """``/metrics`` and ``/health``, served from a daemon thread beside the agent's loop."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: Health) -> None:
        super().__init__(host, port, _handler(registry, health))
