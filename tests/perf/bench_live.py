"""Live feed latency: from a reading entering ingest to its ``telemetry_update`` at the subscribed
Socket.IO clients, p50/p95 with 1,000 connected clients; and the alert evaluation cost.

Run on demand: `make bench` (or `.venv/bin/python -m tests.perf.bench_live [--help]`). Needs
Mosquitto, Redis at 127.0.0.1:6379, the local PostgreSQL (``BRM_TEST_PG_URL``, as bench_ingest)
and aiohttp (python-socketio's asyncio client). Prints the medians of RUNS runs, each on a fresh
database, broker, server and ingest.

The deployment measured is the production one on one machine: ``battery-central serve`` (one
gunicorn worker, a thread per websocket) and ``battery-central ingest`` in separate processes,
ingest emitting through the Redis message queue. CLIENTS python-socketio ``AsyncClient``s
(websocket transport, one asyncio loop in this process) connect with a token; half subscribe to a
site (the sites take turns), half to one battery each. The bench publishes telemetry to the
broker at RATE readings/s, spread over the sites and their batteries in turn, one message per
site per tick; each reading carries its own battery's ID and a unique time, and the client that
receives its ``telemetry_update`` looks up when it was published (same clock, same process).

Latency = receipt at a client (its handler runs) - the publish call to Mosquitto, over every
delivery to every subscribed client: so it includes the broker, ingest's batching
(``ingest.batch_max_wait_s``, default 0.02 s) and its commit, Redis, the server's fan-out and the
clients' own event loop. If ingest emits nothing (``--mode auto`` probes for 20 s), the bench
falls back to emitting from this process through ``SocketIOLiveEvents`` on the queue, as ingest
would, and says so: that measures emitter call to receipt, without broker, ingest and store.

The alert evaluation cost is the pure engine's (``central.alerts``: the reading rules and the
lifecycle decision of each condition) per 1,000 readings in one thread, and, end to end, the
ingest process's whole CPU per 1,000 readings (decode, store, alert engine, live events).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import socketio

from central.alerts import AlertSettings, AlertState, BatteryContext, decide, evaluate
from central.api.accounts import create_user
from central.db.engine import make_engine, make_session_factory
from central.db.inventory import load_fleet_locations, upsert_birth
from central.live_events import message_queue_emitter
from common.fleet import demo_fleet_path, load_fleet
from common.schemas import Reading, TelemetryBatch, encode
from common.timeutil import to_rfc3339
from common.topics import Topics
from tests.central.fleet_support import demo_birth
from tests.perf.bench_ingest import Broker, cpu_seconds, scratch_database
from tests.support import free_tcp_port, log_tail, stop_process, wait_for_tcp

RUNS = 3
CLIENTS = 1000
RATE = 40.0  # readings/s: 9 demo sites x 216 blocks polled once a minute make ~32
SITES = ("DC-CNX-01", "DC-BKK-01", "DC-HDY-01", "DC-KKC-01")
TICK_S = 0.1
WARMUP_S = 3.0
MEASURE_S = 20.0
DRAIN_S = 2.0
PROBE_S = 20.0
CONNECTING_AT_ONCE = 25
REDIS_URL = "redis://127.0.0.1:6379/0"
SECRET = "bench-secret-" + "x" * 40
PASSWORD = "bench-password-1"
BIN = Path(sys.executable).parent
TOPICS = Topics()
ALERT_READINGS = 100_000

Key = tuple[str, str]  # (battery_id, timestamp as the event carries it)


@dataclass
class Fleet:
    batteries: dict[str, list[str]]  # by site

    @property
    def all_batteries(self) -> list[str]:
        return [b for site in SITES for b in self.batteries[site]]

    def site_of(self, battery_id: str) -> str:
        return next(s for s in SITES if battery_id.startswith(f"BAT-{s}-"))


def prepare_database(url: str) -> Fleet:
    engine = make_engine(url)
    try:
        with make_session_factory(engine).begin() as session:
            load_fleet_locations(session, load_fleet(demo_fleet_path()))
            batteries = {}
            for site in SITES:
                birth = demo_birth(site=site)
                upsert_birth(session, birth)
                batteries[site] = [
                    b.battery_id for ups in birth.ups for s in ups.strings for b in s.batteries
                ]
            create_user(
                session,
                user_id="bench",
                username="bench",
                email="bench@example.com",
                password=PASSWORD,
                full_name="Bench",
                role="viewer",
            )
    finally:
        engine.dispose()
    return Fleet(batteries)


@dataclass
class Processes:
    """``battery-central serve`` and ``ingest`` on one database, broker, queue and channel."""

    url: str
    broker: Broker
    workdir: Path
    threads: int
    batch_wait_s: float | None = None  # ingest.batch_max_wait_s; None: ingest's default
    channel: str = field(default_factory=lambda: f"brm-bench-{uuid.uuid4().hex}")
    port: int = field(default_factory=free_tcp_port)
    serve: subprocess.Popen[bytes] | None = None
    ingest: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRM_CENTRAL_")}
        return {
            **env,
            "BRM_CENTRAL_DATABASE_URL": self.url,
            "BRM_CENTRAL_API__JWT_SECRET": SECRET,
            "BRM_CENTRAL_API__READY_CHECKS_BROKER": "false",
            "BRM_CENTRAL_API__SOCKETIO_MESSAGE_QUEUE": REDIS_URL,
            "BRM_CENTRAL_API__SOCKETIO_CHANNEL": self.channel,
            "BRM_CENTRAL_MQTT__HOST": "127.0.0.1",
            "BRM_CENTRAL_MQTT__PORT": str(self.broker.port),
            "BRM_CENTRAL_MQTT__CLIENT_ID": f"bench-{uuid.uuid4().hex[:8]}",
            **(
                {"BRM_CENTRAL_INGEST__BATCH_MAX_WAIT_S": str(self.batch_wait_s)}
                if self.batch_wait_s is not None
                else {}
            ),
        }

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def _start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with self.log(name).open("ab") as log:
            return subprocess.Popen(
                [str(BIN / "battery-central"), *args],
                env=self.env,
                cwd=self.workdir,
                stdout=subprocess.DEVNULL,  # the access log
                stderr=log,
            )

    def start(self) -> None:
        self.ingest = self._start("ingest", "ingest")
        self.serve = self._start(
            "serve", "serve", "--port", str(self.port), "--threads", str(self.threads)
        )
        try:
            wait_for_tcp(self.port, timeout=60)
        except TimeoutError as exc:
            raise RuntimeError(log_tail(self.log("serve"))) from exc

    def stop(self) -> None:
        for process in (self.ingest, self.serve):
            if process is not None:
                stop_process(process, timeout=30)

    def token(self) -> str:
        body = orjson.dumps({"username": "bench", "password": PASSWORD})
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/v1/auth/login",
            data=body,
            headers={"Content-Type": "application/json", "Connection": "close"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return orjson.loads(response.read())["access_token"]


@dataclass
class Plan:
    """Who subscribes to what, and so how many clients each reading must reach."""

    subscriptions: list[tuple[str, str]]  # (kind, id) of client i
    site_clients: dict[str, int]
    battery_clients: dict[str, int]

    @staticmethod
    def make(clients: int, fleet: Fleet) -> Plan:
        batteries = fleet.all_batteries
        subscriptions = [
            ("location", SITES[(i // 2) % len(SITES)])
            if i % 2 == 0
            else ("battery", batteries[(i // 2) % len(batteries)])
            for i in range(clients)
        ]
        site_clients = {s: 0 for s in SITES}
        battery_clients = {b: 0 for b in batteries}
        for kind, target in subscriptions:
            (site_clients if kind == "location" else battery_clients)[target] += 1
        return Plan(subscriptions, site_clients, battery_clients)

    def reach(self, fleet: Fleet, battery_id: str) -> int:
        return self.site_clients[fleet.site_of(battery_id)] + self.battery_clients[battery_id]


class Clients:
    """CLIENTS asyncio Socket.IO clients; every ``telemetry_update`` noted with its receipt."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, float]] = []
        self.clients: list[socketio.AsyncClient] = []

    def _on_telemetry(self, data: dict) -> None:
        self.received.append((data["battery_id"], data["timestamp"], time.perf_counter()))

    async def connect(self, url: str, token: str, plan: Plan) -> None:
        gate = asyncio.Semaphore(CONNECTING_AT_ONCE)

        async def one(kind: str, target: str) -> None:
            client = socketio.AsyncClient(reconnection=False)
            client.on("telemetry_update", self._on_telemetry)
            async with gate:
                await client.connect(
                    url, auth={"token": token}, transports=["websocket"], wait_timeout=60
                )
                # The handler's return is acknowledged after it has joined the room.
                await client.call(f"subscribe_{kind}", {f"{kind}_id": target}, timeout=60)
            self.clients.append(client)

        await asyncio.gather(*(one(kind, target) for kind, target in plan.subscriptions))

    async def close(self) -> None:
        await asyncio.gather(*(c.disconnect() for c in self.clients), return_exceptions=True)


