"""The auth API against a migrated database (SQLite and PostgreSQL): bodies, errors, envelope."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt as pyjwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from central import cli
from central.api import ApiConfigError, create_app
from central.api.extensions import db
from central.db.engine import make_engine, make_session_factory
from central.db.models import RevokedToken
from central.settings import CentralSettings
from tests.central.api_support import (
    PASSWORD,
    SECRET,
    TIMESTAMP,
    add_user,
    assert_error,
    bearer,
    login,
    make_app,
)


def test_login_returns_tokens_and_user(client: FlaskClient) -> None:
    response = login(client)
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in", "user"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 1800
    assert body["access_token"] and body["refresh_token"]
    assert body["user"] == {
        "user_id": "admin",
        "username": "admin",
        "email": "admin@example.com",
        "full_name": "Admin User",
        "role": "admin",
        "is_active": True,
    }
    assert response.headers["X-Request-ID"].startswith("req_")


def test_login_refuses_wrong_password_and_unknown_user(client: FlaskClient) -> None:
    assert_error(
        login(client, password="wrong"), 401, "Incorrect username or password", "UNAUTHORIZED"
    )
    assert_error(login(client, "nobody"), 401, "Incorrect username or password", "UNAUTHORIZED")


def test_login_refuses_inactive_user(migrated_url: str, client: FlaskClient) -> None:
    add_user(migrated_url, "sleeper", "viewer", active=False)
    assert_error(login(client, "sleeper"), 401, "User account is inactive", "UNAUTHORIZED")


def test_login_validation_error_names_the_field(client: FlaskClient) -> None:
    response = client.post("/api/v1/auth/login", json={"username": "admin"})
    body = assert_error(response, 422, "password: Field required", "VALIDATION_ERROR")
    assert body["error"]["details"][0]["loc"] == ["body", "password"]
    assert body["error"]["details"][0]["type"] == "missing"
    response = client.post("/api/v1/auth/login", data="not json", content_type="application/json")
    assert_error(response, 422, "body: Expected a JSON object", "VALIDATION_ERROR")


def test_login_is_limited_to_five_a_minute(client: FlaskClient) -> None:
    for _ in range(5):
        assert login(client, password="wrong").status_code == 401
    response = login(client)
    body = assert_error(response, 429, response.get_json()["detail"], "RATE_LIMIT_EXCEEDED")
    assert body["detail"].startswith("Rate limit exceeded")


def _proxied_app(url: str, proxy_hops: int) -> Flask:
    api = {"environment": "test", "ready_checks_broker": False, "proxy_hops": proxy_hops}
    settings = CentralSettings(database_url=url, api=api)
    return create_app(settings, {"TESTING": True, "JWT_SECRET_KEY": SECRET})


def _login_from(client: FlaskClient, address: str, password: str = PASSWORD):
    return client.post(
        "/api/v1/auth/login",
        json={"username": "admin", "password": password},
        headers={"X-Forwarded-For": address},
    )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_behind_a_proxy_each_forwarded_client_has_its_own_login_allowance(
    migrated_url: str,
) -> None:
    add_user(migrated_url, "admin")
    app = _proxied_app(migrated_url, proxy_hops=1)
    try:
        client = app.test_client()
        for _ in range(5):
            assert _login_from(client, "203.0.113.1", "wrong").status_code == 401
        assert _login_from(client, "203.0.113.1").status_code == 429
        assert _login_from(client, "203.0.113.2").status_code == 200
        # Socket.IO's middleware still answers behind ProxyFix (a polling handshake).
        handshake = client.get("/socket.io/?EIO=4&transport=polling")
        assert handshake.status_code == 200
        assert handshake.get_data(as_text=True).startswith('0{"sid":')
    finally:
        db.engine(app).dispose()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_without_proxy_hops_a_forwarded_address_does_not_dodge_the_login_limit(
    migrated_url: str,
) -> None:
    add_user(migrated_url, "admin")
    app = _proxied_app(migrated_url, proxy_hops=0)
    try:
        client = app.test_client()
        for n in range(5):
            assert _login_from(client, f"203.0.113.{n}", "wrong").status_code == 401
        assert _login_from(client, "203.0.113.99").status_code == 429
    finally:
        db.engine(app).dispose()


def test_me_returns_the_user(client: FlaskClient) -> None:
    token = login(client).get_json()["access_token"]
    response = client.get("/api/v1/auth/me", headers=bearer(token))
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {
        "user_id", "username", "email", "full_name", "role", "is_active", "created_at", "updated_at"
    }  # fmt: skip
    assert body["user_id"] == "admin"
    assert body["role"] == "admin"
    assert body["is_active"] is True
    assert TIMESTAMP.match(body["created_at"]) and TIMESTAMP.match(body["updated_at"])


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic abc"}],
    ids=["missing", "garbage", "wrong-scheme"],
)
def test_protected_endpoint_refuses_bad_credentials(client: FlaskClient, headers) -> None:
    response = client.get("/api/v1/auth/me", headers=headers)
    assert_error(response, 401, "Could not validate credentials", "UNAUTHORIZED")


def test_refresh_token_is_not_an_access_token(client: FlaskClient) -> None:
    refresh_token = login(client).get_json()["refresh_token"]
    response = client.get("/api/v1/auth/me", headers=bearer(refresh_token))
    assert_error(response, 401, "Could not validate credentials", "UNAUTHORIZED")


def test_expired_access_token_is_refused(migrated_url: str) -> None:
    app = make_app(migrated_url, JWT_ACCESS_TOKEN_EXPIRES=__import__("datetime").timedelta(-1))
    try:
        add_user(migrated_url, "admin")
        client = app.test_client()
        token = login(client).get_json()["access_token"]
        response = client.get("/api/v1/auth/me", headers=bearer(token))
        assert_error(response, 401, "Could not validate credentials", "UNAUTHORIZED")
    finally:
        db.engine(app).dispose()


def test_token_of_deactivated_user_is_refused(migrated_url: str, client: FlaskClient) -> None:
    add_user(migrated_url, "leaver", "viewer")
    tokens = login(client, "leaver").get_json()
    admin = login(client).get_json()["access_token"]
    patched = client.patch(
        "/api/v1/auth/users/leaver", json={"is_active": False}, headers=bearer(admin)
    )
    assert patched.status_code == 200
    response = client.get("/api/v1/auth/me", headers=bearer(tokens["access_token"]))
    assert_error(response, 401, "User account is inactive", "UNAUTHORIZED")
    response = client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert_error(response, 401, "User account is inactive", "UNAUTHORIZED")


def test_refresh_issues_a_new_access_token(client: FlaskClient) -> None:
    refresh_token = login(client).get_json()["refresh_token"]
    response = client.post("/api/v1/auth/refresh", json={"refresh_token": refresh_token})
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 1800
    assert client.get("/api/v1/auth/me", headers=bearer(body["access_token"])).status_code == 200


def test_refresh_refuses_bad_tokens(client: FlaskClient) -> None:
    access_token = login(client).get_json()["access_token"]
    for token in ("garbage", access_token):
        response = client.post("/api/v1/auth/refresh", json={"refresh_token": token})
        assert_error(response, 401, "Invalid refresh token", "UNAUTHORIZED")


def test_logout_revokes_access_and_refresh_tokens(client: FlaskClient) -> None:
    tokens = login(client).get_json()
    response = client.post("/api/v1/auth/logout", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200
    assert response.get_json() == {"message": "Logged out successfully"}
    response = client.get("/api/v1/auth/me", headers=bearer(tokens["access_token"]))
    assert_error(response, 401, "Could not validate credentials", "UNAUTHORIZED")
    response = client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert_error(response, 401, "Invalid refresh token", "UNAUTHORIZED")


def test_change_password(client: FlaskClient) -> None:
    token = login(client).get_json()["access_token"]
    url = "/api/v1/auth/change-password"
    wrong = {"current_password": "nope", "new_password": "brand-new-password"}
    response = client.post(url, json=wrong, headers=bearer(token))
    assert_error(response, 401, "Incorrect current password", "UNAUTHORIZED")
    right = {"current_password": PASSWORD, "new_password": "brand-new-password"}
    response = client.post(url, json=right, headers=bearer(token))
    assert response.status_code == 200
    assert response.get_json() == {"message": "Password changed successfully"}
    assert login(client).status_code == 401
    assert login(client, password="brand-new-password").status_code == 200


def test_unknown_path_and_method_use_the_envelope(client: FlaskClient) -> None:
    assert_error(client.get("/api/v1/nowhere"), 404, "Not Found", "RESOURCE_NOT_FOUND")
    response = client.get("/api/v1/auth/login")
    assert_error(response, 405, "Method Not Allowed", "METHOD_NOT_ALLOWED")


def test_too_large_body_uses_the_envelope(migrated_url: str) -> None:
    app = make_app(migrated_url, MAX_CONTENT_LENGTH=1024)
    try:
        response = app.test_client().post(
            "/api/v1/auth/login", data="x" * 4096, content_type="application/json"
        )
        assert_error(response, 413, "Request Entity Too Large", "PAYLOAD_TOO_LARGE")
    finally:
        db.engine(app).dispose()


def test_unexpected_error_is_a_500_envelope(app: Flask) -> None:
    @app.get("/boom")
    def boom():
        raise RuntimeError("kaboom")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = app.test_client().get("/boom")
    body = assert_error(response, 500, "Internal Server Error", "INTERNAL_ERROR")
    assert "kaboom" not in response.get_data(as_text=True)
    assert body["error"]["details"] == []


def test_jwt_secret_is_required(tmp_path) -> None:
    settings = CentralSettings(database_url=f"sqlite:///{tmp_path / 'x.sqlite3'}")
    with pytest.raises(ApiConfigError, match="jwt_secret"):
        create_app(settings)


def _revocations(url: str, *rows: tuple[str, datetime]) -> set[str]:
    """Add revoked-token rows (jti, expires_at); the jtis of every row then in the table."""
    engine = make_engine(url)
    try:
        with make_session_factory(engine).begin() as session:
            session.add_all(RevokedToken(jti=jti, expires_at=at) for jti, at in rows)
        with make_session_factory(engine)() as session:
            return set(session.scalars(select(RevokedToken.jti)))
    finally:
        engine.dispose()


def _jti(token: str) -> str:
    """A token's ``jti``, read without verifying it."""
    return pyjwt.decode(token, options={"verify_signature": False})["jti"]


