"""Each battery's SoH history as one point a UTC day (the median of that day's readings): what
the RUL fit sees, and what the battery page plots beside its extrapolation.

PostgreSQL aggregates in SQL over the ``(battery_id, ts)`` key; SQLite's readings are fetched and
aggregated with ``daily_medians``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from central.db.models import Telemetry
from central.rul import SECONDS_PER_DAY, daily_medians
from common.timeutil import from_unix

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

    def since(self, index: int) -> Days:
        """The points from ``index`` on (a replaced block's own)."""
        return Days(self.day[index:], self.t[index:], self.soh[index:], self.n[index:])

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


def resistances_around(
    session: Session, battery_id: str, at: datetime, count: int
) -> tuple[list[float], list[float]]:
    """The battery's last ``count`` valid resistances before ``at`` (newest first) and its first
    ``count`` from ``at`` on: an old block's and its replacement's, around the replacement."""
    valid = (Telemetry.battery_id == battery_id, Telemetry.internal_resistance > 0)
    ohm = Telemetry.internal_resistance
    before = session.scalars(
        select(ohm).where(*valid, Telemetry.ts < at).order_by(Telemetry.ts.desc()).limit(count)
    ).all()
    after = session.scalars(
        select(ohm).where(*valid, Telemetry.ts >= at).order_by(Telemetry.ts).limit(count)
    ).all()
    return list(before), list(after)
