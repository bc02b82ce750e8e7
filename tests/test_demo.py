"""``battery-fleet demo`` as a user runs it: two sites live behind the embedded broker, seen only
through REST and Socket.IO with the admin login it prints; Ctrl-C leaves no process behind; a
second start resumes from the data folder (no second backfill, the same admin)."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import socketio

from common import ids
from fleet_demo.cli import MIN_SILENCE_S, Demo, build_parser
from tests.support import free_tcp_port
from tests.test_system_e2e import Api

pytestmark = pytest.mark.integration

BATTERY_FLEET = Path(sys.executable).with_name("battery-fleet")
SITES = ("DC-CNX-01", "DC-BKK-01")  # the first two of the demo fleet
AGEING = ids.battery_id("DC-CNX-01", 1, 1, 7)  # the demo's fault plan: a year of fast ageing
OVERHEATING = ids.battery_id("DC-CNX-01", 1, 2, 30)  # and 25 °C too hot, live
START_S = 120.0  # first start: backfill (~20 s here) and every part loading
LIVE_S = 60.0
STOP_S = 30.0


@dataclass
class DemoRun:
    """One ``battery-fleet demo`` process, its console in a file."""

    process: subprocess.Popen[bytes]
    console: Path
    data: Path

    def output(self) -> str:
        return self.console.read_text(errors="replace")

    def logs(self) -> str:
        """The console and the tail of each part's log: what a failure message needs."""
        parts = [f"--- demo console ---\n{self.output()}"]
        for log in sorted((self.data / "logs").glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-25:]
            parts.append(f"--- {log.name} ---\n" + "\n".join(lines))
        return "\n".join(parts)

    def wait_until(self, condition: Callable[[], object], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                pytest.fail(
                    f"the demo exited ({self.process.returncode}) before {what}\n{self.logs()}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"{what} not within {timeout:g} s\n{self.logs()}")
            time.sleep(0.5)

    def interrupt(self) -> None:
        """Ctrl-C; then every part (each in its own process group) must be gone."""
        children = json.loads((self.data / "children.json").read_text())
        assert children.pop("demo") == self.process.pid
        assert len(children) == 2 + len(SITES), children  # simulator, central, one agent a site
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(STOP_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"the demo did not stop within {STOP_S:g} s of SIGINT\n{self.logs()}")
        assert code == 0, self.logs()
        assert "every part is down" in self.output()
        deadline = time.monotonic() + 5
        alive = dict(children)
        while alive and time.monotonic() < deadline:
            alive = {name: pid for name, pid in alive.items() if _group_alive(pid)}
            time.sleep(0.2)
        assert not alive, f"still running after the demo stopped: {alive}\n{self.logs()}"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Callable[[], DemoRun]]:
    """Starts ``battery-fleet demo --sites 2`` on free ports in one data folder; kills whatever a
    failed test left running."""
    runs: list[DemoRun] = []
    port = free_tcp_port()
    data = tmp_path / "data"

    def start() -> DemoRun:
        console = tmp_path / f"console-{len(runs)}.txt"
        argv = [
            str(BATTERY_FLEET), "demo", "--sites", "2", "--interval", "2",
            "--http-port", str(port), "--data-dir", str(data),
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "BRM_ADMIN_PASSWORD"}
        with console.open("wb") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        run = DemoRun(process, console, data)
        runs.append(run)
        run.wait_until(lambda: "API docs:" in run.output(), START_S, "the demo's banner")
        return run

    yield start
    for run in runs:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait(10)
            children = data / "children.json"
            for pid in json.loads(children.read_text()).values() if children.exists() else []:
                if pid != run.process.pid and _group_alive(pid):
                    os.killpg(pid, signal.SIGKILL)


def _banner(run: DemoRun) -> tuple[str, str]:
    """The API's base URL and the admin password, as the banner prints them."""
    text = run.output()
    docs = re.search(r"API docs:\s+(http://\S+)/api/docs", text)
    login = re.search(r"login:\s+admin / (\S+)", text)
    assert docs and login, text
    return docs[1], login[1]


def _fresh(battery: dict, within: timedelta) -> bool:
    latest = battery.get("latest_telemetry")
    if not latest:
        return False
    stamp = datetime.fromisoformat(latest["timestamp"].replace("Z", "+00:00"))
    return datetime.now(UTC) - stamp < within


def test_the_demo_runs_the_whole_system_stops_cleanly_and_resumes(
    demo: Callable[[], DemoRun],
) -> None:
    started = time.monotonic()
    first = demo()
    base, password = _banner(first)
    stored = first.data / "admin-password"
    assert stored.read_text().strip() == password
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    backfill = re.search(r"history: (\d+) readings and (\d+) RUL estimates in", first.output())
    assert backfill, first.output()
    # Two years a day and two days a minute, for 432 blocks.
    assert int(backfill[1]) > 432 * (700 + 2 * 1440), backfill[0]
    assert int(backfill[2]) == 432, backfill[0]

    api = Api(base)
    api.login("admin", password)

    def site_fresh(site: str) -> bool:
        """Every one of the site's 216 blocks known (the SNMP UPS's may be born later) and fresh."""
        listing = api.get("/api/v1/batteries", location_id=site, limit=1000)
        fresh = [b for b in listing["batteries"] if _fresh(b, timedelta(seconds=30))]
        return listing["total"] == len(fresh) == 216

    for site in SITES:
        first.wait_until(lambda s=site: site_fresh(s), LIVE_S, f"fresh telemetry of all of {site}")

    detail = api.get(f"/api/v1/batteries/{AGEING}")
    rul = detail["rul"]
    assert rul is not None and isinstance(rul["rul_days"], float), rul
    assert rul["n_days"] >= 700, rul  # fitted on the backfilled history
    assert rul["rul_days"] < 180, rul  # a year of ageing six times as fast

    def overheating_alert() -> bool:
        alerts = api.get(
            "/api/v1/alerts", location_id=SITES[0], alert_type="temperature_high", limit=100
        )["alerts"]
        return any(a["battery_id"] == OVERHEATING and a["is_active"] for a in alerts)

    first.wait_until(overheating_alert, LIVE_S, "the overheating block's temperature_high alert")

    updates: queue.Queue[dict] = queue.Queue()
    client = socketio.Client(reconnection=False)
    client.on("telemetry_update", updates.put)
    client.connect(base, auth={"token": api.token}, transports=["websocket"], wait_timeout=10)
    try:
        client.emit("subscribe_location", {"location_id": SITES[1]})
        try:
            update = updates.get(timeout=20)
        except queue.Empty:
            pytest.fail(f"no telemetry_update within 20 s\n{first.logs()}")
    finally:
        client.disconnect()
    assert ids.parse_battery_id(update["battery_id"]).location_id == SITES[1], update
    assert update["data"]["voltage"] is not None, update

    first.interrupt()
    first_s = time.monotonic() - started

    second = demo()
    assert "backfilled at an earlier start, not again" in second.output(), second.output()
    assert "backfilling" not in second.output()
    base, printed = _banner(second)
    assert printed == password
    again = Api(base)
    again.login("admin", password)
    second.wait_until(
        lambda: _fresh(again.get(f"/api/v1/batteries/{AGEING}"), timedelta(seconds=30)),
        LIVE_S,
        "fresh telemetry after the restart",
    )
    assert again.get(f"/api/v1/batteries/{AGEING}")["rul"]["n_days"] >= 700
    second.interrupt()
    print(f"first run {first_s:.0f} s, whole test {time.monotonic() - started:.0f} s")


@pytest.mark.parametrize(("interval", "missed"), [("1", 30), ("7", 5), ("10", 3), ("60", 3)])
def test_fast_demo_polls_still_allow_30_s_of_silence(
    tmp_path: Path, interval: str, missed: int
) -> None:
    args = build_parser().parse_args(["demo", "--interval", interval, "--data-dir", str(tmp_path)])
    demo = Demo(args)
    assert demo.missed_polls == missed
    assert demo.missed_polls * float(interval) >= MIN_SILENCE_S
