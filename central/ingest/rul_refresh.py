"""Remaining useful life, refreshed in ingest's background: each battery at most every
``refresh_s``, after it has had new readings, from its SoH history in the store.

Off the hot path: a thread of the ingest process fits one battery at a time, resting between fits
so that it takes at most ``duty`` of a CPU (a fit costs 1–4 ms; the history query most of the
rest), each battery in its own short transaction. Results go to ``battery_analytics`` and, as
``RulUpdate``s, to ``results``, which the ingest loop hands to the alert engine: rul_warning and
rul_critical are judged in ingest's next transaction, where the lifecycle state lives.

History: daily medians (PostgreSQL aggregates them in SQL; SQLite's readings are fetched and
aggregated with ``daily_medians``). A battery's complete days (all but its last two) are cached,
so a refresh reads only its newest days; the cache holds ``max_cached`` batteries (least recently
refreshed dropped first). Days that arrive late, for a day already cached, count from the next
restart of ingest.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from central.db.models import BatteryAnalytics, Telemetry
from central.ingest.alerting import RulUpdate
from central.rul import SECONDS_PER_DAY, RulEstimate, daily_medians, estimate_rul
from common.timeutil import from_unix, utc_now

log = logging.getLogger(__name__)

RUL_REFRESH_S = 300.0
UNIX_EPOCH_JULIAN_DAY = 2440587.5

# One row a UTC day: its day number, the mean time of its readings, their median, their count.
PG_DAILY = text(
    """
    SELECT floor(extract(epoch FROM ts) / 86400)::bigint AS day,
           avg(extract(epoch FROM ts)) AS t,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY soh_pct) AS soh,
           count(*) AS n,
           max(ts) AS newest
    FROM telemetry
    WHERE battery_id = :battery_id AND soh_pct IS NOT NULL AND ts >= :since
    GROUP BY 1
    ORDER BY 1
    """
)

Estimator = Callable[..., RulEstimate | None]


@dataclass(frozen=True)
class Days:
    """Daily points of one battery's SoH: day number, mean time (Unix s), median, count."""

    day: np.ndarray
    t: np.ndarray
    soh: np.ndarray
    n: np.ndarray

    @classmethod
    def empty(cls) -> Days:
        return cls(np.empty(0, np.int64), np.empty(0), np.empty(0), np.empty(0, np.int64))

    def before(self, day: int) -> Days:
        keep = self.day < day
        return Days(self.day[keep], self.t[keep], self.soh[keep], self.n[keep])

    def then(self, newer: Days) -> Days:
        return Days(
            np.concatenate([self.day, newer.day]),
            np.concatenate([self.t, newer.t]),
            np.concatenate([self.soh, newer.soh]),
            np.concatenate([self.n, newer.n]),
        )


def daily_history(session: Session, battery_id: str, since_day: int) -> tuple[Days, float | None]:
    """The battery's daily SoH points from ``since_day`` on, and the time of its newest reading
    with a SoH (Unix s; None without any)."""
    since = from_unix(since_day * SECONDS_PER_DAY)
    if session.get_bind().dialect.name == "postgresql":
        rows = session.execute(PG_DAILY, {"battery_id": battery_id, "since": since}).all()
        if not rows:
            return Days.empty(), None
        day, t, soh, n, newest = zip(*rows, strict=True)
        days = Days(np.array(day, np.int64), np.array(t, float), np.array(soh, float), np.array(n))
        return days, max(newest).timestamp()
    unix = (func.julianday(Telemetry.ts) - UNIX_EPOCH_JULIAN_DAY) * SECONDS_PER_DAY
    rows = session.execute(
        select(unix, Telemetry.soh_pct).where(
            Telemetry.battery_id == battery_id,
            Telemetry.soh_pct.is_not(None),
            Telemetry.ts >= since,
        )
    ).all()
    if not rows:
        return Days.empty(), None
    times = np.array([r[0] for r in rows], float)
    values = np.array([r[1] for r in rows], float)
    t, soh = daily_medians(times, values)
    day, n = np.unique(np.floor(times / SECONDS_PER_DAY).astype(np.int64), return_counts=True)
    newest = session.scalar(  # exact, where julianday is a few microseconds off
        select(func.max(Telemetry.ts)).where(
            Telemetry.battery_id == battery_id, Telemetry.soh_pct.is_not(None)
        )
    )
    return Days(day, t, soh, n), newest.timestamp()


def _float(value: float | None) -> float | None:
    """A plain float: ``estimate_rul`` may give numpy scalars, which psycopg2 cannot send."""
    return None if value is None else float(value)


