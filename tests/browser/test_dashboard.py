"""The dashboard against a running demo, page by page, as its users work with it (issue 8): the
fleet, a location's blocks, a battery's live charts, alerts acknowledged by an engineer and out of
a viewer's reach, the admin's users, a research upload. Each page is also photographed at
desktop and phone width."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from common import ids
from tests.browser.conftest import BrowserDemo
from tests.browser.pages import Tab, go, hook, screenshots, wait_page
from tests.support import SHARED_DATA

pytestmark = [pytest.mark.integration, pytest.mark.browser]

SITE = "DC-CNX-01"
LIVE_BATTERY = ids.battery_id(SITE, 1, 1, 1)  # read over Modbus every second
# The demo's fault plan runs this block 25 °C too hot from the start: a live temperature_high.
OVERHEATING = ids.battery_id(SITE, 1, 2, 30)
ALERT_WAIT_S = 120.0
LIVE_WAIT_MS = 20_000  # a 1 s poll interval, with ingest and the browser sharing two cores
# A small real NASA cycling file (one cell, ~2.7 MB).
MAT_FILE = SHARED_DATA / "nasa_pcoe" / "B0025.mat"


def _as_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_fleet_page_shows_the_location_with_its_statistics(
    signed_in: Callable[[str], Tab], demo: BrowserDemo, output: Path
) -> None:
    tab = signed_in("admin")
    page = tab.page
    go(page, demo.base, "fleet", "fleet")
    site = demo.api.get(f"/api/v1/locations/{SITE}")
    card = page.locator(f'[data-testid="location-card"][data-location-id="{SITE}"]')
    expect(card).to_be_visible()
    expect(card).to_contain_text(site["name"])
    expect(card).to_contain_text(str(site["total_batteries"]))
    assert site["total_batteries"] == 216, site
    stats = hook(page, "alert-stats")
    expect(stats).to_be_visible()
    expect(stats).to_contain_text("critical")
    expect(hook(page, "current-user")).to_contain_text("admin")
    expect(hook(page, "nav-users")).to_be_visible()
    screenshots(page, output, "fleet")
    card.click()
    wait_page(page, "location")
    assert page.url.endswith(f"#/locations/{SITE}"), page.url
    tab.assert_no_script_errors()


def test_location_page_shows_every_block_and_filters_the_critical_ones(
    signed_in: Callable[[str], Tab], demo: BrowserDemo, output: Path
) -> None:
    tab = signed_in("admin")
    page = tab.page
    go(page, demo.base, f"locations/{SITE}", "location")
    expect(page.get_by_test_id("ups-unit")).to_have_count(2)
    expect(page.get_by_test_id("string-row")).to_have_count(6)
    cells = page.get_by_test_id("block-cell")
    expect(cells).to_have_count(216)
    screenshots(page, output, "location")

    def shown() -> list[tuple[str, bool]]:
        """Each cell's status and whether it shows, read in one go (statuses change live)."""
        return cells.evaluate_all("els => els.map(e => [e.dataset.status, e.checkVisibility()])")

    before = shown()
    assert all(visible for _, visible in before)
    assert {status for status, _ in before} <= {"healthy", "warning", "critical", "unknown"}
    hook(page, "filter-critical").check()
    after = shown()
    critical = [status == "critical" for status, _ in after]
    assert 0 < sum(critical) < len(after), after  # the demo's fast-ageing block is critical
    assert [visible for _, visible in after] == critical
    first = cells.filter(visible=True).first
    title = first.get_attribute("title") or ""
    assert "SoH" in title and "RUL" in title, title
    hook(page, "filter-critical").uncheck()
    expect(cells.filter(visible=True)).to_have_count(216)
    page.locator(f'[data-testid="block-cell"][data-battery-id="{LIVE_BATTERY}"]').click()
    wait_page(page, "battery")
    tab.assert_no_script_errors()


