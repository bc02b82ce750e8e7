"""User accounts in the store: password hashing, look-up, creation; no Flask in here.

Passwords are hashed with werkzeug's scrypt; the clear text is never stored or logged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from central.db.models import RevokedToken, Role, User
from central.wire_format import timestamp

ROLES = tuple(role.value for role in Role)
# Checked against when the username is unknown, so that both failures cost the same time.
_DUMMY_HASH = generate_password_hash("not-a-password")


class AccountError(ValueError):
    """A user that cannot be created or changed as asked."""


def hash_password(password: str) -> str:
    return generate_password_hash(password)


def invalid_role_message(role: str) -> str:
    return f"Invalid role: {role}. Must be one of: {', '.join(ROLES)}"


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The user if the password matches, else None (whether or not the user exists)."""
    user = session.scalars(select(User).where(User.username == username)).one_or_none()
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    return user if check_password_hash(user.password_hash, password) else None


def verify_password(user: User, password: str) -> bool:
    return check_password_hash(user.password_hash, password)


def create_user(
    session: Session,
    *,
    user_id: str,
    username: str,
    email: str,
    password: str,
    full_name: str | None = None,
    role: str = "viewer",
) -> User:
    """Add a user to ``session`` (the caller commits); refuse a bad role or a taken id/name."""
    if role not in ROLES:
        raise AccountError(invalid_role_message(role))
    taken = session.scalar(
        select(func.count())
        .select_from(User)
        .where(or_(User.user_id == user_id, User.username == username))
    )
    if taken:
        raise AccountError("User with this user_id or username already exists")
    user = User(
        user_id=user_id,
        username=username,
        email=email,
        full_name=full_name,
        role=role,
        is_active=True,
        password_hash=hash_password(password),
    )
    session.add(user)
    session.flush()
    return user


def purge_expired_revocations(session: Session, now: datetime | None = None) -> int:
    """Delete the revocations of tokens past their expiry (refused for that anyway); how many."""
    expired = RevokedToken.expires_at <= (now or datetime.now(UTC))
    return session.execute(delete(RevokedToken).where(expired)).rowcount


def revoke(session: Session, jti: str, expires: int | float) -> None:
    """Record ``jti`` as revoked until ``expires`` (a Unix time); idempotent.

    Expired revocations are purged on the way, so the table holds only live tokens.
    """
    purge_expired_revocations(session)
    if session.get(RevokedToken, jti) is None:
        session.add(RevokedToken(jti=jti, expires_at=datetime.fromtimestamp(expires, UTC)))


def is_revoked(session: Session, jti: str) -> bool:
    return session.get(RevokedToken, jti) is not None


def user_summary(user: User) -> dict[str, Any]:
    """The user as login returns it."""
    return {
        "user_id": user.user_id,
        "username": user.username,
        "email": user.email,
        "full_name": user.full_name,
        "role": user.role,
        "is_active": user.is_active,
    }


def user_response(user: User) -> dict[str, Any]:
    """The reference's UserResponse: the summary plus its timestamps."""
    return {
        **user_summary(user),
        "created_at": timestamp(user.created_at),
        "updated_at": timestamp(user.updated_at),
    }
