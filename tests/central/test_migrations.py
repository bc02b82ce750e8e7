"""Migrations: every table on both databases, partitioned telemetry on PostgreSQL, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, inspect, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from central import migrations
from central.db import queries
from central.db.engine import make_engine
from central.db.models import Alert, Base, Telemetry
from central.migrations import pg_telemetry
from common.fleet import demo_fleet_path

TABLES = set(Base.metadata.tables)


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_creates_every_table_and_downgrade_removes_them(db_url):
    migrations.upgrade(db_url)
    assert _tables(db_url) >= TABLES
    assert migrations.current_revision(db_url) == migrations.head_revision()
    migrations.upgrade(db_url)  # idempotent
    assert migrations.current_revision(db_url) == migrations.head_revision()
    migrations.downgrade(db_url)
    assert _tables(db_url) & TABLES == set()
    assert migrations.current_revision(db_url) is None


def test_migrated_schema_matches_the_models(migrated_url):
    """Alembic's autogenerate finds nothing to add: models and migrations describe one schema."""
    engine = make_engine(migrated_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    # PostgreSQL's partitions are tables the models do not name; anything else is a drift.
    drift = [d for d in diff if not (d[0] == "remove_table" and d[1].name.startswith("telemetry_"))]
    assert drift == []


def test_alerts_allow_one_active_alert_per_battery_and_type(session):
    def alert(n: int, resolved: datetime | None) -> Alert:
        now = datetime(2026, 1, 1, tzinfo=UTC)
        return Alert(
            id=f"id-{n}",
            alert_id=f"ALT-{n}",
            battery_id="BAT-DC-CNX-01-UPS-01-STR-01-001",
            location_id="DC-CNX-01",
            alert_type="temperature_high",
            severity="warning",
            message="m",
            triggered_at=now,
            resolved_at=resolved,
        )

    session.add_all([alert(1, datetime(2026, 1, 2, tzinfo=UTC)), alert(2, None)])
    session.commit()
    session.add(alert(3, None))
    with pytest.raises(IntegrityError):
        session.commit()


def test_telemetry_key_refuses_a_duplicate_reading(migrated_url):
    engine = make_engine(migrated_url)
    row = {"battery_id": "BAT-DC-CNX-01-UPS-01-STR-01-001", "ts": datetime(2026, 1, 1, tzinfo=UTC)}
    try:
        with engine.begin() as connection:
            connection.execute(Telemetry.__table__.insert(), row)
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(Telemetry.__table__.insert(), {**row, "voltage": 13.1})
    finally:
        engine.dispose()


@pytest.mark.integration
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_pg_concurrent_upgrades_both_succeed(db_url):
    """Two servers starting together each run ``db upgrade``: the advisory lock queues the
    second behind the first, which then finds head instead of colliding with its DDL."""
    start = threading.Barrier(2)

    def upgrade() -> None:
        start.wait(10)
        migrations.upgrade(db_url)

    with ThreadPoolExecutor(2) as pool:
        results = [pool.submit(upgrade) for _ in range(2)]
        for result in results:
            assert result.result(timeout=120) is None
    assert migrations.current_revision(db_url) == migrations.head_revision()
    assert _tables(db_url) >= TABLES


@pytest.mark.integration
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_pg_telemetry_is_partitioned_with_a_default(migrated_url):
    engine = make_engine(migrated_url)
    far = datetime(2199, 6, 1, tzinfo=UTC)
    try:
        with engine.begin() as connection:
            partitioned = connection.execute(
                text("SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'telemetry'::regclass")
            ).first()
            assert partitioned is not None
            connection.execute(Telemetry.__table__.insert(), {"battery_id": "B", "ts": far})
            where = connection.execute(
                text("SELECT tableoid::regclass::text FROM telemetry WHERE ts = :ts"), {"ts": far}
            ).scalar_one()
            assert where == "telemetry_default"
    finally:
        engine.dispose()


@pytest.mark.integration
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_pg_partition_helper_creates_months_and_moves_default_rows(migrated_url):
    engine = make_engine(migrated_url)
    ts = datetime(2199, 6, 15, tzinfo=UTC)
    try:
        with engine.begin() as connection:
            connection.execute(Telemetry.__table__.insert(), {"battery_id": "B", "ts": ts})
            created = connection.execute(
                text("SELECT brm_ensure_telemetry_partitions('2199-05-01', 3)")
            ).scalar_one()
            assert created == 3
            again = connection.execute(
                text("SELECT brm_ensure_telemetry_partitions('2199-05-01', 3)")
            ).scalar_one()
            assert again == 0
            where = connection.execute(
                text("SELECT tableoid::regclass::text FROM telemetry WHERE ts = :ts"), {"ts": ts}
            ).scalar_one()
            assert where == "telemetry_p219906"
    finally:
        engine.dispose()


def _key_and_options(connection, table: str) -> tuple[str, list[str]]:
    """The definition of ``table``'s primary-key index and the table's storage parameters."""
    key = connection.execute(
        text(
            "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i"
            " WHERE i.indrelid = CAST(:t AS regclass) AND i.indisprimary"
        ),
        {"t": table},
    ).scalar_one()
    options = connection.execute(
        text("SELECT reloptions FROM pg_class WHERE oid = CAST(:t AS regclass)"), {"t": table}
    ).scalar_one()
    return key, sorted(options or [])


COVERING = (
    "(battery_id, ts)"
    " INCLUDE (voltage, current, temperature, internal_resistance, soc_pct, soh_pct)"
)
VACUUM_OPTIONS = [
    "autovacuum_vacuum_insert_scale_factor=0",
    f"autovacuum_vacuum_insert_threshold={pg_telemetry.VACUUM_INSERT_THRESHOLD}",
]


@pytest.mark.integration
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_pg_telemetry_range_reads_only_the_covering_key(migrated_url):
    """The API's telemetry statement is answered from the key alone, on every partition, old
    and new, and each partition is vacuumed often enough for that to skip the heap."""
    key = Telemetry.__table__.primary_key
    assert key.dialect_options["postgresql"]["include"] == list(pg_telemetry.COVERED_COLUMNS)
    engine = make_engine(migrated_url)
    try:
        with engine.begin() as connection:
            assert _key_and_options(connection, "telemetry")[0].endswith(COVERING)
            for partition in ("telemetry_default", _month_partition(connection)):
                key, options = _key_and_options(connection, partition)
                assert key.endswith(COVERING) and options == VACUUM_OPTIONS, partition
            connection.execute(text("SELECT brm_ensure_telemetry_partitions('2199-05-01', 1)"))
            key, options = _key_and_options(connection, "telemetry_p219905")
            assert key.endswith(COVERING) and options == VACUUM_OPTIONS

            # The planner would scan a table this small; without that choice, it must show
            # that the key alone answers the statement.
            connection.execute(text("SET LOCAL enable_seqscan = off"))
            connection.execute(text("SET LOCAL enable_bitmapscan = off"))
            captured: list[str] = []

            @event.listens_for(connection, "before_cursor_execute")
            def capture(conn, cursor, statement, params, context, executemany) -> None:
                captured.append(cursor.mogrify(statement, params).decode())

            now = datetime(2199, 5, 2, tzinfo=UTC)
            queries.telemetry_range(
                Session(bind=connection), "B", now - timedelta(hours=24), now, 1000
            )
            event.remove(connection, "before_cursor_execute", capture)
            plan = "\n".join(connection.execute(text(f"EXPLAIN {captured[0]}")).scalars())
            assert "Index Only Scan" in plan and " Index Scan" not in plan, plan
    finally:
        engine.dispose()


def _month_partition(connection) -> str:
    return connection.execute(
        text(
            "SELECT inhrelid::regclass::text FROM pg_inherits"
            " WHERE inhparent = 'telemetry'::regclass AND inhrelid::regclass::text <> "
            "'telemetry_default' ORDER BY 1 LIMIT 1"
        )
    ).scalar_one()


@pytest.mark.integration
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_pg_covering_key_downgrades_to_the_plain_key(db_url):
    migrations.upgrade(db_url)
    migrations.downgrade(db_url, "0006")
    engine = make_engine(db_url)
    try:
        with engine.begin() as connection:
            key, options = _key_and_options(connection, "telemetry_default")
            assert key.endswith("(battery_id, ts)") and options == []
            connection.execute(text("SELECT brm_ensure_telemetry_partitions('2199-05-01', 1)"))
            assert _key_and_options(connection, "telemetry_p219905")[1] == []
    finally:
        engine.dispose()
    migrations.upgrade(db_url)
    assert migrations.current_revision(db_url) == migrations.head_revision()


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BRM_CENTRAL_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "central.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_cli_upgrade_then_current_prints_head(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    assert "none" in _cli(url, "db", "current").stdout
    upgraded = _cli(url, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    current = _cli(url, "db", "current")
    assert current.returncode == 0
    assert current.stdout.split()[0] == migrations.head_revision()


def test_cli_reports_a_bad_url_without_a_traceback(tmp_path):
    result = _cli("mysql://nobody@nowhere/db", "db", "upgrade")
    assert result.returncode == 1
    assert "unsupported database" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_load_fleet_twice(tmp_path):
    url = f"sqlite:///{tmp_path / 'fleet.sqlite3'}"
    assert _cli(url, "db", "upgrade").returncode == 0
    first = _cli(url, "load-fleet")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "locations: 9 created, 0 updated, 0 unchanged"
    again = _cli(url, "load-fleet", "--fleet", str(demo_fleet_path()))
    assert again.stdout.strip() == "locations: 0 created, 0 updated, 9 unchanged"
    bad = tmp_path / "fleet.yaml"
    bad.write_text("locations: [{location_id: X}]\n")
    refused = _cli(url, "load-fleet", "--fleet", str(bad))
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    assert "location_id" in refused.stderr
