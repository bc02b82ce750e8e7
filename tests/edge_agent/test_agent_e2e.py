"""The agent's promise, checked end to end: real ``battery-agent`` processes, the simulated site
(Modbus and SNMP), a private Mosquitto, with ``mosquitto_sub`` and a paho subscriber as referees."""

from __future__ import annotations

import itertools
import statistics
import subprocess
import time
from collections import Counter

import pytest

from common.schemas import Birth, Events, State, TelemetryBatch, decode
from tests.edge_agent.conftest import agent_settings
from tests.mqtt_capture import Capture
from tests.support import READING_TOLERANCE

pytestmark = pytest.mark.integration

SITE = "DC-CNX-01"
DROPOUT = "BAT-DC-CNX-01-UPS-01-STR-02-005"
GARBAGE = "BAT-DC-CNX-01-UPS-01-STR-03-007"
SNMP_DROPOUT = "BAT-DC-CNX-01-UPS-02-STR-01-004"


def _readings(messages):
    """(seq, reading) of every telemetry reading received, in arrival order."""
    out = []
    for message in messages:
        batch = decode(TelemetryBatch, message.payload)
        out.extend(zip(range(batch.seq_first, batch.seq_last + 1), batch.readings, strict=True))
    return out


def _freeze_and_drain(site, agent, timeout: float = 60.0) -> dict[str, float]:
    """Silence every device (no new readings), then wait until the outbox is empty."""
    site.inject("no_response", SITE)
    time.sleep(1.5)  # let polls already under way finish
    deadline = time.monotonic() + timeout
    while (metrics := agent.metrics())["brm_agent_outbox_readings"] > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"outbox not drained: {metrics}\n{agent.log()}")
        time.sleep(0.2)
    return metrics


def _index(snapshot, battery_id):
    for k, row in enumerate(snapshot["battery_ids"]):
        if battery_id in row:
            return k, row.index(battery_id)
    raise KeyError(battery_id)


