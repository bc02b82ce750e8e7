"""The battery page left open (issue 8): it keeps up with one reading a second for ten minutes
and its memory does not grow. Every minute the browser collects garbage (CDP
``HeapProfiler.collectGarbage``) and reports the live JS heap and DOM nodes
(``Performance.getMetrics``). ``BRM_BROWSER_SOAK_S`` shortens the run locally (default 600 s)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, CDPSession, Page

from common import ids
from tests.browser.conftest import BrowserDemo
from tests.browser.pages import Tab, go, log_in

pytestmark = [pytest.mark.integration, pytest.mark.browser]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SOAK_S = float(os.environ.get("BRM_BROWSER_SOAK_S", "600"))
SAMPLE_S = 60.0
WARMUP_S = 60.0  # the first minute: the page's first renders and the JIT settle
BATTERY = ids.battery_id("DC-CNX-01", 1, 1, 1)  # polled over Modbus every second by the demo
# Keeping up: the chart must hold every reading central stored for the battery between its
# oldest and newest points (it holds only stored readings, each once, so the same count means
# the same readings), its newest point must stay fresh, and the readings must come about once a
# second. The agent polls on a fixed 1 s grid and skips a slot when a poll overruns
# it (edge_agent/poller.py); on two cores shared with ingest, the browser and other test runs
# that happened for 0.5-7.5 % of the slots here. At least 85 % of the seconds must bring a
# reading (a skipped slot every seven seconds at worst), never more than one a second (+2 for
# the samples' boundaries).
MIN_UPDATE_RATIO = 0.85
# A reading passes the agent's outbox, the broker and an ingest batch before it is emitted.
MAX_LAG_S = 10.0
# Memory: the charts' window is still filling during the soak (it keeps up to 1,800 readings;
# the page opens with ~2 h of minute readings, ~120, and gains one a second), so the heap may
# grow by what a full window holds: 4 charts x 2 columns x 1,800 values x at most 24 B (a boxed
# double in a JS array), about 350 KB. The margin adds ~160 KB for one-off growth after the
# warm-up (compiled code, caches; a ~110 KB step showed here once): 512 KiB. A leak of 1 KB per
# update (one retained message, or a few DOM nodes each) adds 540 KB over the nine minutes after
# the warm-up and fails, both on the last sample and on the fitted trend.
HEAP_MARGIN_BYTES = 512 * 1024
# DOM: the page's structure is fixed; only its alerts table may gain a row (about 15 nodes).
NODE_MARGIN = 20
# Records every new newest point of the voltage chart (each live reading plotted moves it) and
# every change of the live feed's state, for the diagnosis of a reading not plotted.
# The times go to an array allocated up front, so that the record does not grow the heap measured.
WATCH = """([chart, live, capacity]) => {
  const soak = window.__soak = { plotted: new Float64Array(capacity), n: 0, live: [] };
  new MutationObserver(() => {
    if (soak.n < capacity) soak.plotted[soak.n] = Date.parse(chart.dataset.lastTs);
    soak.n += 1;
  }).observe(chart, { attributes: true, attributeFilter: ["data-last-ts"] });
  new MutationObserver(() => { soak.live.push([new Date().toISOString(), live.dataset.state]); })
    .observe(live, { attributes: true, attributeFilter: ["data-state"] });
}"""
READ_CHART = """() => {
  const el = document.querySelector('[data-testid="chart-voltage"]');
  return { updates: window.__soak.n, points: Number(el.dataset.points),
           first_ts: el.dataset.firstTs, last_ts: el.dataset.lastTs };
}"""


@dataclass
class Sample:
    t_s: float
    heap_bytes: int
    nodes: int
    listeners: int
    updates: int
    points: int
    first_ts: str
    last_ts: str
    lag_s: float


def _sample(page: Page, cdp: CDPSession, started: float) -> Sample:
    cdp.send("HeapProfiler.collectGarbage")
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    chart = page.evaluate(READ_CHART)
    newest = _time(chart["last_ts"])
    return Sample(
        t_s=round(time.monotonic() - started, 1),
        heap_bytes=int(metrics["JSHeapUsedSize"]),
        nodes=int(metrics["Nodes"]),
        listeners=int(metrics["JSEventListeners"]),
        updates=chart["updates"],
        points=chart["points"],
        first_ts=chart["first_ts"],
        last_ts=chart["last_ts"],
        lag_s=round((datetime.now(UTC) - newest).total_seconds(), 1),
    )


def _stored_between(demo: BrowserDemo, first: str, last: str) -> set[datetime]:
    """The times of the battery's readings central holds with ``first <= timestamp <= last``."""
    readings = demo.api.get(
        f"/api/v1/batteries/{BATTERY}/telemetry", start=first, end=last, limit=10_000
    )["data"]
    return {_time(r["timestamp"]) for r in readings}


