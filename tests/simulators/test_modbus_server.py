"""The Modbus simulator: register views of the real twin, then real sockets read by mbpoll."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from common.fleet import BatteryModelSpec, load_fleet
from common.fleet import demo_fleet_path as fleet_path
from common.registercodec import decode_registers, yyyymmdd_to_date
from common.registermap import FieldKey, load_register_map, plan_reads
from simulators.clock import SimClock
from simulators.live import LiveSite
from simulators.modbus_server import ModbusSimulator, SiteRegisters, serve_modbus
from simulators.twin import SiteTwin
from tests.referees import Poll, mbpoll, mbpoll_args, parse_poll
from tests.support import QUIET_EPOCH, SERVED_TOLERANCE

MAP = load_register_map()
SITE = "DC-CNX-01"
BLOCKS = 36
TOLERANCE = SERVED_TOLERANCE
ILLEGAL_ADDRESS = "Illegal data address"
DEVICE_FAILURE = "Slave device or server failure"
GATEWAY_TARGET = "Target device failed to respond"
TIMED_OUT = "Connection timed out"


def make_live(refresh_s: float) -> LiveSite:
    twin = SiteTwin(load_fleet(fleet_path()).get(SITE), seed=1)
    return LiveSite(twin, SimClock(time_scale=1.0, epoch=QUIET_EPOCH), refresh_s=refresh_s)


def battery(string: int, position: int) -> str:
    """Battery ID on UPS 1 of the site (string and position 1-based)."""
    return f"BAT-{SITE}-UPS-01-STR-{string:02d}-{position:03d}"


def check_measurements(decoded: dict, snapshot, k: int) -> None:
    """Every decoded header and block value equals the snapshot's, to the map's resolution."""
    assert decoded[FieldKey("block_count")] == BLOCKS
    assert decoded[FieldKey("sample_time")] == int(snapshot.t)
    assert decoded[FieldKey("string_status")] == int(snapshot.string_status[k])
    for name in ("string_current", "string_voltage"):
        expected = float(getattr(snapshot, name)[k])
        assert decoded[FieldKey(name)] == pytest.approx(expected, rel=1e-6, abs=1e-6)
    for name, tolerance in TOLERANCE.items():
        for b in range(BLOCKS):
            expected = float(getattr(snapshot, name)[k, b])
            assert decoded[FieldKey(name, b)] == pytest.approx(expected, abs=tolerance * 1.001)


# --------------------------------------------------------------------------- without sockets


def test_register_views_carry_the_twin_and_its_nameplates():
    live = make_live(refresh_s=3600.0)
    registers = SiteRegisters(live, MAP)
    snapshot = live.snapshot()
    for k in (0, 5):
        view = registers.view(k)
        assert (view.delay_s, view.silent, view.failed) == (0.0, False, ())
        decoded = decode_all(view.registers)
        check_measurements(decoded, snapshot, k)
        assert decoded[FieldKey("ups_number")] == k // 3 + 1
        assert decoded[FieldKey("string_number")] == k % 3 + 1
        inventory = live.inventory()[k]
        assert decoded[FieldKey("manufacturer")] == "CSB"
        assert decoded[FieldKey("model")] == "HX12-120"
        assert decoded[FieldKey("nominal_voltage")] == 12.0
        assert decoded[FieldKey("nominal_capacity")] == 120.0
        assert decoded[FieldKey("warranty_months")] == 60
        for b, block in enumerate(inventory):
            assert decoded[FieldKey("serial_number", b)] == block.serial_number
            installed = yyyymmdd_to_date(decoded[FieldKey("installed_date", b)])
            assert installed == block.installed_date
            assert decoded[FieldKey("position", b)] == b + 1
    assert registers.view(0) is registers.view(0)  # one build per snapshot


def test_register_views_follow_faults():
    live = make_live(refresh_s=3600.0)
    registers = SiteRegisters(live, MAP)
    live.inject("sensor_dropout", battery(1, 3))
    live.inject("sensor_dropout", battery(1, 5), mode="exception")
    live.inject("sensor_dropout", battery(1, 7), mode="garbage")
    live.inject("slow_response", f"STR-{SITE}-UPS-01-02", delay_s=1.5)
    live.inject("no_response", f"STR-{SITE}-UPS-01-03")
    view = registers.view(0)
    decoded = decode_all(view.registers)
    assert all(decoded[FieldKey(name, 2)] is None for name in TOLERANCE)
    assert view.registers[110:115] == [0xFFFF, 0x8000, 0xFFFF, 0xFFFF, 0xFFFF]
    assert decoded[FieldKey("voltage", 3)] is not None
    assert view.registers[130:135] == [0xFFFE, 0x7FFF, 0xFFFF, 0xFFFE, 0xFFFE]  # not sentinels
    garbage = [decoded[FieldKey(name, 6)] for name in TOLERANCE]
    assert garbage == [65.534, 3276.7, None, 6553.4, 6553.4]
    assert view.failed == ((120, 125),)
    assert view.failure_in(100, 125)
    assert view.failure_in(124, 1)
    assert not view.failure_in(115, 5)
    assert not view.failure_in(125, 100)
    assert (registers.view(1).delay_s, registers.view(1).silent) == (1.5, False)
    assert registers.view(2).silent
    live.clear_all()
    assert registers.view(0).failed == ()
    assert decode_all(registers.view(0).registers)[FieldKey("voltage", 2)] is not None


def test_long_nameplates_are_cut_to_the_field_width():
    location = load_fleet(fleet_path()).get(SITE)
    long_model = BatteryModelSpec(
        manufacturer="Consolidated Storage Batteries", model="HX12-120-LONGLIFE"
    )
    twin = SiteTwin(location.model_copy(update={"battery_model": long_model}), seed=1)
    view = SiteRegisters(LiveSite(twin, SimClock(epoch=QUIET_EPOCH)), MAP).view(0)
    decoded = decode_all(view.registers)
    assert decoded[FieldKey("manufacturer")] == "Consolidated Sto"
    assert decoded[FieldKey("model")] == "HX12-120-LONGLIF"
    assert decoded[FieldKey("serial_number", 0)] == twin.inventory()[0][0].serial_number[:32]


def decode_all(registers: list[int]) -> dict:
    decoded: dict = {}
    for start, count in plan_reads(MAP, BLOCKS):
        decoded |= decode_registers(MAP, start, registers[start : start + count], BLOCKS)
    return decoded


# --------------------------------------------------------------------------- over TCP, with mbpoll


@dataclass
class Served:
    live: LiveSite
    simulator: ModbusSimulator
    loop: asyncio.AbstractEventLoop

    @property
    def port(self) -> int:
        return self.simulator.port

    def call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop in a background thread: the servers run there, mbpoll runs here."""
    if shutil.which("mbpoll") is None:
        pytest.fail("mbpoll is not installed (.ci/run installs it)")
    event_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=event_loop.run_forever, name="modbus-sim", daemon=True)
    thread.start()
    yield event_loop
    event_loop.call_soon_threadsafe(event_loop.stop)
    thread.join(10)
    event_loop.close()


