"""``battery-agent``: run one site's agent, or check a site's configuration."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from common.settings import SettingsError, load_settings
from edge_agent.config import AgentSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="battery-agent",
        description="Poll a site's battery monitors and publish every reading over MQTT.",
        epilog="Settings: a YAML file; BRM_AGENT_* environment variables override it "
        "(nested keys joined by __, e.g. BRM_AGENT_MQTT__PASSWORD).",
    )
    parser.add_argument("--config", type=Path, help="the site's settings file (YAML)")
    commands = parser.add_subparsers(dest="command")
    check = commands.add_parser("check-config", help="validate a settings file and explain errors")
    check.add_argument("path", type=Path)
    return parser


def _load(path: Path) -> AgentSettings:
    try:
        return load_settings(AgentSettings, path)
    except SettingsError as exc:
        lines = "\n".join(f"  {problem}" for problem in exc.problems)
        raise SystemExit(f"{exc.source}: {len(exc.problems)} problem(s)\n{lines}") from exc


def _check(path: Path) -> int:
    settings = _load(path)
    kinds = sorted({d.type for d in settings.devices})
    print(
        f"{path}: ok — site {settings.site_id}, agent {settings.agent_id}, "
        f"{len(settings.devices)} device(s) ({', '.join(kinds)}), broker "
        f"{settings.mqtt.host}:{settings.mqtt.port}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return _check(args.path)
    if args.config is None:
        build_parser().error("--config is required to run the agent")
    settings = _load(args.config)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.log_level != "DEBUG":
        # pymodbus logs every timeout with a packet dump; the pollers log failures once.
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    from edge_agent.agent import run_agent  # the protocol libraries load only to run

    return 0 if asyncio.run(run_agent(settings)) else 1


if __name__ == "__main__":
    sys.exit(main())
