"""The dashboard's first load stays light (issue 8: under 300 KB compressed): every byte a fresh
browser receives from opening ``/`` until the fleet page has rendered after login."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from tests.browser.conftest import BrowserDemo
from tests.browser.pages import Tab, log_in

pytestmark = [pytest.mark.integration, pytest.mark.browser]

BUDGET_BYTES = 300 * 1024


def test_first_load_after_login_is_under_300_kb_on_the_wire(
    browser: Browser, demo: BrowserDemo, output: Path
) -> None:
    context = demo.new_context(browser)  # fresh: empty cache, no session
    tab = Tab.open(context.new_page())
    page = tab.page
    try:
        cdp = context.new_cdp_session(page)
        urls: dict[str, str] = {}
        encodings: dict[str, str] = {}
        received: dict[str, int] = {}

        def response(event: dict) -> None:
            urls[event["requestId"]] = event["response"]["url"]
            headers = {k.lower(): v for k, v in event["response"]["headers"].items()}
            encodings[event["requestId"]] = headers.get("content-encoding", "")

        def finished(event: dict) -> None:
            # Bytes on the wire for the whole response: headers plus the (compressed) body.
            received[event["requestId"]] = int(event["encodedDataLength"])

        cdp.on("Network.responseReceived", response)
        cdp.on("Network.loadingFinished", finished)
        cdp.send("Network.enable")
        cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
        log_in(page, demo.base, "admin", demo.passwords["admin"])
        page.wait_for_load_state("networkidle")
        total = sum(received.values())
        rows = sorted(
            ((received[r], encodings.get(r, ""), urls.get(r, r)) for r in received), reverse=True
        )
        print(f"\nfirst load of / through login to the fleet page: {total} bytes on the wire")
        for size, encoding, url in rows:
            print(f"  {size:>8} {encoding or '-':<6} {url.removeprefix(demo.base)}")
        (output / "page-weight.json").write_text(
            json.dumps({"total_bytes": total, "responses": rows}, indent=1)
        )
        assert len(rows) > 3, rows  # the page, its script and styles, the API calls
        assert any("/api/v1/alerts/stats" in url for *_, url in rows), rows  # the fleet's data
        assert total < BUDGET_BYTES, f"{total} bytes > {BUDGET_BYTES}: {rows[:8]}"
        tab.assert_no_script_errors()
    finally:
        context.close()
