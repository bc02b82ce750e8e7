"""The SNMP face of a simulated site: one agent, one context per UPS card, live twin values.

The only module of ``simulators/`` that imports pysnmp. What is served, and in which units, is
``common.snmp_oids``; this module maps it onto a pysnmp command responder:

- each UPS card is an SNMP context (v3 ``ups-01``, ``ups-02``…, the empty context is UPS 1;
  v1/v2c community ``public`` is UPS 1 and ``public@N`` is UPS N);
- every object is looked up in a fixed sorted OID list, and the values that follow the twin are
  recomputed once per twin snapshot, not per request;
- a UPS's device condition (``LiveSite.device_condition``) delays or swallows its answers
  without holding up the other contexts.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import socket
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pysnmp
from pyasn1.type import univ
from pysnmp.carrier.asyncio.dgram import udp, udp6
from pysnmp.carrier.asyncio.dispatch import AsyncioDispatcher
from pysnmp.entity import config, engine
from pysnmp.entity.rfc3413 import cmdrsp
from pysnmp.entity.rfc3413.context import SnmpContext
from pysnmp.error import PySnmpError
from pysnmp.proto import api, rfc1902, rfc1905
from pysnmp.smi import error as smi_error
from pysnmp.smi.instrum import AbstractMibInstrumController

from common import snmp_oids as so
from simulators.live import LiveSite
from simulators.twin import faults as fx
from simulators.twin.snapshot import BlockInventory, SiteSnapshot, StringStatus

__all__ = [
    "AUTH_PROTOCOLS",
    "DEFAULT_CREDENTIALS",
    "PRIV_PROTOCOLS",
    "SnmpCredentials",
    "SnmpSimulator",
    "SnmpSimulatorError",
    "serve_snmp",
]

AUTH_PROTOCOLS: dict[str, tuple[int, ...]] = {
    "MD5": config.USM_AUTH_HMAC96_MD5,
    "SHA": config.USM_AUTH_HMAC96_SHA,
    "SHA-224": config.USM_AUTH_HMAC128_SHA224,
    "SHA-256": config.USM_AUTH_HMAC192_SHA256,
    "SHA-384": config.USM_AUTH_HMAC256_SHA384,
    "SHA-512": config.USM_AUTH_HMAC384_SHA512,
}
# Names as net-snmp's ``-x`` spells them (its AES-192/256 use the Blumenthal key extension).
PRIV_PROTOCOLS: dict[str, tuple[int, ...]] = {
    "AES": config.USM_PRIV_CFB128_AES,
    "AES-192": config.USM_PRIV_CFB192_AES_BLUMENTHAL,
    "AES-256": config.USM_PRIV_CFB256_AES_BLUMENTHAL,
}

MANUFACTURER = "BRM Simulator"
MODEL = "BRM-SIM-UPS"
UPS_SOFTWARE = "BRM-SIM 1.0"


class SnmpSimulatorError(Exception):
    """The SNMP simulator could not start with these settings (bad credentials, port in use…)."""


@dataclass(frozen=True)
class SnmpCredentials:
    """Who may read the simulated cards: a v1/v2c community and one SNMPv3 USM user.

    ``community`` or ``v3_user`` ``None`` turns that access off. A v3 request must use the
    user's own security level (authPriv when ``v3_priv_key`` is set, else authNoPriv): USM
    answers any other with a report, never data. The default passphrases are published in
    docs/snmp.md and are for the simulator only.
    """

    community: str | None = "public"
    v3_user: str | None = "brm"
    v3_auth_key: str = "brm-auth-key"
    v3_priv_key: str | None = "brm-priv-key"
    v3_auth_protocol: str = "SHA"
    v3_priv_protocol: str = "AES"

    def __post_init__(self) -> None:
        if self.community == "":
            raise SnmpSimulatorError("the community must not be empty (use None to turn v2c off)")
        if self.v3_user is None:
            return
        if self.v3_auth_protocol not in AUTH_PROTOCOLS:
            raise SnmpSimulatorError(f"unknown SNMPv3 auth protocol {self.v3_auth_protocol!r}")
        if self.v3_priv_key is not None and self.v3_priv_protocol not in PRIV_PROTOCOLS:
            raise SnmpSimulatorError(f"unknown SNMPv3 privacy protocol {self.v3_priv_protocol!r}")
        for label, key in (("auth", self.v3_auth_key), ("privacy", self.v3_priv_key)):
            if key is not None and len(key) < 8:  # RFC 3414 11.2: at least 8 octets
                raise SnmpSimulatorError(
                    f"SNMPv3 {label} passphrase must have 8 characters or more"
                )


DEFAULT_CREDENTIALS = SnmpCredentials()
DEFAULT_MAINS = so.Mains()

# ---------------------------------------------------------------------------------------------
# The objects of one UPS card

_WRAP: dict[so.Syntax, Callable[[Any], Any]] = {
    so.Syntax.INTEGER: rfc1902.Integer32,
    so.Syntax.UNSIGNED: rfc1902.Gauge32,
    so.Syntax.TIMETICKS: rfc1902.TimeTicks,
    so.Syntax.OCTETS: rfc1902.OctetString,
    so.Syntax.OID: rfc1902.ObjectIdentifier,
    so.Syntax.BITS: rfc1902.Bits,
}
_UPTIME = so.SYS_UPTIME.instance()
RawValues = dict[so.Oid, Any]


def _identity_values(live: LiveSite, ups: int) -> RawValues:
    """The constant system and upsIdent objects of UPS ``ups`` (0-based)."""
    layout = live.layout
    ups_id = layout.ups_id(ups)
    return {
        so.SYS_DESCR.instance(): f"{MANUFACTURER} {MODEL} SNMP card of {ups_id}",
        so.SYS_OBJECT_ID.instance(): so.BRM_SIMULATOR_AGENT,
        so.SYS_CONTACT.instance(): "Battery RUL Monitoring simulator (see docs/snmp.md)",
        so.SYS_NAME.instance(): ups_id,
        so.SYS_LOCATION.instance(): layout.location_id,
        so.SYS_SERVICES.instance(): 72,  # applications + end-to-end
        so.UPS_IDENT_MANUFACTURER.instance(): MANUFACTURER,
        so.UPS_IDENT_MODEL.instance(): MODEL,
        so.UPS_IDENT_UPS_SOFTWARE.instance(): UPS_SOFTWARE,
        so.UPS_IDENT_AGENT_SOFTWARE.instance(): f"brm snmp_agent (pysnmp {pysnmp.__version__})",
        so.UPS_IDENT_NAME.instance(): ups_id,
        so.UPS_IDENT_ATTACHED_DEVICES.instance(): f"{layout.location_id} critical load",
    }


def _inventory_values(live: LiveSite, ups: int) -> RawValues:
    """The constant columns of the string and battery tables of UPS ``ups``."""
    layout = live.layout
    values: RawValues = {}
    for string_no, k in enumerate(_strings_of(live, ups), start=1):
        values[so.BRM_STRING_ID.instance(string_no)] = layout.string_id(k)
        values[so.BRM_STRING_BLOCK_COUNT.instance(string_no)] = layout.blocks_per_string
        for block_no, block in enumerate(live.inventory()[k], start=1):
            values.update(_block_inventory(string_no, block_no, layout.string_id(k), block))
    return values


def _block_inventory(
    string_no: int, block_no: int, string_id: str, block: BlockInventory
) -> RawValues:
    index = (string_no, block_no)
    return {
        so.BRM_BATTERY_ID.instance(*index): block.battery_id,
        so.BRM_BATTERY_SERIAL.instance(*index): block.serial_number,
        so.BRM_BATTERY_STRING_ID.instance(*index): string_id,
        so.BRM_BATTERY_POSITION.instance(*index): block.position,
        so.BRM_BATTERY_MANUFACTURER.instance(*index): block.manufacturer,
        so.BRM_BATTERY_MODEL.instance(*index): block.model,
        so.BRM_BATTERY_NOMINAL_VOLTAGE.instance(*index): so.BRM_BATTERY_NOMINAL_VOLTAGE.encode(
            block.nominal_voltage_v
        ),
        so.BRM_BATTERY_NOMINAL_CAPACITY.instance(*index): so.BRM_BATTERY_NOMINAL_CAPACITY.encode(
            block.nominal_capacity_ah
        ),
        so.BRM_BATTERY_INSTALLED.instance(*index): block.installed_date.isoformat(),
        so.BRM_BATTERY_WARRANTY.instance(*index): block.warranty_months,
    }


def _strings_of(live: LiveSite, ups: int) -> range:
    per_ups = live.layout.strings_per_ups
    return range(ups * per_ups, (ups + 1) * per_ups)


# sensor_dropout mode "garbage": impossible raw values served as a complete row (65.534 V,
# 3276.7 °C, 65.534 Ω, 6553.4 %), beyond the MIB's ranges, so a manager must judge them itself.
GARBAGE_RAW = {
    "voltage": 65_534,
    "temperature": 32_767,
    "internal_resistance": 65_534_000,
    "soc_pct": 65_534,
    "soh_pct": 65_534,
}


def _garbage_row(string_no: int, position: int) -> RawValues:
    index = (string_no, position)
    row: RawValues = {
        so.BATTERY_READING_OBJECTS[name].instance(*index): raw for name, raw in GARBAGE_RAW.items()
    }
    row[so.BRM_BATTERY_READING_STATE.instance(*index)] = int(so.ReadingState.COMPLETE)
    row[so.BRM_BATTERY_MISSING.instance(*index)] = so.encode_bits([])
    return row


def _live_values(
    snap: SiteSnapshot, strings: range, mains: so.Mains, garbage: set[tuple[int, int]]
) -> RawValues:
    """Everything of one UPS card that follows the twin, from one snapshot.

    ``garbage`` holds the (flat string, block) of sensors that serve ``GARBAGE_RAW``.
    """
    rows = slice(strings.start, strings.stop)
    u = strings.start // len(strings)
    states = [StringStatus(int(status)) for status in snap.string_status[rows]]
    seconds = float(snap.ups_seconds_on_battery[u])
    on_battery = StringStatus.DISCHARGING in states or (math.isfinite(seconds) and seconds > 0)
    string_v, string_a = snap.string_voltage[rows].tolist(), snap.string_current[rows].tolist()
    readings = so.UpsReadings.of_strings(
        seconds_on_battery=seconds,
        minutes_remaining=float(snap.ups_minutes_remaining[u]),
        charge_pct=float(snap.ups_charge_pct[u]),
        string_voltages=string_v,
        string_currents=string_a,
        block_temperatures=snap.temperature[rows].ravel().tolist(),
        on_battery=on_battery,
    )
    values: RawValues = dict(so.ups_live_values(readings, mains))
    columns = {name: getattr(snap, name)[rows].tolist() for name in so.BATTERY_READINGS}
    for s, state in enumerate(states):
        string_state = so.StringState[state.name]
        values.update(so.string_row_values(s + 1, string_v[s], string_a[s], string_state))
        for b in range(len(columns["voltage"][s])):
            block = {name: columns[name][s][b] for name in so.BATTERY_READINGS}
            values.update(so.battery_row_values(s + 1, b + 1, block))
            if (strings.start + s, b) in garbage:
                values.update(_garbage_row(s + 1, b + 1))
    return values


class _UpsMib:
    """The objects one UPS card serves: a fixed sorted OID list, live values cached per snapshot."""

    def __init__(self, live: LiveSite, ups: int, mains: so.Mains, started: float) -> None:
        self._live = live
        self._strings = _strings_of(live, ups)
        self._mains = mains
        self._started = started
        fixed = _identity_values(live, ups) | so.ups_config_values(mains)
        fixed |= _inventory_values(live, ups)
        self._fixed = {oid: self._wrap(oid, raw) for oid, raw in fixed.items()}
        self._snapshot: SiteSnapshot | None = None
        self._current: RawValues = {}
        every = set(fixed) | set(self._values()) | {_UPTIME}
        self._oids = sorted(every)
        self._wrappers = {oid: _WRAP[_object_of(oid).syntax] for oid in self._oids}
        self._objects = {_object_of(oid).oid for oid in self._oids}

    @staticmethod
    def _wrap(oid: so.Oid, raw: Any) -> Any:
        return None if raw is None else _WRAP[_object_of(oid).syntax](raw)

    def _values(self) -> RawValues:
        snap = self._live.snapshot()
        if snap is not self._snapshot:
            modes = fx.dropout_modes(self._live.layout, self._live.faults())
            garbage = {block for block, mode in modes.items() if mode == "garbage"}
            self._current = _live_values(snap, self._strings, self._mains, garbage)
            self._snapshot = snap
        return self._current

    def _value(self, oid: so.Oid, live: RawValues) -> Any:
        """The value of one instance now, or ``None`` when it is not served at the moment."""
        fixed = self._fixed.get(oid)
        if fixed is not None:
            return fixed
        if oid == _UPTIME:
            return rfc1902.TimeTicks(int((time.monotonic() - self._started) * 100) % 2**32)
        raw = live.get(oid)
        return None if raw is None else self._wrappers[oid](raw)

    def get(self, oid: so.Oid) -> Any:
        value = self._value(oid, self._values())
        if value is not None:
            return value
        known = any(oid[:end] in self._objects for end in range(len(oid) - 1, 0, -1))
        return rfc1905.noSuchInstance if known else rfc1905.noSuchObject

    def next(self, oid: so.Oid) -> tuple[so.Oid, Any] | None:
        """The first served instance after ``oid``; ``None`` past the end of the MIB view."""
        live = self._values()
        for i in range(bisect.bisect_right(self._oids, oid), len(self._oids)):
            value = self._value(self._oids[i], live)
            if value is not None:
                return self._oids[i], value
        return None


def _object_of(oid: so.Oid) -> so.MibObject:
    obj = so.object_of(oid)
    if obj is None:
        raise SnmpSimulatorError(f"no object type for {so.format_oid(oid)}")
    return obj


class _UpsInstrum(AbstractMibInstrumController):
    """pysnmp's view of one UPS card: reads answered from a ``_UpsMib``, writes refused."""

    def __init__(self, mib: _UpsMib) -> None:
        self._mib = mib

    def read_variables(self, *var_binds: Any, **context: Any) -> list[tuple[Any, Any]]:
        return [(name, self._mib.get(tuple(name))) for name, _ in var_binds]

    def read_next_variables(self, *var_binds: Any, **context: Any) -> list[tuple[Any, Any]]:
        answers: list[tuple[Any, Any]] = []
        for name, _ in var_binds:
            found = self._mib.next(tuple(name))
            if found is None:
                answers.append((name, rfc1905.endOfMibView))
            else:
                answers.append((rfc1902.ObjectName(found[0]), found[1]))
        return answers

    def write_variables(self, *var_binds: Any, **context: Any) -> list[tuple[Any, Any]]:
        raise smi_error.NotWritableError(idx=0)


