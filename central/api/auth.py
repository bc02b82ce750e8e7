"""``/api/v1/auth``: login, refresh, logout (server-side revocation), me, change-password.

Tokens name the user by ``user_id`` (a string, as flask-jwt-extended wants). An access token
also carries its refresh token's ``jti`` (``rjti``), so that logout revokes both.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue
from flask_jwt_extended import (
    create_access_token,
    create_refresh_token,
    decode_token,
    get_current_user,
    get_jwt,
    jwt_required,
)
from flask_jwt_extended.exceptions import JWTExtendedException
from flask_limiter.util import get_remote_address
from jwt import PyJWTError

from central.api import accounts, responses
from central.api.errors import ApiError
from central.api.extensions import db, jwt, limiter
from central.api.openapi import operation
from central.api.schemas import ChangePasswordBody, LoginBody, RefreshBody, parse_body
from central.db.models import Role, User

bp = Blueprint("auth", __name__, url_prefix="/api/v1/auth")
ENGINEERS = frozenset({Role.ENGINEER.value, Role.ADMIN.value})


@jwt.user_lookup_loader
def _load_user(_header: dict[str, Any], payload: dict[str, Any]) -> User | None:
    return db.session.get(User, payload["sub"])


@jwt.token_in_blocklist_loader
def _revoked(_header: dict[str, Any], payload: dict[str, Any]) -> bool:
    return accounts.is_revoked(db.session, payload["jti"])


def current_active_user() -> User:
    """The user of the request's access token; an inactive account is refused."""
    user: User = get_current_user()
    if not user.is_active:
        raise ApiError(401, "User account is inactive")
    return user


def require_engineer() -> User:
    """The request's user if an engineer or an admin; 403 for a viewer."""
    user = current_active_user()
    if user.role not in ENGINEERS:
        raise ApiError(403, "Engineer access required")
    return user


def _expires_in() -> int:
    return int(current_app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds())


def _access_token(user_id: str, refresh_claims: dict[str, Any]) -> str:
    claims = {"rjti": refresh_claims["jti"], "rexp": refresh_claims["exp"]}
    return create_access_token(identity=user_id, additional_claims=claims)


@bp.post("/login")
@operation(
    summary="Log in with username and password",
    tag="auth",
    response=responses.LoginResponse,
    body=LoginBody,
    errors=(401,),
    public=True,
    description="Rate-limited per client address (api.login_rate_limit, 5 per minute).",
)
@limiter.limit(lambda: current_app.config["BRM_LOGIN_RATE_LIMIT"], key_func=get_remote_address)
def login() -> ResponseReturnValue:
    body = parse_body(LoginBody)
    user = accounts.authenticate(db.session, body.username, body.password)
    if user is None:
        raise ApiError(401, "Incorrect username or password")
    if not user.is_active:
        raise ApiError(401, "User account is inactive")
    refresh_token = create_refresh_token(identity=user.user_id)
    return jsonify(
        access_token=_access_token(user.user_id, decode_token(refresh_token)),
        refresh_token=refresh_token,
        token_type="bearer",
        expires_in=_expires_in(),
        user=accounts.user_summary(user),
    )


@bp.post("/refresh")
@operation(
    summary="A new access token for a refresh token",
    tag="auth",
    response=responses.RefreshResponse,
    body=RefreshBody,
    errors=(401,),
    public=True,
)
def refresh() -> ResponseReturnValue:
    body = parse_body(RefreshBody)
    try:
        claims = decode_token(body.refresh_token)
    except (PyJWTError, JWTExtendedException) as exc:
        raise ApiError(401, "Invalid refresh token") from exc
    if claims.get("type") != "refresh" or accounts.is_revoked(db.session, claims["jti"]):
        raise ApiError(401, "Invalid refresh token")
    user = db.session.get(User, claims["sub"])
    if user is None:
        raise ApiError(401, "Invalid refresh token")
    if not user.is_active:
        raise ApiError(401, "User account is inactive")
    return jsonify(
        access_token=_access_token(user.user_id, claims),
        token_type="bearer",
        expires_in=_expires_in(),
    )


@bp.post("/logout")
@jwt_required()
@operation(
    summary="Log out: revoke the access token and its refresh token on the server",
    tag="auth",
    response=responses.Message,
)
def logout() -> ResponseReturnValue:
    claims = get_jwt()
    accounts.revoke(db.session, claims["jti"], claims["exp"])
    if "rjti" in claims:
        accounts.revoke(db.session, claims["rjti"], claims["rexp"])
    db.session.commit()
    return jsonify(message="Logged out successfully")


@bp.get("/me")
@jwt_required()
@operation(summary="The current user", tag="auth", response=responses.UserResponse)
def me() -> ResponseReturnValue:
    return jsonify(accounts.user_response(current_active_user()))


@bp.post("/change-password")
@jwt_required()
@operation(
    summary="Change the current user's password",
    tag="auth",
    response=responses.Message,
    body=ChangePasswordBody,
)
def change_password() -> ResponseReturnValue:
    user = current_active_user()
    body = parse_body(ChangePasswordBody)
    if not accounts.verify_password(user, body.current_password):
        raise ApiError(401, "Incorrect current password")
    user.password_hash = accounts.hash_password(body.new_password)
    db.session.commit()
    return jsonify(message="Password changed successfully")
