"""The Flask extensions, created unbound here and bound to an app by ``create_app``."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app, g
from flask_jwt_extended import JWTManager
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
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
# Limits are declared per view (login); the client is keyed by its address.
limiter = Limiter(key_func=get_remote_address)
