"""Fleet API read latency: p50/p95/p99 of `GET /api/v1/batteries?limit=1000` with 100,000
batteries in the store, and of a battery's 24-hour telemetry
(`GET /api/v1/batteries/{id}/telemetry`, default window and limit: the newest 1,000 of 1,440
readings at 60 s) with 50 million telemetry rows in the table. Reach: p95 under 50 ms and
under 20 ms.

Run on demand: `make bench` (or `.venv/bin/python -m tests.perf.bench_api [--keep | --reuse NAME]
[--explain] [--profile]`). Needs the local PostgreSQL (``BRM_TEST_PG_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``: the database it connects through to create and drop
a scratch database, dropped at the end unless ``--keep``). The load takes a few minutes and about
9 GB of disk: ``--reuse NAME`` loads into database NAME once and keeps it, later runs with the same
name skip the load. ``--explain`` adds EXPLAIN (ANALYZE, BUFFERS) of every statement of typical
requests; ``--profile`` adds a cProfile of in-process requests.

The store: 125 sites (the demo fleet's 9 plus synthetic ones) x 4 UPS x 5 strings x 40 blocks,
one ``battery_latest`` row each, a few hundred active alerts. Telemetry: 25,000 of the batteries
with the last 24 h at 60 s (36.0 M rows) and, before that, a reading every 4 h over 93 days
(14.0 M rows), so four monthly partitions hold data. Rows are written in time order, as ingest
writes them, so one battery's day is spread over 1,440 heap pages; each month's key (covering, as
the migrations make it) is built after its rows, then the month is attached; then ``VACUUM
ANALYZE``, and then the newest minutes, which autovacuum has not yet reached in a live store.

Each figure is measured three ways, on separate random samples of the same requests: over HTTP
to ``battery-central serve`` (gunicorn, as in production; a keep-alive client, one request at a
time), in-process through Flask's test client (no HTTP server), and the SQL alone: the very
statements SQLAlchemy issued for the request, captured and replayed through psycopg2 with
``fetchall``. HTTP minus SQL is what the server, Flask and JSON cost. Telemetry's SQL is also
replayed with index-only scans off, so each reading comes from the table as it did before the
key covered the values (migration 0007): the baseline of the same run. Prints medians of RUNS
runs.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import http.client
import io
import json
import os
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg2
from flask import Flask
from psycopg2 import sql
from sqlalchemy import event
from werkzeug.serving import make_server

from central import migrations
from central.api import create_app
from central.api.extensions import db
from central.db.engine import make_engine, make_session_factory
from central.db.inventory import load_fleet_locations
from central.migrations import pg_telemetry
from central.settings import CentralSettings
from common import ids
from common.fleet import demo_fleet_path, load_fleet
from tests.conftest import PG_SERVER_URL
from tests.support import free_tcp_port, log_tail, stop_process, wait_for_tcp

RUNS = 3
REQUESTS = 200
WARMUP = 20
SYNTHETIC_SITES = 116  # with the demo fleet's 9: 125 sites
UPS_PER_SITE = 4
STRINGS_PER_UPS = 5
BLOCKS = 40
TELEMETRY_BATTERIES = 25_000  # every 4th battery
RECENT_READINGS = 1440  # the last 24 h at 60 s
HISTORY_READINGS = 560  # before that, every 4 h (93 days)
HISTORY_STEP = timedelta(hours=4)
# The newest minutes go in after VACUUM: the most autovacuum leaves unmarked all-visible just
# before its next run (fewer than ``pg_telemetry.VACUUM_INSERT_THRESHOLD`` rows), so the
# telemetry figure pays the heap visits a live store pays for them.
UNVACUUMED_MINUTES = pg_telemetry.VACUUM_INSERT_THRESHOLD // TELEMETRY_BATTERIES - 1
ACTIVE_ALERTS = 300
RESOLVED_ALERTS = 3000
PAGE = 1000
LIST_P95_REACH_MS = 50.0
TELEMETRY_P95_REACH_MS = 20.0
FRESH_FOR = timedelta(hours=6)  # the default window still holds > 1,000 readings
SECRET = "bench-api-secret-" + "x" * 40
USERNAME = "bench"
PASSWORD = "bench-password-1"
RATE_LIMIT = "1000000 per minute"
BIN = Path(sys.executable).parent
TICKS = os.sysconf("SC_CLK_TCK")
TELEMETRY_COLUMNS = "battery_id, ts, voltage, current, temperature, internal_resistance, "
TELEMETRY_COLUMNS += "soc_pct, soh_pct"
HTTP_WAY = "HTTP (the server above)"
ALERT_TYPES = ("voltage_high", "voltage_low", "temperature_high", "resistance_high", "soh_low")


# --- the scratch database ------------------------------------------------------------------------


def database_url(name: str) -> str:
    return f"{PG_SERVER_URL.rpartition('/')[0]}/{name}"


def database_exists(admin: Any, name: str) -> bool:
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return cursor.fetchone() is not None


def loaded_meta(url: str) -> dict[str, str] | None:
    """What a finished load recorded in ``bench_meta``, or None (no table: never finished)."""
    with contextlib.closing(psycopg2.connect(url)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('bench_meta') IS NOT NULL")
        if not cursor.fetchone()[0]:
            return None
        cursor.execute("SELECT key, value FROM bench_meta")
        return dict(cursor.fetchall())


@contextlib.contextmanager
def scratch_database(reuse: str | None, keep: bool, scale: float) -> Iterator[tuple[str, dict]]:
    """(URL, load record) of a migrated, populated database; dropped afterwards unless kept."""
    name = reuse or f"brm_bench_api_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(PG_SERVER_URL)
    admin.autocommit = True
    url = database_url(name)
    drop = reuse is None and not keep
    try:
        if reuse is not None and database_exists(admin, name):
            meta = loaded_meta(url)
            if meta is None:
                raise SystemExit(f"database {name} exists but holds no finished load: drop it")
            print(f"reusing database {name} (loaded {meta['loaded_at']}; no load timed)")
        else:
            with admin.cursor() as cursor:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"scratch database {name}{'' if drop else ' (kept afterwards)'}")
            meta = load(url, scale)
        yield url, meta
    finally:
        if drop:
            with admin.cursor() as cursor:
                cursor.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
        else:
            print(f"database {name} kept: rerun with --reuse {name}, or DROP DATABASE {name}")
        admin.close()


# --- loading --------------------------------------------------------------------------------------


def copy_rows(cursor: Any, table: str, columns: str, rows: Iterator[Sequence]) -> int:
    """COPY ``rows`` (values without tabs or newlines) into ``table``; how many."""
    buffer = io.StringIO()
    count = 0
    for row in rows:
        buffer.write("\t".join(r"\N" if v is None else str(v) for v in row))
        buffer.write("\n")
        count += 1
    buffer.seek(0)
    cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN", buffer)
    return count


def synthetic_site(i: int) -> str:
    return f"DC-S{chr(65 + i // 26)}{chr(65 + i % 26)}-01"


@dataclass
class Phase:
    """Prints and records how long each loading step took."""

    times: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def __call__(self, what: str) -> Iterator[None]:
        print(f"  {what} ...", end="", flush=True)
        started = time.perf_counter()
        yield
        self.times[what] = time.perf_counter() - started
        print(f" {self.times[what]:.1f} s", flush=True)


def next_month(month: datetime) -> datetime:
    return datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)


def month_starts(first: datetime, last: datetime) -> list[datetime]:
    """The first instant (UTC) of each month from ``first``'s to ``last``'s."""
    month = datetime(first.year, first.month, 1, tzinfo=UTC)
    months = []
    while month <= last:
        months.append(month)
        month = next_month(month)
    return months


INSERT_TELEMETRY = f"""
INSERT INTO {{part}} ({TELEMETRY_COLUMNS})
SELECT b.battery_id, t.ts, 13.2 + random() * 0.5, random() - 0.5, 22 + random() * 8,
       0.004 + random() * 0.002, 95 + random() * 5, b.soh
