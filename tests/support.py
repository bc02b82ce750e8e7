"""Helpers for tests that run real servers: free ports, waiting for them, child processes."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
from psycopg2 import sql

from simulators.twin.params import TwinParams


def _shared_data() -> Path:
    """The real cycling files: ``BRM_SHARED_DATA``, else ``../shared/data`` beside the checkout,
    else where this workplace keeps them (a clone elsewhere still finds them)."""
    named = os.environ.get("BRM_SHARED_DATA")
    candidates = [Path(named)] if named else []
    beside = Path(__file__).resolve().parents[2] / "shared" / "data"
    candidates += [beside, Path("/work/shared/data")]
    for candidate in candidates:
        if (candidate / "README.md").is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise RuntimeError(f"the shared cycling data is not at {tried}; set BRM_SHARED_DATA")


SHARED_DATA = _shared_data()


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_tcp(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listening on {host}:{port} after {timeout} s")
        time.sleep(0.05)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Terminate politely, then kill; never leave a child behind."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# Simulated start of every live test: 2026-01-01T00:00Z. The demo sites' seeded outage history
# has no grid outage within days of it (tests/test_fixtures.py checks), so a test never finds a
# string discharging or recharging because of the date it happens to run on.
QUIET_START = "2026-01-01T00:00:00Z"
QUIET_EPOCH = 1_767_225_600.0


# How far a value read through a protocol may be from the twin's: half a step of the scale it is
# served in (mV, 0.1 °C, µΩ, 0.1 %), plus float rounding.
_NOISE = TwinParams()
# A reading and a later snapshot of the twin are two independent noisy draws (difference
# σ = √2·noise): six such σ plus the register's resolution keeps hundreds of comparisons from
# failing by chance (< 1e-6).
_SIGMAS = 6 * 2**0.5
READING_TOLERANCE = {
    "voltage": _SIGMAS * _NOISE.noise_voltage_v + 0.01,
    "temperature": _SIGMAS * _NOISE.noise_temperature_c + 0.1,
    "internal_resistance_rel": _SIGMAS * _NOISE.noise_resistance_rel + 0.01,
    "soc_pct": 0.5,
    "soh_pct": _SIGMAS * _NOISE.noise_soh_pct + 0.1,
    "current": _SIGMAS * _NOISE.noise_current_a + 0.1,
}

SERVED_TOLERANCE = {
    "voltage": 0.0005,
    "temperature": 0.05,
    "internal_resistance": 0.5e-6,
    "soc_pct": 0.05,
    "soh_pct": 0.05,
}


def assert_same_nameplates(reported, expected) -> None:
    """A device's reported ``BatteryInfo`` list equals the twin's ``BlockInventory`` list."""
    assert len(reported) == len(expected)
    for got, block in zip(reported, expected, strict=True):
        assert got.battery_id == block.battery_id
        assert got.position == block.position
        assert got.serial_number == block.serial_number
        assert (got.manufacturer, got.model) == (block.manufacturer, block.model)
        assert got.nominal_voltage_v == block.nominal_voltage_v
        assert got.nominal_capacity_ah == block.nominal_capacity_ah
        assert got.installed_date == block.installed_date
        assert got.warranty_months == block.warranty_months


@contextlib.contextmanager
def pg_schema(base_url: str, prefix: str = "t") -> Iterator[str]:
    """A URL of ``base_url``'s database whose search path is a fresh private schema, dropped
    afterwards: a test's own empty PostgreSQL namespace without creating a database."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(base_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        yield f"{base_url}?options=-csearch_path%3D{schema}"
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    finally:
        admin.close()