class Source:
    """Readings at RATE: to the broker (ingest) or to the queue (``SocketIOLiveEvents``)."""

    def __init__(self, fleet: Fleet, processes: Processes, via_ingest: bool) -> None:
        self.fleet = fleet
        self.via_ingest = via_ingest
        self.sent: dict[Key, float] = {}
        self.rng = random.Random(7)
        self.turn = {site: 0 for site in SITES}
        self.seq = {site: 0 for site in SITES}
        self.emitter = message_queue_emitter(REDIS_URL, processes.channel)
        self.mqtt = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.mqtt.max_inflight_messages_set(1000)
        self.mqtt.connect("127.0.0.1", processes.broker.port)
        self.mqtt.loop_start()
        self.last_ms = 0

    def close(self) -> None:
        self.mqtt.loop_stop()
        self.mqtt.disconnect()

    def _now(self) -> datetime:
        """Now to the millisecond (what the event carries), never twice the same."""
        ms = max(int(time.time() * 1000), self.last_ms + 1)
        self.last_ms = ms
        return datetime.fromtimestamp(ms / 1000, UTC)

    def _reading(self, site: str) -> Reading:
        batteries = self.fleet.batteries[site]
        battery = batteries[self.turn[site] % len(batteries)]
        self.turn[site] += 1
        return Reading(
            battery_id=battery,
            ts=self._now(),
            voltage=round(self.rng.uniform(13.3, 13.6), 3),
            current=round(self.rng.uniform(-0.3, 0.3), 2),
            temperature=round(self.rng.uniform(24.0, 28.0), 1),
            internal_resistance=round(self.rng.uniform(0.0045, 0.0050), 6),
            soc_pct=round(self.rng.uniform(98.0, 100.0), 1),
            soh_pct=round(self.rng.uniform(95.0, 99.0), 1),
        )

    def send(self, site: str, count: int) -> list[Reading]:
        """``count`` readings of ``site``'s next batteries, in one message."""
        readings = [self._reading(site) for _ in range(count)]
        if self.via_ingest:
            first = self.seq[site]
            self.seq[site] += count
            batch = TelemetryBatch(
                site_id=site,
                agent_id=f"bench-{site}",
                seq_first=first,
                seq_last=first + count - 1,
                readings=readings,
            )
            payload = encode(batch)
            stamp = time.perf_counter()
            for r in readings:
                self.sent[(r.battery_id, to_rfc3339(r.ts))] = stamp
            self.mqtt.publish(TOPICS.telemetry(site), payload, qos=1)
        else:
            for r in readings:
                data = {
                    "voltage": r.voltage,
                    "current": r.current,
                    "temperature": r.temperature,
                    "internal_resistance": r.internal_resistance,
                    "soc_pct": r.soc_pct,
                    "soh_pct": r.soh_pct,
                }
                stamp = to_rfc3339(r.ts)
                self.sent[(r.battery_id, stamp)] = time.perf_counter()
                self.emitter.telemetry_update(site, r.battery_id, data, stamp)
        return readings

    async def run(self, rate: float, seconds: float) -> list[Reading]:
        """Readings at ``rate`` for ``seconds``, one message per site per tick."""
        sent: list[Reading] = []
        owed = 0.0
        started = time.perf_counter()
        tick = 0
        while time.perf_counter() - started < seconds:
            owed += rate * TICK_S
            for i, site in enumerate(SITES):
                share = int(owed / (len(SITES) - i))
                if share:
                    sent.extend(self.send(site, share))
                    owed -= share
            tick += 1
            await asyncio.sleep(max(0.0, started + tick * TICK_S - time.perf_counter()))
        return sent