def _spans(times: list[datetime]) -> str:
    """Consecutive seconds folded into ranges: what a failure message can show."""
    spans: list[list[datetime]] = []
    for t in times:
        if spans and (t - spans[-1][1]).total_seconds() <= 1.5:
            spans[-1][1] = t
        else:
            spans.append([t, t])
    return ", ".join(f"{a:%H:%M:%S}-{b:%H:%M:%S}" if a != b else f"{a:%H:%M:%S}" for a, b in spans)


def _time(text: str) -> datetime:
    """To the millisecond, as the page keeps times (JavaScript dates)."""
    exact = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return exact.replace(microsecond=exact.microsecond // 1000 * 1000)


def _slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


@pytest.mark.timeout(int(SOAK_S) + 300)
def test_battery_page_keeps_up_for_ten_minutes_without_growing_memory(
    browser: Browser, demo: BrowserDemo, output: Path
) -> None:
    assert SOAK_S >= WARMUP_S + 2 * SAMPLE_S, "BRM_BROWSER_SOAK_S: at least 180 s"
    context = demo.new_context(browser)
    tab = Tab.open(context.new_page())
    page = tab.page
    try:
        log_in(page, demo.base, "admin", demo.passwords["admin"])
        go(page, demo.base, f"batteries/{BATTERY}", "battery")
        cdp = context.new_cdp_session(page)
        cdp.send("Performance.enable")
        page.evaluate(
            WATCH,
            [
                page.get_by_test_id("chart-voltage").element_handle(),
                page.get_by_test_id("live-status").element_handle(),
                int(SOAK_S) + 120,
            ],
        )
        started = time.monotonic()
        samples = [_sample(page, cdp, started)]
        for minute in range(1, int(SOAK_S // SAMPLE_S) + 1):
            page.wait_for_timeout(max(0.0, started + minute * SAMPLE_S - time.monotonic()) * 1000)
            samples.append(_sample(page, cdp, started))
        (output / "soak.json").write_text(json.dumps([asdict(s) for s in samples], indent=1))
        print("\n   t_s  heap_bytes  nodes  listeners  updates  points  lag_s")
        for s in samples:
            print(
                f"{s.t_s:6.0f} {s.heap_bytes:11d} {s.nodes:6d} {s.listeners:10d} "
                f"{s.updates:8d} {s.points:7d} {s.lag_s:6.1f}"
            )
        plotted, live_states = page.evaluate(
            "() => [Array.from(__soak.plotted.subarray(0, __soak.n)), __soak.live]"
        )
        tab.assert_no_script_errors()
    finally:
        context.close()

    elapsed = samples[-1].t_s - samples[0].t_s
    updates = samples[-1].updates - samples[0].updates
    end = samples[-1]
    stored = _stored_between(demo, end.first_ts, end.last_ts)
    print(
        f"{updates} live updates plotted in {elapsed:.0f} s; the chart holds {end.points} "
        f"readings from {end.first_ts} to {end.last_ts}, central stored {len(stored)}"
    )
    # Which ones, as far as the newest point's moves tell (a reading plotted late does not
    # move it): for the failure message.
    newest = {EPOCH + timedelta(milliseconds=int(ms)) for ms in plotted}
    unseen = sorted(t for t in stored if t > _time(samples[0].last_ts) and t not in newest)
    assert end.points == len(stored), (
        f"{len(stored) - end.points} stored readings not plotted; never the newest point: "
        f"{_spans(unseen)}; live feed: {live_states}"
    )
    assert MIN_UPDATE_RATIO * elapsed <= updates <= elapsed + 2, (updates, elapsed)
    assert max(s.lag_s for s in samples) <= MAX_LAG_S, [s.lag_s for s in samples]
    settled = [s for s in samples if s.t_s >= WARMUP_S - 1]
    first, last = settled[0], settled[-1]
    trend = _slope([s.t_s for s in settled], [s.heap_bytes for s in settled])
    print(
        f"heap after the warm-up: {first.heap_bytes} -> {last.heap_bytes} bytes, "
        f"trend {trend:.0f} B/s; DOM nodes {first.nodes} -> {last.nodes}"
    )
    assert last.heap_bytes <= first.heap_bytes + HEAP_MARGIN_BYTES, (first, last)
    assert trend * (last.t_s - first.t_s) <= HEAP_MARGIN_BYTES, trend
    assert last.nodes <= first.nodes + NODE_MARGIN, (first, last)
