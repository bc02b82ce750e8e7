"""Store fixtures: every test runs on a fresh SQLite file and on a fresh PostgreSQL schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from central import migrations
from central.api.extensions import db
from central.db.engine import make_engine, make_session_factory
from tests.central.api_support import add_user, make_app
from tests.support import pg_schema


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """An empty database: a SQLite file, or a private schema of the session's PG database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'central.sqlite3'}"
        return
    with pg_schema(request.getfixturevalue("pg_database_url")) as url:
        yield url


@pytest.fixture
def migrated_url(db_url: str) -> str:
    migrations.upgrade(db_url)
    return db_url


@pytest.fixture
def session(migrated_url: str) -> Iterator[Session]:
    engine = make_engine(migrated_url)
    try:
        with make_session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


@pytest.fixture
def sessions(migrated_url: str) -> Iterator[sessionmaker[Session]]:
    """A session factory on the migrated database."""
    engine = make_engine(migrated_url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


@pytest.fixture
def app(migrated_url: str) -> Iterator[Flask]:
    add_user(migrated_url, "admin")
    app = make_app(migrated_url)
    yield app
    db.engine(app).dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
