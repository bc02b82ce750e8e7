"""``/api/v1/auth/users``: user management, for admins only."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from flask_jwt_extended import jwt_required
from sqlalchemy import func, select

from central.api import accounts, responses
from central.api.auth import current_active_user
from central.api.errors import ApiError
from central.api.extensions import db
from central.api.openapi import operation
from central.api.schemas import CreateUserBody, Page, UpdateUserBody, parse_body, parse_query
from central.db.models import User

bp = Blueprint("users", __name__, url_prefix="/api/v1/auth/users")


def _require_admin() -> User:
    user = current_active_user()
    if user.role != "admin":
        raise ApiError(403, "Admin access required")
    return user


def _get_user(user_id: str) -> User:
    user = db.session.get(User, user_id)
    if user is None:
        raise ApiError(404, f"User {user_id} not found")
    return user


@bp.get("")
@jwt_required()
@operation(
    summary="List users (admin)",
    tag="users",
    response=responses.UserList,
    query=Page,
    errors=(403,),
)
def list_users() -> ResponseReturnValue:
    _require_admin()
    page = parse_query(Page)
    users = db.session.scalars(
        select(User).order_by(User.user_id).offset(page.skip).limit(page.limit)
    ).all()
    total = db.session.scalar(select(func.count()).select_from(User))
    return jsonify(users=[accounts.user_response(u) for u in users], total=total)


@bp.post("")
@jwt_required()
@operation(
    summary="Create a user (admin)",
    tag="users",
    response=responses.UserResponse,
    status=201,
    body=CreateUserBody,
    errors=(400, 403),
)
def create_user() -> ResponseReturnValue:
    _require_admin()
    body = parse_body(CreateUserBody)
    try:
        user = accounts.create_user(db.session, **body.model_dump())
    except accounts.AccountError as exc:
        raise ApiError(400, str(exc)) from exc
    db.session.commit()
    return jsonify(accounts.user_response(user)), 201


@bp.patch("/<user_id>")
@jwt_required()
@operation(
    summary="Update a user (admin)",
    tag="users",
    response=responses.UserResponse,
    body=UpdateUserBody,
    errors=(400, 403),
    path_params={"user_id": "engineer1"},
)
def update_user(user_id: str) -> ResponseReturnValue:
    _require_admin()
    body = parse_body(UpdateUserBody)
    user = _get_user(user_id)
    changes = body.model_dump(exclude_unset=True)
    role = changes.get("role")
    if role is not None and role not in accounts.ROLES:
        raise ApiError(400, accounts.invalid_role_message(role))
    for field, value in changes.items():
        if value is not None or field == "full_name":
            setattr(user, field, value)
    db.session.commit()
    return jsonify(accounts.user_response(user))


@bp.delete("/<user_id>")
@jwt_required()
@operation(
    summary="Delete a user (admin)",
    tag="users",
    response=responses.Message,
    errors=(400, 403),
    path_params={"user_id": "engineer1"},
)
def delete_user(user_id: str) -> ResponseReturnValue:
    admin = _require_admin()
    user = _get_user(user_id)
    if user.user_id == admin.user_id:
        raise ApiError(400, "Cannot delete your own account")
    db.session.delete(user)
    db.session.commit()
    return jsonify(message=f"User {user_id} deleted successfully")
