"""Edge agent figures: CPU per 1,000 readings and RSS polling one 216-battery site every second
over Modbus; time to drain a 24-hour backlog to the broker; collectd polling the same registers.

Run on demand: `make bench` (or `.venv/bin/python -m tests.perf.bench_agent`). Needs
Mosquitto and, for the baseline, Debian's `collectd-core`. Prints medians of RUNS runs.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml

from common.registermap import load_register_map
from common.schemas import Reading
from edge_agent.outbox import Outbox
from tests.conftest import MosquittoBroker
from tests.support import free_tcp_port, stop_process, wait_for_tcp

RUNS = 3
MEASURE_S = 20.0
WARMUP_S = 5.0
SITE = "DC-CNX-01"
STRINGS = 6
BLOCKS = 36
BACKLOG_MINUTES = 1440
BIN = Path(sys.executable).parent
TICKS = os.sysconf("SC_CLK_TCK")
FIELDS = ("voltage", "temperature", "internal_resistance", "soc_pct", "soh_pct")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status)[1]) / 1024


class Counter:
    """Counts MQTT messages (or the readings in telemetry batches) under a topic filter."""

    def __init__(self, broker: MosquittoBroker, topic: str, readings: bool) -> None:
        self.count = 0
        self.first: float | None = None
        self.last: float | None = None
        self._readings = readings
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        time.sleep(0.3)

    def _on_message(self, _client, _userdata, message) -> None:
        n = 1
        if self._readings:
            head = message.payload[:200].decode()
            first = int(re.search(r'"seq_first":(\d+)', head)[1])
            n = int(re.search(r'"seq_last":(\d+)', head)[1]) - first + 1
        with self._lock:
            now = time.perf_counter()
            self.first = self.first or now
            self.last = now
            self.count += n

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def agent_config(workdir: Path, broker: MosquittoBroker, modbus_port: int, http_port: int) -> Path:
    devices = [
        {
            "type": "modbus",
            "id": f"STR-{SITE}-UPS-{1 + k // 3:02d}-{1 + k % 3:02d}",
            "host": "127.0.0.1",
            "port": modbus_port,
            "unit_id": k + 1,
            "interval_s": 1,
            "timeout_s": 0.5,
        }
        for k in range(STRINGS)
    ]
    settings = {
        "site_id": SITE,
        "agent_id": "bench",
        "devices": devices,
        "mqtt": {"host": broker.host, "port": broker.port, "topic_prefix": "bench/brm/v1"},
        "outbox": {"path": str(workdir / "outbox.sqlite3"), "max_readings": 1_000_000},
        "http": {"port": http_port},
        "log_level": "WARNING",
    }
    path = workdir / "agent.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def readings_taken(http_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(v)
        for v in re.findall(r"^brm_agent_readings_taken_total\{.*\} (\S+)$", text, re.MULTILINE)
    )


def measure_agent(broker: MosquittoBroker, modbus_port: int) -> tuple[float, float]:
    """(CPU ms per 1,000 readings, RSS MB) of one agent polling 216 batteries each second."""
    with tempfile.TemporaryDirectory() as tmp:
        http_port = free_tcp_port()
        config = agent_config(Path(tmp), broker, modbus_port, http_port)
        agent = subprocess.Popen([str(BIN / "battery-agent"), "--config", str(config)])
        try:
            wait_for_tcp(http_port, timeout=30)
            time.sleep(WARMUP_S)
            cpu0, n0 = cpu_seconds(agent.pid), readings_taken(http_port)
            time.sleep(MEASURE_S)
            cpu1, n1 = cpu_seconds(agent.pid), readings_taken(http_port)
            rss = rss_mb(agent.pid)
        finally:
            stop_process(agent)
    return 1000 * (cpu1 - cpu0) / (n1 - n0) * 1000, rss


def collectd_config(workdir: Path, broker: MosquittoBroker, modbus_port: int) -> Path:
    """collectd's modbus plugin reading the same five registers of every block, each second."""
    regmap = load_register_map()
    types = {"voltage": "voltage", "temperature": "temperature"}
    data, collect = [], []
    for b in range(BLOCKS):
        for name in FIELDS:
            spec = regmap.field(name)
            kind = "Int16" if spec.type.value == "int16" else "Uint16"
            key = f"{name}-{b + 1:03d}"
            data.append(
                f'  <Data "{key}">\n    RegisterBase {regmap.address(name, b)}\n'
                f"    RegisterType {kind}\n    RegisterCmd ReadHolding\n"
                f'    Type {types.get(name, "gauge")}\n    Instance "{key}"\n  </Data>'
            )
            collect.append(f'      Collect "{key}"')
    slaves = "\n".join(
        f'    <Slave {k + 1}>\n      Instance "str{k + 1}"\n'
        + "\n".join(collect)
        + "\n    </Slave>"
        for k in range(STRINGS)
    )
    text = f"""Interval 1
FQDNLookup false
Hostname "bench"
LoadPlugin modbus
LoadPlugin mqtt
<Plugin modbus>
{chr(10).join(data)}
  <Host "site">
    Address "127.0.0.1"
    Port "{modbus_port}"
    Interval 1
{slaves}
  </Host>
</Plugin>
<Plugin mqtt>
  <Publish "broker">
    Host "{broker.host}"
    Port {broker.port}
    ClientId "collectd-bench"
    QoS 1
    Prefix "collectd"
  </Publish>
</Plugin>
"""
    path = workdir / "collectd.conf"
    path.write_text(text)
    return path