@dataclass(frozen=True)
class Figures:
    mode: str  # "ingest", "emitter" (chosen) or "fallback" (ingest emitted nothing)
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    deliveries: int
    expected: int
    readings: int
    ingest_cpu_ms_per_1000: float | None
    server_cpu_pct: float
    bench_cpu_pct: float


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def probe(clients: Clients, source: Source, fleet: Fleet) -> bool:
    """Whether ingest emits: publish until a client hears of a reading, PROBE_S at most."""
    deadline = time.monotonic() + PROBE_S
    while time.monotonic() < deadline:
        source.send(SITES[0], 1)
        await asyncio.sleep(0.5)
        if clients.received:
            return True
    return False


async def measure(args: argparse.Namespace, run: int) -> Figures:
    with tempfile.TemporaryDirectory() as tmp, scratch_database() as url:
        fleet = prepare_database(url)
        plan = Plan.make(args.clients, fleet)
        broker = Broker(Path(tmp))
        processes = Processes(
            url, broker, Path(tmp), threads=args.clients, batch_wait_s=args.ingest_batch_wait
        )
        clients = Clients()
        source: Source | None = None
        try:
            processes.start()
            token = processes.token()
            started = time.perf_counter()
            await clients.connect(f"http://127.0.0.1:{processes.port}", token, plan)
            connect_s = time.perf_counter() - started
            via_ingest = args.mode != "emitter"
            source = Source(fleet, processes, via_ingest)
            if args.mode == "auto" and not await probe(clients, source, fleet):
                print(
                    f"  run {run}: ingest emitted no telemetry_update within {PROBE_S:.0f} s: "
                    "falling back to the emitter (NOT end to end)"
                )
                source.close()
                source = Source(fleet, processes, via_ingest=False)
            print(f"  run {run}: {len(clients.clients)} clients connected and subscribed in "
                  f"{connect_s:.1f} s")  # fmt: skip
            await source.run(args.rate, WARMUP_S)
            await asyncio.sleep(DRAIN_S)
            clients.received.clear()
            assert processes.ingest is not None and processes.serve is not None
            cpu0 = {
                "ingest": cpu_seconds(processes.ingest.pid),
                "serve": server_cpu(processes.serve.pid),
                "bench": time.process_time(),
            }
            window = time.perf_counter()
            readings = await source.run(args.rate, args.seconds)
            window = time.perf_counter() - window
            ingest_cpu = cpu_seconds(processes.ingest.pid) - cpu0["ingest"]
            serve_cpu = server_cpu(processes.serve.pid) - cpu0["serve"]
            bench_cpu = time.process_time() - cpu0["bench"]
            await asyncio.sleep(DRAIN_S)
        finally:
            await clients.close()
            if source is not None:
                source.close()
            processes.stop()
            broker.stop()
    keys = {(r.battery_id, to_rfc3339(r.ts)) for r in readings}
    latencies = sorted(
        (at - source.sent[(b, ts)]) * 1000 for b, ts, at in clients.received if (b, ts) in keys
    )
    if not latencies:
        raise RuntimeError(f"no telemetry_update received: {log_tail(processes.log('ingest'))}")
    expected = sum(plan.reach(fleet, r.battery_id) for r in readings)
    return Figures(
        mode="ingest" if source.via_ingest else args.mode.replace("auto", "fallback"),
        p50_ms=percentile(latencies, 0.50),
        p95_ms=percentile(latencies, 0.95),
        p99_ms=percentile(latencies, 0.99),
        max_ms=latencies[-1],
        deliveries=len(latencies),
        expected=expected,
        readings=len(readings),
        ingest_cpu_ms_per_1000=ingest_cpu * 1e6 / len(readings) if source.via_ingest else None,
        server_cpu_pct=100 * serve_cpu / window,
        bench_cpu_pct=100 * bench_cpu / window,
    )