# ---------------------------------------------------------------------------------------------
# Who gets an answer, and when

Request = tuple[Any, ...]  # the arguments of CommandResponderBase.process_pdu, in order


@dataclass(frozen=True)
class _Verdict:
    action: str  # "answer"; "drop": no response at all; "unknown_context": a Report
    delay_s: float = 0.0


class _Gate:
    """Decides, when a request arrives, whether and when its card answers."""

    def __init__(self, live: LiveSite, context_ups: dict[bytes, int]) -> None:
        self._live = live
        self._context_ups = context_ups
        self.stats: Counter[str] = Counter()

    def decide(self, context_name: Any) -> _Verdict:
        ups = self._context_ups.get(univ.OctetString(context_name).asOctets())
        if ups is None:
            return self._count(_Verdict("unknown_context"), "unknown_context")
        condition = self._live.device_condition(self._live.layout.ups_id(ups))
        if condition.silent:
            return self._count(_Verdict("drop"), "silent")
        delay = max(0.0, float(condition.delay_s))
        return self._count(_Verdict("answer", delay), "delayed" if delay else "answered")

    def _count(self, verdict: _Verdict, what: str) -> _Verdict:
        self.stats[what] += 1
        return verdict


class _GatedResponder:
    """Mixin for pysnmp's command responders: apply the gate's verdict before answering."""

    def __init__(self, snmp_engine: engine.SnmpEngine, contexts: SnmpContext, gate: _Gate) -> None:
        super().__init__(snmp_engine, contexts)  # type: ignore[call-arg]
        self._gate = gate
        self.pending: set[asyncio.TimerHandle] = set()

    def process_pdu(self, *request: Any) -> None:
        snmp_engine, context_name = request[0], request[6]
        verdict = self._gate.decide(context_name)
        if verdict.action == "drop":
            _forget(snmp_engine, request)
            return
        if verdict.action == "unknown_context":
            _report_unknown_context(snmp_engine, request)
            return
        if verdict.delay_s <= 0:
            super().process_pdu(*request)  # type: ignore[misc]
            return
        loop = asyncio.get_running_loop()
        handle = loop.call_later(verdict.delay_s, lambda: self._answer_later(handle, request))
        self.pending.add(handle)

    def _answer_later(self, handle: asyncio.TimerHandle, request: Request) -> None:
        self.pending.discard(handle)
        super().process_pdu(*request)  # type: ignore[misc]


