"""Alembic migrations of the store, run from code (no ``alembic.ini``): upgrade, downgrade, current.

``battery-central db upgrade`` calls ``upgrade``. Revisions live in ``versions/``; ``env.py`` runs
them on the connection that these functions open.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from central.db.engine import make_engine

SCRIPT_LOCATION = Path(__file__).parent
# pg_advisory_lock's key for "a migration is running" (any fixed bigint; ASCII "brm_migr").
UPGRADE_LOCK_KEY = 0x62726D5F6D696772


def alembic_config(engine: Engine) -> Config:
    """An Alembic configuration whose ``env.py`` runs on a connection of ``engine``."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    """The newest revision in ``versions/``."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    head = ScriptDirectory.from_config(config).get_current_head()
    if head is None:
        raise RuntimeError("no migration found")
    return head


@contextmanager
def _upgrade_lock(engine: Engine) -> Iterator[None]:
    """On PostgreSQL, one upgrade at a time per database: servers started together each run
    ``db upgrade`` first, and the second must find head, not race the first's DDL. SQLite's
    writers already queue on the file's lock."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as connection:
        connection.exec_driver_sql(f"SELECT pg_advisory_lock({UPGRADE_LOCK_KEY})")
        try:
            yield
        finally:
            connection.exec_driver_sql(f"SELECT pg_advisory_unlock({UPGRADE_LOCK_KEY})")


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` up to ``revision``; already there is a no-op."""
    engine = make_engine(url)
    try:
        with _upgrade_lock(engine):
            command.upgrade(alembic_config(engine), revision)
    finally:
        engine.dispose()


def downgrade(url: str, revision: str = "base") -> None:
    """Take the database at ``url`` down to ``revision`` (``base`` drops every table)."""
    engine = make_engine(url)
    try:
        command.downgrade(alembic_config(engine), revision)
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at; ``None`` for a database never migrated."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
