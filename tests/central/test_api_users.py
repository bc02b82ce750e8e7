"""``/api/v1/auth/users`` (admin only) and ``battery-central create-admin``."""

from __future__ import annotations

import io

import pytest
from flask.testing import FlaskClient

from central import cli
from tests.central.api_support import PASSWORD, add_user, assert_error, bearer, login

# The auth tests' fixtures: an app on a migrated database with an "admin" user, and its client.

NEW_USER = {
    "user_id": "engineer1",
    "username": "john_doe",
    "email": "john@example.com",
    "password": "secure123",
    "full_name": "John Doe",
    "role": "engineer",
}


@pytest.fixture
def admin(client: FlaskClient) -> dict[str, str]:
    return bearer(login(client).get_json()["access_token"])


def test_create_list_update_delete(client: FlaskClient, admin: dict[str, str]) -> None:
    created = client.post("/api/v1/auth/users", json=NEW_USER, headers=admin)
    assert created.status_code == 201
    body = created.get_json()
    assert {k: body[k] for k in ("user_id", "username", "email", "full_name", "role")} == {
        k: NEW_USER[k] for k in ("user_id", "username", "email", "full_name", "role")
    }
    assert body["is_active"] is True
    assert "password" not in body and "password_hash" not in body
    listed = client.get("/api/v1/auth/users?skip=0&limit=1", headers=admin).get_json()
    assert listed["total"] == 2
    assert [u["user_id"] for u in listed["users"]] == ["admin"]
    patched = client.patch(
        "/api/v1/auth/users/engineer1", json={"role": "viewer", "is_active": False}, headers=admin
    )
    assert patched.status_code == 200
    assert patched.get_json()["role"] == "viewer"
    assert patched.get_json()["is_active"] is False
    deleted = client.delete("/api/v1/auth/users/engineer1", headers=admin)
    assert deleted.get_json() == {"message": "User engineer1 deleted successfully"}
    response = client.delete("/api/v1/auth/users/engineer1", headers=admin)
    assert_error(response, 404, "User engineer1 not found", "RESOURCE_NOT_FOUND")


def test_documented_errors(client: FlaskClient, admin: dict[str, str]) -> None:
    client.post("/api/v1/auth/users", json=NEW_USER, headers=admin)
    response = client.post("/api/v1/auth/users", json=NEW_USER, headers=admin)
    assert_error(response, 400, "User with this user_id or username already exists", "BAD_REQUEST")
    bad_role = {**NEW_USER, "user_id": "x", "username": "x", "role": "root"}
    message = "Invalid role: root. Must be one of: admin, engineer, viewer"
    response = client.post("/api/v1/auth/users", json=bad_role, headers=admin)
    assert_error(response, 400, message, "BAD_REQUEST")
    response = client.patch("/api/v1/auth/users/engineer1", json={"role": "root"}, headers=admin)
    assert_error(response, 400, message, "BAD_REQUEST")
    response = client.patch("/api/v1/auth/users/ghost", json={}, headers=admin)
    assert_error(response, 404, "User ghost not found", "RESOURCE_NOT_FOUND")
    response = client.delete("/api/v1/auth/users/admin", headers=admin)
    assert_error(response, 400, "Cannot delete your own account", "BAD_REQUEST")
    response = client.get("/api/v1/auth/users?limit=1001", headers=admin)
    body = assert_error(response, 422, response.get_json()["detail"], "VALIDATION_ERROR")
    assert body["error"]["details"][0]["loc"] == ["query", "limit"]


def test_non_admin_is_refused(migrated_url: str, client: FlaskClient) -> None:
    add_user(migrated_url, "eng", "engineer")
    headers = bearer(login(client, "eng").get_json()["access_token"])
    for method, url in [
        ("get", "/api/v1/auth/users"),
        ("post", "/api/v1/auth/users"),
        ("patch", "/api/v1/auth/users/admin"),
        ("delete", "/api/v1/auth/users/admin"),
    ]:
        response = getattr(client, method)(url, json={}, headers=headers)
        assert_error(response, 403, "Admin access required", "FORBIDDEN")


def test_create_admin_command(
    migrated_url: str, monkeypatch: pytest.MonkeyPatch, capsys, client: FlaskClient
) -> None:
    monkeypatch.setenv("BRM_CENTRAL_DATABASE_URL", migrated_url)
    monkeypatch.setattr("sys.stdin", io.StringIO("root-password-1\n"))
    argv = ["create-admin", "--username", "root", "--email", "r@example.com", "--password-stdin"]
    assert cli.main([*argv, "--full-name", "Root"]) == 0
    assert "admin root created" in capsys.readouterr().out
    user = login(client, "root", "root-password-1").get_json()["user"]
    assert user["role"] == "admin" and user["full_name"] == "Root"
    monkeypatch.setattr("sys.stdin", io.StringIO("root-password-1\n"))
    assert cli.main(argv) == 1
    assert "already exists" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli.main([*argv[:2], "other", *argv[3:]]) == 1
    assert login(client, "other", PASSWORD).status_code == 401
