"""Central ingest throughput: readings per second from a broker backlog to committed rows, against
the raw COPY rate of the same rows into a fresh ``telemetry`` table on the same server.

Run on demand: `make bench` (or `.venv/bin/python -m tests.perf.bench_ingest`). Needs
Mosquitto and the local PostgreSQL (``BRM_TEST_PG_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``: the database it connects through to create and drop
scratch databases). Prints medians of RUNS runs.

Ingest is timed from a backlog, as after an outage: the messages are published while
``battery-central ingest`` is stopped, so they queue in its persistent session. Two clocks:
from the first commit to the last (the rate from broker to committed rows, compared with COPY
against the reach), and from starting the process (its start-up of about 0.7 s included: the
interpreter, imports, the schema check, connecting) until the last row is committed.

COPY is timed twice: the rows as delivered (each message cycles through its site's batteries),
which the reach is judged against, and the same rows battery by battery, which the server
COPYs much faster (one battery's rows land on the same pages of the key). Ingest COPYs rows as
delivered: grouping them per battery cost its decoding thread more than it saved the server.

Progress is polled on ``agent_sequences``, which each ingest transaction updates with its
telemetry, so polling costs the server nothing like a ``count(*)`` of the growing table; the
count is checked once at the end.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg2
from psycopg2 import sql

from central import migrations
from central.ingest.store import COLUMNS, COPY_BUFFER_BYTES
from common import ids
from common.schemas import AgentStatus, Reading, State, TelemetryBatch, encode
from common.topics import Topics
from common.units import MEASUREMENTS
from tests.conftest import PG_SERVER_URL
from tests.support import free_tcp_port, log_tail, stop_process, wait_for_tcp

RUNS = 3
READINGS = 500_000
PER_MESSAGE = 500
SITES = ("DC-CNX-01", "DC-BKK-01", "DC-HDY-01", "DC-KKC-01")
TIMEOUT_S = 600.0
POLL_S = 0.05
BIN = Path(sys.executable).parent
TOPICS = Topics()
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def site_batteries(site: str) -> list[str]:
    """The 216 blocks of a demo site: 2 UPS x 3 strings x 36 blocks."""
    return [
        ids.battery_id(site, ups, string, position)
        for ups in (1, 2)
        for string in (1, 2, 3)
        for position in range(1, 37)
    ]


def copy_line(reading: Reading) -> str:
    """One row in COPY's text format, in ``COLUMNS`` order."""
    values = [getattr(reading, name) for name in MEASUREMENTS]
    text = ["\\N" if v is None else repr(v) for v in values]
    return "\t".join([reading.battery_id, reading.ts.isoformat(), *text]) + "\n"


