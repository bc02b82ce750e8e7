"""UPS SNMP cards, v2c or v3 authPriv: the one module of the agent that imports pysnmp.

A card serves its UPS's per-battery table (``common/snmp_oids.py``, ``docs/snmp.md``). A poll
walks each reading column, and the missing-readings BITS, of every string with its own GETBULK
(one answer each) and GETs the strings' currents, several requests in flight together: about
100 ms for 108 blocks, nearly all of it pysnmp decoding. Which strings the card has (and how
many blocks each) is learned once per connection. pysnmp's failures (timeouts, USM reports,
error statuses) become ``DeviceError``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

from pyasn1.type import univ
from pysnmp.error import PySnmpError
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    Udp6TransportTarget,
    UdpTransportTarget,
    UsmUserData,
    bulk_cmd,
    get_cmd,
    usmAesBlumenthalCfb192Protocol,
    usmAesBlumenthalCfb256Protocol,
    usmAesCfb128Protocol,
    usmHMAC128SHA224AuthProtocol,
    usmHMAC192SHA256AuthProtocol,
    usmHMAC256SHA384AuthProtocol,
    usmHMAC384SHA512AuthProtocol,
    usmHMACSHAAuthProtocol,
)

from common import ids
from common import snmp_oids as so
from common.schemas import StringInfo
from edge_agent.config import SnmpDevice
from edge_agent.drivers import values
from edge_agent.drivers.base import DeviceError, InvalidValue, PollResult

log = logging.getLogger(__name__)

AUTH_PROTOCOLS = {
    "SHA": usmHMACSHAAuthProtocol,
    "SHA-224": usmHMAC128SHA224AuthProtocol,
    "SHA-256": usmHMAC192SHA256AuthProtocol,
    "SHA-384": usmHMAC256SHA384AuthProtocol,
    "SHA-512": usmHMAC384SHA512AuthProtocol,
}
# net-snmp's names: its AES-192/256 localise keys the Blumenthal way.
PRIV_PROTOCOLS = {
    "AES": usmAesCfb128Protocol,
    "AES-192": usmAesBlumenthalCfb192Protocol,
    "AES-256": usmAesBlumenthalCfb256Protocol,
}
# Rows asked per GETBULK: agents cap what they return anyway (pysnmp at 64 varbinds), and a
# walk carries on from where an answer stopped.
MAX_REPETITIONS = 64
# Requests of one card in flight at once. Decoding answers is what costs (pysnmp's BER decoder),
# so more would only queue answers past their deadline on a busy agent.
MAX_IN_FLIGHT = 6

READING_COLUMNS = (*so.BATTERY_READING_OBJECTS.values(), so.BRM_BATTERY_MISSING)
NAMEPLATE_COLUMNS = (
    so.BRM_BATTERY_ID,
    so.BRM_BATTERY_SERIAL,
    so.BRM_BATTERY_POSITION,
    so.BRM_BATTERY_MANUFACTURER,
    so.BRM_BATTERY_MODEL,
    so.BRM_BATTERY_NOMINAL_VOLTAGE,
    so.BRM_BATTERY_NOMINAL_CAPACITY,
    so.BRM_BATTERY_INSTALLED,
    so.BRM_BATTERY_WARRANTY,
)
CURRENT_BIT = so.STRING_READINGS.index("current")
# Reports pysnmp passes on as a bare OID (SNMP-TARGET-MIB, RFC 3413).
REPORTS = {
    "1.3.6.1.6.3.12.1.4.0": "the card's context is unavailable (snmpUnavailableContexts)",
    "1.3.6.1.6.3.12.1.5.0": "the card has no such context (snmpUnknownContexts)",
}

Raw = int | bytes | None
T = TypeVar("T")


def _credentials(device: SnmpDevice) -> tuple[CommunityData | UsmUserData, ContextData]:
    """Who we are to the card, and which UPS of an agent that serves several.

    v2c: the configured community as given; left unset, the default follows the UPS number by
    community indexing (``public``, ``public@2``…). v3: the configured context, else ``ups-NN``.
    """
    _, ups = ids.parse_ups_id(device.id)
    if device.version == "v2c" or device.v3 is None:
        given = "community" in device.model_fields_set
        community = device.community if given else so.community_for(device.community, ups)
        return CommunityData(community, mpModel=1), ContextData()
    v3 = device.v3
    user = UsmUserData(
        v3.user,
        v3.auth_key,
        v3.priv_key,
        authProtocol=AUTH_PROTOCOLS[v3.auth_protocol],
        privProtocol=PRIV_PROTOCOLS[v3.priv_protocol],
    )
    return user, ContextData(contextName=device.context or so.context_name(ups))


class _Session:
    """One card through one pysnmp engine, opened on demand; every failure a DeviceError."""

    def __init__(self, device: SnmpDevice) -> None:
        self._device = device
        self._auth, self._context = _credentials(device)
        self._engine: SnmpEngine | None = None
        self._target: UdpTransportTarget | Udp6TransportTarget | None = None
        self._opening = asyncio.Lock()
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.where = f"{device.id} at {device.host}:{device.port}"

    async def get(self, oids: Iterable[so.Oid]) -> dict[so.Oid, Raw]:
        """Values of instances; None where the card has none (noSuchInstance)."""
        request = [ObjectType(ObjectIdentity(oid)) for oid in oids]
        answer = await self._call(get_cmd, *request)
        return {oid: _plain(value) for oid, value in answer}

    async def walk(self, prefix: so.Oid, last: so.Oid | None, rows: int) -> dict[so.Oid, Raw]:
        """Instances under ``prefix`` (up to ``last``) by GETBULK, ``rows`` expected."""
        found: dict[so.Oid, Raw] = {}
        start = prefix
        repetitions = min(max(rows, 1), MAX_REPETITIONS)
        while True:
            answer = await self._call(bulk_cmd, 0, repetitions, ObjectType(ObjectIdentity(start)))
            for oid, value in answer:
                raw = _plain(value)
                if oid[: len(prefix)] != prefix or raw is None:  # past it, or endOfMibView
                    return found
                found[oid] = raw
                if last is not None and oid >= last:
                    return found
            if not answer:
                return found
            if answer[-1][0] <= start:
                raise DeviceError(f"{self.where}: the walk of {so.format_oid(prefix)} goes back")
            start = answer[-1][0]

    async def _call(self, command: Any, *args: Any) -> list[tuple[so.Oid, Any]]:
        engine, target = await self._open()
        timeout = self._device.timeout_s
        try:
            async with self._in_flight, asyncio.timeout(timeout):
                indication, status, index, varbinds = await command(
                    engine, self._auth, target, self._context, *args, lookupMib=False
                )
        except TimeoutError as exc:
            raise DeviceError(f"{self.where}: no answer within {timeout:g} s") from exc
        except PySnmpError as exc:
            raise DeviceError(f"{self.where}: {exc}") from exc
        if indication:
            text = str(indication)
            raise DeviceError(f"{self.where}: {REPORTS.get(text, text)}")
        if status:
            raise DeviceError(f"{self.where}: {status.prettyPrint()} at varbind {int(index)}")
        return [(tuple(name.asTuple()), value) for name, value in varbinds]

    async def _open(self) -> tuple[SnmpEngine, UdpTransportTarget | Udp6TransportTarget]:
        async with self._opening:  # requests start together: one engine for them all
            if self._engine is None or self._target is None:
                device = self._device
                kind = Udp6TransportTarget if ":" in device.host else UdpTransportTarget
                try:
                    # pysnmp counts its timeout in timer ticks, which a busy loop stretches;
                    # _call keeps the deadline on the clock, pysnmp only expires the request.
                    self._target = await kind.create(
                        (device.host, device.port), timeout=2 * device.timeout_s, retries=0
                    )
                except PySnmpError as exc:
                    raise DeviceError(f"{self.where}: {exc}") from exc
                self._engine = SnmpEngine()
            return self._engine, self._target

    async def close(self) -> None:
        engine, self._engine, self._target = self._engine, None, None
        if engine is not None:
            engine.close_dispatcher()
            await asyncio.sleep(0)  # let the transport close its socket


@dataclass(frozen=True)
class _String:
    number: int  # brmStringIndex: the string's number on its UPS
    string_id: str
    blocks: int


class SnmpDriver:
    """The SNMP card of one UPS: ``device.id`` is its UPS ID; reads every string it has."""

    def __init__(self, device: SnmpDevice) -> None:
        self.device_id = device.id
        self._location, self._ups = ids.parse_ups_id(device.id)
        self._session = _Session(device)
        self._strings: list[_String] | None = None

    async def poll(self, ts: datetime) -> PollResult:
        for _ in range(2):
            strings = await self._layout()
            result = await self._poll(strings, ts)
            if result is not None:
                return result
            self._strings = None  # the card's strings changed under us: learn them again
        raise DeviceError(f"{self._session.where}: its strings keep changing")

    async def inventory(self) -> list[StringInfo]:
        self._strings = None
        strings = await self._layout()
        rows = _rows(await _all(self._walks(strings, NAMEPLATE_COLUMNS)))
        infos = []
        for string in strings:
            nameplates = []
            for position in range(1, string.blocks + 1):
                battery_id = self._battery_id(string, position)
                columns = rows.get((string.number, position), {})
                reported = _text(columns, so.BRM_BATTERY_ID)
                if reported is not None and reported != battery_id:
                    raise DeviceError(
                        f"{self._session.where}: row {string.number}.{position} is {reported},"
                        f" expected {battery_id}"
                    )
                nameplates.append((battery_id, _nameplate_fields(columns)))
            info, problems = values.string_info(string.string_id, nameplates)
            for problem in problems:
                log.warning("%s: %s (left out of the inventory)", self.device_id, problem)
            infos.append(info)
        return infos

    async def close(self) -> None:
        self._strings = None
        await self._session.close()

    def _battery_id(self, string: _String, position: int) -> str:
        return ids.battery_id(self._location, self._ups, string.number, position)

    def _walks(
        self, strings: Sequence[_String], columns: Iterable[so.MibObject]
    ) -> list[Awaitable[dict[so.Oid, Raw]]]:
        """One column walk per column and string, each one GETBULK; they run together."""
        return [
            self._session.walk(
                (*column.oid, s.number), column.instance(s.number, s.blocks), s.blocks
            )
            for column in columns
            for s in strings
        ]

    async def _layout(self) -> list[_String]:
        """The card's strings from brmStringTable, checked against the configured UPS."""
        if self._strings is not None:
            return self._strings
        id_column, count_column = so.BRM_STRING_ID, so.BRM_STRING_BLOCK_COUNT
        string_ids, counts = await _all(
            [
                self._session.walk(id_column.oid, None, 8),
                self._session.walk(count_column.oid, None, 8),
            ]
        )
        strings = []
        for oid, raw in sorted(string_ids.items()):
            number = oid[-1]
            reported = raw.decode("ascii", "replace") if isinstance(raw, bytes) else None
            expected = ids.string_id(self._location, self._ups, number)
            if reported != expected:
                raise DeviceError(
                    f"{self._session.where} reports {reported}, configured as {self.device_id}"
                )
            blocks = counts.get(count_column.instance(number))
            if not isinstance(blocks, int) or not 1 <= blocks <= 999:
                raise DeviceError(f"{self._session.where}: string {number} has {blocks} blocks")
            strings.append(_String(number, expected, blocks))
        if not strings:
            raise DeviceError(f"{self._session.where} reports no battery strings")
        self._strings = strings
        return strings

    async def _poll(self, strings: list[_String], ts: datetime) -> PollResult | None:
        """Readings of every block; None when the card's block counts no longer match."""
        per_string = (so.BRM_STRING_CURRENT, so.BRM_STRING_MISSING, so.BRM_STRING_BLOCK_COUNT)
        string_oids = [obj.instance(s.number) for s in strings for obj in per_string]
        string_values, *walked = await _all(
            [
                self._session.get(string_oids),
                *self._walks(strings, READING_COLUMNS),
            ]
        )
        counts = [string_values.get(so.BRM_STRING_BLOCK_COUNT.instance(s.number)) for s in strings]
        if counts != [s.blocks for s in strings]:
            return None
        rows = _rows(walked)
        readings, invalid, bad_currents = [], [], []
        for string in strings:
            current, reason = values.check("current", _string_current(string_values, string))
            if reason is not None:
                bad_currents.append(f"{string.string_id}: {reason}")
            for position in range(1, string.blocks + 1):
                decoded = so.decode_battery_row(rows.get((string.number, position), {}))
                battery_id = self._battery_id(string, position)
                reading, bad = values.block_reading(battery_id, ts, decoded, current)
                readings.append(reading)
                invalid.extend(bad)
        if bad_currents:
            invalid.insert(0, InvalidValue(None, "current", "; ".join(bad_currents)))
        return PollResult(readings, invalid)