@pytest.fixture(scope="module")
def server(loop) -> Iterator[Served]:
    """One site served on a free port; its snapshot holds still until a fault changes it."""
    live = make_live(refresh_s=3600.0)
    simulator = asyncio.run_coroutine_threadsafe(serve_modbus(live, "127.0.0.1", 0), loop)
    served = Served(live, simulator.result(30), loop)
    yield served
    served.call(served.simulator.stop())


@pytest.fixture
def served(server) -> Iterator[Served]:
    yield server
    server.live.clear_all()


def read_plan(port: int, unit: int, groups: list[str]) -> dict:
    """Read ``groups`` as the agent would (the map's plan) and decode with the map."""
    decoded: dict = {}
    for start, count in plan_reads(MAP, BLOCKS, groups=groups):
        poll = mbpoll(port, unit, start, count)
        assert poll.returncode == 0, poll.stderr
        decoded |= decode_registers(MAP, start, poll.ints(start, count), BLOCKS)
    return decoded


@pytest.mark.integration
@pytest.mark.parametrize("unit", [1, 6])
def test_mbpoll_reads_the_twin_header_and_blocks(served, unit):
    decoded = read_plan(served.port, unit, ["header", "block"])
    check_measurements(decoded, served.live.snapshot(), unit - 1)
    assert decoded[FieldKey("ups_number")] == (unit - 1) // 3 + 1
    assert decoded[FieldKey("string_number")] == (unit - 1) % 3 + 1


