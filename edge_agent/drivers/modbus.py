"""Battery-string monitors over Modbus TCP: the one module of the agent that imports pymodbus.

What to read comes from the device profile (``common/data/<profile>.yaml``): the header first,
whose ``block_count`` sizes the plan, then contiguous reads of the live block group; the
nameplate groups only for ``inventory()``. Each driver keeps its own TCP connection, so a unit
that stops answering holds up nobody else. pymodbus errors become ``DeviceError``; a block whose
sensor answers with an exception costs only that block.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import datetime

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from common import ids
from common.registercodec import decode_registers, yyyymmdd_to_date
from common.registermap import FieldKey, Value, load_register_map, plan_reads
from common.schemas import StringInfo
from edge_agent.config import ModbusDevice
from edge_agent.drivers import values
from edge_agent.drivers.base import DeviceError, InvalidValue, PollResult

log = logging.getLogger(__name__)

EXCEPTION_NAMES = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "device failure",
    0x05: "acknowledge",
    0x06: "device busy",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target failed to respond",
}
# A gateway's own exceptions say the monitor is missing, not one of its sensors.
GATEWAY_EXCEPTIONS = frozenset({0x0A, 0x0B})

Decoded = dict[FieldKey, Value | None]


class _ExceptionResponseError(Exception):
    """The unit answered a read with a Modbus exception response."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"exception {code:02X} {EXCEPTION_NAMES.get(code, 'unknown')}")