def save_estimate(session: Session, battery_id: str, estimate: RulEstimate) -> None:
    """Upsert the RUL columns of the battery's analytics row (its baseline is left alone)."""
    values: dict[str, Any] = {
        "rul_status": estimate.status.value,
        "rul_days": _float(estimate.rul_days),
        "rul_low_days": _float(estimate.rul_low_days),
        "rul_high_days": _float(estimate.rul_high_days),
        "rul_interval_pct": round(100 * estimate.interval),
        "predicted_eol_date": estimate.predicted_eol_date,
        "soh_now_pct": float(estimate.soh_now_pct),
        "fade_pct_per_year": float(estimate.fade_pct_per_year),
        "rul_n_points": estimate.n_points,
        "rul_n_days": estimate.n_days,
        "rul_method": estimate.method,
        "rul_computed_at": estimate.computed_at,
        "updated_at": utc_now(),
    }
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(BatteryAnalytics).values(battery_id=battery_id, **values)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["battery_id"], set_={k: statement.excluded[k] for k in values}
        )
    )


class RulRefresher:
    """Refreshes the RUL of batteries with new readings, each at most every ``refresh_s``."""

    def __init__(
        self,
        sessions: Callable[[], Session],
        refresh_s: float = RUL_REFRESH_S,
        *,
        estimator: Estimator = estimate_rul,
        clock: Callable[[], float] = time.monotonic,
        duty: float = 0.25,
        max_cached: int = 1000,
    ) -> None:
        self._sessions = sessions
        self.refresh_s = refresh_s
        self.estimator = estimator
        self._clock = clock
        self._duty = duty
        self._max_cached = max_cached
        self._lock = threading.Lock()
        self._noted: dict[str, float] = {}  # new readings since its last refresh, noted when
        self._last: dict[str, float] = {}  # when each battery was last refreshed
        self._days: OrderedDict[str, Days] = OrderedDict()
        self.results: queue.SimpleQueue[RulUpdate] = queue.SimpleQueue()

    def note(self, battery_ids: Iterable[str]) -> None:
        """These batteries have new readings (called after each commit; thread-safe)."""
        now = self._clock()
        with self._lock:
            for battery_id in battery_ids:
                self._noted.setdefault(battery_id, now)

    def due(self) -> list[str]:
        """Batteries with new readings whose last refresh is ``refresh_s`` old, oldest first."""
        now = self._clock()
        with self._lock:
            ready = [
                (noted, battery_id)
                for battery_id, noted in self._noted.items()
                if now - self._last.get(battery_id, -np.inf) >= self.refresh_s
            ]
        return [battery_id for _, battery_id in sorted(ready)]

    def run(self, stop: threading.Event) -> None:
        """Refresh due batteries until ``stop``; rest between fits to keep within ``duty``."""
        while not stop.is_set():
            due = self.due()
            if not due:
                stop.wait(min(1.0, self.refresh_s / 10))
                continue
            for battery_id in due:
                started = time.monotonic()
                try:
                    self.refresh(battery_id)
                except Exception:  # a fit that fails must not end RUL for the whole fleet
                    log.exception("RUL of %s not refreshed", battery_id)
                spent = time.monotonic() - started
                if stop.wait(spent * (1.0 / self._duty - 1.0)):
                    return

    def refresh_due(self) -> int:
        """Refresh every due battery now (tests, benchmarks); how many."""
        due = self.due()
        for battery_id in due:
            self.refresh(battery_id)
        return len(due)

    def refresh(self, battery_id: str) -> RulEstimate | None:
        """Fit the battery's history, store the estimate, queue it for the alert engine."""
        with self._lock:
            self._noted.pop(battery_id, None)
            self._last[battery_id] = self._clock()
        try:
            estimate = self._estimate(battery_id)
            if estimate is not None:
                with self._sessions() as session, session.begin():
                    save_estimate(session, battery_id, estimate)
        except SQLAlchemyError as exc:
            log.warning("RUL of %s not refreshed: %s", battery_id, exc)
            return None
        if estimate is not None:
            self.results.put(RulUpdate(battery_id, _float(estimate.rul_days), estimate.computed_at))
        return estimate

    def _estimate(self, battery_id: str) -> RulEstimate | None:
        cached = self._days.pop(battery_id, None) or Days.empty()
        since_day = int(cached.day[-1]) + 1 if cached.day.size else 0
        with self._sessions() as session:
            newer, newest = daily_history(session, battery_id, since_day)
        days = cached.then(newer)
        if newest is None and days.day.size:
            newest = float(days.t[-1])
        if newest is None:
            return None
        self._days[battery_id] = days.before(int(newest // SECONDS_PER_DAY) - 1)
        while len(self._days) > self._max_cached:
            self._days.popitem(last=False)
        estimate = self.estimator(days.t, days.soh, from_unix(newest))
        if estimate is None:
            return None
        return dataclasses.replace(estimate, n_points=int(days.n.sum()))
