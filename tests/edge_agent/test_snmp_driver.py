"""The SNMP driver against the real SNMP simulator on a free port, its twin's clock frozen."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from common.fleet import demo_fleet_path, load_fleet
from edge_agent.config import SnmpDevice
from edge_agent.drivers.base import DeviceError, InvalidValue
from edge_agent.drivers.snmp import SnmpDriver
from edge_agent.drivers.values import BLOCK_FIELDS, NOT_AVAILABLE
from simulators.clock import SimClock
from simulators.live import LiveSite
from simulators.snmp_agent import SnmpSimulator, serve_snmp
from simulators.twin import SiteTwin
from tests.support import SERVED_TOLERANCE, assert_same_nameplates, free_udp_port

pytestmark = pytest.mark.integration

SITE = "DC-CNX-01"
UPS1, UPS2 = f"{SITE}-UPS-01", f"{SITE}-UPS-02"
TS = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
BLOCKS, STRINGS = 36, 3
V3 = {"user": "brm", "auth_key": "brm-auth-key", "priv_key": "brm-priv-key"}
TOLERANCE = SERVED_TOLERANCE
MARGIN_S = 0.75  # a loaded test machine delays the loop (and the drivers share it)


def battery(ups: int, string: int, position: int) -> str:
    return f"BAT-{SITE}-UPS-{ups:02d}-STR-{string:02d}-{position:03d}"


def snmp_device(port: int, ups_id: str, timeout_s: float = 1.0, **settings: Any) -> SnmpDevice:
    settings = {"host": "127.0.0.1", **settings}
    return SnmpDevice(type="snmp", id=ups_id, port=port, timeout_s=timeout_s, **settings)


@pytest.fixture
def live() -> LiveSite:
    twin = SiteTwin(load_fleet(demo_fleet_path()).get(SITE), seed=1)
    return LiveSite(twin, SimClock(epoch=1_800_000_000.0, wall=lambda: 0.0))


@contextlib.asynccontextmanager
async def card(live: LiveSite) -> AsyncIterator[SnmpSimulator]:
    agent = await serve_snmp(live, "127.0.0.1", 0)
    try:
        yield agent
    finally:
        await agent.stop()


@contextlib.asynccontextmanager
async def driver_for(device: SnmpDevice) -> AsyncIterator[SnmpDriver]:
    driver = SnmpDriver(device)
    try:
        yield driver
    finally:
        await driver.close()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def assert_matches_twin(readings, live: LiveSite, ups: int, skip=frozenset()) -> None:
    """Readings of UPS ``ups`` (1-based), string by string, equal the twin's to the scale."""
    snap = live.snapshot()
    assert len(readings) == STRINGS * BLOCKS
    for i, reading in enumerate(readings):
        s, b = divmod(i, BLOCKS)
        k = (ups - 1) * STRINGS + s
        assert reading.battery_id == battery(ups, s + 1, b + 1)
        assert reading.ts == TS
        assert reading.current == pytest.approx(float(snap.string_current[k]), abs=0.0005)
        if reading.battery_id in skip:
            continue
        for name, tolerance in TOLERANCE.items():
            expected = float(getattr(snap, name)[k, b])
            assert getattr(reading, name) == pytest.approx(expected, abs=tolerance * 1.001)


@pytest.mark.parametrize(
    ("ups", "settings"),
    [
        (1, {}),
        (2, {}),  # community left unset: public@2 by community indexing
        (2, {"community": "public@2"}),
        (2, {"version": "v3", "v3": V3}),  # context left unset: ups-02
        (1, {"version": "v3", "v3": V3, "context": "ups-01"}),
    ],
    ids=["v2c-ups1", "v2c-ups2-default", "v2c-ups2-given", "v3-ups2", "v3-ups1-context"],
)
def test_poll_reads_all_108_blocks_as_the_twin_has_them(live, ups, settings):
    async def scenario():
        async with card(live) as agent:
            device = snmp_device(agent.port, f"{SITE}-UPS-{ups:02d}", **settings)
            async with driver_for(device) as driver:
                result = await driver.poll(TS)
                again = await driver.poll(TS)
        assert result.invalid == []
        assert_matches_twin(result.readings, live, ups)
        assert again.readings == result.readings

    run(scenario)


def test_inventory_matches_the_twins_nameplates(live):
    async def scenario():
        async with card(live) as agent, driver_for(snmp_device(agent.port, UPS2)) as driver:
            infos = await driver.inventory()
        assert [info.string_id for info in infos] == [
            f"STR-{SITE}-UPS-02-{s:02d}" for s in (1, 2, 3)
        ]
        for info, expected in zip(infos, live.inventory()[3:6], strict=True):
            assert len(info.batteries) == len(expected) == BLOCKS
            assert_same_nameplates(info.batteries, expected)

    run(scenario)


