"""The publisher against a real Mosquitto: exactly what was taken arrives, through outages and
crashes; retained birth and state; the backlog drains while live readings keep flowing."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from common.schemas import (
    BatteryInfo,
    Birth,
    Event,
    EventKind,
    Events,
    Reading,
    State,
    StringInfo,
    TelemetryBatch,
    UpsInfo,
    decode,
)
from common.topics import Topics
from edge_agent.config import MqttSettings, PublishSettings, TlsSettings
from edge_agent.metrics import AgentMetrics
from edge_agent.mqtt_link import PublisherError
from edge_agent.outbox import Outbox
from edge_agent.publisher import Pacer, Publisher
from tests.support import free_tcp_port, stop_process, wait_for_tcp

pytestmark = pytest.mark.integration

SITE = "DC-CNX-01"
AGENT = "agent-pub"
T0 = datetime(2025, 11, 30, 8, 0, tzinfo=UTC)
BATTERY = f"BAT-{SITE}-UPS-01-STR-01-001"


def readings(count: int, minute: int = 0) -> list[Reading]:
    """``count`` readings of 216 distinct blocks, one minute after another."""
    return [
        Reading(
            battery_id=f"BAT-{SITE}-UPS-0{i % 216 // 108 + 1}-STR-0{i % 108 // 36 + 1}"
            f"-{i % 36 + 1:03d}",
            ts=T0 + timedelta(minutes=minute + i // 216),
            voltage=13.5,
            current=-0.5,
            temperature=25.0,
            internal_resistance=0.0045,
            soc_pct=99.0,
            soh_pct=97.0,
        )
        for i in range(count)
    ]


def birth() -> Birth:
    info = BatteryInfo(
        battery_id=BATTERY,
        serial_number="SN1",
        manufacturer="CSB",
        model="HX12-120",
        nominal_voltage_v=12,
        nominal_capacity_ah=120,
        installed_date=date(2023, 1, 1),
        warranty_months=36,
        position=1,
    )
    string = StringInfo(string_id=f"STR-{SITE}-UPS-01-01", batteries=[info])
    ups = UpsInfo(ups_id=f"{SITE}-UPS-01", strings=[string])
    return Birth(site_id=SITE, agent_id=AGENT, ts=T0, ups=[ups])


class Subscriber:
    """Everything under a prefix, on a persistent session that survives broker restarts."""

    def __init__(self, host: str, port: int, prefix: str) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"sub-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_connect = lambda c, *_: c.subscribe(f"{prefix}/#", qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        self.client.connect(host, port, clean_start=False, properties=props)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, _client: mqtt.Client, _userdata: object, message) -> None:
        with self._lock:
            self.messages.append(message)

    def of(self, kind: str) -> list[mqtt.MQTTMessage]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith("/" + kind)]

    def batches(self) -> list[TelemetryBatch]:
        return [decode(TelemetryBatch, m.payload) for m in self.of("telemetry")]

    def seqs(self) -> Counter[int]:
        return Counter(n for b in self.batches() for n in range(b.seq_first, b.seq_last + 1))

    def states(self) -> list[State]:
        return [decode(State, m.payload) for m in self.of("state")]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout} s")
        await asyncio.sleep(0.05)


def online_state() -> State:
    return State(site_id=SITE, agent_id=AGENT, status="online", ts=datetime.now(UTC))


def new_publisher(
    outbox: Outbox, port: int, prefix: str, metrics: AgentMetrics | None = None, **publish
) -> Publisher:
    settings = MqttSettings(
        host="127.0.0.1", port=port, reconnect_min_s=0.1, reconnect_max_s=0.5, keepalive_s=5
    )
    return Publisher(
        settings,
        PublishSettings(**{"state_interval_s": 1.0, **publish}),
        Topics(prefix),
        site_id=SITE,
        client_id=f"agent-{uuid.uuid4().hex[:8]}",
        outbox=outbox,
        metrics=metrics or AgentMetrics(),
        birth=birth,
        state=online_state,
    )


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}/brm"


@pytest.fixture
def subscriber(mqtt_broker, prefix):
    sub = Subscriber(mqtt_broker.host, mqtt_broker.port, prefix)
    yield sub
    sub.close()


def test_everything_appended_arrives_once_in_seq_order_per_lane(
    mqtt_broker, prefix, subscriber, tmp_path
):
    taken = readings(5000)
    metrics = AgentMetrics()

    async def scenario() -> int:
        outbox = await Outbox.open(tmp_path / "outbox.sqlite3", SITE, AGENT, 100_000)
        await outbox.append(taken)  # the backlog
        boundary = outbox.last_seq()
        publisher = new_publisher(outbox, mqtt_broker.port, prefix, metrics, batch_readings=200)
        running = asyncio.create_task(publisher.run())
        await until(lambda: publisher.connected, 10, "connection")  # the backlog is fixed now
        for minute in range(100, 120):  # live readings while the backlog drains
            live = readings(36, minute)
            taken.extend(live)
            await outbox.append(live)
            publisher.notify()
            await asyncio.sleep(0.02)
        await until(lambda: sum(subscriber.seqs().values()) >= len(taken), 30, "all readings")
        await until(lambda: outbox.depth() == 0, 10, "empty outbox")
        assert publisher.connected
        await publisher.stop()
        await running
        await outbox.close()
        return boundary

    boundary = asyncio.run(scenario())
    seqs = subscriber.seqs()
    assert sorted(seqs) == list(range(1, len(taken) + 1))
    assert set(seqs.values()) == {1}
    batches = subscriber.batches()
    for lane in (
        [b for b in batches if b.seq_last <= boundary],
        [b for b in batches if b.seq_first > boundary],
    ):
        firsts = [b.seq_first for b in lane]
        assert firsts == sorted(firsts)
    arrived = {
        n: r
        for b in batches
        for n, r in zip(range(b.seq_first, b.seq_last + 1), b.readings, strict=True)
    }
    assert [arrived[n] for n in range(1, len(taken) + 1)] == taken
    assert metrics.published_readings._value.get() == len(taken)
    assert metrics.mqtt_connected._value.get() == 0


def test_retained_birth_and_online_state_on_connect_offline_on_clean_stop(
    mqtt_broker, prefix, subscriber, tmp_path
):
    async def scenario() -> None:
        outbox = await Outbox.open(tmp_path / "outbox.sqlite3", SITE, AGENT, 10_000)
        publisher = new_publisher(outbox, mqtt_broker.port, prefix)
        running = asyncio.create_task(publisher.run())
        await until(subscriber.states, 10, "online state")
        late = await asyncio.to_thread(Subscriber, mqtt_broker.host, mqtt_broker.port, prefix)
        try:
            await until(lambda: late.of("birth") and late.of("state"), 10, "retained messages")
            assert all(m.retain for m in late.messages)
            assert decode(Birth, late.of("birth")[0].payload) == birth()
            assert late.states()[0].status == "online"
        finally:
            late.close()
        publisher.publish_birth()
        await until(lambda: len(subscriber.of("birth")) == 2, 10, "birth again")
        await until(lambda: len(subscriber.of("state")) >= 2, 10, "periodic state")
        await publisher.stop()
        await running
        await outbox.close()

    asyncio.run(scenario())
    time.sleep(0.5)  # a will, if wrongly published, would come now
    states = subscriber.states()
    assert states[-1].status == "offline"
    assert states[-1].ts is not None  # the clean stop's own state, not the bare will
    assert [s.status for s in states].count("offline") == 1


def test_broker_outage_loses_nothing_and_duplicates_nothing_taken_meanwhile(
    mqtt_broker, prefix, subscriber, tmp_path
):
    async def scenario() -> tuple[int, int, int]:
        outbox = await Outbox.open(tmp_path / "outbox.sqlite3", SITE, AGENT, 100_000)
        publisher = new_publisher(outbox, mqtt_broker.port, prefix, batch_readings=100)
        running = asyncio.create_task(publisher.run())
        taking = True

        async def take() -> None:
            minute = 0
            while taking:
                await outbox.append(readings(216, minute))
                publisher.notify()
                minute += 1
                await asyncio.sleep(0.05)

        poller = asyncio.create_task(take())
        await asyncio.sleep(1.0)
        await asyncio.to_thread(mqtt_broker.stop)
        try:
            down_from = outbox.last_seq()
            await asyncio.sleep(3.0)
            assert not publisher.connected
            down_to = outbox.last_seq()
        finally:
            await asyncio.to_thread(mqtt_broker.start)
        await asyncio.sleep(1.0)
        taking = False
        await poller
        last = outbox.last_seq()
        await until(lambda: len(subscriber.seqs()) >= last, 30, "every reading")
        await until(lambda: outbox.depth() == 0, 10, "empty outbox")
        await publisher.stop()
        await running
        await outbox.close()
        return down_from, down_to, last

    down_from, down_to, last = asyncio.run(scenario())
    seqs = subscriber.seqs()
    assert sorted(seqs) == list(range(1, last + 1))
    assert down_to - down_from > 216 * 20
    assert all(seqs[n] == 1 for n in range(down_from + 1, down_to + 1))
    duplicated = sum(count - 1 for count in seqs.values())
    assert duplicated <= 20 * 100  # at most what was in flight when the broker went away


CHILD_PUBLISHES = """
import asyncio, sys
from edge_agent.outbox import Outbox
from edge_agent.metrics import AgentMetrics
from tests.edge_agent.test_publisher import AGENT, SITE, new_publisher, readings

