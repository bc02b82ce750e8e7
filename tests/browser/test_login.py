"""Logging in and out through the dashboard: a wrong password is refused on the form, the right
one opens the fleet, and logging out returns to the login page with the tokens revoked."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.browser.conftest import BrowserDemo
from tests.browser.pages import Tab, hook, screenshots, stored_tokens, submit_login, wait_page
from tests.test_system_e2e import Api

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def _kind(token: str) -> str:
    """A JWT's ``type`` claim: ``access`` or ``refresh``."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["type"]


def _refused(base: str, token: str) -> bool:
    """Whether the server refuses ``token``: a refresh token to renew, an access token to read."""
    if _kind(token) == "refresh":
        status, _ = Api(base).request("POST", "/api/v1/auth/refresh", {"refresh_token": token})
    else:
        status, _ = Api(base, token).request("GET", "/api/v1/auth/me")
    return status == 401


def test_login_refuses_a_wrong_password_and_logout_returns_to_login(
    browser: Browser, demo: BrowserDemo, output: Path
) -> None:
    context = demo.new_context(browser)
    tab = Tab.open(context.new_page())
    page = tab.page
    try:
        page.goto(f"{demo.base}/")
        wait_page(page, "login")  # no session: whatever the route, the login form
        expect(hook(page, "nav-fleet")).to_have_count(0)
        screenshots(page, output, "login")

        refused = submit_login(page, "viewer", demo.passwords["viewer"] + "-wrong")
        assert refused.status == 401, refused.text()
        expect(hook(page, "login-error")).not_to_be_empty()
        wait_page(page, "login")
        assert stored_tokens(page) == []

        accepted = submit_login(page, "viewer", demo.passwords["viewer"])
        assert accepted.status == 200, accepted.text()
        wait_page(page, "fleet")
        expect(hook(page, "login-error")).to_have_count(0)
        expect(hook(page, "current-user")).to_contain_text("viewer")
        tokens = stored_tokens(page)
        assert sorted(map(_kind, tokens)) == ["access", "refresh"], tokens
        access = next(t for t in tokens if _kind(t) == "access")
        status, me = Api(demo.base, access).request("GET", "/api/v1/auth/me")
        assert (status, me["username"]) == (200, "viewer"), (status, me)

        with page.expect_response(lambda r: r.url.endswith("/api/v1/auth/logout")) as answer:
            hook(page, "logout").click()
        assert answer.value.ok, answer.value.text()
        wait_page(page, "login")
        assert page.url.endswith("#/login"), page.url
        expect(hook(page, "current-user")).to_have_count(0)
        assert stored_tokens(page) == []
        for token in tokens:  # revoked on the server, not only forgotten by the page
            assert _refused(demo.base, token), token
        tab.assert_no_script_errors()
    finally:
        context.close()