def site_backlog(site: str, start: datetime, rng: random.Random) -> list[TelemetryBatch]:
    """One agent's share of the backlog: every block each minute, in messages of PER_MESSAGE."""
    batteries = site_batteries(site)
    readings = [
        Reading(
            battery_id=batteries[i % len(batteries)],
            ts=start + timedelta(minutes=i // len(batteries)),
            voltage=round(rng.uniform(13.2, 13.7), 3),
            current=round(rng.uniform(-0.5, 0.5), 2),
            temperature=round(rng.uniform(22.0, 30.0), 1),
            internal_resistance=round(rng.uniform(0.004, 0.006), 6),
            soc_pct=round(rng.uniform(95.0, 100.0), 1),
            soh_pct=None if i % 997 == 0 else round(rng.uniform(85.0, 100.0), 1),
        )
        for i in range(READINGS // len(SITES))
    ]
    chunks = [readings[i : i + PER_MESSAGE] for i in range(0, len(readings), PER_MESSAGE)]
    return [
        TelemetryBatch(
            site_id=site,
            agent_id=f"bench-{site}",
            seq_first=k * PER_MESSAGE,
            seq_last=k * PER_MESSAGE + len(chunk) - 1,
            readings=chunk,
        )
        for k, chunk in enumerate(chunks)
    ]


@dataclass(frozen=True)
class Backlog:
    messages: list[tuple[str, bytes]]  # (topic, payload), the sites taking turns
    rows: str  # the same readings in COPY text, as delivered
    rows_by_battery: str  # battery by battery, as delivered within each
    last_seq: dict[str, int]  # each agent's last sequence number


def make_backlog() -> Backlog:
    rng = random.Random(1)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)
    per_site = [site_backlog(site, start, rng) for site in SITES]
    interleaved = [batch for turn in zip(*per_site, strict=True) for batch in turn]
    readings = [r for b in interleaved for r in b.readings]
    by_battery: dict[str, list[Reading]] = {}
    for reading in readings:
        by_battery.setdefault(reading.battery_id, []).append(reading)
    return Backlog(
        messages=[(TOPICS.telemetry(b.site_id), encode(b)) for b in interleaved],
        rows="".join(map(copy_line, readings)),
        rows_by_battery="".join(copy_line(r) for group in by_battery.values() for r in group),
        last_seq={b[-1].agent_id: b[-1].seq_last for b in per_site},
    )


@dataclass(frozen=True)
class Figures:
    seconds: float  # from process start to the last commit
    first_commit_s: float  # from process start
    steady_rate: float  # readings/s from the first commit to the last
    cpu_s: float  # of the ingest process, all threads


class Broker:
    """A private Mosquitto without persistence (its disk writes are not ingest's cost) that
    queues a whole backlog for an offline persistent session."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_tcp_port()
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "max_queued_messages 0\n"
            "user root\n"
            f"log_dest file {workdir}/mosquitto.log\n"
        )
        with (workdir / "mosquitto.log").open("ab") as log:  # its start-up warnings too
            self.process = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=log)
        try:
            wait_for_tcp(self.port)
        except TimeoutError as exc:
            raise RuntimeError(log_tail(workdir / "mosquitto.log")) from exc

    def publish(self, messages: list[tuple[str, bytes]]) -> None:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.max_inflight_messages_set(100)
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        try:
            sent = [client.publish(topic, payload, qos=1) for topic, payload in messages]
            for info in sent:
                info.wait_for_publish(60)
        finally:
            client.loop_stop()
            client.disconnect()

    def stop(self) -> None:
        stop_process(self.process)


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    """A new database on the test server, migrated, dropped afterwards."""
    name = f"brm_bench_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(PG_SERVER_URL)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = f"{PG_SERVER_URL.rpartition('/')[0]}/{name}"
        migrations.upgrade(url)
        yield url
    finally:
        with admin.cursor() as cursor:
            cursor.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        admin.close()


class Ingest:
    """``battery-central ingest`` on one database and broker; same client id for each start."""

    def __init__(self, url: str, broker: Broker, workdir: Path) -> None:
        self.env = {
            **os.environ,
            "BRM_CENTRAL_DATABASE_URL": url,
            "BRM_CENTRAL_MQTT__HOST": "127.0.0.1",
            "BRM_CENTRAL_MQTT__PORT": str(broker.port),
            "BRM_CENTRAL_MQTT__CLIENT_ID": f"bench-{uuid.uuid4().hex[:8]}",
        }
        self.log = workdir / "ingest.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [str(BIN / "battery-central"), "ingest"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def stop(self) -> None:
        """SIGTERM: ingest finishes the batch in hand and exits."""
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)
            self.process = None


@contextlib.contextmanager
def polling(url: str) -> Iterator[psycopg2.extensions.cursor]:
    """One connection for every poll; autocommit gives each query a fresh snapshot."""
    with contextlib.closing(psycopg2.connect(url)) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            yield cursor


def scalar(cursor: psycopg2.extensions.cursor, statement: str) -> int:
    cursor.execute(statement)
    return cursor.fetchone()[0]


def progress(cursor: psycopg2.extensions.cursor) -> dict[str, int]:
    """Each agent's highest sequence number committed so far."""
    cursor.execute("SELECT agent_id, highest_seq FROM agent_sequences")
    return dict(cursor.fetchall())


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout:.0f} s")
        time.sleep(POLL_S)


def prime_session(ingest: Ingest, broker: Broker, url: str) -> None:
    """Start ingest once so the broker holds its subscriptions, then stop it.

    A state message is repeated until it is stored: its subscription came in the same SUBSCRIBE
    as the telemetry one."""
    ingest.start()
    state = State(site_id=SITES[0], agent_id="probe", status=AgentStatus.ONLINE)
    probe = [(TOPICS.state(SITES[0]), encode(state))]
    with polling(url) as cursor:

        def stored() -> bool:
            broker.publish(probe)
            return scalar(cursor, "SELECT count(*) FROM site_states") > 0

        wait_until(stored, "ingest never subscribed", timeout=60)
    ingest.stop()