async def main(path, port, prefix):
    outbox = await Outbox.open(path, SITE, AGENT, 1_000_000)
    publisher = new_publisher(outbox, int(port), prefix, batch_readings=100)
    asyncio.create_task(publisher.run())
    for minute in range(10_000):
        first, last = await outbox.append(readings(216, minute))
        publisher.notify()
        print(first, last, int(publisher.connected), flush=True)
        await asyncio.sleep(0.02)

asyncio.run(main(*sys.argv[1:]))
"""


def test_sigkill_sets_the_will_and_a_restart_sends_every_committed_reading(
    mqtt_broker, prefix, subscriber, tmp_path
):
    path = tmp_path / "outbox.sqlite3"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_PUBLISHES, str(path), str(mqtt_broker.port), prefix],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        lines = [child.stdout.readline().split() for _ in range(100)]
        assert lines[-1][2] == "1", "the child never connected"
        assert subscriber.of("telemetry")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
    committed = int(lines[-1][1])

    async def restart() -> int:
        await until(lambda: subscriber.states()[-1].status == "offline", 10, "the will")
        will = subscriber.states()[-1]
        assert will.ts is None and will.buffer_depth is None  # the bare will, not a clean stop
        outbox = await Outbox.open(path, SITE, AGENT, 1_000_000)
        last = outbox.last_seq()
        assert last >= committed
        publisher = new_publisher(outbox, mqtt_broker.port, prefix, batch_readings=100)
        running = asyncio.create_task(publisher.run())
        await until(lambda: len(subscriber.seqs()) >= last, 30, "every committed reading")
        await until(lambda: outbox.depth() == 0, 10, "empty outbox")
        assert subscriber.states()[-1].status == "online"
        await publisher.stop()
        await running
        await outbox.close()
        return last

    last = asyncio.run(restart())
    seqs = subscriber.seqs()
    assert sorted(seqs) == list(range(1, last + 1))
    by_seq: dict[int, set[str]] = {}
    for b in subscriber.batches():
        for n, r in zip(range(b.seq_first, b.seq_last + 1), b.readings, strict=True):
            by_seq.setdefault(n, set()).add(f"{r.battery_id} {r.ts}")
    assert all(len(keys) == 1 for keys in by_seq.values())  # a resend carries the same keys
    assert sum(count - 1 for count in seqs.values()) <= 20 * 100


def test_backlog_drains_paced_while_live_readings_go_first(
    mqtt_broker, prefix, subscriber, tmp_path
):
    backlog = 40_000

    async def scenario() -> tuple[int, float]:
        outbox = await Outbox.open(tmp_path / "outbox.sqlite3", SITE, AGENT, 100_000)
        for minute in range(0, backlog // 216 + 1):
            await outbox.append(readings(216, minute))
        boundary = outbox.last_seq()
        publisher = new_publisher(outbox, mqtt_broker.port, prefix, backlog_readings_per_s=10_000)
        started = time.monotonic()
        running = asyncio.create_task(publisher.run())
        await until(lambda: subscriber.of("telemetry"), 10, "the backlog starting")
        await outbox.append(readings(216, 10_000))
        publisher.notify()
        await until(lambda: outbox.depth() == 0, 30, "empty outbox")
        elapsed = time.monotonic() - started
        await publisher.stop()
        await running
        await outbox.close()
        return boundary, elapsed

    boundary, elapsed = asyncio.run(scenario())
    batches = subscriber.batches()
    live_at = next(i for i, b in enumerate(batches) if b.seq_first > boundary)
    last_backlog_at = max(i for i, b in enumerate(batches) if b.seq_last <= boundary)
    assert live_at < last_backlog_at / 2  # promptly, not after the backlog
    assert elapsed > (boundary - 500) / 10_000 * 0.9  # paced at backlog_readings_per_s


def test_events_are_published_and_deleted_on_puback(mqtt_broker, prefix, subscriber, tmp_path):
    event = Event(
        ts=T0, kind=EventKind.COMMUNICATION_LOST, device_id=f"{SITE}-UPS-02", message="timeout"
    )

    async def scenario() -> None:
        outbox = await Outbox.open(tmp_path / "outbox.sqlite3", SITE, AGENT, 10_000)
        await outbox.append_events([event, event])
        publisher = new_publisher(outbox, mqtt_broker.port, prefix)
        running = asyncio.create_task(publisher.run())
        await until(lambda: subscriber.of("events"), 10, "events")
        await outbox.append_events([event])
        publisher.notify()
        await until(lambda: len(subscriber.of("events")) == 2, 10, "the second events message")
        await asyncio.sleep(0.2)
        assert await outbox.event_batch(10) is None
        await publisher.stop()
        await running
        await outbox.close()

    asyncio.run(scenario())
    counts = [len(decode(Events, m.payload).events) for m in subscriber.of("events")]
    assert counts == [2, 1]


@pytest.fixture
def acl_broker(tmp_path):
    """A private Mosquitto whose ACL (reloaded on SIGHUP) can deny the telemetry topic."""
    port = free_tcp_port()
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite denied/#\n")
    conf = tmp_path / "acl.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nacl_file {acl}\nuser root\n"
        f"log_dest file {tmp_path}/acl-broker.log\n"
    )
    process = subprocess.Popen(["mosquitto", "-c", str(conf)])
    try:
        wait_for_tcp(port)
        yield port, acl, process
    finally:
        stop_process(process)


def test_a_refused_batch_stays_in_the_outbox_and_is_sent_again(acl_broker, tmp_path):
    port, acl, broker = acl_broker
    prefix = "allowed/brm"
    subscriber = Subscriber("127.0.0.1", port, prefix)

    async def scenario() -> None:
        outbox = await Outbox.open(tmp_path / "outbox.sqlite3", SITE, AGENT, 10_000)
        await outbox.append(readings(300))
        metrics = AgentMetrics()
        publisher = new_publisher(outbox, port, prefix, metrics)
        running = asyncio.create_task(publisher.run())
        await until(lambda: publisher.connected, 10, "connection")
        await asyncio.sleep(1.0)  # every PUBACK says "Not authorized"
        assert outbox.depth() == 300
        assert metrics.published_readings._value.get() == 0
        acl.write_text("topic readwrite allowed/#\n")
        broker.send_signal(signal.SIGHUP)
        await until(lambda: outbox.depth() == 0, 10, "the retry")
        await publisher.stop()
        await running
        await outbox.close()

    try:
        asyncio.run(scenario())
        assert sorted(subscriber.seqs()) == list(range(1, 301))
    finally:
        subscriber.close()


def test_unusable_tls_settings_are_a_clear_error(tmp_path):
    async def scenario() -> None:
        outbox = await Outbox.open(tmp_path / "outbox.sqlite3", SITE, AGENT, 10_000)
        settings = MqttSettings(tls=TlsSettings(enabled=True, ca_file=tmp_path / "missing.pem"))
        publisher = Publisher(
            settings,
            PublishSettings(),
            Topics(),
            site_id=SITE,
            client_id="agent",
            outbox=outbox,
            metrics=AgentMetrics(),
            birth=birth,
            state=online_state,
        )
        try:
            with pytest.raises(PublisherError, match=r"mqtt\.tls"):
                await publisher.run()
        finally:
            await outbox.close()

    asyncio.run(scenario())


def test_pacer_holds_the_average_rate_whatever_the_batch_sizes():
    pacer = Pacer(rate=1000, burst=500, now=0.0)
    assert pacer.delay(0.0) == 0.0
    pacer.spend(500, 0.0)  # the burst allowance
    assert pacer.delay(0.0) == 0.0
    pacer.spend(300, 0.0)
    assert pacer.delay(0.0) == pytest.approx(0.3)
    assert pacer.delay(0.3) == 0.0
    sent, now = 0, 0.3
    while now < 10.3:
        now += pacer.delay(now)
        pacer.spend(137, now)
        sent += 137
    assert sent == pytest.approx(10_000, abs=137 * 2)
    pacer.delay(1000.0)  # a long idle earns no more than one burst
    pacer.spend(500, 1000.0)
    pacer.spend(1, 1000.0)
    assert pacer.delay(1000.0) > 0


def test_clean_stop_before_any_connection_returns(tmp_path):
    async def scenario() -> None:
        outbox = await Outbox.open(tmp_path / "outbox.sqlite3", SITE, AGENT, 10_000)
        publisher = new_publisher(outbox, free_tcp_port(), "nobody/brm")  # nothing listens
        running = asyncio.create_task(publisher.run())
        await asyncio.sleep(0.5)
        assert not publisher.connected
        await asyncio.wait_for(publisher.stop(), 10)
        await running
        await outbox.close()

    asyncio.run(scenario())
