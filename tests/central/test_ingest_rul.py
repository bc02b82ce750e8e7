"""RUL in ingest, on SQLite and PostgreSQL: the refresher fits the stored SoH history (daily
medians: in SQL on PostgreSQL), writes ``battery_analytics``, and the alert engine judges
rul_warning and rul_critical from it. Each RUL type has one severity (rul_critical is its own
type, not an escalation of rul_warning), so their lifecycle is raise, then resolve after the hold.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import select

from central.db.models import BatteryAnalytics
from central.ingest.mqtt import Inbound
from central.ingest.rul_refresh import RulRefresher
from central.rul import RulEstimate, RulStatus, estimate_rul
from common.schemas import TelemetryBatch, encode
from tests.central.test_ingest_alerting import (
    BATTERY,
    SITE,
    TOPICS,
    Harness,
    minute,
    reading,
)

DAY_MINUTES = 24 * 60


@pytest.fixture
def harness(sessions) -> Harness:
    return Harness(sessions)


def fading(days: int, per_day: int = 4, start: float = 90.0, rate: float = 0.05) -> list:
    """SoH falling ``rate`` % a day with a deterministic ripple, ``per_day`` readings a day."""
    step = DAY_MINUTES / per_day
    return [
        reading(i * step, soh_pct=round(start - rate * i / per_day + 0.2 * math.sin(i), 3))
        for i in range(days * per_day)
    ]


def send_history(harness: Harness, readings: list, chunk: int = 240) -> None:
    for start in range(0, len(readings), chunk):
        part = readings[start : start + chunk]
        harness.clock.set(part[-1].ts)
        harness.send(*part)


def analytics(sessions) -> BatteryAnalytics | None:
    with sessions() as session:
        return session.get(BatteryAnalytics, BATTERY)


def raw_estimate(readings: list) -> RulEstimate:
    t = np.array([r.ts.timestamp() for r in readings])
    y = np.array([r.soh_pct for r in readings])
    estimate = estimate_rul(t, y, readings[-1].ts)
    assert estimate is not None
    return estimate


def test_rul_is_fitted_from_the_stored_history_and_raises_rul_warning(harness, sessions):
    history = fading(120)
    send_history(harness, history)
    assert analytics(sessions) is None or analytics(sessions).rul_status is None
    assert harness.service.rul.refresh_due() == 1

    row = analytics(sessions)
    expected = raw_estimate(history)  # the fit of every raw reading, daily medians in Python
    assert row.rul_status == "fading"
    assert row.rul_days == pytest.approx(expected.rul_days, rel=1e-9)
    assert 60 < row.rul_days < 100  # 84 % now, 0.05 %/day: about 80 days
    assert (row.rul_n_points, row.rul_n_days) == (480, 120)
    assert row.rul_computed_at == history[-1].ts
    assert row.rul_method == expected.method
    assert row.predicted_eol_date == expected.predicted_eol_date

    harness.at(120 * DAY_MINUTES, soh_pct=84.0)  # the next transaction judges the estimate
    (warning,) = harness.alerts("rul_warning")
    assert (warning.severity, warning.threshold_value) == ("warning", 180.0)
    assert (
        warning.message
        == f"Remaining useful life {math.floor(row.rul_days)} days below threshold 180 days"
    )
    assert warning.triggered_at == history[-1].ts
    assert harness.alerts("rul_critical") == []


def test_a_refresh_reads_only_new_days_and_fits_the_same(harness, sessions):
    history = fading(100)
    send_history(harness, history[:360])
    harness.service.rul.refresh_due()
    send_history(harness, history[360:])  # 10 more days, the cached ones not read again
    harness.service.rul.refresh_s = 0
    assert harness.service.rul.refresh_due() == 1
    row = analytics(sessions)
    assert row.rul_days == pytest.approx(raw_estimate(history).rul_days, rel=1e-9)
    assert (row.rul_n_points, row.rul_n_days) == (400, 100)


def test_too_short_a_history_stores_no_estimate(harness, sessions):
    send_history(harness, fading(10))
    harness.service.rul.refresh_due()
    assert analytics(sessions) is None or analytics(sessions).rul_status is None
    assert harness.alerts() == []


def test_each_battery_is_refreshed_at_most_every_refresh_s(sessions):
    now = [0.0]
    refresher = RulRefresher(sessions, 300, clock=lambda: now[0])
    refresher.note(["BAT-A"])
    assert refresher.due() == ["BAT-A"]
    refresher.refresh("BAT-A")  # no history: nothing stored, but it counts as a refresh
    refresher.note(["BAT-A", "BAT-B"])
    assert refresher.due() == ["BAT-B"]
    now[0] = 299.0
    assert refresher.due() == ["BAT-B"]
    now[0] = 300.0
    assert refresher.due() == ["BAT-A", "BAT-B"]


class CountingRefresher(RulRefresher):
    """Records each battery refreshed instead of fitting it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.refreshed: list[str] = []

    def refresh(self, battery_id: str) -> None:
        with self._lock:
            self._noted.pop(battery_id, None)
            self._last[battery_id] = self._clock()
        self.refreshed.append(battery_id)