def test_logout_purges_revocations_of_expired_tokens(
    migrated_url: str, client: FlaskClient
) -> None:
    now = datetime.now(UTC)
    rows = [("expired", now - timedelta(seconds=1)), ("live", now + timedelta(hours=1))]
    assert _revocations(migrated_url, *rows) == {"expired", "live"}
    tokens = login(client).get_json()
    response = client.post("/api/v1/auth/logout", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200
    access, refresh = (_jti(tokens[k]) for k in ("access_token", "refresh_token"))
    assert _revocations(migrated_url) == {"live", access, refresh}


def test_purge_tokens_command(migrated_url: str, monkeypatch, capsys) -> None:
    now = datetime.now(UTC)
    rows = [(f"old-{i}", now - timedelta(days=i + 1)) for i in range(3)]
    _revocations(migrated_url, *rows, ("live", now + timedelta(minutes=5)))
    monkeypatch.setenv("BRM_CENTRAL_DATABASE_URL", migrated_url)
    assert cli.main(["purge-tokens"]) == 0
    assert capsys.readouterr().out == "purged 3 expired revoked token(s)\n"
    assert _revocations(migrated_url) == {"live"}
    assert cli.main(["purge-tokens"]) == 0
    assert capsys.readouterr().out == "purged 0 expired revoked token(s)\n"