def _forget(snmp_engine: engine.SnmpEngine, request: Request) -> None:
    """Release what the engine cached for a request that will never be answered (silent card).

    pysnmp frees a request's message and security state when it prepares the response, so a
    response is prepared and thrown away instead of being sent.
    """
    mp_model, pdu_version, pdu = int(request[1]), int(request[7]), request[8]
    handler = snmp_engine.message_processing_subsystems.get(mp_model)
    if handler is None:
        return
    response = api.PROTOCOL_MODULES[pdu_version].apiPDU.get_response(pdu)
    with contextlib.suppress(PySnmpError):  # nothing more to free
        handler.prepare_response_message(*request[:8], response, *request[9:], {})


def _report_unknown_context(snmp_engine: engine.SnmpEngine, request: Request) -> None:
    """Answer a Report of snmpUnknownContexts (RFC 3413 3.2 step 3).

    Done here because pysnmp's own path hands the response PDU, not the request, to the report
    builder, which then refuses to report on it.
    """
    builder = snmp_engine.get_mib_builder()
    (counter,) = builder.import_symbols("__SNMP-TARGET-MIB", "snmpUnknownContexts")
    counter.syntax += 1
    status = {"oid": counter.name, "val": counter.syntax}
    with contextlib.suppress(PySnmpError):  # e.g. a v1/v2c request: no reports there
        snmp_engine.message_dispatcher.return_response_pdu(*request, status)


