"""``battery-sim``: serve simulated sites over Modbus TCP and SNMP, and steer their faults."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from common import ids
from common.fleet import Fleet, demo_fleet_path, load_fleet
from common.settings import SettingsError, load_settings
from common.timeutil import parse_rfc3339, to_rfc3339
from simulators.runner import RunOptions, SitePlan, serve_sites
from simulators.settings import SimulatorSettings
from simulators.snmp_agent import SnmpCredentials
from simulators.twin import FaultKind

DEFAULT_MODBUS_PORT = 5020
DEFAULT_SNMP_PORT = 1161
DEFAULT_CONTROL_PORT = 8020
DEFAULT_CONTROL_URL = f"http://127.0.0.1:{DEFAULT_CONTROL_PORT}"


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _instant(text: str) -> datetime:
    try:
        return parse_rfc3339(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _add_serving_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="settings file (YAML); BRM_SIM_* environment variables override it and flags "
        "override both",
    )
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--fleet", type=Path, help="fleet file (default: the packaged demo fleet)")
    parser.add_argument("--seed", type=int, help="twin seed (default 0)")
    parser.add_argument(
        "--time-scale",
        type=_positive,
        metavar="K",
        help="K simulated seconds per real second (default 1)",
    )
    parser.add_argument(
        "--start",
        type=_instant,
        metavar="RFC3339",
        help="simulated time at start-up, e.g. 2026-01-01T00:00:00Z (default: now)",
    )
    parser.add_argument(
        "--control-port",
        type=int,
        default=None,
        help="port of the fault-control HTTP API on --host (default: none for modbus/snmp, "
        f"{DEFAULT_CONTROL_PORT} for site/fleet)",
    )
    parser.add_argument("--community", help="SNMP v2c community (default public)")
    parser.add_argument("--v3-user", help="SNMPv3 user, SHA auth and AES-128 privacy (default brm)")
    parser.add_argument("--v3-auth-key", help="SNMPv3 auth passphrase (prefer the settings file)")
    parser.add_argument(
        "--v3-priv-key", help="SNMPv3 privacy passphrase (prefer the settings file)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")


def _settings(args: argparse.Namespace) -> SimulatorSettings:
    """The settings file and environment, with the flags given on the command line on top."""
    try:
        settings = load_settings(SimulatorSettings, args.config)
    except SettingsError as exc:
        raise SystemExit("invalid settings:\n  " + "\n  ".join(exc.problems)) from exc
    flags = {
        name: getattr(args, name)
        for name in ("host", "fleet", "seed", "time_scale", "start")
        if getattr(args, name) is not None
    }
    snmp = {
        name: getattr(args, name)
        for name in ("community", "v3_user", "v3_auth_key", "v3_priv_key")
        if getattr(args, name) is not None
    }
    return settings.model_copy(
        update={**flags, "snmp": settings.snmp.model_copy(update=snmp)}, deep=True
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="battery-sim", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    modbus = commands.add_parser("modbus", help="serve one site over Modbus TCP")
    modbus.add_argument("--site", required=True, help="location ID, e.g. DC-CNX-01")
    modbus.add_argument("--port", type=int, default=DEFAULT_MODBUS_PORT)
    _add_serving_options(modbus)

    snmp = commands.add_parser("snmp", help="serve one site over SNMP (UDP)")
    snmp.add_argument("--site", required=True, help="location ID, e.g. DC-CNX-01")
    snmp.add_argument("--port", type=int, default=DEFAULT_SNMP_PORT)
    _add_serving_options(snmp)

    site = commands.add_parser("site", help="serve one site over both Modbus TCP and SNMP")
    site.add_argument("--site", required=True, help="location ID, e.g. DC-CNX-01")
    site.add_argument("--modbus-port", type=int, default=DEFAULT_MODBUS_PORT)
    site.add_argument("--snmp-port", type=int, default=DEFAULT_SNMP_PORT)
    _add_serving_options(site)

    fleet = commands.add_parser(
        "fleet", help="serve the first N sites of the fleet on consecutive ports"
    )
    fleet.add_argument("--sites", type=int, required=True, metavar="N")
    fleet.add_argument("--modbus-port", type=int, default=DEFAULT_MODBUS_PORT, help="first port")
    fleet.add_argument("--snmp-port", type=int, default=DEFAULT_SNMP_PORT, help="first port")
    _add_serving_options(fleet)

    _add_fault_commands(commands)
    return parser


def _add_fault_commands(commands: argparse._SubParsersAction) -> None:
    fault = commands.add_parser("fault", help="inject, list and clear faults of a running site")
    fault.add_argument("--control", default=DEFAULT_CONTROL_URL, help="control API URL")
    actions = fault.add_subparsers(dest="action", required=True)
    inject = actions.add_parser("inject", help="start a fault")
    inject.add_argument("kind", choices=[k.value for k in FaultKind])
    inject.add_argument("target", help="battery, string, UPS or site ID")
    inject.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="fault parameter, e.g. delta_c=20, duration_s=600, delay_s=3, mode=exception, "
        "delta_v_per_cell=0.15, soh_drop_pct=10, factor=3, soh_pct=100.5 (block_replaced)",
    )
    inject.add_argument(
        "--since",
        type=_instant,
        metavar="RFC3339",
        help="simulated time the fault began, if before now: its history becomes the twin's "
        "past, e.g. accelerated_ageing for the last year",
    )
    listing = actions.add_parser("list", help="list a site's faults")
    listing.add_argument("--site", required=True)
    clear = actions.add_parser("clear", help="clear one fault, or all with --all")
    clear.add_argument("--site", required=True)
    which = clear.add_mutually_exclusive_group(required=True)
    which.add_argument("fault_id", nargs="?", type=int)
    which.add_argument("--all", action="store_true")


def _plans(args: argparse.Namespace, fleet: Fleet) -> list[SitePlan]:
    if args.command == "modbus":
        return [SitePlan(args.site, modbus_port=args.port)]
    if args.command == "snmp":
        return [SitePlan(args.site, snmp_port=args.port)]
    if args.command == "site":
        return [SitePlan(args.site, modbus_port=args.modbus_port, snmp_port=args.snmp_port)]
    if not 1 <= args.sites <= len(fleet.locations):
        raise SystemExit(f"--sites must be from 1 to {len(fleet.locations)} (the fleet file)")
    return [
        SitePlan(loc.location_id, args.modbus_port + i, args.snmp_port + i)
        for i, loc in enumerate(fleet.locations[: args.sites])
    ]


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        fleet = load_fleet(settings.fleet or demo_fleet_path())
    except SettingsError as exc:
        raise SystemExit(
            f"invalid fleet file {exc.source}:\n  " + "\n  ".join(exc.problems)
        ) from exc
    plans = _plans(args, fleet)
    for plan in plans:
        try:
            fleet.get(plan.site_id)
        except KeyError as exc:
            raise SystemExit(str(exc).strip("'\"")) from exc
    control_port = args.control_port
    if control_port is None and args.command in {"site", "fleet"}:
        control_port = DEFAULT_CONTROL_PORT
    snmp = settings.snmp
    options = RunOptions(
        host=settings.host,
        seed=settings.seed,
        time_scale=settings.time_scale,
        start=None if settings.start is None else settings.start.timestamp(),
        control_port=control_port,
        snmp=SnmpCredentials(snmp.community, snmp.v3_user, snmp.v3_auth_key, snmp.v3_priv_key),
    )
    asyncio.run(serve_sites(fleet, plans, options))
    return 0


def _request(url: str, method: str = "GET", body: object = None) -> dict[str, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        document = json.load(exc)
        raise SystemExit(f"error {exc.code}: {document.get('detail', document)}") from exc
    except urllib.error.URLError as exc:
        raise SystemExit(f"cannot reach the control API at {url}: {exc.reason}") from exc


def _site_of(target: str) -> str:
    for parse in (ids.parse_battery_id, ids.parse_string_id, ids.parse_ups_id):
        try:
            parsed = parse(target)
        except ids.InvalidIdError:
            continue
        return parsed.location_id if isinstance(parsed, ids.BatteryRef) else parsed[0]
    return ids.validate_location_id(target)


def _param_value(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _fault(args: argparse.Namespace) -> int:
    base = args.control.rstrip("/")
    if args.action == "inject":
        try:
            site = _site_of(args.target)
            params = dict(p.split("=", 1) for p in args.param)
        except (ids.InvalidIdError, ValueError) as exc:
            raise SystemExit(f"invalid fault: {exc}") from exc
        body: dict[str, object] = {
            "kind": args.kind,
            "target": args.target,
            "params": {k: _param_value(v) for k, v in params.items()},
        }
        if args.since is not None:
            body["start"] = to_rfc3339(args.since)
        result = _request(f"{base}/sites/{site}/faults", "POST", body)
    elif args.action == "list":
        result = _request(f"{base}/sites/{args.site}/faults")
    elif args.all:
        result = _request(f"{base}/sites/{args.site}/faults", "DELETE")
    else:
        result = _request(f"{base}/sites/{args.site}/faults/{args.fault_id}", "DELETE")
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "fault":
        return _fault(args)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
