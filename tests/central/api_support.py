"""Helpers for the API tests: an app on a migrated database, users, logins, the error envelope."""

from __future__ import annotations

import re
from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient

from central.api import create_app
from central.api.accounts import create_user
from central.db.engine import make_engine, make_session_factory
from central.settings import CentralSettings

SECRET = "test-secret-" + "x" * 40
PASSWORD = "admin-password-1"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def make_app(database_url: str, **config: object) -> Flask:
    api = {"environment": "test", "ready_checks_broker": False}
    settings = CentralSettings(database_url=database_url, api=api)
    return create_app(settings, {"TESTING": True, "JWT_SECRET_KEY": SECRET, **config})


def add_user(url: str, user_id: str, role: str = "admin", *, active: bool = True) -> None:
    engine = make_engine(url)
    try:
        with make_session_factory(engine).begin() as session:
            user = create_user(
                session,
                user_id=user_id,
                username=user_id,
                email=f"{user_id}@example.com",
                password=PASSWORD,
                full_name=f"{user_id.title()} User",
                role=role,
            )
            user.is_active = active
    finally:
        engine.dispose()


def login(client: FlaskClient, username: str = "admin", password: str = PASSWORD):
    return client.post("/api/v1/auth/login", json={"username": username, "password": password})


def logged_in(client: FlaskClient) -> Callable[[str], dict[str, str]]:
    """Bearer headers of a user (password ``PASSWORD``), each logged in once."""
    tokens: dict[str, dict[str, str]] = {}

    def headers(user: str) -> dict[str, str]:
        if user not in tokens:
            tokens[user] = bearer(login(client, user).get_json()["access_token"])
        return tokens[user]

    return headers


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response, status: int, message: str, code: str) -> dict:
    assert response.status_code == status
    body = response.get_json()
    assert body["detail"] == message
    assert body["error"]["code"] == code
    assert body["error"]["message"] == message
    assert isinstance(body["error"]["details"], list)
    assert body["error"]["trace_id"].startswith("req_")
    assert response.headers["X-Request-ID"] == body["error"]["trace_id"]
    return body
