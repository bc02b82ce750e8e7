"""``battery-central``: the central server's command line: database tasks, ingest, API server.

Settings come from ``--config FILE`` (YAML) and ``BRM_CENTRAL_*`` environment variables, e.g.
``BRM_CENTRAL_DATABASE_URL=postgresql://user@host/brm``.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import date

from sqlalchemy.exc import SQLAlchemyError

from central import migrations
from central.db.engine import StoreConfigError, make_engine, make_session_factory
from central.db.inventory import load_fleet_locations
from central.settings import DEFAULT_DATABASE_URL, CentralSettings
from common.fleet import load_fleet
from common.settings import SettingsError, load_settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_THREADS = 32
SERVER_NOTE = (
    "One gunicorn worker (gthread) serves REST and Socket.IO: Socket.IO sessions live in its "
    "process. Several servers need BRM_CENTRAL_API__SOCKETIO_MESSAGE_QUEUE=redis://HOST:6379/0 "
    "and sticky sessions at the load balancer. The database must be at the newest revision "
    "('battery-central db upgrade' first). Access log on stdout; stops cleanly on SIGTERM or "
    "Ctrl-C."
)


class CliError(Exception):
    """A failure reported as one line on stderr, exit status 1."""


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (1-65535)")
    return port


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})"
    )
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--threads",
        type=_positive,
        default=DEFAULT_THREADS,
        help=(
            "request threads of the worker; each open Socket.IO websocket holds one "
            f"(default {DEFAULT_THREADS})"
        ),
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="battery-central",
        description="Central server of the battery fleet: store, ingest and APIs.",
        epilog=(
            "Database: BRM_CENTRAL_DATABASE_URL (postgresql://USER@HOST:PORT/DB or "
            f"sqlite:///FILE; default {DEFAULT_DATABASE_URL}, relative to the working directory)."
        ),
    )
    parser.add_argument("--config", metavar="FILE", help="YAML settings file (optional)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = commands.add_parser("db", help="database schema tasks", description="Schema tasks.")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="TASK")
    db_commands.add_parser("upgrade", help="apply every migration up to the newest (idempotent)")
    db_commands.add_parser("current", help="print the database's revision and the newest one")
    partitions = db_commands.add_parser(
        "partitions",
        help="PostgreSQL: create monthly telemetry partitions ahead of time",
        description="Create monthly telemetry partitions (PostgreSQL; nothing to do on SQLite).",
    )
    partitions.add_argument(
        "--start", metavar="YYYY-MM", required=True, help="first month (UTC) to create"
    )
    partitions.add_argument(
        "--months", type=int, default=12, help="how many months from --start (default 12)"
    )

    fleet = commands.add_parser(
        "load-fleet",
        help="load or update locations from a fleet file",
        description="Upsert the locations of a fleet file (default: the settings' fleet_file).",
    )
    fleet.add_argument("--fleet", metavar="FILE", help="fleet YAML file")

    admin = commands.add_parser(
        "create-admin",
        help="create an admin user of the API",
        description="Create an admin user; the password is read from stdin or prompted for.",
    )
    admin.add_argument("--username", required=True)
    admin.add_argument("--email", required=True)
    admin.add_argument("--full-name", help="display name (optional)")
    admin.add_argument("--user-id", help="user ID (default: the username)")
    admin.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )

    commands.add_parser(
        "ingest",
        help="store what the sites publish over MQTT (runs until SIGTERM)",
        description=(
            "Subscribe to the broker (BRM_CENTRAL_MQTT__HOST, __PORT, ...) and store telemetry, "
            "births, state and events; stops cleanly on SIGTERM or Ctrl-C."
        ),
    )
    serve = commands.add_parser(
        "serve",
        help="serve the REST API and Socket.IO (gunicorn; runs until SIGTERM)",
        description="Serve the REST API and Socket.IO on gunicorn. " + SERVER_NOTE,
    )
    _add_server_options(serve)
    combined = commands.add_parser(
        "run",
        help="serve the API and run ingest in one process (small sites)",
        description=(
            "The API server of 'serve' with ingest in a thread of its worker, for a site small "
            "enough for one process. " + SERVER_NOTE
        ),
    )
    _add_server_options(combined)
    commands.add_parser(
        "purge-tokens",
        help="delete revocations of tokens that have expired anyway",
        description=(
            "Delete revoked-token rows past their token's expiry (logout also does this) and "
            "print how many."
        ),
    )
    return parser


def _upgrade(settings: CentralSettings) -> None:
    migrations.upgrade(settings.database_url)
    print(f"database at revision {migrations.head_revision()} (head)")


def _current(settings: CentralSettings) -> None:
    current = migrations.current_revision(settings.database_url)
    head = migrations.head_revision()
    if current is None:
        print(f"none (empty database; head is {head}: run 'battery-central db upgrade')")
    else:
        print(f"{current} (head)" if current == head else f"{current} (head is {head})")


def _partitions(settings: CentralSettings, start: str, months: int) -> None:
    try:
        first = date.fromisoformat(f"{start}-01")
    except ValueError as exc:
        raise CliError(f"--start must be YYYY-MM, not {start!r}") from exc
    if months < 1:
        raise CliError("--months must be at least 1")
    engine = make_engine(settings.database_url)
    try:
        if engine.dialect.name != "postgresql":
            print("SQLite keeps telemetry in one table: no partitions to create")
            return
        with engine.begin() as connection:
            created = connection.exec_driver_sql(
                "SELECT brm_ensure_telemetry_partitions(%(first)s, %(months)s)",
                {"first": first, "months": months},
            ).scalar_one()
        print(f"created {created} telemetry partition(s)")
    finally:
        engine.dispose()


def _load_fleet(settings: CentralSettings, path: str | None) -> None:
    fleet = load_fleet(path or settings.fleet_file)
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine).begin() as session:
            changes = load_fleet_locations(session, fleet)
    finally:
        engine.dispose()
    print(
        f"locations: {changes.created} created, {changes.updated} updated, "
        f"{changes.unchanged} unchanged"
    )


MIN_PASSWORD_LENGTH = 8


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password (again): ") != password:
            raise CliError("the passwords do not match")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise CliError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    return password


def _create_admin(settings: CentralSettings, args: argparse.Namespace) -> None:
    from central.api.accounts import AccountError, create_user

    password = _read_password(args.password_stdin)
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine).begin() as session:
            user = create_user(
                session,
                user_id=args.user_id or args.username,
                username=args.username,
                email=args.email,
                password=password,
                full_name=args.full_name,
                role="admin",
            )
    except AccountError as exc:
        raise CliError(str(exc)) from exc
    finally:
        engine.dispose()
    print(f"admin {user.username} created (user_id {user.user_id})")


def _purge_tokens(settings: CentralSettings) -> None:
    from central.api.accounts import purge_expired_revocations

    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine).begin() as session:
            removed = purge_expired_revocations(session)
    finally:
        engine.dispose()
    print(f"purged {removed} expired revoked token(s)")


def _log_to_stderr() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
    )


def _ingest(settings: CentralSettings) -> None:
    # Imported here: the database commands need neither paho nor the ingest package (and ingest
    # needs neither gunicorn nor the API).
    from central.ingest.loop import IngestLoop, describe
    from central.ingest.mqtt import MqttError
    from central.live_events import live_events_for
    from central.runtime import settle_garbage_collector

    _require_newest_schema(settings)
    _log_to_stderr()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    # Through api.socketio_message_queue to the API servers' clients (none without a queue).
    loop = IngestLoop(settings, events=live_events_for(settings))
    settle_garbage_collector()
    try:
        loop.run(stop)
    except MqttError as exc:
        raise CliError(str(exc)) from exc
    print(f"ingest stopped: {describe(loop.stats)}")


def _require_newest_schema(settings: CentralSettings) -> None:
    """Refuse an unmigrated database: migrating is the operator's step, not a side effect."""
    current = migrations.current_revision(settings.database_url)
    head = migrations.head_revision()
    if current != head:
        raise CliError(
            f"the database is at revision {current or 'none'}, not the newest ({head}): "
            "run 'battery-central db upgrade' first"
        )


def _serve(settings: CentralSettings, args: argparse.Namespace, *, with_ingest: bool) -> None:
    from central.server import ApiServer

    _require_newest_schema(settings)
    _log_to_stderr()
    server = ApiServer(
        settings, host=args.host, port=args.port, threads=args.threads, with_ingest=with_ingest
    )
    server.run()  # gunicorn's arbiter handles SIGTERM/SIGINT and exits (status 0 when clean)


def run(args: argparse.Namespace) -> None:
    settings = load_settings(CentralSettings, args.config)
    if args.command == "db":
        if args.db_command == "upgrade":
            _upgrade(settings)
        elif args.db_command == "current":
            _current(settings)
        else:
            _partitions(settings, args.start, args.months)
    elif args.command == "load-fleet":
        _load_fleet(settings, args.fleet)
    elif args.command == "create-admin":
        _create_admin(settings, args)
    elif args.command == "ingest":
        _ingest(settings)
    elif args.command == "purge-tokens":
        _purge_tokens(settings)
    else:
        _serve(settings, args, with_ingest=args.command == "run")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        run(args)
    except (CliError, SettingsError, StoreConfigError) as exc:
        print(f"battery-central: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        print(f"battery-central: database error: {detail}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
