"""Modbus TCP face of a simulated site: one unit per battery string, registers per the BRM map.

The only module of ``simulators/`` that imports pymodbus (3.16's ``SimDevice`` API). The upper
half turns a snapshot into register images and needs no sockets; the lower half adapts that to
pymodbus. Behaviour a client sees (docs/modbus-register-map.md has the full table):

- unit id k + 1 serves flat string k; any other unit id answers exception 0x0B (gateway target
  device failed to respond), as a gateway does for a monitor that is not on its bus;
- an unmapped address answers 02, a write answers 02 (no register is writable), coil and
  discrete-input functions answer 01;
- a sensor dropout in mode "nan" makes that block's measurement registers read "not available";
  in mode "exception" any read touching them answers 04 (server device failure); in mode
  "garbage" they hold implausible raw values that are not sentinels (``GARBAGE_REGISTERS``);
- a slow device answers after ``delay_s``; a silent one never answers (the client times out),
  while other units and other clients carry on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from common.registercodec import date_to_yyyymmdd
from common.registerimage import blank_image, write_fields
from common.registermap import RegisterMap, load_register_map, mapped_ranges
from simulators.twin.faults import DROPOUT_MODES, dropout_modes

if TYPE_CHECKING:
    from simulators.live import LiveSite
    from simulators.twin.snapshot import BlockInventory, SiteLayout, SiteSnapshot

log = logging.getLogger(__name__)

REGISTER_MAP = "brm-monitor-v1"
READ_FUNCTIONS = frozenset({3, 4})
MEASUREMENTS = ("voltage", "temperature", "internal_resistance", "soc_pct", "soh_pct")
# A "garbage" sensor: raw values a decoder takes for readings, all physically impossible
# (65.534 V, 3276.7 °C, 6553.4 %). The resistance register cannot hold an impossible value
# (at most 65.534 mΩ, which a failing block may show), so it reads "not available".
GARBAGE_REGISTERS = {
    "voltage": 0xFFFE,
    "temperature": 0x7FFF,
    "internal_resistance": 0xFFFF,
    "soc_pct": 0xFFFE,
    "soh_pct": 0xFFFE,
}
MAX_UNITS = 247  # highest unit id a Modbus serial line behind a gateway can address
_CATCH_ALL_UNIT = 0  # pymodbus serves unknown unit ids from device 0


# --------------------------------------------------------------------------- register images


@dataclass(frozen=True)
class UnitView:
    """What one unit answers while one snapshot is current."""

    registers: list[int]  # image from address 0 (gaps hold 0 but pymodbus refuses them)
    failed: tuple[tuple[int, int], ...]  # [start, end) ranges that answer exception 04
    delay_s: float
    silent: bool

    def failure_in(self, address: int, count: int) -> bool:
        """True when a read of ``count`` registers from ``address`` touches a failed sensor."""
        end = address + count
        return any(address < hi and lo < end for lo, hi in self.failed)


def static_image(
    regmap: RegisterMap, layout: SiteLayout, k: int, inventory: list[BlockInventory]
) -> np.ndarray:
    """Registers of string ``k`` that never change while the monitor runs: identity, nameplates."""
    blocks = layout.blocks_per_string
    image = blank_image(regmap, blocks)
    first = inventory[0]

    def fit(name: str, text: str) -> str:
        """Cut text to the field's width, as a monitor's fixed-size nameplate field does."""
        return text[: 2 * regmap.field(name).width]

    values: dict[str, object] = {
        "map_version": regmap.version,
        "block_count": blocks,
        "ups_number": layout.ups_of_string(k) + 1,
        "string_number": k % layout.strings_per_ups + 1,
        "manufacturer": fit("manufacturer", first.manufacturer),
        "model": fit("model", first.model),
        "nominal_voltage": first.nominal_voltage_v,
        "nominal_capacity": first.nominal_capacity_ah,
        "warranty_months": first.warranty_months,
        "serial_number": [fit("serial_number", block.serial_number) for block in inventory],
        "installed_date": [date_to_yyyymmdd(block.installed_date) for block in inventory],
        "position": [block.position for block in inventory],
    }
    write_fields(regmap, image, values, blocks)
    return image


def live_image(
    regmap: RegisterMap,
    static: np.ndarray,
    snapshot: SiteSnapshot,
    k: int,
    *,
    blank_blocks: list[int],
    garbage_blocks: list[int],
) -> list[int]:
    """Registers of string ``k`` at ``snapshot``; blocks in ``blank_blocks`` read "n/a", those
    in ``garbage_blocks`` read ``GARBAGE_REGISTERS``."""
    image = static.copy()
    blocks = snapshot.voltage.shape[1]
    values: dict[str, object] = {
        "sample_time": int(snapshot.t),
        "string_current": float(snapshot.string_current[k]),
        "string_voltage": float(snapshot.string_voltage[k]),
        "string_status": int(snapshot.string_status[k]),
    }
    for name in MEASUREMENTS:
        row = np.array(getattr(snapshot, name)[k], dtype=np.float64)  # same names as the map
        row[blank_blocks] = np.nan
        values[name] = row
    write_fields(regmap, image, values, blocks)
    for block in garbage_blocks:
        for name, raw in GARBAGE_REGISTERS.items():
            image[regmap.address(name, block)] = raw
    return image.tolist()


def measurement_range(regmap: RegisterMap, block: int) -> tuple[int, int]:
    """[start, end) of block ``block``'s measurement registers."""
    group = regmap.group_of(MEASUREMENTS[0])
    start = group.base + block * group.size
    return start, start + group.size


