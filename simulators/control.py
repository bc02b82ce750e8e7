"""The simulators' control interface: a small JSON-over-HTTP endpoint on localhost.

Technicians and tests inject and clear faults while the servers run, and read what the twin
says right now (the value every served register and OID must agree with).

    GET    /health                       {"status": "ok", "sites": [...]}
    GET    /sites/{site}/snapshot        the twin's readings now (null = sensor unavailable)
    GET    /sites/{site}/faults          faults, active and cleared
    POST   /sites/{site}/faults          {"kind": ..., "target": ..., "params": {...}} -> 201
                                         optional "start": a simulated time in the past (Unix
                                         seconds or RFC 3339) since when the fault has been there;
                                         block_replaced (a battery swapped for a new one) ends
                                         where it starts, and its params say what the new block
                                         is (drawn, if not given: soh_pct, resistance_ohm)
    DELETE /sites/{site}/faults/{id}     clear one fault (409 once ended, as a replacement is)
    DELETE /sites/{site}/faults          clear every active fault
"""

from __future__ import annotations

import json
import logging
import math
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler

import numpy as np

from common.localhttp import LocalHttpServer
from common.timeutil import parse_rfc3339, to_unix
from simulators.live import LiveSite

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
_FAULTS = re.compile(r"/sites/(?P<site>[A-Z0-9-]+)/faults(?:/(?P<id>[0-9]+))?")
_SNAPSHOT = re.compile(r"/sites/(?P<site>[A-Z0-9-]+)/snapshot")


