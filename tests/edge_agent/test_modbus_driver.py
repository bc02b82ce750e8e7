"""The Modbus driver against the real Modbus simulator on a free port, its twin's clock frozen."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest

from common.fleet import demo_fleet_path, load_fleet
from edge_agent.config import ModbusDevice
from edge_agent.drivers.base import DeviceError, InvalidValue
from edge_agent.drivers.modbus import ModbusDriver
from edge_agent.drivers.values import BLOCK_FIELDS, NOT_AVAILABLE
from simulators.clock import SimClock
from simulators.live import LiveSite
from simulators.modbus_server import ModbusSimulator, serve_modbus
from simulators.twin import SiteTwin
from tests.support import SERVED_TOLERANCE, assert_same_nameplates, free_tcp_port

pytestmark = pytest.mark.integration

SITE = "DC-CNX-01"
TS = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
BLOCKS = 36
TOLERANCE = SERVED_TOLERANCE
MARGIN_S = 0.3  # what a timeout may overrun by on a busy test machine


def string_id(ups: int, string: int) -> str:
    return f"STR-{SITE}-UPS-{ups:02d}-{string:02d}"


def battery(string: int, position: int, ups: int = 1) -> str:
    return f"BAT-{SITE}-UPS-{ups:02d}-STR-{string:02d}-{position:03d}"


def device(port: int, unit: int, string: str, timeout_s: float = 1.0) -> ModbusDevice:
    return ModbusDevice(
        type="modbus", id=string, host="127.0.0.1", port=port, unit_id=unit, timeout_s=timeout_s
    )


@pytest.fixture
def live() -> LiveSite:
    twin = SiteTwin(load_fleet(demo_fleet_path()).get(SITE), seed=1)
    return LiveSite(twin, SimClock(epoch=1_800_000_000.0, wall=lambda: 0.0))


@contextlib.asynccontextmanager
async def drivers(
    live: LiveSite, *devices: tuple[int, str], timeout_s: float = 1.0
) -> AsyncIterator[tuple[ModbusSimulator, list[ModbusDriver]]]:
    """The site served on a free port, and a driver per (unit, string ID)."""
    simulator = await serve_modbus(live, "127.0.0.1", 0)
    made = [ModbusDriver(device(simulator.port, u, s, timeout_s)) for u, s in devices]
    try:
        yield simulator, made
    finally:
        for driver in made:
            await driver.close()
        await simulator.stop()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def assert_matches_twin(readings, live: LiveSite, k: int, skip: frozenset[int] = frozenset()):
    snap = live.snapshot()
    assert len(readings) == BLOCKS
    for b, reading in enumerate(readings):
        assert reading.battery_id == battery(k % 3 + 1, b + 1, k // 3 + 1)
        assert reading.ts == TS
        assert reading.current == pytest.approx(float(snap.string_current[k]), rel=1e-6)
        if b in skip:
            continue
        for name, tolerance in TOLERANCE.items():
            expected = float(getattr(snap, name)[k, b])
            assert getattr(reading, name) == pytest.approx(expected, abs=tolerance * 1.001)


@pytest.mark.parametrize(("unit", "ups", "string"), [(1, 1, 1), (5, 2, 2)])
def test_poll_reads_every_block_as_the_twin_has_it(live, unit, ups, string):
    async def scenario():
        async with drivers(live, (unit, string_id(ups, string))) as (_, [driver]):
            result = await driver.poll(TS)
            assert result.invalid == []
            assert_matches_twin(result.readings, live, unit - 1)
            again = await driver.poll(TS)  # the connection stays open between polls
            assert again.readings == result.readings

    run(scenario)


def test_inventory_matches_the_twins_nameplates(live):
    async def scenario():
        async with drivers(live, (4, string_id(2, 1))) as (_, [driver]):
            [info] = await driver.inventory()
        assert info.string_id == string_id(2, 1)
        expected = live.inventory()[3]
        assert len(info.batteries) == len(expected) == BLOCKS
        assert_same_nameplates(info.batteries, expected)

    run(scenario)


def test_block_count_sizes_the_reads_and_a_new_count_is_replanned(live):
    """The same unit swapped for a 40-block monitor (the gateway restarted in between)."""
    location = load_fleet(demo_fleet_path()).get(SITE).model_copy(update={"blocks_per_string": 40})
    bigger = LiveSite(SiteTwin(location, seed=1), SimClock(epoch=1_800_000_000.0, wall=lambda: 0.0))

    async def scenario():
        async with drivers(live, (1, string_id(1, 1))) as (simulator, [driver]):
            assert len((await driver.poll(TS)).readings) == BLOCKS
            port = simulator.port
            await simulator.stop()
            replaced = await serve_modbus(bigger, "127.0.0.1", port)
            try:
                result = await driver.poll(TS)  # on a new connection: the old one was closed
                [info] = await driver.inventory()
            finally:
                await replaced.stop()
        assert [r.battery_id for r in result.readings] == [battery(1, p) for p in range(1, 41)]
        assert result.invalid == []
        assert result.readings[39].voltage == pytest.approx(
            float(bigger.snapshot().voltage[0, 39]), abs=TOLERANCE["voltage"] * 1.001
        )
        assert len(info.batteries) == 40

    run(scenario)


def test_sensor_dropout_reads_none_with_not_available(live):
    live.inject("sensor_dropout", battery(1, 3))

    async def scenario():
        async with drivers(live, (1, string_id(1, 1))) as (_, [driver]):
            result = await driver.poll(TS)
        assert all(getattr(result.readings[2], name) is None for name in BLOCK_FIELDS)
        assert result.invalid == [
            InvalidValue(battery(1, 3), name, NOT_AVAILABLE) for name in BLOCK_FIELDS
        ]
        assert_matches_twin(result.readings, live, 0, skip=frozenset({2}))

    run(scenario)


def test_an_exception_for_one_block_costs_only_that_block(live):
    """Blocks 3 and 30 sit in different reads; each read is re-read block by block."""
    live.inject("sensor_dropout", battery(1, 3), mode="exception")
    live.inject("sensor_dropout", battery(1, 30), mode="exception")

    async def scenario():
        async with drivers(live, (1, string_id(1, 1))) as (_, [driver]):
            result = await driver.poll(TS)
        reason = "exception 04 device failure"
        assert result.invalid == [
            InvalidValue(battery(1, position), name, reason)
            for position in (3, 30)
            for name in BLOCK_FIELDS
        ]
        for b in (2, 29):
            assert all(getattr(result.readings[b], name) is None for name in BLOCK_FIELDS)
        assert_matches_twin(result.readings, live, 0, skip=frozenset({2, 29}))

    run(scenario)


def test_garbage_values_are_nulled_by_range(live):
    live.inject("sensor_dropout", battery(2, 7), mode="garbage")

    async def scenario():
        async with drivers(live, (2, string_id(1, 2))) as (_, [driver]):
            result = await driver.poll(TS)
        bad = result.readings[6]
        assert all(getattr(bad, name) is None for name in BLOCK_FIELDS)
        assert result.invalid == [
            InvalidValue(battery(2, 7), "voltage", "out of range: 65.534 V"),
            InvalidValue(battery(2, 7), "temperature", "out of range: 3276.7 °C"),
            InvalidValue(battery(2, 7), "internal_resistance", NOT_AVAILABLE),
            InvalidValue(battery(2, 7), "soc_pct", "out of range: 6553.4 %"),
            InvalidValue(battery(2, 7), "soh_pct", "out of range: 6553.4 %"),
        ]
        assert_matches_twin(result.readings, live, 1, skip=frozenset({6}))

    run(scenario)


def test_a_silent_unit_fails_within_its_timeout_while_another_reads(live):
    live.inject("no_response", string_id(1, 1))

    async def scenario():
        devices = ((1, string_id(1, 1)), (2, string_id(1, 2)))
        async with drivers(live, *devices, timeout_s=1.0) as (_, [silent, other]):
            loop = asyncio.get_running_loop()
            started = loop.time()
            waiting = asyncio.create_task(silent.poll(TS))
            result = await other.poll(TS)
            assert not waiting.done(), "the other unit waited for the silent one"
            assert len(result.readings) == BLOCKS
            with pytest.raises(DeviceError, match=r"unit 1 at .*: no valid answer within 1 s"):
                await waiting
            assert loop.time() - started < 1.0 + MARGIN_S
            live.clear_all()
            assert len((await silent.poll(TS)).readings) == BLOCKS  # reconnects by itself

    run(scenario)


def test_after_a_timeout_the_next_poll_uses_a_new_connection(live):
    """Regression: pymodbus 3.16's server stamps a late answer with the newest request's id, so
    a connection that timed out could pass a late answer off as the next request's."""

    async def scenario():
        async with drivers(live, (1, string_id(1, 1)), timeout_s=0.4) as (_, [driver]):
            await driver.inventory()
            first = driver._link._client
            live.inject("slow_response", string_id(1, 1), delay_s=0.8)
            with pytest.raises(DeviceError, match=r"no valid answer within 0\.4 s"):
                await driver.poll(TS)
            assert driver._link._client is None
            live.clear_all()
            result = await driver.poll(TS)
            assert driver._link._client not in (None, first)
            assert result.invalid == []
            assert_matches_twin(result.readings, live, 0)

    run(scenario)