class SiteRegisters:
    """Register views of every unit of a site, rebuilt lazily when the snapshot changes.

    A read costs a snapshot lookup (cached by ``LiveSite``) and a list slice; encoding, faults
    and device conditions are worked out once per snapshot and unit.
    """

    def __init__(self, live: LiveSite, regmap: RegisterMap) -> None:
        self.live = live
        self.regmap = regmap
        self.layout = live.layout
        inventory = live.inventory()
        self._static = [
            static_image(regmap, self.layout, k, inventory[k])
            for k in range(self.layout.string_count)
        ]
        self._views: dict[int, tuple[SiteSnapshot, UnitView]] = {}

    def view(self, k: int) -> UnitView:
        """The current view of unit k + 1 (flat string k)."""
        snapshot = self.live.snapshot()
        cached = self._views.get(k)
        if cached is not None and cached[0] is snapshot:
            return cached[1]
        view = self._build(k, snapshot)
        self._views[k] = (snapshot, view)
        return view

    def _build(self, k: int, snapshot: SiteSnapshot) -> UnitView:
        modes: dict[str, list[int]] = {mode: [] for mode in DROPOUT_MODES}
        for (string, block), mode in dropout_modes(self.layout, self.live.faults()).items():
            if string == k:
                modes[mode].append(block)
        failed = tuple(measurement_range(self.regmap, block) for block in modes["exception"])
        condition = self.live.device_condition(self.layout.string_id(k))
        registers = live_image(
            self.regmap,
            self._static[k],
            snapshot,
            k,
            blank_blocks=modes["nan"],
            garbage_blocks=modes["garbage"],
        )
        return UnitView(registers, failed, condition.delay_s, condition.silent)


# --------------------------------------------------------------------------- pymodbus adapter


class _Responder:
    """Answers register requests of every unit from the site's current views."""

    def __init__(self, site: SiteRegisters) -> None:
        self.site = site
        self._held: set[asyncio.Task[object]] = set()

    async def answer(  # noqa: PLR0917 (pymodbus's action signature, with k bound first)
        self,
        k: int,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus action hook: fill the requested registers of unit k + 1 from the twin."""
        if function_code not in READ_FUNCTIONS or values is not None:
            return ExcCodes.ILLEGAL_FUNCTION
        view = self.site.view(k)
        if view.silent:
            raise NoSuchIdException(f"unit {k + 1} is silent")  # pymodbus then sends nothing
        if view.delay_s > 0:
            await self._hold(view.delay_s)
            view = self.site.view(k)
        if view.failure_in(address, count):
            return ExcCodes.DEVICE_FAILURE
        offset = address - start_address
        registers[offset : offset + count] = view.registers[address : address + count]
        return None

    async def _hold(self, delay_s: float) -> None:
        """Sleep like a slow device, in a way ``cancel_held`` can cut short."""
        task = asyncio.current_task()
        if task is None:
            await asyncio.sleep(delay_s)
            return
        self._held.add(task)
        try:
            await asyncio.sleep(delay_s)
        finally:
            self._held.discard(task)

    def cancel_held(self) -> None:
        """Abandon delayed requests: a stopped device answers nothing more."""
        for task in list(self._held):
            task.cancel()


class ModbusSimulator:
    """A running Modbus TCP server for one site; ``port`` is the bound port."""

    def __init__(self, responder: _Responder, server: ModbusTcpServer) -> None:
        self.site = responder.site
        self._responder = responder
        self._server = server
        self.port: int = server.transport.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, drop connections and abandon requests still being delayed."""
        self._responder.cancel_held()
        await self._server.shutdown()
        await asyncio.sleep(0)  # let the closed transports finish closing


async def _no_such_unit(
    _function_code: int,
    _start_address: int,
    _address: int,
    _count: int,
    _registers: list[int],
    _values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    return ExcCodes.GATEWAY_NO_RESPONSE


def _devices(responder: _Responder, regmap: RegisterMap, blocks: int) -> list[SimDevice]:
    """One pymodbus device per string over the mapped ranges, plus a catch-all for the rest."""
    ranges = mapped_ranges(regmap, blocks)
    devices = [
        SimDevice(
            id=k + 1,
            simdata=[
                SimData(address=a, count=n, values=0, datatype=DataType.REGISTERS, readonly=True)
                for a, n in ranges
            ],
            action=functools.partial(responder.answer, k),
        )
        for k in range(responder.site.layout.string_count)
    ]
    everything = SimData(address=0, count=0x10000, datatype=DataType.REGISTERS, readonly=True)
    devices.append(SimDevice(id=_CATCH_ALL_UNIT, simdata=[everything], action=_no_such_unit))
    return devices


async def serve_modbus(
    live: LiveSite, host: str, port: int, register_map: str = REGISTER_MAP
) -> ModbusSimulator:
    """Serve ``live`` on ``host:port`` (0 picks a free port; see ``.port``) until ``stop()``."""
    regmap = load_register_map(register_map)
    site = SiteRegisters(live, regmap)
    if site.layout.string_count > MAX_UNITS:
        raise ValueError(f"a Modbus gateway addresses at most {MAX_UNITS} units (strings)")
    responder = _Responder(site)
    devices = _devices(responder, regmap, site.layout.blocks_per_string)
    server = ModbusTcpServer(devices, address=(host, port), ignore_missing_devices=True)
    try:
        await server.serve_forever(background=True)
    except RuntimeError as exc:
        raise OSError(f"cannot serve Modbus TCP on {host}:{port}: {exc}") from exc
    simulator = ModbusSimulator(responder, server)
    log.debug("serving %s over Modbus TCP on %s:%d", site.layout.location_id, host, simulator.port)
    return simulator