class ControlError(Exception):
    """A request the control API refuses; carries the HTTP status and a stable code."""

    def __init__(self, status: HTTPStatus, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _plain(values: np.ndarray) -> list[object]:
    """Nested lists with None for NaN, so JSON stays standard."""
    return [
        _plain(v) if isinstance(v, np.ndarray) else (None if math.isnan(v) else float(v))
        for v in values
    ]


def snapshot_document(live: LiveSite) -> dict[str, object]:
    snap = live.snapshot()
    layout = live.layout
    return {
        "site_id": layout.location_id,
        "t": snap.t,
        "battery_ids": [
            [layout.battery_id(k, b) for b in range(layout.blocks_per_string)]
            for k in range(layout.string_count)
        ],
        "string_ids": [layout.string_id(k) for k in range(layout.string_count)],
        "voltage": _plain(snap.voltage),
        "temperature": _plain(snap.temperature),
        "internal_resistance": _plain(snap.internal_resistance),
        "soc_pct": _plain(snap.soc_pct),
        "soh_pct": _plain(snap.soh_pct),
        "string_current": _plain(snap.string_current),
        "string_voltage": _plain(snap.string_voltage),
        "string_status": [int(s) for s in snap.string_status],
        "ups_seconds_on_battery": _plain(snap.ups_seconds_on_battery),
        "ups_minutes_remaining": _plain(snap.ups_minutes_remaining),
        "ups_charge_pct": _plain(snap.ups_charge_pct),
    }


class ControlApi:
    """Routes control requests to the sites of this process; independent of HTTP plumbing."""

    def __init__(self, sites: dict[str, LiveSite]) -> None:
        self.sites = sites

    def handle(self, method: str, path: str, body: object) -> tuple[HTTPStatus, object]:
        if path == "/health" and method == "GET":
            return HTTPStatus.OK, {"status": "ok", "sites": sorted(self.sites)}
        if match := _SNAPSHOT.fullmatch(path):
            self._allow(method, {"GET"})
            return HTTPStatus.OK, snapshot_document(self._site(match["site"]))
        if match := _FAULTS.fullmatch(path):
            return self._faults(method, self._site(match["site"]), match["id"], body)
        raise ControlError(HTTPStatus.NOT_FOUND, "RESOURCE_NOT_FOUND", f"no route {path}")

    def _faults(
        self, method: str, live: LiveSite, fault_id: str | None, body: object
    ) -> tuple[HTTPStatus, object]:
        if fault_id is not None:
            self._allow(method, {"DELETE"})
            try:
                return HTTPStatus.OK, live.clear(int(fault_id)).to_dict()
            except KeyError as exc:
                raise ControlError(
                    HTTPStatus.NOT_FOUND, "RESOURCE_NOT_FOUND", f"fault {fault_id} not found"
                ) from exc
            except ValueError as exc:
                raise ControlError(HTTPStatus.CONFLICT, "ALREADY_CLEARED", str(exc)) from exc
        self._allow(method, {"GET", "POST", "DELETE"})
        if method == "GET":
            return HTTPStatus.OK, {"faults": [f.to_dict() for f in live.twin.faults()]}
        if method == "DELETE":
            return HTTPStatus.OK, {"cleared": [f.to_dict() for f in live.clear_all()]}
        return HTTPStatus.CREATED, self._inject(live, body)

    @staticmethod
    def _inject(live: LiveSite, body: object) -> dict[str, object]:
        if not isinstance(body, dict) or not {"kind", "target"} <= body.keys():
            raise ControlError(
                HTTPStatus.UNPROCESSABLE_ENTITY,
                "VALIDATION_ERROR",
                'body must be {"kind": ..., "target": ..., "params": {...}}',
            )
        params = body.get("params") or {}
        if isinstance(params, dict) and "start" in params:
            raise ControlError(
                HTTPStatus.UNPROCESSABLE_ENTITY,
                "VALIDATION_ERROR",
                'start goes beside params: {"kind": ..., "target": ..., "start": ...}',
            )
        if not isinstance(params, dict) or not all(
            isinstance(v, int | float | str) and not isinstance(v, bool) for v in params.values()
        ):
            raise ControlError(
                HTTPStatus.UNPROCESSABLE_ENTITY,
                "VALIDATION_ERROR",
                "params must map names to numbers or strings",
            )
        try:
            start = _start(body.get("start"))
            fault = live.inject(str(body["kind"]), str(body["target"]), start=start, **params)
            return fault.to_dict()
        except (KeyError, ValueError, TypeError) as exc:
            raise ControlError(
                HTTPStatus.UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", str(exc).strip("'\"")
            ) from exc

    def _site(self, site_id: str) -> LiveSite:
        try:
            return self.sites[site_id]
        except KeyError as exc:
            raise ControlError(
                HTTPStatus.NOT_FOUND, "RESOURCE_NOT_FOUND", f"site {site_id} is not simulated here"
            ) from exc

    @staticmethod
    def _allow(method: str, allowed: set[str]) -> None:
        if method not in allowed:
            raise ControlError(
                HTTPStatus.METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", f"{method} not allowed here"
            )


def _start(value: object) -> float | None:
    """A fault's start as Unix seconds, from the seconds ``to_dict`` gives or RFC 3339."""
    if value is None:
        return None
    if isinstance(value, str):
        return to_unix(parse_rfc3339(value))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"start must be Unix seconds or an RFC 3339 time, got {value!r}")
    return float(value)


def _handler_for(api: ControlApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "battery-sim-control"

        def do_GET(self) -> None:
            self._dispatch()

        def do_POST(self) -> None:
            self._dispatch()

        def do_DELETE(self) -> None:
            self._dispatch()

        def _dispatch(self) -> None:
            try:
                status, document = api.handle(self.command, self.path.split("?")[0], self._body())
            except ControlError as exc:
                status = exc.status
                document = {
                    "detail": exc.message,
                    "error": {"code": exc.code, "message": exc.message},
                }
            payload = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _body(self) -> object:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError as exc:
                raise ControlError(
                    HTTPStatus.BAD_REQUEST, "BAD_REQUEST", "invalid Content-Length"
                ) from exc
            if length > MAX_BODY_BYTES:
                raise ControlError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "PAYLOAD_TOO_LARGE", "body too large"
                )
            if length <= 0:
                return None
            try:
                return json.loads(self.rfile.read(length))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ControlError(
                    HTTPStatus.BAD_REQUEST, "BAD_REQUEST", "body is not JSON"
                ) from exc

        def log_message(self, format: str, *args: object) -> None:
            log.debug("control: " + format, *args)

    return Handler


class ControlServer(LocalHttpServer):
    """The control endpoint, served from a daemon thread beside the asyncio servers."""

    def __init__(self, sites: dict[str, LiveSite], host: str, port: int) -> None:
        super().__init__(host, port, _handler_for(ControlApi(sites)))