async def _all(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Run together; on the first failure, cancel the rest (their answers are moot)."""
    tasks = [asyncio.ensure_future(item) for item in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()


def _plain(value: Any) -> Raw:
    """A pysnmp value as a plain int or bytes; None for noSuchInstance/Object, endOfMibView."""
    if isinstance(value, univ.Integer):  # Integer32, Gauge32, TimeTicks…
        return int(value)
    if isinstance(value, univ.OctetString):  # also BITS
        return value.asOctets()
    return None


def _rows(walked: Iterable[dict[so.Oid, Raw]]) -> dict[tuple[int, int], dict[int, int | bytes]]:
    """Battery-table instances as (string, position) → {column number: raw value}."""
    rows: dict[tuple[int, int], dict[int, int | bytes]] = {}
    for found in walked:
        for oid, raw in found.items():
            split = so.split_row_oid(oid, so.BRM_BATTERY_ENTRY)
            if split is None or len(split[1]) != 2 or raw is None:
                continue
            column, (string, position) = split
            rows.setdefault((string, position), {})[column] = raw
    return rows


def _string_current(string_values: dict[so.Oid, Raw], string: _String) -> float | None:
    raw = string_values.get(so.BRM_STRING_CURRENT.instance(string.number))
    bits = string_values.get(so.BRM_STRING_MISSING.instance(string.number))
    missing = so.decode_bits(bits) if isinstance(bits, bytes) else frozenset()
    if not isinstance(raw, int) or CURRENT_BIT in missing:
        return None
    return so.BRM_STRING_CURRENT.decode(raw)


def _text(columns: dict[int, int | bytes], obj: so.MibObject) -> str | None:
    raw = columns.get(obj.oid[-1])
    return raw.decode("ascii", "replace") if isinstance(raw, bytes) and raw else None


def _number(columns: dict[int, int | bytes], obj: so.MibObject) -> int | None:
    raw = columns.get(obj.oid[-1])
    return raw if isinstance(raw, int) else None


def _nameplate_fields(columns: dict[int, int | bytes]) -> dict[str, object]:
    """BatteryInfo fields from one row's nameplate columns (None where the card gave none)."""
    installed = _text(columns, so.BRM_BATTERY_INSTALLED)
    try:
        installed_date = date.fromisoformat(installed) if installed else None
    except ValueError:
        installed_date = None
    voltage = _number(columns, so.BRM_BATTERY_NOMINAL_VOLTAGE)
    capacity = _number(columns, so.BRM_BATTERY_NOMINAL_CAPACITY)
    return {
        "serial_number": _text(columns, so.BRM_BATTERY_SERIAL),
        "manufacturer": _text(columns, so.BRM_BATTERY_MANUFACTURER),
        "model": _text(columns, so.BRM_BATTERY_MODEL),
        "nominal_voltage_v": so.BRM_BATTERY_NOMINAL_VOLTAGE.decode(voltage),
        "nominal_capacity_ah": so.BRM_BATTERY_NOMINAL_CAPACITY.decode(capacity),
        "installed_date": installed_date,
        "warranty_months": _number(columns, so.BRM_BATTERY_WARRANTY),
        "position": _number(columns, so.BRM_BATTERY_POSITION),
    }