def test_battery_page_plots_a_reading_that_arrives_live(
    signed_in: Callable[[str], Tab], demo: BrowserDemo, output: Path
) -> None:
    tab = signed_in("admin")
    page = tab.page
    go(page, demo.base, f"batteries/{LIVE_BATTERY}", "battery")
    expect(hook(page, "live-status")).to_have_attribute("data-state", "connected")
    voltage = hook(page, "chart-voltage")
    for testid in ("chart-voltage", "chart-temperature", "chart-resistance", "chart-soc"):
        points = int(hook(page, testid).get_attribute("data-points") or 0)
        assert points > 0, testid  # the demo's backfilled minute readings
    assert int(hook(page, "chart-soh").get_attribute("data-points") or 0) > 700  # two years
    expect(hook(page, "rul-summary")).not_to_be_empty()
    expect(hook(page, "battery-alerts")).to_be_visible()
    last = voltage.get_attribute("data-last-ts") or ""
    points = int(voltage.get_attribute("data-points") or 0)
    voltage.element_handle().wait_for_element_state("visible")
    page.wait_for_function(
        "([el, last]) => el.dataset.lastTs !== last",
        arg=[voltage.element_handle(), last],
        timeout=LIVE_WAIT_MS,
    )
    newest = voltage.get_attribute("data-last-ts") or ""
    assert _as_time(newest) > _as_time(last), (last, newest)
    lag = (datetime.now(UTC) - _as_time(newest)).total_seconds()
    assert lag < 10, f"the live point is {lag:.1f} s old"
    assert int(voltage.get_attribute("data-points") or 0) >= points
    screenshots(page, output, "battery")
    tab.assert_no_script_errors()


# Drives the charts' ring in the page: each step pushes an x and reports what the ring then holds.
RING_STEPS = """async (steps) => {
  const { Ring } = await import("/ui/chart.js");
  const ring = new Ring(4, 1);
  return steps.map((x) => {
    const added = ring.push(x, [x * 10]);
    const [xs, ys] = ring.columns();
    return [added, xs, ys];
  });
}"""


def test_the_live_charts_keep_readings_in_time_order_and_bounded(
    signed_in: Callable[[str], Tab], demo: BrowserDemo
) -> None:
    """A reading arriving after a newer one (another ingest worker's batch, a gap fetched after a
    reconnection) is plotted in its place; one already held, or older than a full window, is not."""
    tab = signed_in("admin")
    go(tab.page, demo.base, "fleet", "fleet")
    steps = tab.page.evaluate(RING_STEPS, [10, 30, 20, 20, 40, 50, 5, 35, 60])
    assert steps == [
        [True, [10], [100]],
        [True, [10, 30], [100, 300]],
        [True, [10, 20, 30], [100, 200, 300]],  # late: goes to its place
        [False, [10, 20, 30], [100, 200, 300]],  # already held
        [True, [10, 20, 30, 40], [100, 200, 300, 400]],
        [True, [20, 30, 40, 50], [200, 300, 400, 500]],  # full: the oldest leaves
        [False, [20, 30, 40, 50], [200, 300, 400, 500]],  # older than the whole window
        [True, [30, 35, 40, 50], [300, 350, 400, 500]],  # late into a full ring
        [True, [35, 40, 50, 60], [350, 400, 500, 600]],
    ]
    tab.assert_no_script_errors()


def _overheating_alert(demo: BrowserDemo) -> dict[str, Any]:
    """The overheating block's active temperature_high alert, once ingest has raised it."""
    found: list[dict[str, Any]] = []

    def raised() -> bool:
        alerts = demo.api.get(
            "/api/v1/alerts", location_id=SITE, alert_type="temperature_high", limit=100
        )["alerts"]
        found[:] = [a for a in alerts if a["battery_id"] == OVERHEATING and a["is_active"]]
        return bool(found)

    demo.run.wait_until(raised, ALERT_WAIT_S, "the overheating block's temperature_high alert")
    return found[0]


def test_an_engineer_acknowledges_an_alert_with_a_note(
    signed_in: Callable[[str], Tab], demo: BrowserDemo, output: Path
) -> None:
    alert = _overheating_alert(demo)
    assert not alert["is_acknowledged"], alert
    tab = signed_in("engineer")
    page = tab.page
    expect(hook(page, "current-user")).to_contain_text("engineer")
    expect(hook(page, "nav-users")).to_have_count(0)
    go(page, demo.base, "alerts", "alerts")
    hook(page, "filter-type").select_option("temperature_high")
    row = page.locator(f'[data-testid="alert-row"][data-alert-id="{alert["alert_id"]}"]')
    expect(row).to_have_attribute("data-type", "temperature_high")
    expect(row).to_have_attribute("data-status", "active")
    expect(row.get_by_test_id("resolve-button")).to_be_visible()
    screenshots(page, output, "alerts")
    note = f"browser test {time.time():.0f}: fan tray replaced, watching the temperature"
    row.get_by_test_id("ack-button").click()
    hook(page, "ack-note").fill(note)
    hook(page, "ack-confirm").click()
    expect(row).to_have_attribute("data-status", "acknowledged")
    expect(row.get_by_test_id("ack-button")).to_have_count(0)
    stored = demo.api.get(f"/api/v1/alerts/{alert['alert_id']}")
    assert stored["is_acknowledged"] is True, stored
    assert stored["acknowledged_by"] == "engineer", stored
    assert stored["acknowledgment_note"] == note, stored
    tab.assert_no_script_errors()


