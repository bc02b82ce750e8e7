"""The built-in dashboard: a single-page app served at ``/`` with its assets under ``/ui/``.

The page speaks only to the public REST API and the Socket.IO feed, like any other client, so
this module serves files and nothing else. Each file is read and gzip-compressed once and kept
in memory (reloaded if it changes on disk), answered with an ETag, Last-Modified and a
Cache-Control that makes browsers revalidate the app's own files (a cheap 304) and keep the
vendored libraries for a day. ``index.html`` carries a Content-Security-Policy that lets the
page load and connect to its own origin only.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from flask import Blueprint, Response, abort, request
from werkzeug.security import safe_join

bp = Blueprint("dashboard", __name__)

STATIC_DIR = Path(__file__).parent / "static"
INDEX = "index.html"
# By suffix; anything else under static/ is not served.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",  # ES modules need a JavaScript MIME type
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".LICENSE": "text/plain; charset=utf-8",
}
REVALIDATE = "no-cache"  # the app's own files: unversioned names, so always ask (a 304 is cheap)
VENDOR_CACHE = "public, max-age=86400"
_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")


@dataclass(frozen=True)
class Asset:
    """One file as served: its bytes, their gzip form (None if not smaller), its validators."""

    body: bytes
    gzipped: bytes | None
    etag: str
    last_modified: datetime
    content_type: str


def load_asset(path: Path) -> Asset:
    body = path.read_bytes()
    compressed = gzip.compress(body, compresslevel=9, mtime=0)
    modified = datetime.fromtimestamp(int(path.stat().st_mtime), tz=UTC)
    return Asset(
        body=body,
        gzipped=compressed if len(compressed) < len(body) else None,
        etag=hashlib.sha256(body).hexdigest()[:32],
        last_modified=modified,
        content_type=CONTENT_TYPES[path.suffix],
    )


class AssetCache:
    """Assets by path, each compressed once; a file changed on disk is read again."""

    def __init__(self) -> None:
        self._assets: dict[Path, tuple[tuple[int, int], Asset]] = {}
        self._lock = threading.Lock()

    def get(self, path: Path) -> Asset:
        stat = path.stat()
        version = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._assets.get(path)
        if cached is not None and cached[0] == version:
            return cached[1]
        asset = load_asset(path)
        with self._lock:
            self._assets[path] = (version, asset)
        return asset


_cache = AssetCache()


def asset_path(filename: str) -> Path | None:
    """The file under ``static/`` that ``filename`` names, if it may be served; else None."""
    joined = safe_join(str(STATIC_DIR), filename)
    if joined is None:
        return None
    path = Path(joined)
    if any(part.startswith(".") for part in path.relative_to(STATIC_DIR).parts):
        return None
    if path.suffix not in CONTENT_TYPES or not path.is_file():
        return None
    return path


def content_security_policy(host: str) -> str:
    """Self only; Socket.IO's websocket needs its ws:/wss: origin named (a host that does not
    look like one is left out, so a forged Host header cannot widen the policy)."""
    sockets = f" ws://{host} wss://{host}" if _HOST.fullmatch(host) else ""
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'{sockets}; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )


def _respond(asset: Asset, cache_control: str) -> Response:
    use_gzip = asset.gzipped is not None and request.accept_encodings["gzip"] > 0
    response = Response(asset.gzipped if use_gzip else asset.body)
    response.headers["Content-Type"] = asset.content_type
    if use_gzip:
        response.headers["Content-Encoding"] = "gzip"
    # A strong validator per representation: the gzip form has its own.
    response.set_etag(asset.etag + ("-gz" if use_gzip else ""))
    response.last_modified = asset.last_modified
    response.headers["Cache-Control"] = cache_control
    response.headers["Vary"] = "Accept-Encoding"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response.make_conditional(request)


@bp.get("/")
def index() -> Response:
    response = _respond(_cache.get(STATIC_DIR / INDEX), REVALIDATE)
    response.headers["Content-Security-Policy"] = content_security_policy(request.host)
    return response


@bp.get("/ui/<path:filename>")
def ui_asset(filename: str) -> Response:
    path = asset_path(filename)
    if path is None:
        abort(404)
    vendored = path.parent == STATIC_DIR / "vendor"
    return _respond(_cache.get(path), VENDOR_CACHE if vendored else REVALIDATE)