class _Get(_GatedResponder, cmdrsp.GetCommandResponder):
    pass


class _Next(_GatedResponder, cmdrsp.NextCommandResponder):
    pass


class _Bulk(_GatedResponder, cmdrsp.BulkCommandResponder):
    pass


class _Set(_GatedResponder, cmdrsp.SetCommandResponder):
    pass


# ---------------------------------------------------------------------------------------------
# Starting and stopping


class SnmpSimulator:
    """A running SNMP agent of one site, on the caller's event loop. Stop it with ``stop()``."""

    def __init__(
        self,
        snmp_engine: engine.SnmpEngine,
        responders: list[_GatedResponder],
        gate: _Gate,
        address: tuple[str, int],
    ) -> None:
        self._engine = snmp_engine
        self._responders = responders
        self._gate = gate
        self.host, self.port = address
        self.engine_id: bytes = bytes(snmp_engine.snmpEngineID)
        self._closed = False

    @property
    def stats(self) -> Counter[str]:
        """Requests by fate: answered, delayed, silent (dropped), denied, unknown_context."""
        return self._gate.stats

    def close(self) -> None:
        """Stop answering and free the port; idempotent."""
        if self._closed:
            return
        self._closed = True
        for responder in self._responders:
            for handle in responder.pending:
                handle.cancel()
            responder.close(self._engine)  # type: ignore[attr-defined]
        self._engine.close_dispatcher()

    async def stop(self) -> None:
        self.close()
        await asyncio.sleep(0)  # let the transport's close callbacks run

    async def __aenter__(self) -> SnmpSimulator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def default_engine_id(location_id: str) -> bytes:
    """RFC 3411 engine ID: enterprise 32473, format 4 (text), the site's ID: stable per site."""
    return bytes.fromhex("80007ed904") + location_id.encode("ascii")[:27]