@pytest.mark.integration
def test_mbpoll_decodes_the_floats_itself(served):
    poll = mbpoll(served.port, 2, 6, 2, kind="4:float")
    assert poll.returncode == 0, poll.stderr
    snapshot = served.live.snapshot()
    assert float(poll.values[6]) == pytest.approx(snapshot.string_current[1], rel=1e-4, abs=1e-3)
    assert float(poll.values[8]) == pytest.approx(snapshot.string_voltage[1], rel=1e-4)


@pytest.mark.integration
def test_mbpoll_reads_the_inventory(served):
    decoded = read_plan(served.port, 4, ["string_inventory", "block_inventory"])
    inventory = served.live.inventory()[3]
    assert decoded[FieldKey("manufacturer")] == inventory[0].manufacturer
    assert decoded[FieldKey("model")] == inventory[0].model
    assert decoded[FieldKey("nominal_capacity")] == inventory[0].nominal_capacity_ah
    for b, block in enumerate(inventory):
        assert decoded[FieldKey("serial_number", b)] == block.serial_number
        assert yyyymmdd_to_date(decoded[FieldKey("installed_date", b)]) == block.installed_date
        assert decoded[FieldKey("position", b)] == block.position


@pytest.mark.integration
def test_input_registers_read_the_same_memory(served):
    holding = mbpoll(served.port, 1, 100, 20, kind="4")
    inputs = mbpoll(served.port, 1, 100, 20, kind="3")
    assert holding.returncode == inputs.returncode == 0
    assert holding.values == inputs.values


@pytest.mark.integration
@pytest.mark.parametrize(
    ("address", "count"),
    [(11, 1), (95, 10), (100 + 5 * BLOCKS, 1), (1519, 1), (2000 + 19 * BLOCKS, 1), (9000, 5)],
)
def test_unmapped_addresses_answer_illegal_data_address(served, address, count):
    poll = mbpoll(served.port, 1, address, count)
    assert poll.returncode != 0
    assert ILLEGAL_ADDRESS in poll.stderr


@pytest.mark.integration
@pytest.mark.parametrize("unit", [0, 7, 247])
def test_unknown_units_answer_gateway_target_failed(served, unit):
    poll = mbpoll(served.port, unit, 0, 11)
    assert poll.returncode != 0
    assert GATEWAY_TARGET in poll.stderr


@pytest.mark.integration
def test_the_map_is_read_only(served):
    before = mbpoll(served.port, 1, 100, 1)
    for values in (["1234"], ["1", "2"]):  # FC06, FC16
        write = mbpoll(served.port, 1, 100, write=values)
        assert write.returncode != 0
        assert ILLEGAL_ADDRESS in write.stderr
    assert mbpoll(served.port, 1, 100, 1).values == before.values
    coils = mbpoll(served.port, 1, 0, 8, kind="0")
    assert coils.returncode != 0
    assert "Illegal function" in coils.stderr