def test_a_unit_wired_to_another_string_is_refused(live):
    async def scenario():
        async with drivers(live, (2, string_id(1, 1))) as (simulator, [driver]):
            with pytest.raises(DeviceError) as caught:
                await driver.poll(TS)
            assert str(caught.value) == (
                f"unit 2 at 127.0.0.1:{simulator.port} reports {string_id(1, 2)},"
                f" configured as {string_id(1, 1)}"
            )
            with pytest.raises(DeviceError, match="reports STR-DC-CNX-01-UPS-01-02"):
                await driver.inventory()

    run(scenario)


def test_a_unit_the_gateway_does_not_have_is_a_device_error(live):
    async def scenario():
        async with drivers(live, (7, string_id(3, 1))) as (_, [driver]):
            with pytest.raises(DeviceError, match="exception 0B gateway target failed"):
                await driver.poll(TS)

    run(scenario)


def test_nothing_listening_is_a_device_error():
    async def scenario():
        port = free_tcp_port()
        driver = ModbusDriver(device(port, 1, string_id(1, 1)))
        with pytest.raises(DeviceError, match=f"cannot connect to 127.0.0.1:{port}"):
            await driver.poll(TS)
        await driver.close()

    run(scenario)


def test_a_connection_reset_fails_at_once_not_after_the_timeout():
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.transport.abort()  # RST, as a gateway that restarts

    async def scenario():
        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        driver = ModbusDriver(device(port, 1, string_id(1, 1), timeout_s=5.0))
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(DeviceError, match="connection closed by the device"):
            await driver.poll(TS)
        assert loop.time() - started < 1.0
        await driver.close()
        server.close()
        await server.wait_closed()

    run(scenario)
