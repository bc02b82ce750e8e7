"""``battery-fleet demo``: broker, central, simulated sites and their agents, on one machine.

The parts run as child processes through their own command lines, configured by the environment
variables and files they already read, so the demo needs no private API of theirs; only the
embedded MQTT broker (amqtt, which speaks MQTT 3.1.1, hence ``protocol: 3.1.1`` for central and
the agents) and the history backfill run in this process. Everything lives in ``--data-dir``: a
second start finds the store, the admin and the backfill there and goes live at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from common import ids
from common.fleet import demo_fleet_path, load_fleet
from simulators.twin import SiteTwin
from simulators.twin.params import SECONDS_PER_DAY

BIN = Path(sys.executable).parent
ADMIN = "admin"
ADMIN_PASSWORD_ENV = "BRM_ADMIN_PASSWORD"
DAILY_DAYS = 730
MINUTE_DAYS = 2.0
STOP_GRACE_S = 15.0
MIN_SILENCE_S = 30.0
READY_TIMEOUT_S = 120.0
# Blocks that misbehave on purpose, per site: (kind, UPS, string, block, days ago, params).
# Strings of UPS 01 are read over Modbus, UPS 02 over SNMP, so both paths show a fault.
FAULT_PLAN: tuple[tuple[str, int, int, int, float, dict[str, float]], ...] = (
    ("accelerated_ageing", 1, 1, 7, 365, {"factor": 6.0}),  # heads for rul_critical
    ("accelerated_ageing", 2, 3, 11, 365, {"factor": 4.0}),  # rul_warning
    ("overheating", 1, 2, 30, 3, {"delta_c": 25.0}),  # temperature_high, live
    ("resistance_jump", 2, 1, 20, 10, {"factor": 1.6}),  # resistance_drift
)


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (1-65535)")
    return port


def _interval(text: str) -> float:
    value = float(text)
    if not 0.5 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text}: the interval must be 0.5 to 3600 seconds")
    return value


def _broker(text: str) -> tuple[str, int]:
    url = urllib.parse.urlsplit(text)
    if url.scheme != "mqtt" or not url.hostname:
        raise argparse.ArgumentTypeError(f"{text}: expected mqtt://HOST:PORT")
    return url.hostname, url.port or 1883


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="battery-fleet", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run the whole system on embedded defaults until Ctrl-C",
        description=(
            "Run an MQTT broker, central (API, Socket.IO and ingest on a SQLite file), the first "
            "N sites of the demo fleet as simulated sites and one agent per site. The first start "
            f"backfills {DAILY_DAYS} days of daily and {MINUTE_DAYS:g} days of minute readings "
            "from the digital twin, with a few blocks ageing fast, overheating or with a "
            "resistance jump, and creates an admin; later starts reuse both. Ctrl-C stops all."
        ),
    )
    demo.add_argument(
        "--sites", type=int, default=3, metavar="N", help="sites of the demo fleet (1-9; default 3)"
    )
    demo.add_argument(
        "--interval",
        type=_interval,
        default=10.0,
        metavar="S",
        help="agents' poll interval in seconds (default 10)",
    )
    demo.add_argument(
        "--http-port", type=_port, default=8000, metavar="P", help="API port (default 8000)"
    )
    demo.add_argument(
        "--data-dir",
        type=Path,
        default=Path("var/demo"),
        metavar="DIR",
        help="store, logs, agent outboxes, admin password (default var/demo)",
    )
    demo.add_argument(
        "--broker",
        type=_broker,
        metavar="mqtt://HOST:PORT",
        help="use this MQTT v5 broker (e.g. Mosquitto) instead of the embedded one",
    )
    demo.add_argument(
        "--admin-password",
        metavar="PW",
        help=f"password of the admin created at first start (or env {ADMIN_PASSWORD_ENV}; "
        "default: generated and stored in DIR/admin-password, mode 0600)",
    )
    return parser


def _free_port(count: int = 1, kind: int = socket.SOCK_STREAM) -> int:
    """The first of ``count`` consecutive ports free for ``kind`` (TCP or UDP) on loopback."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + count > 65535:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for port in range(first, first + count):
                    sock = stack.enter_context(socket.socket(socket.AF_INET, kind))
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError(f"no {count} consecutive free ports")


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` readable by its owner only (it holds a secret)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    path.chmod(0o600)


@dataclass
class State:
    """What a later start must find as the first left it (``DIR/demo.json``, mode 0600)."""

    path: Path
    data: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> State:
        data = json.loads(path.read_text()) if path.exists() else {}
        data.setdefault("jwt_secret", secrets.token_urlsafe(48))
        data.setdefault("admin_created", False)
        data.setdefault("backfilled_sites", [])
        data.setdefault("faults", {})
        return cls(path, data)

    def save(self) -> None:
        _write_private(self.path, json.dumps(self.data, indent=2))


@dataclass
class Child:
    """A part of the system in its own process group, so its own children stop with it."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def signal(self, signum: int) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    def group_alive(self) -> bool:
        if self.process is None:
            return False
        self.process.poll()
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class Demo:
    """Start, supervise and stop every part; one instance per ``battery-fleet demo`` run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.data = args.data_dir.resolve()
        self.logs = self.data / "logs"
        self.fleet = load_fleet(demo_fleet_path())
        if not 1 <= args.sites <= len(self.fleet.locations):
            raise SystemExit(f"--sites must be from 1 to {len(self.fleet.locations)}")
        self.sites = [loc.location_id for loc in self.fleet.locations[: args.sites]]
        self.state = State.load(self.data / "demo.json")
        self.database_url = f"sqlite:///{self.data / 'central.sqlite3'}"
        self.children: list[Child] = []
        self.stopping = asyncio.Event()
        if args.broker is None:
            self.broker_host, self.broker_port = "127.0.0.1", _free_port()
        else:
            self.broker_host, self.broker_port = args.broker
        self.modbus_port = _free_port(len(self.sites))
        self.snmp_port = _free_port(len(self.sites), socket.SOCK_DGRAM)
        self.control_port = _free_port()

    # -- configuration of the parts -------------------------------------------------------

    def central_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRM_CENTRAL_")}
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "BRM_CENTRAL_DATABASE_URL": self.database_url,
                "BRM_CENTRAL_MQTT__HOST": self.broker_host,
                "BRM_CENTRAL_MQTT__PORT": str(self.broker_port),
                "BRM_CENTRAL_MQTT__PROTOCOL": "5" if self.args.broker else "3.1.1",
                "BRM_CENTRAL_MQTT__CLIENT_ID": "brm-demo-ingest",
                "BRM_CENTRAL_API__JWT_SECRET": self.state.data["jwt_secret"],
                "BRM_CENTRAL_ALERTS__POLL_INTERVAL_S": str(self.args.interval),
                "BRM_CENTRAL_ALERTS__MISSED_POLLS": str(self.missed_polls),
            }
        )
        return env

    @property
    def missed_polls(self) -> int:
        """Polls a battery may miss before communication_lost: 3, but never under
        ``MIN_SILENCE_S``, so that fast demo polls do not raise it for every block while the
        agents start up or a busy machine delays a batch by a few seconds."""
        return max(3, math.ceil(MIN_SILENCE_S / self.args.interval))

    def agent_config(self, index: int, site: str) -> Path:
        """UPS 01's strings over Modbus TCP, UPS 02 over SNMP v2c (community ``public@2``)."""
        interval = self.args.interval
        timing = {"interval_s": interval, "timeout_s": min(5.0, interval / 2)}
        devices: list[dict[str, Any]] = [
            {
                "type": "modbus",
                "id": ids.string_id(site, 1, n),
                "host": "127.0.0.1",
                "port": self.modbus_port + index,
                "unit_id": n,
                **timing,
            }
            for n in (1, 2, 3)
        ]
        devices.append(
            {
                "type": "snmp",
                "id": ids.ups_id(site, 2),
                "host": "127.0.0.1",
                "port": self.snmp_port + index,
                "community": "public@2",
                **timing,
            }
        )
        settings = {
            "site_id": site,
            "agent_id": f"demo-{site.lower()}",
            "devices": devices,
            "mqtt": {
                "host": self.broker_host,
                "port": self.broker_port,
                "protocol": "5" if self.args.broker else "3.1.1",
                "reconnect_min_s": 0.5,
                "reconnect_max_s": 5,
            },
            "outbox": {"path": str(self.data / "agents" / f"{site}-outbox.sqlite3")},
            "publish": {"state_interval_s": 10},
            "http": {"enabled": False},
        }
        path = self.data / "agents" / f"{site}.yaml"
        path.write_text(yaml.safe_dump(settings, sort_keys=False))
        return path

    def child(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        child = Child(
            name, argv, env or {**os.environ, "PYTHONUNBUFFERED": "1"}, self.logs / f"{name}.log"
        )
        self.children.append(child)
        return child

    # -- steps ----------------------------------------------------------------------------

    def central_cli(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [str(BIN / "battery-central"), *args],
            env=self.central_env(),
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"battery-central {' '.join(args)} failed:\n{done.stderr}")
        return done.stdout

    def admin_password(self) -> str:
        """The flag's or environment's password, else the stored one, else a new one."""
        stored = self.data / "admin-password"
        given = self.args.admin_password or os.environ.get(ADMIN_PASSWORD_ENV)
        if self.state.data["admin_created"]:
            password = stored.read_text().strip()
            if given and given != password:
                print("the admin exists already: its password is still the stored one", flush=True)
            return password
        password = given or secrets.token_urlsafe(12)
        _write_private(stored, password + "\n")
        return password

    def prepare_store(self) -> str:
        """Migrate, load the fleet and, on first start, create the admin; its password."""
        self.central_cli("db", "upgrade")
        self.central_cli("load-fleet")
        password = self.admin_password()
        if not self.state.data["admin_created"]:
            self.central_cli(
                "create-admin", "--username", ADMIN, "--email", "admin@example.com",
                "--password-stdin", stdin=password + "\n",
            )  # fmt: skip
            self.state.data["admin_created"] = True
            self.state.save()
        return password

    def control(self, path: str, method: str = "GET", body: object = None) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.control_port}{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def inject_faults(self) -> dict[str, list[dict[str, Any]]]:
        """The fault plan into the running simulator, each with the start it had at the first
        start (so live readings continue the backfilled history); the faults as it took them."""
        now = self.control(f"/sites/{self.sites[0]}/snapshot")["t"]
        taken: dict[str, list[dict[str, Any]]] = {}
        for site in self.sites:
            starts = self.state.data["faults"].setdefault(site, [])
            for i, (kind, ups, string, block, days_ago, params) in enumerate(FAULT_PLAN):
                if i == len(starts):
                    starts.append(now - days_ago * SECONDS_PER_DAY)
                target = ids.battery_id(site, ups, string, block)
                body = {"kind": kind, "target": target, "params": params, "start": starts[i]}
                taken.setdefault(site, []).append(
                    self.control(f"/sites/{site}/faults", "POST", body)
                )
        self.state.save()
        return taken

    def backfill(self, faults: dict[str, list[dict[str, Any]]]) -> None:
        """History of the sites not backfilled yet, from twins equal to the simulator's."""
        from fleet_demo.backfill import backfill

        todo = [s for s in self.sites if s not in self.state.data["backfilled_sites"]]
        if not todo:
            print("history: backfilled at an earlier start, not again", flush=True)
            return
        twins = []
        for site in todo:
            twin = SiteTwin(self.fleet.get(site), seed=self.sites.index(site))
            for fault in faults[site]:
                twin.inject(fault["kind"], fault["target"], fault["start"], **fault["params"])
            twins.append(twin)
        sim_now = self.control(f"/sites/{todo[0]}/snapshot")["t"]
        shift_s = time.time() - sim_now
        print(f"history: backfilling {len(todo)} site(s) from the digital twin...", flush=True)
        result = backfill(
            self.database_url,
            twins,
            sim_now,
            shift_s,
            daily_days=DAILY_DAYS,
            minute_days=MINUTE_DAYS,
        )
        self.state.data["backfilled_sites"] += todo
        self.state.data.setdefault("backfills", []).append(
            {"sites": todo, "rows": result.rows, "estimates": result.estimates,
             "seconds": round(result.seconds, 1)}
        )  # fmt: skip
        self.state.save()
        print(
            f"history: {result.rows} readings and {result.estimates} RUL estimates in "
            f"{result.seconds:.1f} s",
            flush=True,
        )

    async def wait_http(self, url: str, what: str, child: Child) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(url, timeout=2),
            ):
                return
            if child.process is None or child.process.poll() is not None:
                raise SystemExit(f"{child.name} exited while starting:\n{child.tail()}")
            if time.monotonic() > deadline or self.stopping.is_set():
                raise SystemExit(f"{what} not up within {READY_TIMEOUT_S:g} s:\n{child.tail()}")
            await asyncio.sleep(0.3)

    def write_children(self) -> None:
        """Every child's pid (= its process group), for operators and tests."""
        pids = {c.name: c.process.pid for c in self.children if c.process is not None}
        (self.data / "children.json").write_text(json.dumps({"demo": os.getpid(), **pids}))

    async def stop_children(self) -> None:
        """Agents first (their outboxes flush), then central, then the simulator: SIGTERM to
        each process group, SIGKILL to what is left after the grace period."""
        for child in reversed(self.children):
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while any(c.group_alive() for c in self.children) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        for child in self.children:
            if child.group_alive():
                print(f"{child.name} did not stop in {STOP_GRACE_S:g} s: killed", flush=True)
                child.signal(signal.SIGKILL)
        for child in self.children:
            if child.process is not None:
                await asyncio.to_thread(child.process.wait)

    async def supervise(self) -> int:
        """Until Ctrl-C (0) or until a part dies (1: reported, the rest stopped)."""
        while not self.stopping.is_set():
            for child in self.children:
                code = None if child.process is None else child.process.poll()
                if code is not None:
                    print(
                        f"\n{child.name} exited with status {code}; stopping the demo.\n"
                        f"--- last lines of {child.log_path} ---\n{child.tail()}",
                        file=sys.stderr,
                        flush=True,
                    )
                    return 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 0.5)
        return 0

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stopping.set)
        for folder in (self.data, self.logs, self.data / "agents"):
            folder.mkdir(parents=True, exist_ok=True)
        broker = None
        if self.args.broker is None:
            broker = await _start_broker(self.broker_port)
        try:
            return await self._run_parts()
        finally:
            await self.stop_children()
            if broker is not None:
                await broker.shutdown()
            print("demo stopped: every part is down", flush=True)

    async def _run_parts(self) -> int:
        sim = self.child(
            "battery-sim",
            [
                str(BIN / "battery-sim"), "fleet", "--sites", str(len(self.sites)),
                "--host", "127.0.0.1", "--modbus-port", str(self.modbus_port),
                "--snmp-port", str(self.snmp_port), "--control-port", str(self.control_port),
            ],
        )  # fmt: skip
        sim.start()
        password = await asyncio.to_thread(self.prepare_store)
        await self.wait_http(
            f"http://127.0.0.1:{self.control_port}/sites/{self.sites[0]}/faults",
            "the simulator's control API",
            sim,
        )
        faults = await asyncio.to_thread(self.inject_faults)
        await asyncio.to_thread(self.backfill, faults)
        if self.stopping.is_set():
            return 0
        port = self.args.http_port
        central = self.child(
            "battery-central",
            [str(BIN / "battery-central"), "run", "--host", "127.0.0.1", "--port", str(port)],
            self.central_env(),
        )
        central.start()
        for index, site in enumerate(self.sites):
            config = self.agent_config(index, site)
            self.child(
                f"battery-agent-{site}", [str(BIN / "battery-agent"), "--config", str(config)]
            ).start()
        self.write_children()
        await self.wait_http(f"http://127.0.0.1:{port}/health", "the API server", central)
        self._banner(password)
        return await self.supervise()

    def _banner(self, password: str) -> None:
        base = f"http://127.0.0.1:{self.args.http_port}"
        site = self.sites[0]
        target = ids.battery_id(site, 1, 1, 5)
        control = f"http://127.0.0.1:{self.control_port}"
        broker = f"mqtt://{self.broker_host}:{self.broker_port}"
        print(
            f"""
Battery fleet demo is live: {", ".join(self.sites)}, polled every {self.args.interval:g} s
  dashboard:  {base}/
  API:        {base}/api/v1
  API docs:   {base}/api/docs
  login:      {ADMIN} / {password}   (stored in {self.data / "admin-password"})
  broker:     {broker}{" (embedded)" if self.args.broker is None else ""}
  simulator:  control API {control}
  data, logs: {self.data}
Inject a fault (then watch GET /api/v1/alerts):
  {BIN / "battery-sim"} fault --control {control} inject overheating {target} --param delta_c=25
  curl -s -X POST {control}/sites/{site}/faults -H 'Content-Type: application/json' \\
       -d '{{"kind": "overheating", "target": "{target}", "params": {{"delta_c": 25}}}}'
  {BIN / "battery-sim"} fault --control {control} list --site {site}
Ctrl-C stops every part; the next start resumes from {self.data}.
""",
            flush=True,
        )


async def _start_broker(port: int) -> Any:
    """amqtt in this process, on loopback only, anonymous (nothing but this machine reaches it)."""
    from amqtt.broker import Broker

    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.WARNING)
    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
    )
    await broker.start()
    return broker


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    demo = Demo(args)
    demo.logs.mkdir(parents=True, exist_ok=True)
    # The embedded broker's log (amqtt warns whenever ingest acknowledges after its fixed 5 s,
    # e.g. while ingest starts) goes to a file: the console keeps the demo's own lines.
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        filename=demo.logs / "demo.log",
    )
    return asyncio.run(demo.run())


if __name__ == "__main__":
    sys.exit(main())
