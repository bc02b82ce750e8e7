"""Remaining useful life, refreshed in ingest's background: each battery at most every
``refresh_s``, after it has had new readings, from its SoH history in the store.

Off the hot path: a thread of the ingest process fits one battery at a time, resting between fits
so that it takes at most ``duty`` of a CPU (a fit costs 1–4 ms; the history query most of the
rest), each battery in its own short transaction. While ingest works through a backlog
(``busy``), fits wait: they share one interpreter with ingest, and a backlog's end brings newer
readings to fit anyway. They wait ``refresh_s`` at most, so a lasting overload delays RUL by no
more than that. Results go to ``battery_analytics`` and, as
``RulUpdate``s, to ``results``, which the ingest loop hands to the alert engine: rul_warning and
rul_critical are judged in ingest's next transaction, where the lifecycle state lives.

History: daily medians (``central.db.soh_history``). A battery's complete days (all but its last
two) are cached, so a refresh reads only its newest days; the cache holds ``max_cached`` batteries
(least recently refreshed dropped first). Days that arrive late, for a day already cached, count
from the next restart of ingest.

Replacement. A block swapped for a new one shows as a step up in its daily SoH
(``central.rul.replacement_start``): from then on only the new block's days are fitted and
cached. Until it has the history a fit needs, it has no estimate: the old block's is taken away,
and the alert engine is told there is no end of life in sight. Its resistance baseline restarts
from its own first ``baseline_readings`` once they are in, if resistance stepped down with SoH
(``central.alerts.renewed_baseline``), and goes to the alert engine with the next update.
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
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from central.alerts import AlertSettings, renewed_baseline
from central.db.models import BatteryAnalytics
from central.db.soh_history import Days, daily_history, resistances_around
from central.ingest.alerting import RulUpdate
from central.rul import SECONDS_PER_DAY, RulEstimate, estimate_rul, replacement_start
from common.timeutil import from_unix, utc_now

log = logging.getLogger(__name__)

RUL_REFRESH_S = 300.0
BUSY_PAUSE_S = 0.1
BASELINE_READINGS = AlertSettings.model_fields["baseline_readings"].default
RUL_COLUMNS = (
    "rul_status",
    "rul_days",
    "rul_low_days",
    "rul_high_days",
    "rul_interval_pct",
    "predicted_eol_date",
    "soh_now_pct",
    "fade_pct_per_year",
    "rul_n_points",
    "rul_n_days",
    "rul_method",
    "rul_computed_at",
)

Estimator = Callable[..., RulEstimate | None]


def _float(value: float | None) -> float | None:
    """A plain float: ``estimate_rul`` may give numpy scalars, which psycopg2 cannot send."""
    return None if value is None else float(value)


def save_estimate(session: Session, battery_id: str, estimate: RulEstimate) -> None:
    """Upsert the RUL columns of the battery's analytics row (its baseline is left alone)."""
    _upsert(session, battery_id, _estimate_columns(estimate))


def clear_estimate(session: Session, battery_id: str) -> None:
    """No estimate (a new block without the history for one): the RUL columns to null."""
    _upsert(session, battery_id, dict.fromkeys(RUL_COLUMNS))


def save_baseline(session: Session, battery_id: str, ohm: float) -> None:
    """A replaced block's own resistance baseline, over the old block's."""
    _upsert(session, battery_id, {"resistance_baseline_ohm": ohm})


def _estimate_columns(estimate: RulEstimate) -> dict[str, Any]:
    return {
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
    }


