"""The dashboard's blueprint: the page, its assets, caching, compression, and what it may load."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath

import pytest
from flask.testing import FlaskClient

from central.dashboard import STATIC_DIR, content_security_policy
from tests.central.api_support import make_app

VENDOR_DIR = STATIC_DIR / "vendor"
FIRST_LOAD_LIMIT = 300 * 1024
URL = re.compile(r"https?://[^\s\"'`<>()\\]*")
# XML namespace names are identifiers, never fetched.
NAMESPACES = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xhtml"}
# What the vendored bundles say that looks like a URL but is never requested: the scheme the
# client puts before a server address given without one (the page gives none: same origin), a
# documentation link in an error message, and the project link in a licence banner comment.
VENDORED_INERT = {
    "vendor/socket.io.esm.min.js": {
        "https://",
        "https://socket.io/docs/v3/migrating-from-2-x-to-3-0/",
    },
    "vendor/uplot.min.js": {"https://github.com/leeoniya/uPlot"},
}
# Static imports of an ES module: `import x from "./a.js"`, `import "./b.js"`, `export ... from`.
IMPORT = re.compile(r"""(?:^|[;\s])(?:import|export)\s*(?:[\w*{}\s,]+from\s*)?["']([^"']+)["']""")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[FlaskClient]:
    """The dashboard needs no database: the app is only pointed at an empty SQLite file."""
    app = make_app(f"sqlite:///{tmp_path / 'central.sqlite3'}")
    with app.test_client() as client:
        yield client


def served_files() -> list[str]:
    """Every file under static/, as its path below /ui/."""
    return sorted(
        p.relative_to(STATIC_DIR).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file()
    )


def test_index_is_the_page_with_a_restrictive_csp(client: FlaskClient) -> None:
    response = client.get("/", headers={"Host": "dash.example.net:8443"})
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert '<main data-testid="page"' in response.get_data(as_text=True)
    policy = dict(
        part.strip().split(" ", 1)
        for part in response.headers["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self' ws://dash.example.net:8443 wss://dash.example.net:8443"
    assert policy["object-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "host", ["evil.example; script-src *", "a b", "x.example/path", "[::1]:80 https://evil"]
)
def test_a_host_header_that_is_no_host_does_not_widen_the_policy(host: str) -> None:
    policy = content_security_policy(host)
    assert "connect-src 'self';" in policy
    assert "evil" not in policy and "*" not in policy


def test_csp_names_the_websocket_origin_of_an_ipv6_host() -> None:
    assert "connect-src 'self' ws://[::1]:8600 wss://[::1]:8600;" in content_security_policy(
        "[::1]:8600"
    )


EXPECTED_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".LICENSE": "text/plain",
}


@pytest.mark.parametrize("name", served_files())
def test_each_asset_has_its_type_and_the_same_bytes_gzipped_or_not(
    client: FlaskClient, name: str
) -> None:
    plain = client.get(f"/ui/{name}")
    assert plain.status_code == 200
    assert plain.mimetype == EXPECTED_TYPES[PurePosixPath(name).suffix]
    assert "Content-Encoding" not in plain.headers
    assert plain.data == (STATIC_DIR / name).read_bytes()
    zipped = client.get(f"/ui/{name}", headers={"Accept-Encoding": "gzip, deflate, br"})
    assert zipped.status_code == 200
    assert zipped.headers["Vary"] == "Accept-Encoding"
    if zipped.headers.get("Content-Encoding") == "gzip":
        assert gzip.decompress(zipped.data) == plain.data
        assert len(zipped.data) < len(plain.data)
        assert zipped.headers["ETag"] != plain.headers["ETag"]
    else:  # only where gzip would not make it smaller
        assert zipped.data == plain.data
        assert len(gzip.compress(plain.data, 9)) >= len(plain.data)


def test_scripts_are_served_as_javascript_modules_can_use(client: FlaskClient) -> None:
    response = client.get("/ui/app.js")
    assert response.headers["Content-Type"] == "text/javascript; charset=utf-8"


def test_gzip_refused_by_the_client_is_not_sent(client: FlaskClient) -> None:
    response = client.get("/ui/app.js", headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert "Content-Encoding" not in response.headers
    assert response.data == (STATIC_DIR / "app.js").read_bytes()


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
@pytest.mark.parametrize("path", ["/", "/ui/app.js", "/ui/vendor/uplot.min.js"])
def test_revalidation_answers_304(client: FlaskClient, path: str, encoding: str) -> None:
    first = client.get(path, headers={"Accept-Encoding": encoding})
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    again = client.get(path, headers={"Accept-Encoding": encoding, "If-None-Match": etag})
    assert again.status_code == 304
    assert again.data == b""
    since = client.get(path, headers={"Accept-Encoding": encoding, "If-Modified-Since": modified})
    assert since.status_code == 304
    other = client.get(path, headers={"Accept-Encoding": encoding, "If-None-Match": '"stale"'})
    assert other.status_code == 200


def test_vendored_files_are_cached_longer_than_the_apps_own(client: FlaskClient) -> None:
    assert client.get("/ui/app.js").headers["Cache-Control"] == "no-cache"
    assert client.get("/ui/vendor/uplot.min.js").headers["Cache-Control"] == (
        "public, max-age=86400"
    )


@pytest.mark.parametrize(
    "path",
    [
        "/ui/nothing.js",
        "/ui/",
        "/ui/vendor",
        "/ui/pages",
        "/ui/../__init__.py",
        "/ui/%2e%2e/__init__.py",
        "/ui/vendor/../../__init__.py",
        "/ui/vendor/..%2f..%2f__init__.py",
        "/ui/..%5c__init__.py",
        "/ui//etc/passwd",
        "/ui/.hidden.js",
        "/ui/index.html.bak",
    ],
)
def test_unknown_or_escaping_paths_are_404(client: FlaskClient, path: str) -> None:
    response = client.get(path, follow_redirects=True)  # Werkzeug merges "//" by a redirect
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "RESOURCE_NOT_FOUND"


def test_a_python_file_beside_the_assets_is_not_served(client: FlaskClient) -> None:
    # __init__.py lives one level above static/: even spelled as a sibling it stays out.
    assert client.get("/ui/__init__.py").status_code == 404


@pytest.mark.parametrize("name", served_files())
def test_no_file_names_another_origin(name: str) -> None:
    text = (STATIC_DIR / name).read_text(encoding="utf-8")
    found = set(URL.findall(text)) - NAMESPACES
    assert found <= VENDORED_INERT.get(name, set()), f"{name} names {found}"


def test_each_vendored_file_has_its_licence_and_pinned_hash() -> None:
    manifest = json.loads((VENDOR_DIR / "MANIFEST.json").read_text())
    licences = {entry["license_file"] for entry in manifest.values()}
    on_disk = {p.name for p in VENDOR_DIR.iterdir()}
    assert on_disk == set(manifest) | licences | {"MANIFEST.json"}
    for name, entry in manifest.items():
        body = (VENDOR_DIR / name).read_bytes()
        assert hashlib.sha256(body).hexdigest() == entry["sha256"], name
        licence = (VENDOR_DIR / entry["license_file"]).read_text()
        assert entry["license"] == "MIT"
        assert "Permission is hereby granted, free of charge" in licence, entry["license_file"]
    lock = json.loads((STATIC_DIR.parent / "vendor" / "package-lock.json").read_text())
    for entry in manifest.values():
        assert lock["packages"][f"node_modules/{entry['package']}"]["version"] == entry["version"]


class _References(HTMLParser):
    """The URLs a page loads: script sources and linked stylesheets and icons."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script" and values.get("src"):
            self.urls.append(values["src"] or "")
        if tag == "link" and values.get("href") and values.get("rel") in {"stylesheet", "icon"}:
            self.urls.append(values["href"] or "")


