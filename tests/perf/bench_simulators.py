"""Simulator throughput: Modbus block reads/s, SNMP GETBULK responses/s, twin readings/s.

Run on demand (`make bench`); prints medians of several runs, each beside a baseline measured in
the same run, so the figures can be compared across machines:
- Modbus: the twin-backed server vs pymodbus serving static registers (no action hook).
- SNMP: GETBULK responses vs single-OID GET responses from the same agent.
- Twin: bulk readings vs numpy drawing the same number of Gaussian values (a floor for any model).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import numpy as np
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    bulk_cmd,
    get_cmd,
)

from common.fleet import demo_fleet_path, load_fleet
from common.registermap import load_register_map, plan_reads
from simulators.clock import SimClock
from simulators.live import LiveSite
from simulators.modbus_server import serve_modbus
from simulators.snmp_agent import serve_snmp
from simulators.twin import SiteTwin
from tests.support import QUIET_EPOCH

RUNS = 5
SECONDS = 2.0
UPS_BATTERY_GROUP = "1.3.6.1.2.1.33.1.2"
BRM_TABLE = "1.3.6.1.4.1.32473"


def live_site() -> LiveSite:
    location = load_fleet(demo_fleet_path()).get("DC-CNX-01")
    return LiveSite(SiteTwin(location, seed=1), SimClock(epoch=QUIET_EPOCH))


async def rate(
    call: Callable[[], Awaitable[object]], seconds: float = SECONDS, in_flight: int = 1
) -> float:
    """Completed calls per second over ``seconds``, with ``in_flight`` callers back to back."""
    done = 0
    start = time.perf_counter()

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() - start < seconds:
            await call()
            done += 1

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return done / (time.perf_counter() - start)


async def modbus_reads(port: int, address: int, count: int) -> float:
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    try:

        async def read() -> None:
            response = await client.read_holding_registers(address, count=count, device_id=1)
            if response.isError() or len(response.registers) != count:
                raise RuntimeError(f"bad response {response}")

        return await rate(read)
    finally:
        client.close()


async def bench_modbus() -> tuple[float, float]:
    regmap = load_register_map()
    address, count = max(plan_reads(regmap, 36), key=lambda read: read[1])
    simulator = await serve_modbus(live_site(), "127.0.0.1", 0)
    static = ModbusTcpServer(
        [SimDevice(id=1, simdata=[SimData(0, count=2000, values=7, datatype=DataType.REGISTERS)])],
        address=("127.0.0.1", 0),
    )
    await static.serve_forever(background=True)
    static_port = static.transport.sockets[0].getsockname()[1]
    try:
        twin = [await modbus_reads(simulator.port, address, count) for _ in range(RUNS)]
        base = [await modbus_reads(static_port, address, count) for _ in range(RUNS)]
    finally:
        await simulator.stop()
        await static.shutdown()
    print(f"modbus: block reads of {count} registers at {address}")
    return statistics.median(twin), statistics.median(base)


async def bench_snmp(in_flight: int) -> tuple[float, float]:
    agent = await serve_snmp(live_site(), "127.0.0.1", 0)
    engine = SnmpEngine()
    target = await UdpTransportTarget.create(("127.0.0.1", agent.port), timeout=2, retries=0)
    auth = CommunityData("public", mpModel=1)

    async def bulk() -> None:
        error, status, _index, binds = await bulk_cmd(
            engine, auth, target, ContextData(), 0, 25, ObjectType(ObjectIdentity(BRM_TABLE))
        )
        if error or status or len(binds) != 25:
            raise RuntimeError(f"GETBULK failed: {error or status}")

    async def get() -> None:
        error, status, _index, _binds = await get_cmd(
            engine,
            auth,
            target,
            ContextData(),
            ObjectType(ObjectIdentity(UPS_BATTERY_GROUP + ".5.0")),
        )
        if error or status:
            raise RuntimeError(f"GET failed: {error or status}")

    try:
        bulks = [await rate(bulk, in_flight=in_flight) for _ in range(RUNS)]
        gets = [await rate(get, in_flight=in_flight) for _ in range(RUNS)]
    finally:
        await agent.stop()
        engine.close_dispatcher()
    return statistics.median(bulks), statistics.median(gets)


def bench_twin() -> tuple[float, float, int]:
    twin = live_site().twin
    times = time.time() - 86_400 + np.arange(5_000, dtype=float) * 15.0
    blocks = twin.layout.string_count * twin.layout.blocks_per_string
    count = len(times) * blocks
    twin_rates, base_rates = [], []
    rng = np.random.default_rng(0)
    for _ in range(RUNS):
        start = time.perf_counter()
        twin.readings(times)
        twin_rates.append(count / (time.perf_counter() - start))
        start = time.perf_counter()
        rng.standard_normal((5, count))
        base_rates.append(count / (time.perf_counter() - start))
    return statistics.median(twin_rates), statistics.median(base_rates), count


def main() -> None:
    print(f"medians of {RUNS} runs")
    twin, base = asyncio.run(bench_modbus())
    print(f"  twin-backed server  {twin:10,.0f} block reads/s")
    print(f"  static registers    {base:10,.0f} block reads/s   (ratio {twin / base:.2f})")
    print("snmp: GETBULK of 25 varbinds over the per-battery table vs GET of one OID, v2c")
    for in_flight in (1, 10):
        bulk, get = asyncio.run(bench_snmp(in_flight))
        print(
            f"  {in_flight:2d} in flight: GETBULK {bulk:7,.0f} /s   GET {get:7,.0f} /s"
            f"   (GETBULK/GET {bulk / get:.2f}, {25 * bulk:,.0f} varbinds/s by GETBULK)"
        )
    readings, normals, count = bench_twin()
    print(f"twin: bulk readings of a 216-block site, {count:,} block-readings per call")
    print(f"  twin readings       {readings:13,.0f} /s")
    print(f"  numpy 5 normals     {normals:13,.0f} /s   (ratio {readings / normals:.2f})")


if __name__ == "__main__":
    main()
