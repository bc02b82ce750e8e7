"""History for the demo's store, computed by the digital twin, written in bulk before ingest.

RUL needs a SoH trend of many months and resistance drift an early-life baseline: a minute of
live readings shows neither. So the first start writes what the sites' monitors would have logged:
one reading a day for ``daily_days`` and one a minute for the last ``minute_days``, from a twin
with the same seed and the same (past-started) faults as the running simulator. Rows go straight
into the SQLite file through ``sqlite3`` (hundreds of thousands a second), and each battery's
first RUL estimate is fitted from the same daily series, so the first page load shows both.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from central.db.engine import make_engine
from central.ingest.rul_refresh import save_estimate
from central.rul import estimate_rul
from common.units import MEASUREMENTS
from simulators.twin import SiteTwin
from simulators.twin.history import history_times, site_history
from simulators.twin.params import SECONDS_PER_DAY

_BATCH_TIMES = 120  # times computed and inserted together: bounds memory


@dataclass(frozen=True)
class BackfillResult:
    rows: int
    estimates: int
    seconds: float


def _stamp(t: float) -> str:
    """SQLAlchemy's SQLite form of a naive UTC ``DateTime`` (what ``UtcDateTime`` stores)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _rows(
    twin: SiteTwin, start: float, end: float, step_s: float, shift_s: float
) -> Iterator[tuple]:
    """The twin's history in the telemetry table's column order, stamped ``+ shift_s``."""
    stamped_t, stamp = None, ""
    for row in site_history(twin, start, end, step_s):
        if row.t != stamped_t:  # one stamp per time, not per block
            stamped_t, stamp = row.t, _stamp(row.t + shift_s)
        yield (row.battery_id, stamp, *row[2:])


def _daily_soh(twin: SiteTwin, times: np.ndarray) -> np.ndarray:
    """SoH (%) of every block at ``times``: shape (len(times), blocks)."""
    return np.concatenate(
        [
            twin.readings(times[lo : lo + _BATCH_TIMES])["soh_pct"].reshape(
                len(times[lo : lo + _BATCH_TIMES]), -1
            )
            for lo in range(0, len(times), _BATCH_TIMES)
        ]
    )


def backfill(
    database_url: str,
    twins: Iterable[SiteTwin],
    sim_now: float,
    shift_s: float,
    *,
    daily_days: int,
    minute_days: float,
) -> BackfillResult:
    """Write each twin's history up to ``sim_now`` (simulated), stamped ``+ shift_s`` (the wall
    clock the agents stamp live readings with), and a first RUL estimate per battery."""
    started = time.monotonic()
    minute_start = sim_now - minute_days * SECONDS_PER_DAY
    spans = (
        (sim_now - daily_days * SECONDS_PER_DAY, minute_start, SECONDS_PER_DAY),
        (minute_start, sim_now - 60.0, 60.0),
    )
    daily, minutes = (history_times(*span) for span in spans)
    path = database_url.removeprefix("sqlite:///")
    columns = ", ".join(("battery_id", "ts", *MEASUREMENTS))
    marks = ", ".join("?" * (2 + len(MEASUREMENTS)))
    rows = 0
    twins = list(twins)
    connection = sqlite3.connect(Path(path))
    try:
        connection.execute("PRAGMA synchronous=OFF")
        for twin in twins:
            for start, end, step_s in spans:
                cursor = connection.executemany(
                    f"INSERT OR IGNORE INTO telemetry ({columns}) VALUES ({marks})",
                    _rows(twin, start, end, step_s, shift_s),
                )
                rows += cursor.rowcount
            connection.commit()
    finally:
        connection.close()
    days = np.concatenate([daily, minutes[:: 24 * 60]])  # the minute days as one point a day
    estimates = _first_estimates(database_url, twins, days, sim_now, shift_s)
    return BackfillResult(rows, estimates, time.monotonic() - started)


def _first_estimates(
    database_url: str, twins: list[SiteTwin], days: np.ndarray, sim_now: float, shift_s: float
) -> int:
    """Fit every battery's RUL on its daily SoH (at ``days``), so that no battery waits for
    ingest's background refresher to show an estimate."""
    engine = make_engine(database_url)
    count = 0
    try:
        with Session(engine) as session, session.begin():
            for twin in twins:
                soh = _daily_soh(twin, days)
                layout = twin.layout
                for k in range(layout.string_count):
                    for b in range(layout.blocks_per_string):
                        estimate = estimate_rul(
                            days + shift_s,
                            soh[:, k * layout.blocks_per_string + b],
                            sim_now + shift_s,
                        )
                        if estimate is not None:
                            save_estimate(session, layout.battery_id(k, b), estimate)
                            count += 1
    finally:
        engine.dispose()
    return count