def first_load(client: FlaskClient) -> dict[str, int]:
    """Every URL the first visit fetches (index.html, what it references, the modules those
    import, transitively) with its gzip-compressed size as served."""
    sizes: dict[str, int] = {}
    parser = _References()
    parser.feed(client.get("/").get_data(as_text=True))
    pending = list(parser.urls)
    sizes["/"] = len(client.get("/", headers={"Accept-Encoding": "gzip"}).data)
    while pending:
        url = pending.pop()
        if url in sizes:
            continue
        response = client.get(url, headers={"Accept-Encoding": "gzip"})
        assert response.status_code == 200, url
        sizes[url] = len(response.data)
        if url.endswith(".js") and not url.startswith("/ui/vendor/"):  # bundles import nothing
            source = (STATIC_DIR / url.removeprefix("/ui/")).read_text(encoding="utf-8")
            base = PurePosixPath(url).parent
            for target in IMPORT.findall(source):
                assert target.startswith("./") or target.startswith("../"), target
                pending.append(str(PurePosixPath(_normalise(base / target))))
    return sizes


def _normalise(path: PurePosixPath) -> str:
    parts: list[str] = []
    for part in path.parts:
        if part == "..":
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/" + "/".join(parts[1:])


def test_first_load_is_under_300_kb_compressed(client: FlaskClient) -> None:
    sizes = first_load(client)
    assert "/ui/app.js" in sizes and "/ui/vendor/socket.io.esm.min.js" in sizes
    assert any(url.startswith("/ui/pages/") for url in sizes)  # imports were followed
    assert sum(sizes.values()) < FIRST_LOAD_LIMIT, sizes


def test_every_module_of_the_app_is_reached_from_the_page(client: FlaskClient) -> None:
    loaded = first_load(client)
    modules = {f"/ui/{name}" for name in served_files() if name.endswith(".js")}
    assert modules <= set(loaded), modules - set(loaded)