@pytest.mark.integration
def test_sensor_dropout_nan_reads_not_available(served):
    served.live.inject("sensor_dropout", battery(1, 3))
    poll = mbpoll(served.port, 1, 100, 25)
    assert poll.returncode == 0, poll.stderr
    assert poll.ints(110, 5) == [0xFFFF, 0x8000, 0xFFFF, 0xFFFF, 0xFFFF]
    decoded = decode_registers(MAP, 100, poll.ints(100, 25), BLOCKS)
    assert all(decoded[FieldKey(name, 2)] is None for name in TOLERANCE)
    snapshot = served.live.snapshot()
    assert decoded[FieldKey("voltage", 1)] == pytest.approx(snapshot.voltage[0, 1], abs=5e-4)


@pytest.mark.integration
def test_sensor_dropout_exception_answers_device_failure(served):
    served.live.inject("sensor_dropout", battery(1, 3), mode="exception")
    for address, count in [(100, 125), (110, 1), (114, 2), (105, 6)]:
        poll = mbpoll(served.port, 1, address, count)
        assert poll.returncode != 0
        assert DEVICE_FAILURE in poll.stderr, (address, count)
    for unit, address, count in [(1, 115, 110), (1, 100, 10), (1, 0, 11), (2, 100, 125)]:
        poll = mbpoll(served.port, unit, address, count)
        assert poll.returncode == 0, (unit, address, poll.stderr)


def start_mbpoll(port: int, unit: int, timeout: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        mbpoll_args(port, unit, 100, 125, kind="4", timeout=timeout),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], started: float) -> Poll:
    stdout, stderr = process.communicate(timeout=30)
    return parse_poll(process.returncode, stdout, stderr, time.monotonic() - started)


@pytest.mark.integration
def test_slow_device_answers_late_without_holding_up_others(served):
    served.live.inject("slow_response", f"STR-{SITE}-UPS-01-02", delay_s=1.5)
    started = time.monotonic()
    slow = start_mbpoll(served.port, 2, timeout=8.0)
    try:
        other = mbpoll(served.port, 1, 100, 125)
        assert other.returncode == 0, other.stderr
        assert slow.poll() is None, "unit 1 had to wait for the slow unit 2"
    finally:
        result = finish(slow, started)
    assert result.returncode == 0, result.stderr
    assert result.elapsed >= 1.5
    assert len(result.values) == 125


@pytest.mark.integration
def test_silent_device_times_out_while_others_answer(served):
    served.live.inject("no_response", f"STR-{SITE}-UPS-01-03")
    started = time.monotonic()
    silent = start_mbpoll(served.port, 3, timeout=2.0)
    try:
        for unit in (1, 4):
            other = mbpoll(served.port, unit, 100, 125)
            assert other.returncode == 0, other.stderr
        assert silent.poll() is None, "the other units waited for the silent one"
    finally:
        result = finish(silent, started)
    assert result.returncode != 0
    assert TIMED_OUT in result.stderr
    assert result.values == {}
    served.live.clear_all()
    assert mbpoll(served.port, 3, 100, 125).returncode == 0


@pytest.mark.integration
def test_values_move_with_the_live_twin(loop):
    """On the wall clock the snapshot refreshes: new measurements, each close to the twin's."""
    live = make_live(refresh_s=0.05)
    simulator = asyncio.run_coroutine_threadsafe(serve_modbus(live, "127.0.0.1", 0), loop)
    served = Served(live, simulator.result(30), loop)
    try:
        first = read_plan(served.port, 1, ["header", "block"])
        time.sleep(1.1)
        second = read_plan(served.port, 1, ["header", "block"])
        snapshot = live.snapshot()
    finally:
        served.call(served.simulator.stop())
    assert second[FieldKey("sample_time")] > first[FieldKey("sample_time")]
    assert first != second
    voltages = np.array([second[FieldKey("voltage", b)] for b in range(BLOCKS)])
    # Between the read and this snapshot only measurement noise (5 mV sigma) differs.
    assert np.abs(voltages - snapshot.voltage[0]).max() < 0.05
    assert second[FieldKey("string_voltage")] == pytest.approx(snapshot.string_voltage[0], abs=1.0)