def measure_collectd(broker: MosquittoBroker, modbus_port: int) -> float:
    """CPU ms per 1,000 readings (a reading: one block's five values) of collectd."""
    with tempfile.TemporaryDirectory() as tmp:
        config = collectd_config(Path(tmp), broker, modbus_port)
        counter = Counter(broker, "collectd/#", readings=False)
        collectd = subprocess.Popen(
            ["collectd", "-f", "-C", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(WARMUP_S)
            cpu0, n0 = cpu_seconds(collectd.pid), counter.count
            time.sleep(MEASURE_S)
            cpu1, n1 = cpu_seconds(collectd.pid), counter.count
        finally:
            collectd.send_signal(signal.SIGTERM)
            collectd.wait(10)
            counter.close()
    readings = (n1 - n0) / len(FIELDS)
    return 1000 * (cpu1 - cpu0) / readings * 1000


async def fill_backlog(path: Path) -> int:
    outbox = await Outbox.open(path, SITE, "bench", 1_000_000)
    start = datetime.now(UTC) - timedelta(days=1)
    ids = [
        f"BAT-{SITE}-UPS-{1 + k // 3:02d}-STR-{1 + k % 3:02d}-{b + 1:03d}"
        for k in range(STRINGS)
        for b in range(BLOCKS)
    ]
    for minute in range(BACKLOG_MINUTES):
        ts = start + timedelta(minutes=minute)
        await outbox.append(
            [
                Reading(
                    battery_id=i,
                    ts=ts,
                    voltage=13.5,
                    current=0.2,
                    temperature=24.1,
                    internal_resistance=0.0046,
                    soc_pct=100.0,
                    soh_pct=97.3,
                )
                for i in ids
            ]
        )
    depth = outbox.depth()
    await outbox.close()
    return depth


def measure_drain(broker: MosquittoBroker) -> float:
    """Seconds from the first to the last of a 24-hour backlog arriving at a subscriber."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        total = asyncio.run(fill_backlog(workdir / "outbox.sqlite3"))
        http_port = free_tcp_port()
        config = agent_config(workdir, broker, free_tcp_port(), http_port)  # devices: nobody home
        counter = Counter(broker, "bench/brm/v1/+/telemetry", readings=True)
        agent = subprocess.Popen([str(BIN / "battery-agent"), "--config", str(config)])
        try:
            deadline = time.monotonic() + 300
            while counter.count < total and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop_process(agent)
            counter.close()
        if counter.count < total:
            raise RuntimeError(f"only {counter.count} of {total} readings arrived")
        return counter.last - counter.first


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        broker = MosquittoBroker(Path(tmp))
        broker.start()
        modbus_port = free_tcp_port()
        sim = subprocess.Popen(
            [str(BIN / "battery-sim"), "modbus", "--site", SITE, "--port", str(modbus_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_tcp(modbus_port, timeout=30)
            agents = [measure_agent(broker, modbus_port) for _ in range(RUNS)]
            cpu = statistics.median(a[0] for a in agents)
            rss = statistics.median(a[1] for a in agents)
            print(f"medians of {RUNS} runs, {MEASURE_S:.0f} s each")
            print("agent, 216 batteries over Modbus every 1 s:")
            print(f"  CPU per 1,000 readings   {cpu:8.1f} ms")
            print(f"  at a 60 s interval       {cpu / 1000 * 216 / 60 / 10:8.3f} % of one core")
            print(f"  resident memory          {rss:8.1f} MB")
            if shutil.which("collectd"):
                base = statistics.median(measure_collectd(broker, modbus_port) for _ in range(RUNS))
                print("collectd 5 (modbus + mqtt plugins), same registers every 1 s:")
                print(
                    f"  CPU per 1,000 readings   {base:8.1f} ms   (agent/collectd {cpu / base:.2f})"
                )
            else:
                print("collectd: not installed (apt-get install collectd-core) — no baseline")
            drains = [measure_drain(broker) for _ in range(RUNS)]
            print(f"drain of a 24-hour backlog ({STRINGS * BLOCKS * BACKLOG_MINUTES:,} readings):")
            print(f"  first to last arrival    {statistics.median(drains):8.1f} s")
        finally:
            stop_process(sim)
            broker.stop()


if __name__ == "__main__":
    main()