def test_mosquitto_sub_sees_what_the_twin_reads(
    simulated_site, mqtt_broker, agent_factory, tmp_path
):
    prefix = "e2e-live/brm/v1"
    agent = agent_factory(agent_settings(simulated_site, mqtt_broker, tmp_path, prefix))
    # Line-buffered and left to exit on its own -W timer: a pipe is block-buffered, and a
    # terminated mosquitto_sub would lose the tail of what it received.
    sub = subprocess.Popen(
        [
            "stdbuf",
            "-oL",
            "mosquitto_sub",
            "-h",
            mqtt_broker.host,
            "-p",
            str(mqtt_broker.port),
            "-q",
            "1",
            "-t",
            f"{prefix}/{SITE}/#",
            "-v",
            "-W",
            "16",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    agent.start()
    time.sleep(5)
    simulated_site.inject("sensor_dropout", DROPOUT)
    simulated_site.inject("sensor_dropout", GARBAGE, mode="garbage")
    simulated_site.inject("sensor_dropout", SNMP_DROPOUT)
    time.sleep(4)
    snapshot = simulated_site.snapshot()
    assert agent.stop() == 0
    output, _ = sub.communicate(timeout=30)
    lines = [line.split(" ", 1) for line in output.splitlines() if " " in line]
    by_kind: dict[str, list[bytes]] = {}
    for topic, payload in lines:
        by_kind.setdefault(topic.rsplit("/", 1)[1], []).append(payload.encode())

    birth = decode(Birth, by_kind["birth"][-1])
    batteries = [b for u in birth.ups for s in u.strings for b in s.batteries]
    assert len(batteries) == 216
    assert [u.ups_id for u in birth.ups] == ["DC-CNX-01-UPS-01", "DC-CNX-01-UPS-02"]
    assert all(b.serial_number.startswith("CSB-HX12-120-") for b in batteries)

    states = [decode(State, p) for p in by_kind["state"]]
    assert any(s.status == "online" and s.devices_up == 4 for s in states)
    assert states[-1].status == "offline"

    latest = {}
    for message in by_kind["telemetry"]:
        for reading in decode(TelemetryBatch, message).readings:
            latest[reading.battery_id] = reading
    assert len(latest) == 216
    for battery_id, reading in latest.items():
        if battery_id in {DROPOUT, GARBAGE, SNMP_DROPOUT}:
            continue
        k, b = _index(snapshot, battery_id)
        t = READING_TOLERANCE
        assert reading.voltage == pytest.approx(snapshot["voltage"][k][b], abs=t["voltage"])
        expected_temperature = snapshot["temperature"][k][b]
        assert reading.temperature == pytest.approx(expected_temperature, abs=t["temperature"])
        assert reading.internal_resistance == pytest.approx(
            snapshot["internal_resistance"][k][b], rel=t["internal_resistance_rel"]
        )
        assert reading.soc_pct == pytest.approx(snapshot["soc_pct"][k][b], abs=t["soc_pct"])
        assert reading.soh_pct == pytest.approx(snapshot["soh_pct"][k][b], abs=t["soh_pct"])
        assert reading.current == pytest.approx(snapshot["string_current"][k], abs=t["current"])
    for battery_id in (DROPOUT, GARBAGE, SNMP_DROPOUT):
        assert latest[battery_id].voltage is None
        assert latest[battery_id].temperature is None

    events = [e for p in by_kind["events"] for e in decode(Events, p).events]
    invalid = {(e.battery_id, e.kind) for e in events}
    for battery_id in (DROPOUT, GARBAGE, SNMP_DROPOUT):
        assert (battery_id, "invalid_value") in invalid
    assert any(e.battery_id == GARBAGE and "out of range" in e.message for e in events)


def test_broker_outage_of_60_s_loses_and_repeats_nothing(
    simulated_site, mqtt_broker, agent_factory, tmp_path
):
    prefix = "e2e-outage/brm/v1"
    agent = agent_factory(agent_settings(simulated_site, mqtt_broker, tmp_path, prefix))
    capture = Capture(mqtt_broker.host, mqtt_broker.port, f"{prefix}/{SITE}/telemetry")
    try:
        agent.start()
        capture.wait_for(lambda c: len(c.of("telemetry")) >= 8, 20)
        mqtt_broker.stop()
        outage_start = time.time()
        time.sleep(60)
        outage_end = time.time()
        mqtt_broker.start()
        metrics = _freeze_and_drain(simulated_site, agent)
        taken = sum(v for k, v in metrics.items() if k.startswith("brm_agent_readings_taken_total"))
        capture.wait_for(lambda c: len({s for s, _ in _readings(c.of("telemetry"))}) >= taken, 30)
    finally:
        capture.close()
    received = _readings(capture.of("telemetry"))
    seqs = {seq for seq, _ in received}
    assert seqs == set(range(1, int(taken) + 1))  # every reading, the count exact
    during = [(s, r) for s, r in received if outage_start + 1 < r.ts.timestamp() < outage_end - 1]
    assert len(during) >= 216 * 55
    keys = Counter((r.battery_id, r.ts) for _, r in during)
    assert max(keys.values()) == 1  # none twice
    during_seqs = [s for s, _ in during]
    assert during_seqs == sorted(during_seqs)  # in order


def test_sigkill_while_publishing_loses_nothing(
    simulated_site, mqtt_broker, agent_factory, tmp_path
):
    prefix = "e2e-kill/brm/v1"
    settings = agent_settings(
        simulated_site,
        mqtt_broker,
        tmp_path,
        prefix,
        publish={
            "backlog_readings_per_s": 400,
            "batch_readings": 216,
            "max_in_flight": 2,
            "state_interval_s": 2,
        },
    )
    agent = agent_factory(settings)
    capture = Capture(mqtt_broker.host, mqtt_broker.port, f"{prefix}/{SITE}/telemetry")
    try:
        mqtt_broker.stop()
        agent.start()
        time.sleep(8)  # a backlog of ~1,700 readings
        mqtt_broker.start()
        capture.wait_for(lambda c: len(c.of("telemetry")) >= 3, 30)
        agent.kill()  # mid-drain: 400 readings/s for several seconds
        agent.start()
        metrics = _freeze_and_drain(simulated_site, agent)
        time.sleep(1)
    finally:
        capture.close()
    assert metrics["brm_agent_outbox_readings"] == 0
    received = _readings(capture.of("telemetry"))
    seqs = Counter(seq for seq, _ in received)
    assert set(seqs) == set(range(1, max(seqs) + 1))  # no reading missing
    twice = [seq for seq, n in seqs.items() if n > 1]
    assert len(twice) <= 2 * 216  # only what was in flight (max_in_flight x batch)
    by_seq: dict[int, set] = {}
    for seq, reading in received:
        by_seq.setdefault(seq, set()).add(reading.model_dump_json())
    assert all(len(versions) == 1 for versions in by_seq.values())  # same keys, same values


def test_full_outbox_drops_the_oldest_and_says_how_many(
    simulated_site, mqtt_broker, agent_factory, tmp_path
):
    prefix = "e2e-bound/brm/v1"
    settings = agent_settings(
        simulated_site,
        mqtt_broker,
        tmp_path,
        prefix,
        outbox={"path": str(tmp_path / "outbox.sqlite3"), "max_readings": 1000},
    )
    agent = agent_factory(settings)
    capture = Capture(mqtt_broker.host, mqtt_broker.port, f"{prefix}/{SITE}/#")
    try:
        mqtt_broker.stop()
        agent.start()
        time.sleep(10)  # ~2,100 readings taken into a 1,000-reading outbox
        metrics = agent.metrics()
        assert metrics["brm_agent_outbox_dropped_readings"] > 0
        mqtt_broker.start()
        metrics = _freeze_and_drain(simulated_site, agent)
        time.sleep(3)  # one more state heartbeat
    finally:
        capture.close()
    taken = sum(v for k, v in metrics.items() if k.startswith("brm_agent_readings_taken_total"))
    dropped = metrics["brm_agent_outbox_dropped_readings"]
    received = {seq for seq, _ in _readings(capture.of("telemetry"))}
    assert len(received) + dropped == taken
    assert min(received) == dropped + 1  # the oldest went first
    assert received == set(range(int(dropped) + 1, int(taken) + 1))
    states = [decode(State, m.payload) for m in capture.of("state")]
    assert states[-1].dropped_count == dropped


def test_silent_and_slow_devices_do_not_disturb_the_others(
    simulated_site, mqtt_broker, agent_factory, tmp_path
):
    prefix = "e2e-isolation/brm/v1"
    agent = agent_factory(agent_settings(simulated_site, mqtt_broker, tmp_path, prefix))
    simulated_site.inject("no_response", "STR-DC-CNX-01-UPS-01-02")
    simulated_site.inject("slow_response", "STR-DC-CNX-01-UPS-01-03", delay_s=0.2)
    capture = Capture(mqtt_broker.host, mqtt_broker.port, f"{prefix}/{SITE}/#")
    try:
        agent.start()
        time.sleep(15)
        assert agent.health()["devices"]["STR-DC-CNX-01-UPS-01-02"]["available"] is False
    finally:
        agent.stop()
        capture.close()
    stamps: dict[str, list[float]] = {}
    for _, reading in _readings(capture.of("telemetry")):
        if reading.battery_id.endswith("-001"):
            stamps.setdefault(reading.battery_id, []).append(reading.ts.timestamp())
    assert "BAT-DC-CNX-01-UPS-01-STR-02-001" not in stamps  # silent
    assert len(stamps["BAT-DC-CNX-01-UPS-01-STR-03-001"]) >= 10  # slow, still read
    for battery_id in ("BAT-DC-CNX-01-UPS-01-STR-01-001", "BAT-DC-CNX-01-UPS-02-STR-01-001"):
        times = sorted(stamps[battery_id])
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(gaps) >= 10
        assert statistics.mean(gaps) == pytest.approx(1.0, rel=0.10), (battery_id, gaps)
        assert statistics.median(gaps) == pytest.approx(1.0, rel=0.10), (battery_id, gaps)
    events = [e for m in capture.of("events") for e in decode(Events, m.payload).events]
    assert [e.kind for e in events if e.device_id == "STR-DC-CNX-01-UPS-01-02"] == [
        "communication_lost"
    ]