def _upsert(session: Session, battery_id: str, values: dict[str, Any]) -> None:
    values = {**values, "updated_at": utc_now()}
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
        baseline_readings: int = BASELINE_READINGS,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self._sessions = sessions
        self._busy = busy
        self._busy_since: float | None = None
        self.refresh_s = refresh_s
        self.estimator = estimator
        self._clock = clock
        self._duty = duty
        self._max_cached = max_cached
        self.baseline_readings = baseline_readings
        self._lock = threading.Lock()
        self._noted: dict[str, float] = {}  # new readings since its last refresh, noted when
        self._last: dict[str, float] = {}  # when each battery was last refreshed
        self._days: OrderedDict[str, _Cached] = OrderedDict()
        self._rebased: dict[str, int] = {}  # replaced blocks whose baseline is settled: the day
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
                if self._wait_while_busy(stop):
                    return
                started = time.monotonic()
                try:
                    self.refresh(battery_id)
                except Exception:  # a fit that fails must not end RUL for the whole fleet
                    log.exception("RUL of %s not refreshed", battery_id)
                spent = time.monotonic() - started
                if stop.wait(spent * (1.0 / self._duty - 1.0)):
                    return

    def _wait_while_busy(self, stop: threading.Event) -> bool:
        """Wait while ingest is busy, unless it has been busy for ``refresh_s`` already; True
        if ``stop`` came meanwhile."""
        while self._busy():
            now = self._clock()
            if self._busy_since is None:
                self._busy_since = now
            elif now - self._busy_since >= self.refresh_s:
                return False
            if stop.wait(BUSY_PAUSE_S):
                return True
        self._busy_since = None
        return False

    def refresh_due(self) -> int:
        """Refresh every due battery now (tests, benchmarks); how many."""
        due = self.due()
        for battery_id in due:
            self.refresh(battery_id)
        return len(due)

    def refresh(self, battery_id: str) -> RulEstimate | None:
        """Fit the battery's history, store the estimate, queue it for the alert engine (a
        replaced block: see the module's docstring)."""
        with self._lock:
            self._noted.pop(battery_id, None)
            self._last[battery_id] = self._clock()
        baseline, settled = None, False
        try:
            fitted = self._estimate(battery_id)
            if fitted is None:
                return None
            estimate, renewed = fitted.estimate, fitted.renewed_day
            if estimate is None and renewed is None:
                return None
            with self._sessions() as session, session.begin():
                if estimate is not None:
                    save_estimate(session, battery_id, estimate)
                else:
                    clear_estimate(session, battery_id)
                if renewed is not None and self._rebased.get(battery_id) != renewed:
                    settled, baseline = self._rebase(session, battery_id, renewed)
        except SQLAlchemyError as exc:
            log.warning("RUL of %s not refreshed: %s", battery_id, exc)
            return None
        if settled:
            self._rebased[battery_id] = renewed
        if estimate is not None:
            days, as_of = _float(estimate.rul_days), estimate.computed_at
        else:
            days, as_of = None, from_unix(fitted.newest)
        self.results.put(RulUpdate(battery_id, days, as_of, baseline))
        return estimate

    def _rebase(self, session: Session, battery_id: str, day: int) -> tuple[bool, float | None]:
        """(whether it is settled, the new baseline if any) for a block put in on ``day``."""
        at = from_unix(day * SECONDS_PER_DAY)
        before, after = resistances_around(session, battery_id, at, self.baseline_readings)
        if len(after) < self.baseline_readings:
            return False, None
        baseline = renewed_baseline(before, after, self.baseline_readings)
        if baseline is not None:
            save_baseline(session, battery_id, baseline)
            log.info("%s replaced on %s: resistance baseline %.6f ohm", battery_id, at, baseline)
        return True, baseline

    def _estimate(self, battery_id: str) -> _Fitted | None:
        cached = self._days.pop(battery_id, None) or _Cached(Days.empty(), None)
        known = cached.days
        since_day = int(known.day[-1]) + 1 if known.day.size else 0
        with self._sessions() as session:
            newer, newest = daily_history(session, battery_id, since_day)
        days = known.then(newer)
        if newest is None and days.day.size:
            newest = float(days.t[-1])
        if newest is None:
            return None
        renewed = cached.renewed_day
        first = replacement_start(days.soh)
        if first:  # the old block's days leave the fit and the cache
            days = days.since(first)
            renewed = int(days.day[0])
        complete = days.before(int(newest // SECONDS_PER_DAY) - 1)
        self._days[battery_id] = _Cached(complete, renewed)
        while len(self._days) > self._max_cached:
            self._days.popitem(last=False)
        estimate = self.estimator(days.t, days.soh, from_unix(newest))
        if estimate is not None:
            estimate = dataclasses.replace(estimate, n_points=int(days.n.sum()))
        return _Fitted(estimate, newest, renewed)


@dataclass(frozen=True)
class _Cached:
    """A battery's complete days (its present block's), and the first day of that block when
    it replaced another."""

    days: Days
    renewed_day: int | None


@dataclass(frozen=True)
class _Fitted:
    estimate: RulEstimate | None
    newest: float  # Unix s of the newest reading with a SoH
    renewed_day: int | None