def measure_ingest(messages: list[tuple[str, bytes]], last_seq: dict[str, int]) -> Figures:
    """One run on a fresh database and a fresh broker (an old run's offline session would take
    its share of the shared subscription's messages)."""
    with tempfile.TemporaryDirectory() as tmp, scratch_database() as url:
        broker = Broker(Path(tmp))
        ingest = Ingest(url, broker, Path(tmp))
        try:
            prime_session(ingest, broker, url)
            broker.publish(messages)
            with polling(url) as cursor:
                started = time.perf_counter()
                ingest.start()
                wait_until(lambda: bool(progress(cursor)), "nothing stored")
                first = time.perf_counter()
                early = sum(seq + 1 for seq in progress(cursor).values())
                try:
                    wait_until(lambda: progress(cursor) == last_seq, "backlog not stored")
                except TimeoutError as exc:
                    raise RuntimeError(
                        f"{exc}: {progress(cursor)}\n{log_tail(ingest.log)}"
                    ) from exc
                done = time.perf_counter()
                assert ingest.process is not None
                cpu = cpu_seconds(ingest.process.pid)
                count = scalar(cursor, "SELECT count(*) FROM telemetry")
        finally:
            ingest.stop()
            broker.stop()
        if count != READINGS:
            raise RuntimeError(f"{count} rows stored, expected {READINGS}: {log_tail(ingest.log)}")
    return Figures(done - started, first - started, (READINGS - early) / (done - first), cpu)


def measure_copy(rows: str) -> float:
    """Seconds to COPY ``rows`` from memory into a freshly migrated ``telemetry``, committed."""
    with scratch_database() as url, contextlib.closing(psycopg2.connect(url)) as connection:
        buffer = io.StringIO(rows)
        started = time.perf_counter()
        with connection.cursor() as cursor:
            copy = f"COPY telemetry ({', '.join(COLUMNS)}) FROM STDIN"
            cursor.copy_expert(copy, buffer, COPY_BUFFER_BYTES)
        connection.commit()
        return time.perf_counter() - started


def main() -> None:
    backlog = make_backlog()
    ingests = [measure_ingest(backlog.messages, backlog.last_seq) for _ in range(RUNS)]
    copies = [measure_copy(backlog.rows) for _ in range(RUNS)]
    grouped_copies = [measure_copy(backlog.rows_by_battery) for _ in range(RUNS)]
    ingest_rate = statistics.median(READINGS / i.seconds for i in ingests)
    first_commit = statistics.median(i.first_commit_s for i in ingests)
    steady_rate = statistics.median(i.steady_rate for i in ingests)
    cpu_ms = statistics.median(i.cpu_s for i in ingests) * 1e6 / READINGS
    copy_rate = statistics.median(READINGS / c for c in copies)
    grouped_rate = statistics.median(READINGS / c for c in grouped_copies)
    print(
        f"medians of {RUNS} runs: {READINGS:,} readings in messages of {PER_MESSAGE}, "
        f"{len(SITES)} sites (one agent each), PostgreSQL at {PG_SERVER_URL.split('@')[-1]}"
    )
    print("ingest of a backlog queued while it was stopped:")
    print(f"  readings/s, first to last commit     {steady_rate:10,.0f}   (target: >= 50,000)")
    print(f"  readings/s, process start to last    {ingest_rate:10,.0f}")
    print(f"  process start to first commit        {first_commit:10.2f} s")
    print(f"  ingest CPU per 1,000 (all of it)     {cpu_ms:10.1f} ms")
    print("raw COPY of the same rows from memory into a fresh telemetry table, committed:")
    print(f"  readings/s, rows as delivered        {copy_rate:10,.0f}")
    print(f"  readings/s, battery by battery       {grouped_rate:10,.0f}")
    delivered, grouped = steady_rate / copy_rate, steady_rate / grouped_rate
    print("ingest / COPY, first to last commit:")
    print(f"  against rows as delivered            {delivered:10.2f}   (target: >= 0.50)")
    print(f"  against battery by battery           {grouped:10.2f}")
    print(f"ingest / COPY as delivered, from process start {ingest_rate / copy_rate:6.2f}")


if __name__ == "__main__":
    main()
