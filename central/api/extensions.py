"""The Flask extensions, created unbound here and bound to an app by ``create_app``."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app, g, request
from flask_jwt_extended import JWTManager, decode_token
from flask_jwt_extended.exceptions import JWTExtendedException
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from jwt import PyJWTError
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from central.db.engine import make_engine, make_session_factory

EXTENSION_KEY = "brm_store"


@dataclass(frozen=True)
class _Store:
    engine: Engine
    sessions: sessionmaker[Session]


class Database:
    """One engine per app; one session per request, opened on first use and closed at teardown."""

    def init_app(self, app: Flask, url: str) -> None:
        engine = make_engine(url)
        app.extensions[EXTENSION_KEY] = _Store(engine, make_session_factory(engine))
        app.teardown_appcontext(self._close_session)

    @staticmethod
    def engine(app: Flask) -> Engine:
        return app.extensions[EXTENSION_KEY].engine

    @property
    def session(self) -> Session:
        if "db_session" not in g:
            g.db_session = current_app.extensions[EXTENSION_KEY].sessions()
        return g.db_session

    @staticmethod
    def _close_session(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()


db = Database()
jwt = JWTManager()


def rate_limit_key() -> str:
    """The user of a validly signed bearer token, else the client's address.

    A forged token fails the signature check and falls back to the address, so no client can
    spend another user's allowance; login, which comes before any token, is keyed by address.
    """
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        try:
            return f"user:{decode_token(header[7:])['sub']}"
        except (PyJWTError, JWTExtendedException, KeyError):
            pass
    return f"addr:{get_remote_address()}"


# One allowance per user across all routes (read per request, so each app has its own setting);
# login also has its own limit per address.
limiter = Limiter(
    key_func=rate_limit_key,
    application_limits=[lambda: current_app.config["BRM_RATE_LIMIT"]],
)