def test_a_viewer_sees_alerts_but_no_actions_and_no_users_page(
    signed_in: Callable[[str], Tab], demo: BrowserDemo
) -> None:
    _overheating_alert(demo)
    tab = signed_in("viewer")
    page = tab.page
    expect(hook(page, "current-user")).to_contain_text("viewer")
    expect(hook(page, "nav-alerts")).to_be_visible()
    expect(hook(page, "nav-users")).to_have_count(0)
    go(page, demo.base, "alerts", "alerts")
    rows = page.get_by_test_id("alert-row")
    # Active alerts: an engineer could resolve every one of these and acknowledge the pending.
    expect(rows.first).to_be_visible()
    assert rows.evaluate_all("els => els.some(e => e.dataset.status === 'active')")
    expect(page.get_by_test_id("ack-button")).to_have_count(0)
    expect(page.get_by_test_id("resolve-button")).to_have_count(0)
    go(page, demo.base, f"batteries/{OVERHEATING}", "battery")
    expect(page.get_by_test_id("ack-button")).to_have_count(0)
    expect(page.get_by_test_id("resolve-button")).to_have_count(0)
    tab.assert_no_script_errors()


def test_the_admin_creates_a_user(
    signed_in: Callable[[str], Tab], demo: BrowserDemo, output: Path
) -> None:
    tab = signed_in("admin")
    page = tab.page
    go(page, demo.base, "users", "users")
    for name in ("admin", "engineer", "viewer"):
        expect(page.locator(f'[data-testid="user-row"][data-username="{name}"]')).to_be_visible()
    hook(page, "user-create-username").fill("operator-2")
    hook(page, "user-create-email").fill("operator-2@example.com")
    hook(page, "user-create-password").fill("a-long-enough-password")
    hook(page, "user-create-role").select_option("engineer")
    hook(page, "user-create-submit").click()
    row = page.locator('[data-testid="user-row"][data-username="operator-2"]')
    expect(row).to_be_visible()
    expect(row.get_by_test_id("role-select")).to_have_value("engineer")
    expect(row.get_by_test_id("deactivate-button")).to_be_visible()
    users = demo.api.get("/api/v1/auth/users")["users"]
    created = [u for u in users if u["username"] == "operator-2"]
    assert len(created) == 1 and created[0]["role"] == "engineer", created
    assert created[0]["is_active"] is True and created[0]["email"] == "operator-2@example.com"
    screenshots(page, output, "users")
    tab.assert_no_script_errors()


def test_research_upload_shows_its_progress_then_the_capacity_fade(
    signed_in: Callable[[str], Tab], demo: BrowserDemo, output: Path
) -> None:
    assert MAT_FILE.is_file(), MAT_FILE
    tab = signed_in("admin")
    page = tab.page
    go(page, demo.base, "research", "research")
    progress = hook(page, "upload-progress")
    expect(progress).to_have_js_property("value", 0)
    hook(page, "upload-input").set_input_files(MAT_FILE)
    with page.expect_response(
        lambda r: r.request.method == "POST" and "/api/v1/research/batteries" in r.url,
        timeout=120_000,
    ) as answer:
        hook(page, "upload-submit").click()
    assert answer.value.status == 201, answer.value.text()
    stored = answer.value.json()
    expect(progress).to_have_js_property("value", 100)
    dataset_id = stored["id"]  # the file's first (here only) cell
    row = page.locator(f'[data-testid="dataset-row"][data-dataset-id="{dataset_id}"]')
    expect(row).to_contain_text(MAT_FILE.name)
    screenshots(page, output, "research")
    row.get_by_role("link").first.click()
    detail = wait_page(page, "research-detail", timeout_ms=60_000)
    assert page.url.endswith(f"#/research/{dataset_id}"), page.url
    plot = detail.get_by_test_id("fade-plot")
    assert int(plot.get_attribute("data-points") or 0) > 0
    expect(detail.get_by_test_id("cell-labels")).not_to_be_empty()
    expect(detail.get_by_test_id("prediction")).to_be_visible()
    expect(detail.get_by_test_id("prediction")).not_to_contain_text("Loading")
    screenshots(page, output, "research-detail")
    tab.assert_no_script_errors()