class _Link:
    """The TCP connection to one unit: opened on demand, dropped after any failure."""

    def __init__(self, device: ModbusDevice, function_code: int) -> None:
        self._device = device
        self._function_code = function_code
        self._client: AsyncModbusTcpClient | None = None
        self._lost: asyncio.Future[None] | None = None
        self.where = f"unit {device.unit_id} at {device.host}:{device.port}"

    async def read(self, address: int, count: int) -> list[int]:
        """``count`` registers from ``address``; raise _ExceptionResponseError or DeviceError."""
        client = await self._connected()
        try:
            response = await self._request(client, address, count)
        except ModbusIOException as exc:
            # Closing also keeps a late answer from passing for the next request's.
            await self.close()
            timeout = self._device.timeout_s
            raise DeviceError(f"{self.where}: no valid answer within {timeout:g} s") from exc
        except ModbusException as exc:
            await self.close()
            raise DeviceError(f"{self.where}: {exc}") from exc
        if response.isError():
            raise _ExceptionResponseError(response.exception_code)
        if len(response.registers) != count:
            await self.close()
            raise DeviceError(
                f"{self.where}: short read, {len(response.registers)} of {count} registers"
                f" at {address}"
            )
        return list(response.registers)

    async def _request(self, client: AsyncModbusTcpClient, address: int, count: int) -> ModbusPDU:
        """The answer, or DeviceError as soon as the connection drops (no waiting for timeout)."""
        read = (
            client.read_holding_registers
            if self._function_code == 3
            else client.read_input_registers
        )
        unit = self._device.unit_id
        request = asyncio.ensure_future(read(address, count=count, device_id=unit))
        lost = self._lost
        assert lost is not None  # set by _connected
        try:
            await asyncio.wait((request, lost), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not request.done():  # connection lost, or the caller gave up: never reuse it
                request.cancel()
                self._discard()
        if not request.done():
            raise DeviceError(f"{self.where}: connection closed by the device")
        return request.result()

    async def _connected(self) -> AsyncModbusTcpClient:
        if self._client is not None and self._client.connected:
            return self._client
        await self.close()
        device = self._device
        self._lost = asyncio.get_running_loop().create_future()
        client = AsyncModbusTcpClient(
            device.host,
            port=device.port,
            timeout=device.timeout_s,
            retries=0,  # the poller decides when to try again
            reconnect_delay=0,  # and when to reconnect
            trace_connect=self._connection_changed,
        )
        if not await client.connect():
            client.close()
            raise DeviceError(f"cannot connect to {device.host}:{device.port}")
        self._client = client
        return client

    def _connection_changed(self, connected: bool) -> None:
        if not connected and self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def _discard(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def close(self) -> None:
        self._discard()
        await asyncio.sleep(0)  # let the transport close its socket


class ModbusDriver:
    """The monitor of one battery string: ``device.id`` is the string ID it must report."""

    def __init__(self, device: ModbusDevice) -> None:
        self.device_id = device.id
        self._map = load_register_map(device.profile)
        self._link = _Link(device, self._map.function_codes[0])
        self._location, self._ups, self._string = ids.parse_string_id(device.id)
        self._header = self._map.group_of("block_count")
        self._blocks = self._map.group_of("voltage")
        self._nameplates = (
            self._map.group_of("manufacturer").name,
            self._map.group_of("serial_number").name,
        )
        self._plans: dict[tuple[int, int, tuple[str, ...]], list[tuple[int, int]]] = {}

    async def poll(self, ts: datetime) -> PollResult:
        block_count, header = await self._read_header()
        decoded, failed = await self._read_blocks(block_count)
        invalid: list[InvalidValue] = []
        current, reason = values.check("current", _number(header, FieldKey("string_current")))
        if reason is not None:
            invalid.append(InvalidValue(None, "current", reason))
        readings = []
        for index in range(block_count):
            fields = {name: _number(decoded, FieldKey(name, index)) for name in values.BLOCK_FIELDS}
            missing = failed.get(index, values.NOT_AVAILABLE)
            battery = self._battery_id(index)
            reading, bad = values.block_reading(battery, ts, fields, current, missing)
            readings.append(reading)
            invalid.extend(bad)
        return PollResult(readings, invalid)

    async def inventory(self) -> list[StringInfo]:
        block_count, _ = await self._read_header()
        decoded = await self._read_all(self._plan(block_count, *self._nameplates), block_count)
        string_fields = {
            "manufacturer": decoded.get(FieldKey("manufacturer")),
            "model": decoded.get(FieldKey("model")),
            "nominal_voltage_v": decoded.get(FieldKey("nominal_voltage")),
            "nominal_capacity_ah": decoded.get(FieldKey("nominal_capacity")),
            "warranty_months": decoded.get(FieldKey("warranty_months")),
        }
        nameplates = []
        for index in range(block_count):
            position = decoded.get(FieldKey("position", index))
            if position is not None and position != index + 1:
                raise DeviceError(
                    f"{self._link.where}: block {index} reports position {position},"
                    f" the profile places it at {index + 1}"
                )
            installed = decoded.get(FieldKey("installed_date", index))
            block_fields = {
                "serial_number": decoded.get(FieldKey("serial_number", index)),
                "installed_date": yyyymmdd_to_date(
                    installed if isinstance(installed, int) else None
                ),
                "position": position,
            }
            nameplates.append((self._battery_id(index), string_fields | block_fields))
        info, problems = values.string_info(self.device_id, nameplates)
        for problem in problems:
            log.warning("%s: %s (left out of the inventory)", self.device_id, problem)
        return [info]

    async def close(self) -> None:
        await self._link.close()

    def _battery_id(self, index: int) -> str:
        return ids.battery_id(self._location, self._ups, self._string, index + 1)

    def _plan(
        self, block_count: int, *groups: str, max_registers: int = 125
    ) -> list[tuple[int, int]]:
        key = (block_count, max_registers, groups)
        if key not in self._plans:
            self._plans[key] = plan_reads(self._map, block_count, max_registers, groups)
        return self._plans[key]

    async def _read_header(self) -> tuple[int, Decoded]:
        """Read the header and check it is the configured string; its block count."""
        header = await self._read_all(self._plan(0, self._header.name), 0)
        where = self._link.where
        version = header.get(FieldKey("map_version"))
        if version != self._map.version:
            raise DeviceError(
                f"{where} serves register map version {version},"
                f" profile {self._map.name} is version {self._map.version}"
            )
        ups, string = header.get(FieldKey("ups_number")), header.get(FieldKey("string_number"))
        if (ups, string) != (self._ups, self._string):
            reported = (
                ids.string_id(self._location, ups, string)
                if isinstance(ups, int) and isinstance(string, int)
                else f"UPS {ups}, string {string}"
            )
            raise DeviceError(f"{where} reports {reported}, configured as {self.device_id}")
        count = header.get(FieldKey("block_count"))
        if not isinstance(count, int) or not 1 <= count <= (self._blocks.max_repeat or 1):
            raise DeviceError(f"{where} reports {count} blocks")
        return count, header

    async def _read_all(self, plan: Iterable[tuple[int, int]], block_count: int) -> Decoded:
        """Every read of ``plan``; any exception answer fails the whole device."""
        decoded: Decoded = {}
        for address, count in plan:
            try:
                registers = await self._link.read(address, count)
            except _ExceptionResponseError as exc:
                raise DeviceError(
                    f"{self._link.where}: {exc} for {count} registers at {address}"
                ) from exc
            decoded |= decode_registers(self._map, address, registers, block_count)
        return decoded

    async def _read_blocks(self, block_count: int) -> tuple[Decoded, dict[int, str]]:
        """Live values of every block, and why each block that failed has none."""
        decoded: Decoded = {}
        failed: dict[int, str] = {}
        for address, count in self._plan(block_count, self._blocks.name):
            try:
                registers = await self._link.read(address, count)
            except _ExceptionResponseError as exc:
                self._check_not_gateway(exc)
                await self._read_singly(address, count, block_count, decoded, failed)
                continue
            decoded |= decode_registers(self._map, address, registers, block_count)
        return decoded, failed

    async def _read_singly(
        self,
        address: int,
        count: int,
        block_count: int,
        decoded: Decoded,
        failed: dict[int, str],
    ) -> None:
        """Re-read a refused range block by block, so only the faulty blocks go missing."""
        group = self._blocks
        single = self._plan(block_count, group.name, max_registers=group.size)
        for start, size in single:
            if not address <= start < address + count:
                continue
            try:
                registers = await self._link.read(start, size)
            except _ExceptionResponseError as exc:
                self._check_not_gateway(exc)
                failed[(start - group.base) // group.size] = str(exc)
                continue
            decoded |= decode_registers(self._map, start, registers, block_count)

    def _check_not_gateway(self, exc: _ExceptionResponseError) -> None:
        if exc.code in GATEWAY_EXCEPTIONS:
            raise DeviceError(f"{self._link.where}: {exc}") from exc


def _number(decoded: Decoded, key: FieldKey) -> float | int | None:
    value = decoded.get(key)
    return value if isinstance(value, int | float) else None
