"""The browser tests' harness: one ``battery-fleet demo`` (one site, agents polling every second),
Debian's Chromium driven by Playwright as the system browser (nothing is downloaded), a
logged-in tab per role, and the folder the screenshots go to. The fixtures live for this package
only: the demo and the browser stop before the rest of the suite runs."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, sync_playwright

from tests.browser.pages import Tab, log_in
from tests.support import free_tcp_port
from tests.test_demo import BATTERY_FLEET, DemoRun
from tests.test_system_e2e import Api

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
START_S = 180.0  # backfill of one site (~10 s) and every part loading, on a busy 2-core machine
STOP_GRACE_S = 30.0  # the demo itself gives its parts 15 s
# The demo's admin plus one user per other role, created through the users API.
ROLES = {"admin": "admin", "engineer": "engineer", "viewer": "viewer"}


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


@dataclass
class BrowserDemo:
    """The running demo: its URL, an admin REST client and each role's password."""

    run: DemoRun
    base: str
    api: Api
    passwords: dict[str, str]

    def new_context(self, browser: Browser) -> BrowserContext:
        return browser.new_context(viewport={"width": 1440, "height": 900}, base_url=self.base)


def _ready(base: str) -> bool:
    with (
        contextlib.suppress(OSError, urllib.error.URLError),
        urllib.request.urlopen(f"{base}/health/ready", timeout=2) as response,
    ):
        return response.status == 200
    return False


def _stop(run: DemoRun) -> None:
    """SIGTERM to the demo's group (it stops its parts), SIGKILL to whatever is left after the
    grace, including the parts' own groups."""
    children = run.data / "children.json"
    groups = set(json.loads(children.read_text()).values()) if children.exists() else set()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(run.process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        run.process.wait(STOP_GRACE_S)
    for group in groups | {run.process.pid}:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    run.process.wait(10)


@pytest.fixture(scope="package")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserDemo]:
    folder = tmp_path_factory.mktemp("browser-demo")
    port = free_tcp_port()
    base = f"http://127.0.0.1:{port}"
    passwords = {name: secrets.token_urlsafe(12) for name in ROLES}
    argv = [
        str(BATTERY_FLEET), "demo", "--sites", "1", "--interval", "1", "--http-port", str(port),
        "--data-dir", str(folder / "data"), "--admin-password", passwords["admin"],
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "BRM_ADMIN_PASSWORD"}
    console = folder / "console.txt"
    with console.open("wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    run = DemoRun(process, console, folder / "data")
    try:
        run.wait_until(lambda: _ready(base), START_S, "the demo's /health/ready")
        api = Api(base)
        api.login("admin", passwords["admin"])
        for name, role in ROLES.items():
            if name == "admin":
                continue
            body = {
                "user_id": name, "username": name, "email": f"{name}@example.com",
                "password": passwords[name], "full_name": f"Browser test {role}", "role": role,
            }  # fmt: skip
            status, answer = api.request("POST", "/api/v1/auth/users", body)
            assert status == 201, answer
        yield BrowserDemo(run, base, api, passwords)
    finally:
        _stop(run)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium; missing, it fails in CI (which installs it) and skips locally."""
    if not CHROMIUM.is_file():
        message = f"{CHROMIUM} is missing: apt-get install chromium (.ci/run installs it)"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="package")
def signed_in(browser: Browser, demo: BrowserDemo) -> Iterator[Callable[[str], Tab]]:
    """A tab per user, logged in through the form once and reused (the API allows five logins
    a minute per address); a test navigates it by hash route."""
    tabs: dict[str, Tab] = {}

    def tab_of(username: str) -> Tab:
        if username not in tabs:
            tab = Tab.open(demo.new_context(browser).new_page())
            log_in(tab.page, demo.base, username, demo.passwords[username])
            tabs[username] = tab
        return tabs[username]

    yield tab_of
    for tab in tabs.values():
        tab.page.context.close()


@pytest.fixture(scope="package")
def output() -> Path:
    """``BRM_TEST_OUTPUT`` if set, else ``test-output/browser/`` in the checkout (git-ignored)."""
    named = os.environ.get("BRM_TEST_OUTPUT")
    folder = Path(named) if named else REPO / "test-output" / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