def _eventually(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_fits_wait_while_ingest_works_through_a_backlog_but_not_forever(sessions):
    """The refresher checks for due batteries every refresh_s / 10 of real time (0.5 s here);
    its own clock, which the test moves, judges refresh_s."""
    now = [0.0]
    busy = [True]
    refresher = CountingRefresher(sessions, 5, clock=lambda: now[0], busy=lambda: busy[0])
    stop = threading.Event()
    worker = threading.Thread(target=refresher.run, args=(stop,))
    worker.start()
    try:
        refresher.note(["BAT-A"])
        time.sleep(1.0)  # due at once, but busy all along
        assert refresher.refreshed == []
        busy[0] = False
        _eventually(lambda: refresher.refreshed == ["BAT-A"], "not refreshed once idle")
        busy[0] = True
        now[0] = 5.0
        refresher.note(["BAT-A"])
        time.sleep(1.0)  # the refresher has found it due and has waited since
        assert refresher.refreshed == ["BAT-A"]
        now[0] = 10.0  # busy for refresh_s: the fit waits no longer
        _eventually(lambda: refresher.refreshed == ["BAT-A", "BAT-A"], "starved by a backlog")
    finally:
        stop.set()
        worker.join(10)
    assert not worker.is_alive()


class FakeEstimator:
    """RUL of ``days``, as of the newest reading: the lifecycle without a year of history."""

    def __init__(self) -> None:
        self.days: float | None = 100.0

    def __call__(self, times, soh_pct, now: datetime) -> RulEstimate:
        status = RulStatus.OPEN_ENDED if self.days is None else RulStatus.FADING
        return RulEstimate(
            status=status,
            rul_days=self.days,
            rul_low_days=None,
            rul_high_days=None,
            interval=0.8,
            predicted_eol_date=None if self.days is None else (now + timedelta(self.days)).date(),
            soh_now_pct=90.0,
            fade_pct_per_year=1.0,
            n_points=len(times),
            n_days=len(times),
            method="fake",
            computed_at=now,
        )


def test_rul_warning_and_rul_critical_raise_and_resolve_after_the_hold(harness):
    fake = FakeEstimator()
    rul = harness.service.rul
    rul.estimator, rul.refresh_s = fake, 0
    harness.at(0)
    rul.refresh_due()  # 100 days, as of minute 0
    harness.service.sweep(minute(0))  # judged by the sweep when no reading comes
    (warning,) = harness.alerts("rul_warning")
    assert (warning.severity, warning.triggered_at) == ("warning", minute(0))
    assert harness.alerts("rul_critical") == []

    fake.days = 20.0
    harness.at(1)
    rul.refresh_due()
    harness.at(2)
    (critical,) = harness.alerts("rul_critical")
    assert (critical.severity, critical.triggered_at, critical.actual_value) == (
        "critical",
        minute(1),
        20.0,
    )
    assert harness.alerts("rul_warning")[0].resolved_at is None  # stays while critical

    fake.days = None  # no end of life in sight: both clear, from the estimate as of minute 2
    for n in (3, 4):
        rul.refresh_due()  # as of the reading before
        harness.at(n)
    assert harness.alerts("rul_warning")[0].resolved_at is None  # clear for 60 s only
    rul.refresh_due()
    harness.at(5)  # the estimate as of minute 4: clear for the 120 s hold
    assert harness.alerts("rul_warning")[0].resolved_at == minute(4)
    assert harness.alerts("rul_critical")[0].resolved_at == minute(4)
    kinds = [(a["alert_type"], a["is_active"]) for a in harness.events.alerts()]
    assert kinds == [
        ("rul_warning", True),
        ("rul_critical", True),
        ("rul_warning", False),
        ("rul_critical", False),
    ]


def test_the_ingest_loop_refreshes_rul_in_the_background(sessions):
    harness = Harness(sessions)
    service = harness.service
    service.rul.refresh_s = 0.2
    history = fading(100)
    stop = threading.Event()
    worker = threading.Thread(target=service.run, args=(stop,))
    worker.start()
    try:
        for seq, start in enumerate(range(0, len(history), 200)):
            part = history[start : start + 200]
            batch = TelemetryBatch(
                site_id=SITE,
                agent_id="agent-1",
                seq_first=seq * 200 + 1,
                seq_last=seq * 200 + len(part),
                readings=part,
            )
            service.inbox.put(Inbound(TOPICS.telemetry(SITE), encode(batch), lambda: None))
        deadline = time.monotonic() + 30
        while (row := analytics(sessions)) is None or row.rul_n_points != len(history):
            assert time.monotonic() < deadline, "no RUL within 30 s"
            time.sleep(0.05)
        # One more reading: ingest's next transaction judges the estimate.
        service.inbox.put(
            Inbound(
                TOPICS.telemetry(SITE),
                encode(
                    TelemetryBatch(
                        site_id=SITE,
                        agent_id="agent-1",
                        seq_first=len(history) + 1,
                        seq_last=len(history) + 1,
                        readings=[reading(100 * DAY_MINUTES, soh_pct=85.0)],
                    )
                ),
                lambda: None,
            )
        )
        while not harness.alerts("rul_warning"):
            assert time.monotonic() < deadline, "no rul_warning within 30 s"
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(10)
    assert not worker.is_alive()
    assert row.rul_days == pytest.approx(raw_estimate(history).rul_days, rel=1e-9)
    with sessions() as session:
        assert session.scalars(select(BatteryAnalytics)).one().rul_status == "fading"


def new_block(first_day: int, days: int, per_day: int = 4, rate: float = 0.005) -> list:
    """A new block from ``first_day`` on: 100.5 % SoH fading ``rate`` % a day, 4 mΩ (the worn
    one read HEALTHY's 5 mΩ)."""
    step = DAY_MINUTES / per_day
    return [
        reading(
            first_day * DAY_MINUTES + i * step,
            soh_pct=round(100.5 - rate * i / per_day + 0.05 * math.sin(i), 3),
            internal_resistance=0.004,
        )
        for i in range(days * per_day)
    ]


def test_a_replaced_block_clears_the_rul_alerts_and_restarts_its_baseline(harness, sessions):
    """A worn block (84 %, rul_warning) swapped for a new one: four days on, the step up in SoH
    is a replacement. The new block has too little history of its own for a fit: the old
    estimate goes, both RUL types clear and resolve after the hold; resistance drift is judged
    against the new block's own baseline, not the old one's."""
    rul = harness.service.rul
    assert rul.baseline_readings == 3  # the harness's alert settings, as ingest passes them
    worn = fading(120)
    send_history(harness, worn)
    rul.refresh_due()
    harness.at(120 * DAY_MINUTES - 1, soh_pct=84.0)
    (warning,) = harness.alerts("rul_warning")
    assert analytics(sessions).resistance_baseline_ohm == 0.005

    fresh = new_block(120, 5)
    send_history(harness, fresh)
    rul.refresh_s = 0
    assert rul.refresh(BATTERY) is None  # the new block's own five days: no fit yet
    row = analytics(sessions)
    assert (row.rul_status, row.rul_days, row.rul_computed_at) == (None, None, None)
    assert row.resistance_baseline_ohm == 0.004  # the median of its first three
    last = 125 * DAY_MINUTES
    harness.at(last, soh_pct=100.4, internal_resistance=0.004)  # judged: clear, as of fresh[-1]
    assert harness.alerts("rul_warning")[0].resolved_at is None  # not for the hold yet
    rul.refresh_due()  # clear as of that reading, six hours on
    harness.at(last + 1, soh_pct=100.4, internal_resistance=0.004)
    resolved = harness.alerts("rul_warning")
    assert [a.id for a in resolved] == [warning.id]
    assert resolved[0].resolved_at == minute(last)
    assert harness.alerts("rul_critical") == []

    harness.at(last + 2, internal_resistance=0.0052)  # +30 % over 4 mΩ, +4 % over 5 mΩ
    (drift,) = harness.alerts("resistance_drift")
    assert (drift.severity, drift.actual_value) == ("warning", 30.0)


def test_a_replaced_block_is_fitted_on_its_own_days_only(harness, sessions):
    """Once the new block has history of its own, the estimate is its, and the old block's days
    are not read back from the refresher's cache: the count is the new block's days."""
    rul = harness.service.rul
    rul.refresh_s = 0
    send_history(harness, fading(120))
    rul.refresh_due()  # caches the worn block's days
    fresh = new_block(120, 100)
    send_history(harness, fresh[:40])
    rul.refresh_due()  # the replacement, found: the cache keeps the new block's days only
    send_history(harness, fresh[40:])
    estimate = rul.refresh(BATTERY)
    assert estimate is not None
    assert estimate == raw_estimate(fresh)
    assert (estimate.n_days, estimate.n_points) == (100, 400)
    assert estimate.fade_pct_per_year == pytest.approx(0.005 * 365.2425, rel=0.3)
    assert estimate.rul_days is None or estimate.rul_days > 1000
    assert analytics(sessions).rul_n_days == 100