def server_cpu(arbiter_pid: int) -> float:
    """CPU seconds of the server: its arbiter and its worker (the arbiter's children)."""
    children = Path(f"/proc/{arbiter_pid}/task/{arbiter_pid}/children").read_text().split()
    return sum(cpu_seconds(pid) for pid in [arbiter_pid, *map(int, children)])


def alert_evaluation_ms_per_1000() -> float:
    """The pure alert engine: each reading's conditions and each condition's decision."""
    settings = AlertSettings()
    thresholds = settings.for_model(None)
    rng = random.Random(3)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    context = BatteryContext(baseline_resistance_ohm=0.0045, rul_days=900.0, rul_as_of=t0)
    readings = [
        Reading(
            battery_id="BAT-DC-CNX-01-UPS-01-STR-01-001",
            ts=t0 + timedelta(seconds=60 * i),
            voltage=round(rng.uniform(13.0, 14.6), 3),
            current=round(rng.uniform(-0.5, 0.5), 2),
            temperature=round(rng.uniform(25.0, 50.0), 1),  # some beyond 45 °C: alerts change
            internal_resistance=round(rng.uniform(0.0045, 0.0065), 6),
            soc_pct=99.0,
            soh_pct=round(rng.uniform(80.0, 99.0), 1),
        )
        for i in range(ALERT_READINGS)
    ]
    states: dict[object, AlertState] = {}
    started = time.perf_counter()
    for reading in readings:
        for condition in evaluate(context, [reading], thresholds):
            kind = condition.alert_type
            states[kind] = decide(states.get(kind, AlertState()), condition, settings).state
    return (time.perf_counter() - started) * 1e6 / ALERT_READINGS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--rate", type=float, default=RATE, help="readings/s (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=MEASURE_S, help="measured window")
    parser.add_argument(
        "--mode",
        choices=("auto", "ingest", "emitter"),
        default="auto",
        help="ingest: end to end; emitter: from SocketIOLiveEvents; auto: ingest if it emits",
    )
    parser.add_argument(
        "--ingest-batch-wait",
        type=float,
        help="ingest.batch_max_wait_s for this bench (default: ingest's own, 0.02 s)",
    )
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import aiohttp  # noqa: F401  (python-socketio's asyncio client needs it)
    if "aiohttp" not in sys.modules:
        sys.exit("bench_live needs aiohttp (python-socketio's asyncio client): pip install aiohttp")

    batch_wait = (
        ""
        if args.ingest_batch_wait is None
        else f", ingest batch wait {args.ingest_batch_wait:g} s"
    )
    print(
        f"live feed: {args.clients} Socket.IO clients (websocket; half on one of {len(SITES)} "
        f"sites, half on one battery each), {args.rate:g} readings/s for {args.seconds:g} s "
        f"per run{batch_wait}; serve + ingest + Redis queue + Mosquitto + PostgreSQL on this "
        f"machine ({os.cpu_count()} CPUs)"
    )
    runs = [asyncio.run(measure(args, run)) for run in range(1, args.runs + 1)]
    for run, f in enumerate(runs, 1):
        print(
            f"  run {run} ({f.mode}): p50 {f.p50_ms:.1f} ms, p95 {f.p95_ms:.1f} ms, "
            f"p99 {f.p99_ms:.1f} ms, max {f.max_ms:.1f} ms; {f.deliveries:,}/{f.expected:,} "
            f"deliveries of {f.readings:,} readings"
        )
    modes = {f.mode for f in runs}
    emitter = "SocketIOLiveEvents.telemetry_update in this process -> Redis -> serve -> client"
    what = {
        "ingest": "publish to Mosquitto -> ingest (batch, commit, alerts) -> Redis -> serve -> "
        "client (end to end)",
        "emitter": f"{emitter} (--mode emitter: without broker, ingest and store)",
        "fallback": f"{emitter} (NOT end to end: ingest emitted nothing)",
    }.get(modes.pop() if len(modes) == 1 else "", "MIXED modes across runs")

    def med(name: str) -> float:
        return statistics.median(getattr(f, name) for f in runs)

    print(f"medians of {len(runs)} runs; latency measured: {what}")
    print(f"  telemetry_update p50         {med('p50_ms'):8.1f} ms")
    print(f"  telemetry_update p95         {med('p95_ms'):8.1f} ms   (reach: < 250 ms)")
    print(f"  telemetry_update p99         {med('p99_ms'):8.1f} ms")
    print(f"  deliveries / expected        {med('deliveries') / med('expected'):8.4f}")
    print(f"  server CPU (1 worker)        {med('server_cpu_pct'):8.0f} %")
    print(f"  bench clients' CPU           {med('bench_cpu_pct'):8.0f} %")
    if all(f.mode == "ingest" for f in runs):
        ingest_ms = statistics.median(f.ingest_cpu_ms_per_1000 or 0.0 for f in runs)
        print(f"  ingest CPU per 1,000 readings {ingest_ms:7.1f} ms   (all of it, at this rate)")
    print(
        f"alert evaluation per 1,000 readings (pure rules + lifecycle, one thread): "
        f"{alert_evaluation_ms_per_1000():.2f} ms"
    )


if __name__ == "__main__":
    main()