def _new_engine(engine_id: bytes) -> engine.SnmpEngine:
    """An engine with this ID. pysnmp then keeps snmpEngineBoots in a file under the temp dir
    (RFC 3414 wants boots to grow across restarts) and reads it without closing it: silence that
    one ResourceWarning rather than let it surface in a caller's ``-W error``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        return engine.SnmpEngine(snmpEngineID=engine_id)


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise SnmpSimulatorError(f"cannot resolve {host!r}: {exc}") from exc
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise SnmpSimulatorError(f"cannot bind UDP {host}:{port}: {exc}") from exc
    sock.setblocking(False)
    return sock


def _add_credentials(
    snmp_engine: engine.SnmpEngine, ups_count: int, credentials: SnmpCredentials
) -> None:
    community = credentials.community
    if community is not None:
        for number in range(1, ups_count + 1):
            context = so.context_name(number)
            names = [so.community_for(community, number)]
            names += [f"{community}@1"] if number == 1 else []
            for i, name in enumerate(names):
                config.add_v1_system(snmp_engine, f"{context}-{i}", name, contextName=context)
    if credentials.v3_user is not None:
        has_priv = credentials.v3_priv_key is not None
        config.add_v3_user(
            snmp_engine,
            credentials.v3_user,
            AUTH_PROTOCOLS[credentials.v3_auth_protocol],
            credentials.v3_auth_key,
            PRIV_PROTOCOLS[credentials.v3_priv_protocol] if has_priv else config.USM_PRIV_NONE,
            credentials.v3_priv_key,
        )


async def serve_snmp(
    live: LiveSite,
    host: str = "127.0.0.1",
    port: int = 161,
    credentials: SnmpCredentials = DEFAULT_CREDENTIALS,
    *,
    engine_id: bytes | None = None,
    mains: so.Mains = DEFAULT_MAINS,
) -> SnmpSimulator:
    """Serve ``live``'s UPS cards over SNMP on UDP ``host:port`` (0: any free port).

    Runs on the caller's event loop until ``stop()``; ``engine_id`` defaults to one derived
    from the site ID, so managers see the same SNMPv3 engine across restarts.
    """
    loop = asyncio.get_running_loop()
    layout = live.layout
    sock = _bind(host, port)
    snmp_engine = _new_engine(engine_id or default_engine_id(layout.location_id))
    snmp_engine.register_transport_dispatcher(AsyncioDispatcher(loop=loop))
    carrier = udp6 if sock.family == socket.AF_INET6 else udp
    transport = carrier.UdpAsyncioTransport(loop=loop).open_server_mode(sock=sock)
    config.add_transport(snmp_engine, carrier.DOMAIN_NAME, transport)
    try:
        _add_credentials(snmp_engine, layout.ups_count, credentials)
    except PySnmpError as exc:
        snmp_engine.close_dispatcher()
        raise SnmpSimulatorError(f"cannot configure SNMP access: {exc}") from exc
    started = time.monotonic()
    cards = {u: _UpsInstrum(_UpsMib(live, u, mains, started)) for u in range(layout.ups_count)}
    names = {so.context_name(u + 1).encode(): u for u in range(layout.ups_count)} | {b"": 0}
    contexts = SnmpContext(snmp_engine)
    contexts.unregister_context_name(b"")  # pysnmp's own MIB is not a card
    for name, u in names.items():
        contexts.register_context_name(name, cards[u])
    gate = _Gate(live, names)
    responders = [kind(snmp_engine, contexts, gate) for kind in (_Get, _Next, _Bulk, _Set)]
    while transport.transport is None:  # the endpoint is made by a task on this loop
        await asyncio.sleep(0)
    return SnmpSimulator(snmp_engine, responders, gate, sock.getsockname()[:2])
