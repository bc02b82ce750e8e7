"""What the browser tests do to the dashboard, through the contract's ``data-testid`` hooks only."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Locator, Page, Response

# Generous for a first render on a 2-core machine that also runs the demo.
READY_MS = 30_000
# Screenshot sizes of issue 8: a desktop and a phone in portrait.
VIEWPORTS = ((1440, 900), (390, 844))
# flask-limiter allows 5 logins a minute per address: a refused attempt waits out the window once.
LOGIN_WINDOW_S = 61.0


@dataclass
class Tab:
    """A page with the uncaught script errors it has raised (a test fails on any)."""

    page: Page
    errors: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, page: Page) -> Tab:
        tab = cls(page)
        page.on("pageerror", lambda error: tab.errors.append(str(error)))
        return tab

    def assert_no_script_errors(self) -> None:
        """Fails on the errors since the last check (a shared tab starts each test clean)."""
        errors, self.errors = self.errors, []
        assert not errors, f"uncaught script errors: {errors}"


def hook(page: Page, testid: str) -> Locator:
    return page.get_by_test_id(testid)


def wait_page(page: Page, name: str, timeout_ms: int = READY_MS) -> Locator:
    """The contract's ``<main data-testid="page" data-page=NAME>``, once its first data shows."""
    main = page.locator(f'main[data-testid="page"][data-page="{name}"]')
    main.wait_for(state="visible", timeout=timeout_ms)
    return main


def go(page: Page, base: str, route: str, name: str) -> Locator:
    """Navigate to a hash route and wait for that page to be ready."""
    page.goto(f"{base}/#/{route}")
    return wait_page(page, name)


def _is_login(response: Response) -> bool:
    return response.request.method == "POST" and response.url.endswith("/api/v1/auth/login")


def submit_login(page: Page, username: str, password: str) -> Response:
    """Fill and submit the login form; the server's answer. A refusal for the login rate limit
    waits out the limiter's window and submits once more."""
    for attempt in range(2):
        hook(page, "login-username").fill(username)
        hook(page, "login-password").fill(password)
        with page.expect_response(_is_login) as answer:
            hook(page, "login-submit").click()
        if answer.value.status != 429 or attempt:
            break
        retry = answer.value.headers.get("retry-after", "")
        page.wait_for_timeout(1000 * (float(retry) + 1 if retry.isdigit() else LOGIN_WINDOW_S))
    return answer.value


def log_in(page: Page, base: str, username: str, password: str) -> None:
    """Log in through the form and land on the fleet page (the default route after login)."""
    page.goto(f"{base}/#/login")
    wait_page(page, "login")
    response = submit_login(page, username, password)
    assert response.status == 200, (username, response.status, response.text())
    wait_page(page, "fleet")


def settle(page: Page) -> None:
    """Two animation frames and a resize debounce: the layout has caught up with the viewport."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    page.wait_for_timeout(300)


def screenshots(page: Page, output: Path, name: str) -> list[Path]:
    """The page at each of ``VIEWPORTS`` into ``output``; at phone width it must not scroll
    sideways (then it stays usable there). The viewport is restored afterwards."""
    restore = page.viewport_size
    saved = []
    try:
        for width, height in VIEWPORTS:
            page.set_viewport_size({"width": width, "height": height})
            settle(page)
            path = output / f"{name}-{width}.png"
            page.screenshot(path=path)
            saved.append(path)
            if width < 600:
                scroll, inner = page.evaluate(
                    "() => [document.scrollingElement.scrollWidth, window.innerWidth]"
                )
                assert scroll <= inner, f"{name} scrolls sideways at {width} px: {scroll} > {inner}"
    finally:
        if restore is not None:
            page.set_viewport_size(restore)
            settle(page)
    return saved


JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")


def stored_tokens(page: Page) -> list[str]:
    """Every JWT the page keeps in sessionStorage, whatever keys it uses."""
    text = page.evaluate("() => JSON.stringify(Object.entries(sessionStorage))")
    return JWT.findall(text)