FROM generate_series(%(first)s::timestamptz, %(last)s::timestamptz, %(step)s::interval) AS t(ts)
CROSS JOIN LATERAL (
    SELECT battery_id, soh FROM bench_telemetry_batteries WHERE t.ts IS NOT NULL
) AS b
WHERE t.ts >= %(lower)s AND t.ts < %(upper)s
"""


def load_telemetry(connection: Any, phase: Phase, end: datetime, batteries: int) -> int:
    """Each month with data as a table of its own: rows in time order (outer loop time, inner
    battery, as ingest writes them), then its key, then attached in place of the migration's
    empty partition. Returns the row count."""
    recent_first = end - timedelta(minutes=RECENT_READINGS - 1)
    history_last = end - timedelta(minutes=RECENT_READINGS) - HISTORY_STEP
    history_first = history_last - (HISTORY_READINGS - 1) * HISTORY_STEP
    series = (
        (history_first, history_last, HISTORY_STEP),
        (recent_first, end - timedelta(minutes=UNVACUUMED_MINUTES), timedelta(minutes=1)),
    )
    total = 0
    for lower in month_starts(history_first, end):
        upper = next_month(lower)
        part = f"telemetry_p{lower:%Y%m}"
        with phase(f"telemetry {lower:%Y-%m}"), connection.cursor() as cursor:
            cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(part)))
            cursor.execute(
                f"CREATE TABLE {part} (LIKE telemetry INCLUDING DEFAULTS)"
                f" WITH ({pg_telemetry.PARTITION_OPTIONS})"
            )
            rows = 0
            for first, last, step in series:
                bounds = {"first": first, "last": last, "step": step}
                cursor.execute(
                    INSERT_TELEMETRY.format(part=part), {**bounds, "lower": lower, "upper": upper}
                )
                rows += cursor.rowcount
            # The migrations' key (ATTACH adopts it rather than building another).
            covered = ", ".join(pg_telemetry.COVERED_COLUMNS)
            cursor.execute(
                f"ALTER TABLE {part} ADD PRIMARY KEY (battery_id, ts) INCLUDE ({covered})"
            )
            # The check lets ATTACH skip scanning the month for rows outside its bounds.
            cursor.execute(
                f"ALTER TABLE {part} ADD CONSTRAINT {part}_bounds"
                " CHECK (ts >= %(lower)s AND ts < %(upper)s)",
                {"lower": lower, "upper": upper},
            )
            cursor.execute(
                f"ALTER TABLE telemetry ATTACH PARTITION {part}"
                " FOR VALUES FROM (%(lower)s) TO (%(upper)s)",
                {"lower": lower, "upper": upper},
            )
            cursor.execute(f"ALTER TABLE {part} DROP CONSTRAINT {part}_bounds")
            connection.commit()
            print(f" {rows:,} rows", end="")
            total += rows
    expected = batteries * (RECENT_READINGS + HISTORY_READINGS - UNVACUUMED_MINUTES)
    if total != expected:
        raise RuntimeError(f"{total:,} telemetry rows loaded, expected {expected:,}")
    return total


def load_unvacuumed(connection: Any, end: datetime) -> int:
    """The newest ``UNVACUUMED_MINUTES`` of readings, through the partitioned table."""
    first = end - timedelta(minutes=UNVACUUMED_MINUTES - 1)
    bounds = {"first": first, "last": end, "step": timedelta(minutes=1)}
    with connection.cursor() as cursor:
        cursor.execute(
            INSERT_TELEMETRY.format(part="telemetry"),
            {**bounds, "lower": first, "upper": end + timedelta(minutes=1)},
        )
        return cursor.rowcount


LOCATION_COLUMNS = (
    "location_id, name, region, city, country, latitude, longitude, temp_offset_c,"
    " humidity_offset_pct, power_outage_frequency_per_year, ups_count, strings_per_ups,"
    " blocks_per_string, installed_date, created_at, updated_at"
)
BATTERY_COLUMNS = (
    "battery_id, string_id, location_id, position, serial_number, manufacturer, model,"
    " nominal_voltage_v, nominal_capacity_ah, installed_date, warranty_months, created_at,"
    " updated_at"
)
LATEST_COLUMNS = TELEMETRY_COLUMNS + ", updated_at"
ALERT_COLUMNS = (
    "id, alert_id, battery_id, location_id, alert_type, severity, message, threshold_value,"
    " actual_value, triggered_at, resolved_at, is_acknowledged, created_at, updated_at"
)
INSTALLED = date(2023, 1, 15)


def load_inventory(
    connection: Any, rng: random.Random, now: datetime, end: datetime
) -> tuple[list[str], dict[str, float]]:
    """Locations, UPS units, strings, batteries, latest readings, alerts; (battery IDs in
    order, each one's SoH). The demo fleet's locations are already stored."""
    demo = [loc.location_id for loc in load_fleet(demo_fleet_path()).locations]
    synthetic = [synthetic_site(i) for i in range(SYNTHETIC_SITES)]
    sites = sorted(demo + synthetic)
    plant = [
        (site, u, s)
        for site in sites
        for u in range(1, UPS_PER_SITE + 1)
        for s in range(1, STRINGS_PER_UPS + 1)
    ]
    batteries = sorted(
        (ids.battery_id(site, u, s, p), ids.string_id(site, u, s), site, p)
        for site, u, s in plant
        for p in range(1, BLOCKS + 1)
    )
    soh = {b[0]: round(min(100.0, max(70.0, rng.gauss(93.0, 5.0))), 1) for b in batteries}
    site_of = {b[0]: b[2] for b in batteries}

    def location(site: str) -> tuple:
        name = f"Synthetic site {site}"
        plant_size = (UPS_PER_SITE, STRINGS_PER_UPS, BLOCKS)
        return (site, name, "central", "Bangkok", "Thailand", 13.75, 100.5, 0.0, 0.0, 2.0,
                *plant_size, INSTALLED, now, now)  # fmt: skip

    def battery(n: int, row: tuple) -> tuple:
        battery_id, string, site, position = row
        serial = f"CSB-HX12-120-2023-{n:06d}"
        return (battery_id, string, site, position, serial, "CSB", "HX12-120", 12.0, 120.0,
                INSTALLED, 60, now, now)  # fmt: skip

    def latest(battery_id: str) -> tuple:
        values = (rng.uniform(13.2, 13.7), rng.uniform(-0.5, 0.5), rng.uniform(22.0, 30.0),
                  rng.uniform(0.004, 0.006), rng.uniform(95.0, 100.0))  # fmt: skip
        return (battery_id, end, *(round(v, 6) for v in values), soh[battery_id], end)

    def alert(n: int, battery_id: str) -> tuple:
        triggered = end - timedelta(minutes=rng.randrange(1, 60 * 24 * 30))
        resolved = None if n < ACTIVE_ALERTS else triggered + timedelta(hours=1)
        kind = ALERT_TYPES[n % len(ALERT_TYPES)]
        severity = ("info", "warning", "critical")[n % 3]
        key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        alert_id = f"ALT-{battery_id}-{triggered:%Y-%m-%d}-{n:06d}"
        return (key, alert_id, battery_id, site_of[battery_id], kind, severity,
                f"{kind} on {battery_id}", 45.0, 45.2, triggered, resolved, False, triggered,
                triggered)  # fmt: skip

    with connection.cursor() as cursor:
        copy_rows(cursor, "locations", LOCATION_COLUMNS, (location(s) for s in synthetic))
        # The demo sites get the same plant as the synthetic ones.
        cursor.execute(
            "UPDATE locations SET ups_count = %s, strings_per_ups = %s, blocks_per_string = %s",
            (UPS_PER_SITE, STRINGS_PER_UPS, BLOCKS),
        )
        copy_rows(
            cursor,
            "ups_units",
            "ups_id, location_id, created_at, updated_at",
            ((ids.ups_id(site, u), site, now, now) for site, u, s in plant if s == 1),
        )
        copy_rows(
            cursor,
            "strings",
            "string_id, ups_id, location_id, created_at, updated_at",
            ((ids.string_id(*p), ids.ups_id(*p[:2]), p[0], now, now) for p in plant),
        )
        copy_rows(cursor, "batteries", BATTERY_COLUMNS, (battery(*b) for b in enumerate(batteries)))
        copy_rows(cursor, "battery_latest", LATEST_COLUMNS, map(latest, soh))
        alerted = rng.sample(list(soh), ACTIVE_ALERTS + RESOLVED_ALERTS)
        copy_rows(cursor, "alerts", ALERT_COLUMNS, (alert(n, b) for n, b in enumerate(alerted)))
        cursor.execute("CREATE TABLE bench_telemetry_batteries (battery_id text, soh float8)")
    return [b[0] for b in batteries], soh


def load(url: str, scale: float) -> dict[str, str]:
    rng = random.Random(1)
    phase = Phase()
    now = datetime.now(UTC)
    end = now.replace(second=0, microsecond=0)
    print("loading:")
    with phase("migrations"):
        migrations.upgrade(url)
    with phase("fleet locations"):
        engine = make_engine(url)
        try:
            with make_session_factory(engine).begin() as session:
                load_fleet_locations(session, load_fleet(demo_fleet_path()))
        finally:
            engine.dispose()
    with contextlib.closing(psycopg2.connect(url)) as connection:
        with connection.cursor() as cursor:
            cursor.execute("SET maintenance_work_mem = '1GB'")
        with phase("inventory: 100,000 batteries, latest readings, alerts (COPY)"):
            batteries, soh = load_inventory(connection, rng, now, end)
            chosen = batteries[:: len(batteries) // TELEMETRY_BATTERIES][
                : round(TELEMETRY_BATTERIES * scale)
            ]
            with connection.cursor() as cursor:
                copy_rows(
                    cursor, "bench_telemetry_batteries", "battery_id, soh",
                    ((b, soh[b]) for b in chosen),
                )  # fmt: skip
            connection.commit()
        started = time.perf_counter()
        rows = load_telemetry(connection, phase, end, len(chosen))
        telemetry_s = time.perf_counter() - started
        connection.autocommit = True
        with phase("VACUUM ANALYZE"), connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        with phase(f"telemetry: the newest {UNVACUUMED_MINUTES} minutes, after VACUUM"):
            rows += load_unvacuumed(connection, end)
        meta = {
            "loaded_at": now.isoformat(),
            "telemetry_end": end.isoformat(),
            "telemetry_rows": str(rows),
            "telemetry_batteries": str(len(chosen)),
            "telemetry_load_s": f"{telemetry_s:.1f}",
            "total_load_s": f"{sum(phase.times.values()):.1f}",
        }
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE bench_meta (key text PRIMARY KEY, value text)")
            cursor.executemany("INSERT INTO bench_meta VALUES (%s, %s)", list(meta.items()))
    print(
        f"  telemetry: {rows:,} rows in {telemetry_s:.0f} s ({rows / telemetry_s:,.0f} rows/s"
        f" with keys); whole load {meta['total_load_s']} s"
    )
    return meta


# --- the server and clients -----------------------------------------------------------------------


def server_env(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "BRM_CENTRAL_DATABASE_URL": url,
        "BRM_CENTRAL_API__JWT_SECRET": SECRET,
        "BRM_CENTRAL_API__RATE_LIMIT": RATE_LIMIT,
        "BRM_CENTRAL_API__ACCESS_TOKEN_EXPIRES_S": str(6 * 3600),
        "BRM_CENTRAL_API__READY_CHECKS_BROKER": "false",
    }


def settings(url: str) -> CentralSettings:
    api = {
        "jwt_secret": SECRET,
        "rate_limit": RATE_LIMIT,
        "access_token_expires_s": 6 * 3600,
        "ready_checks_broker": False,
    }
    return CentralSettings(database_url=url, api=api)


def ensure_user(url: str) -> None:
    with contextlib.closing(psycopg2.connect(url)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM users WHERE username = %s", (USERNAME,))
        if cursor.fetchone() is not None:
            return
    subprocess.run(
        [str(BIN / "battery-central"), "create-admin", "--username", USERNAME, "--email",
         f"{USERNAME}@example.com", "--password-stdin"],
        input=f"{PASSWORD}\n", text=True, env=server_env(url), check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def worker_pid(arbiter: int) -> int:
    """gunicorn's (only) worker: the arbiter's child."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = Path(f"/proc/{arbiter}/task/{arbiter}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise RuntimeError("gunicorn started no worker")


def serve_available() -> bool:
    result = subprocess.run(
        [str(BIN / "battery-central"), "serve", "--help"], capture_output=True, check=False
    )
    return result.returncode == 0


@contextlib.contextmanager
def api_server(url: str, workdir: Path) -> Iterator[tuple[int, str, int | None]]:
    """(port, description, worker process) of the API served as production serves it, else
    (no worker process of its own) on Werkzeug's server."""
    port = free_tcp_port()
    if serve_available():
        log = workdir / "serve.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(BIN / "battery-central"), "serve", "--port", str(port)],
                env=server_env(url), stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            try:
                wait_for_tcp(port, timeout=60)
            except TimeoutError as exc:
                raise RuntimeError(log_tail(log)) from exc
            description = "battery-central serve (gunicorn, 1 gthread worker, default threads)"
            yield port, description, worker_pid(process.pid)
        finally:
            stop_process(process)
        return
    server = make_server("127.0.0.1", port, create_app(settings(url)), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        description = "Werkzeug threaded server in this process ('serve' is not available)"
        yield port, description, None
    finally:
        server.shutdown()


class HttpClient:
    """One keep-alive connection; a request the server dropped the connection on is retried."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers: dict[str, str] = {}
        self.reconnects = 0

    def login(self) -> str:
        body = json.dumps({"username": USERNAME, "password": PASSWORD})
        status, data, _ = self.request(
            "POST", "/api/v1/auth/login", body, {"Content-Type": "application/json"}
        )
        if status != 200:
            raise RuntimeError(f"login failed: {status} {data[:200]!r}")
        token = json.loads(data)["access_token"]
        self.headers = {"Authorization": f"Bearer {token}"}
        return token

    def request(
        self, method: str, path: str, body: str | None = None, headers: dict | None = None
    ) -> tuple[int, bytes, float]:
        """(status, body, seconds from sending to the body's last byte)."""
        for attempt in (1, 2):
            try:
                started = time.perf_counter()
                self.connection.request(method, path, body, headers or self.headers)
                response = self.connection.getresponse()
                data = response.read()
                return response.status, data, time.perf_counter() - started
            except (http.client.RemoteDisconnected, ConnectionError):
                self.connection.close()
                self.reconnects += 1
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str) -> tuple[bytes, float]:
        status, data, elapsed = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {data[:300]!r}")
        return data, elapsed


class InProcess:
    """The same app in this process, through Flask's test client; records SQL when asked."""

    def __init__(self, url: str, token: str) -> None:
        self.app: Flask = create_app(settings(url))
        self.client = self.app.test_client()
        self.headers = {"Authorization": f"Bearer {token}"}
        self.captured: list[tuple[str, Any]] | None = None
        event.listen(db.engine(self.app), "before_cursor_execute", self._record)

    def _record(self, _conn, _cursor, statement, parameters, _context, _executemany) -> None:
        if self.captured is not None:
            self.captured.append((statement, parameters))

    def get(self, path: str) -> tuple[bytes, float]:
        started = time.perf_counter()
        response = self.client.get(path, headers=self.headers)
        data = response.get_data()
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"GET {path}: {response.status_code} {data[:300]!r}")
        return data, elapsed

    def capture(self, path: str) -> list[tuple[str, Any]]:
        self.captured = []
        try:
            self.get(path)
            return self.captured
        finally:
            self.captured = None


# --- the SQL alone: the captured statements, replayed ---------------------------------------------


@dataclass
class Script:
    """The statements one request issued. To replay it for another request, parameter values
    are swapped (``Request.swaps``); an ``IN`` list of the page's battery IDs is refilled from
    the replayed page query's result, as the API builds it."""

    steps: list[tuple[str, dict[str, Any]]]
    page_step: int | None = None
    in_step: int | None = None
    in_names: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, cursor: Any, captured: list[tuple[str, Any]]) -> Script:
        script = cls([(s, dict(p or {})) for s, p in captured])
        for i, (_statement, params) in enumerate(script.steps):
            names = [n for n, v in params.items() if isinstance(v, str) and v.startswith("BAT-")]
            if len(names) > 1:
                script.in_step = i
                script.in_names = sorted(names, key=lambda n: int(n.rpartition("_")[2]))
        if script.in_step is None:
            return script
        page_ids = [script.steps[script.in_step][1][n] for n in script.in_names]
        for i, (statement, params) in enumerate(script.steps[: script.in_step]):
            cursor.execute(statement, params)
            if cursor.description and [r[0] for r in cursor.fetchall()] == page_ids:
                script.page_step = i
        cursor.connection.rollback()
        if script.page_step is None:
            raise RuntimeError("no captured statement returns the page the IN list holds")
        return script

    def replay(self, cursor: Any, swaps: Sequence[tuple[Any, Any]]) -> int:
        """Run the statements with ``swaps`` applied, fetching every row; rows of the last."""
        page_ids: list[str] = []
        rows: list = []
        for i, (statement, params) in enumerate(self.steps):
            values = {n: swap(v, swaps) for n, v in params.items()}
            if i == self.in_step:
                if len(page_ids) != len(self.in_names):
                    raise RuntimeError(f"page of {len(page_ids)}, captured {len(self.in_names)}")
                values.update(zip(self.in_names, page_ids, strict=True))
            cursor.execute(statement, values)
            rows = cursor.fetchall() if cursor.description else []
            if i == self.page_step:
                page_ids = [r[0] for r in rows]
        cursor.connection.rollback()  # the request's session ends so
        return len(rows)