@pytest.mark.parametrize("mode", ["nan", "exception"])
def test_sensor_dropout_reads_none_with_not_available(live, mode):
    bat = battery(1, 2, 5)
    live.inject("sensor_dropout", bat, mode=mode)

    async def scenario():
        async with card(live) as agent, driver_for(snmp_device(agent.port, UPS1)) as driver:
            result = await driver.poll(TS)
        [bad] = [r for r in result.readings if r.battery_id == bat]
        assert all(getattr(bad, name) is None for name in BLOCK_FIELDS)
        assert result.invalid == [InvalidValue(bat, name, NOT_AVAILABLE) for name in BLOCK_FIELDS]
        assert_matches_twin(result.readings, live, 1, skip={bat})

    run(scenario)


def test_garbage_values_are_nulled_by_range(live):
    bat = battery(2, 3, 36)  # the very last row: its column walks end there
    live.inject("sensor_dropout", bat, mode="garbage")

    async def scenario():
        async with card(live) as agent, driver_for(snmp_device(agent.port, UPS2)) as driver:
            result = await driver.poll(TS)
        assert all(getattr(result.readings[-1], name) is None for name in BLOCK_FIELDS)
        assert result.invalid == [
            InvalidValue(bat, "voltage", "out of range: 65.534 V"),
            InvalidValue(bat, "temperature", "out of range: 3276.7 °C"),
            InvalidValue(bat, "internal_resistance", "out of range: 65.534 Ω"),
            InvalidValue(bat, "soc_pct", "out of range: 6553.4 %"),
            InvalidValue(bat, "soh_pct", "out of range: 6553.4 %"),
        ]
        assert_matches_twin(result.readings, live, 2, skip={bat})

    run(scenario)


def test_a_silent_card_fails_within_its_timeout_while_another_reads(simulated_site):
    """Against ``battery-sim site`` in its own process, so only the drivers share this loop."""
    simulated_site.inject("no_response", UPS1)

    async def scenario():
        port = simulated_site.snmp_port
        async with (
            driver_for(snmp_device(port, UPS1, timeout_s=1.0)) as silent,
            driver_for(snmp_device(port, UPS2, timeout_s=1.0)) as other,
        ):
            loop = asyncio.get_running_loop()
            started = loop.time()
            waiting = asyncio.create_task(silent.poll(TS))
            result = await other.poll(TS)
            assert not waiting.done(), "the other card waited for the silent one"
            assert len(result.readings) == STRINGS * BLOCKS
            with pytest.raises(DeviceError, match=r"no answer within \d"):
                await waiting
            assert loop.time() - started < 1.0 + MARGIN_S
            simulated_site.clear_all()
            assert len((await silent.poll(TS)).readings) == STRINGS * BLOCKS

    run(scenario)


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"version": "v3", "v3": {**V3, "auth_key": "wrong-auth-key"}}, "Wrong SNMP PDU digest"),
        ({"version": "v3", "v3": {**V3, "user": "mallory"}}, "Unknown USM user"),
        ({"version": "v3", "v3": {**V3, "priv_key": "wrong-priv-key"}}, "ciphertext is broken"),
        ({"version": "v3", "v3": V3, "context": "ups-03"}, "no such context"),
        ({"community": "private"}, r"no answer within \d"),
    ],
    ids=["wrong-auth-key", "unknown-user", "wrong-priv-key", "unknown-context", "wrong-community"],
)
def test_wrong_credentials_are_a_device_error(live, settings, error):
    async def scenario():
        async with card(live) as agent:
            # A report comes at once; only the wrong community waits for its timeout.
            timeout_s = 0.5 if "community" in settings else 2.0
            device = snmp_device(agent.port, UPS2, timeout_s=timeout_s, **settings)
            async with driver_for(device) as driver:
                with pytest.raises(DeviceError, match=error):
                    await driver.poll(TS)
                with pytest.raises(DeviceError, match=error):
                    await driver.inventory()

    run(scenario)


def test_a_card_of_another_ups_is_refused(live):
    async def scenario():
        async with card(live) as agent:
            device = snmp_device(agent.port, UPS1, community="public@2")
            async with driver_for(device) as driver:
                with pytest.raises(DeviceError) as caught:
                    await driver.poll(TS)
            assert str(caught.value) == (
                f"{UPS1} at 127.0.0.1:{agent.port} reports STR-{SITE}-UPS-02-01,"
                f" configured as {UPS1}"
            )

    run(scenario)


def test_no_agent_at_all_is_a_device_error():
    async def scenario():
        device = snmp_device(free_udp_port(), UPS1, timeout_s=0.5)
        async with driver_for(device) as driver:
            with pytest.raises(DeviceError, match=r"no answer within \d"):
                await driver.poll(TS)
        unknown = snmp_device(161, UPS1, host="no-such-host.invalid")
        async with driver_for(unknown) as driver:
            with pytest.raises(DeviceError, match=r"no-such-host\.invalid"):
                await driver.poll(TS)

    run(scenario)