def swap(value: Any, swaps: Sequence[tuple[Any, Any]]) -> Any:
    for old, new in swaps:
        if type(value) is type(old) and value == old:
            return new
    return value


# --- the requests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    path: str
    swaps: Callable[[], list[tuple[Any, Any]]]  # template value -> this request's, for SQL


@dataclass
class Series:
    title: str
    template: Request
    draw: Callable[[random.Random], Request]
    expect: Callable[[dict], int]  # how many items a response must hold
    window: dict[str, datetime] | None = None  # the telemetry window the template's SQL used
    script: Script | None = None
    figures: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    worker_cpu_ms: list[float] = field(default_factory=list)  # the server's CPU per request
    size: int = 0


def make_series(
    sites: list[str], telemetry_batteries: list[str], data_end: datetime
) -> tuple[list[Series], str]:
    """The three request kinds, and a note on the telemetry window."""
    fresh = datetime.now(UTC) - data_end <= FRESH_FOR
    query = "" if fresh else f"?end={quote(data_end.isoformat())}"
    window = "default window (the last 24 h)" if fresh else (
        f"end={data_end:%Y-%m-%dT%H:%MZ} (the load is older than {FRESH_FOR}: the window ends "
        "at its last reading; start is still the default, end - 24 h)"
    )  # fmt: skip
    template_skip = 3 * PAGE
    template_battery = telemetry_batteries[0]
    captured_window: dict[str, datetime] = {}

    def window_swaps() -> list[tuple[Any, Any]]:
        end = datetime.now(UTC) if fresh else data_end
        return [
            (captured_window["start"], end - timedelta(hours=24)),
            (captured_window["end"], end),
        ]

    def page(skip: int) -> Request:
        return Request(
            f"/api/v1/batteries?limit={PAGE}&skip={skip}", lambda: [(template_skip, skip)]
        )

    def site_page(site: str) -> Request:
        return Request(
            f"/api/v1/batteries?location_id={site}&limit={PAGE}", lambda: [(sites[0], site)]
        )

    def telemetry(battery: str) -> Request:
        return Request(
            f"/api/v1/batteries/{battery}/telemetry{query}",
            lambda: [(template_battery, battery), *window_swaps()],
        )

    series = [
        Series(
            f"GET /api/v1/batteries?limit={PAGE}&skip=<random 0..99,000>",
            page(template_skip),
            lambda rng: page(
                rng.randrange(len(sites) * UPS_PER_SITE * STRINGS_PER_UPS * BLOCKS // PAGE) * PAGE
            ),
            lambda body: len(body["batteries"]),
        ),
        Series(
            f"GET /api/v1/batteries?location_id=<random site>&limit={PAGE} (800 each)",
            site_page(sites[0]),
            lambda rng: site_page(rng.choice(sites)),
            lambda body: len(body["batteries"]),
        ),
        Series(
            "GET /api/v1/batteries/<random battery with data>/telemetry",
            telemetry(template_battery),
            lambda rng: telemetry(rng.choice(telemetry_batteries)),
            lambda body: body["count"],
        ),
    ]
    series[2].window = captured_window
    return series, window


# The telemetry statements with the planner kept from index-only scans: each reading is then
# read from the table, as with a key that does not cover the values (before migration 0007).
SQL_FROM_TABLE_WAY = "SQL only, rows read from the table"


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[94] * 1000, cuts[98] * 1000


def measure(
    series: Series,
    http: HttpClient,
    local: InProcess,
    cursor: Any,
    rng: random.Random,
    worker: int | None,
) -> None:
    """One run of each way, each on its own sample of requests (no way warms the next's)."""

    def sample(n: int) -> list[Request]:
        return [series.draw(rng) for _ in range(n)]

    def sql_get(request: Request) -> tuple[bytes, float]:
        assert series.script is not None
        started = time.perf_counter()
        series.script.replay(cursor, request.swaps())
        return b"", time.perf_counter() - started

    def sql_from_table(request: Request) -> tuple[bytes, float]:
        cursor.execute("SET enable_indexonlyscan = off")
        try:
            return sql_get(request)
        finally:
            cursor.execute("RESET enable_indexonlyscan")

    ways: list[tuple[str, Callable[[Request], tuple[bytes, float]]]] = [
        (HTTP_WAY, lambda request: http.get(request.path)),
        ("in-process (Flask test client)", lambda request: local.get(request.path)),
        ("SQL only (psycopg2, same statements)", sql_get),
    ]
    if series.window is not None:  # the baseline: what the key alone saves over the table
        ways.append((SQL_FROM_TABLE_WAY, sql_from_table))
    for way, get in ways:
        for request in sample(WARMUP):
            get(request)
        cpu = cpu_seconds(worker) if worker and way == HTTP_WAY else None
        samples = [get(request)[1] for request in sample(REQUESTS)]
        series.figures.setdefault(way, []).append(percentiles(samples))
        if cpu is not None:
            series.worker_cpu_ms.append((cpu_seconds(worker) - cpu) / REQUESTS * 1000)


def prepare(series: Series, local: InProcess, cursor: Any, http: HttpClient) -> None:
    """Check a response, capture the template request's SQL, record the response size."""
    data, _ = http.get(series.template.path)
    body = json.loads(data)
    series.size = len(data)
    if series.expect(body) < min(PAGE, 800):
        raise RuntimeError(f"{series.template.path}: only {series.expect(body)} items")
    captured = local.capture(series.template.path)
    if series.window is not None:
        stamps = sorted(
            {v for _, p in captured for v in (p or {}).values() if isinstance(v, datetime)}
        )
        if len(stamps) != 2:
            raise RuntimeError(f"expected the window's two timestamps in the SQL, got {stamps}")
        series.window["start"], series.window["end"] = stamps
    series.script = Script.build(cursor, captured)


# --- diagnosis ------------------------------------------------------------------------------------


def clip(line: str, width: int = 300) -> str:
    return line if len(line) <= width else line[:width] + " ..."


def explain(series_list: list[Series], cursor: Any, sites: list[str]) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of each captured statement, for representative requests."""
    lists = [s for s in series_list if s.window is None]  # the page, then the site's page
    cases = [
        (lists[0], [(3 * PAGE, 0)], "first page"),
        (lists[0], [(3 * PAGE, 99 * PAGE)], "last page (skip=99,000)"),
        (lists[1], [(sites[0], sites[-1])], f"site {sites[-1]}"),
    ] if lists else []  # fmt: skip
    cases += [(s, None, "telemetry") for s in series_list if s.window is not None]
    for series, fixed, label in cases:
        script = series.script
        assert script is not None
        swaps = fixed if fixed is not None else series.template.swaps()
        print(f"\n=== EXPLAIN: {series.title}: {label}")
        page_ids: list[str] = []
        for i, (statement, params) in enumerate(script.steps):
            values = {n: swap(v, swaps) for n, v in params.items()}
            if i == script.in_step:
                values.update(zip(script.in_names, page_ids, strict=True))
            if i == script.page_step:
                cursor.execute(statement, values)
                page_ids = [r[0] for r in cursor.fetchall()]
            print(f"--- {clip(' '.join(statement.split()))}")
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, values)
            print("\n".join(clip(r[0]) for r in cursor.fetchall()))
        cursor.connection.rollback()


def profile(series_list: list[Series], local: InProcess, rng: random.Random) -> None:
    """cProfile of in-process requests: where the server's time goes beyond the SQL."""
    for series in series_list:
        requests = [series.draw(rng) for _ in range(50)]
        profiler = cProfile.Profile()
        profiler.enable()
        for request in requests:
            local.get(request.path)
        profiler.disable()
        print(f"\n=== cProfile of 50 in-process requests: {series.title}")
        stats = pstats.Stats(profiler).strip_dirs()
        stats.sort_stats("tottime").print_stats(18)
        stats.sort_stats("cumulative").print_stats(30)


# --- main -----------------------------------------------------------------------------------------


def store_figures(url: str) -> tuple[list[str], list[str], int, int, str]:
    """(sites, batteries with telemetry, battery count, telemetry rows, table sizes)."""
    with contextlib.closing(psycopg2.connect(url)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT location_id FROM locations ORDER BY location_id")
        sites = [r[0] for r in cursor.fetchall()]
        cursor.execute("SELECT battery_id FROM bench_telemetry_batteries ORDER BY battery_id")
        telemetry_batteries = [r[0] for r in cursor.fetchall()]
        cursor.execute("SELECT count(*) FROM batteries")
        battery_count = cursor.fetchone()[0]
        cursor.execute(
            "SELECT sum(c.reltuples) FILTER (WHERE t.isleaf)::bigint,"
            " pg_size_pretty(sum(pg_table_size(t.relid))),"
            " pg_size_pretty(sum(pg_indexes_size(t.relid))), count(*) FILTER (WHERE t.isleaf)"
            " FROM pg_partition_tree('telemetry') t JOIN pg_class c ON c.oid = t.relid"
        )
        rows, heap, index, partitions = cursor.fetchone()
        cursor.execute("SHOW shared_buffers")
        buffers = cursor.fetchone()[0]
        cursor.execute("SHOW jit")
        jit = cursor.fetchone()[0]
    sizes = (
        f"telemetry: {heap} heap + {index} keys in {partitions} partitions;"
        f" shared_buffers {buffers}, jit {jit}"
    )
    return sites, telemetry_batteries, battery_count, int(rows), sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument(
        "--reuse", metavar="NAME", help="use database NAME if loaded, else load it; never drop it"
    )
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE each statement")
    parser.add_argument("--profile", action="store_true", help="cProfile in-process requests")
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument(
        "--only", choices=("list", "telemetry"), help="measure only these requests (quicker)"
    )
    parser.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    with (
        scratch_database(args.reuse, args.keep, args.scale) as (url, meta),
        tempfile.TemporaryDirectory() as tmp,
    ):
        sites, telemetry_batteries, battery_count, rows, sizes = store_figures(url)
        data_end = datetime.fromisoformat(meta["telemetry_end"])
        ensure_user(url)
        series_list, window = make_series(sites, telemetry_batteries, data_end)
        if args.only is not None:
            telemetry = args.only == "telemetry"
            series_list = [s for s in series_list if (s.window is not None) == telemetry]
        with (
            api_server(url, Path(tmp)) as (port, server, worker),
            contextlib.closing(psycopg2.connect(url)) as connection,
        ):
            http = HttpClient(port)
            token = http.login()
            local = InProcess(url, token)
            cursor = connection.cursor()
            for series in series_list:
                prepare(series, local, cursor, http)
            for run in range(args.runs):
                rng = random.Random(run)
                for series in series_list:
                    measure(series, http, local, cursor, rng, worker)
                print(f"run {run + 1} of {args.runs} done", flush=True)
            if args.explain:
                explain(series_list, cursor, sites)
            if args.profile:
                profile(series_list, local, random.Random(99))
        report(args.runs, battery_count, rows, sizes, meta, server, window, series_list, http)


def report(
    runs: int,
    battery_count: int,
    rows: int,
    sizes: str,
    meta: dict[str, str],
    server: str,
    window: str,
    series_list: list[Series],
    http: HttpClient,
) -> None:
    print()
    print(
        f"store: {battery_count:,} batteries, ~{rows:,} telemetry rows"
        f" ({meta['telemetry_batteries']} batteries with the last 24 h at 60 s); {sizes}"
    )
    print(
        f"load (when it was loaded): telemetry {meta['telemetry_load_s']} s, whole load"
        f" {meta['total_load_s']} s"
    )
    print(f"server: {server}; client: http.client keep-alive, one request at a time")
    print(f"telemetry requests: {window}, limit 1000 (default)")
    print(
        f"medians of {runs} runs of {REQUESTS} requests each (after {WARMUP} warm-up), ms;"
        f" load average now {os.getloadavg()[0]:.2f}"
    )
    print(f"{'':42s}{'p50':>9s}{'p95':>9s}{'p99':>9s}")
    for series in series_list:
        print(f"{series.title}   (response {series.size / 1024:,.0f} KiB)")
        for way, figures in series.figures.items():
            p50, p95, p99 = (statistics.median(f[k] for f in figures) for k in range(3))
            print(f"  {way:40s}{p50:9.1f}{p95:9.1f}{p99:9.1f}")
        if series.worker_cpu_ms:
            cpu = statistics.median(series.worker_cpu_ms)
            print(f"  {'server worker CPU per request (mean)':40s}{cpu:9.1f}")
    if http.reconnects:
        print(
            f"(gunicorn closes keep-alive connections idle for 2 s: {http.reconnects} reconnects,"
            " each on the first warm-up request after the other ways ran)"
        )
    for series in series_list:
        name, reach = (
            ("24-hour telemetry", TELEMETRY_P95_REACH_MS)
            if series.window is not None
            else ("batteries list" + (" by site" if "location_id" in series.title else ""),
                  LIST_P95_REACH_MS)
        )  # fmt: skip
        figures = series.figures.get(HTTP_WAY) or next(iter(series.figures.values()))
        p95 = statistics.median(f[1] for f in figures)
        verdict = "met" if p95 < reach else "MISSED"
        print(f"reach: {name} p95 {p95:.1f} ms < {reach:.0f} ms: {verdict}")


if __name__ == "__main__":
    main()
