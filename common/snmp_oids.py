"""The SNMP contract of a site: OIDs, syntaxes, units and scaling of what the UPS cards serve.

The simulator encodes readings with these helpers and the edge agent decodes them with the same
ones, so a unit or an index is defined exactly once. Pure: plain numbers in, plain numbers out
(NaN or ``None`` means "the device gave no value"); no SNMP library here.

Served per UPS (one SNMP context per UPS card): the SNMPv2-MIB system group, the RFC 1628
UPS-MIB groups upsIdent, upsBattery, upsInput, upsOutput and upsConfig, and the BRM-BATTERY-MIB
tables (``common/data/BRM-BATTERY-MIB.txt``) under the documentation enterprise 32473 (RFC 5612).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum

Oid = tuple[int, ...]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1


def parse_oid(text: str) -> Oid:
    """``"1.3.6.1"`` or ``".1.3.6.1"`` as a tuple; anything else raises ValueError."""
    parts = text.strip().lstrip(".").split(".")
    if not parts or not all(part.isdigit() for part in parts):
        raise ValueError(f"not a numeric OID: {text!r}")
    return tuple(int(part) for part in parts)


def format_oid(oid: Iterable[int]) -> str:
    return ".".join(str(arc) for arc in oid)


# ---------------------------------------------------------------------------------------------
# Scaling: SNMP carries integers; a Scale says what one unit of the integer is worth.


@dataclass(frozen=True)
class Scale:
    """An integer object worth ``value * per_unit``: 0.1 V is ``Scale(10, "V")``.

    ``low``/``high`` are the object's syntax range; encoding clamps to it so that an extreme
    reading still goes out as a legal value rather than an error.
    """

    per_unit: float
    unit: str
    low: int = INT32_MIN
    high: int = INT32_MAX

    def encode(self, value: float | None) -> int | None:
        """Raw integer for a reading; ``None`` for a missing one (NaN or ``None``)."""
        if value is None or not math.isfinite(value):
            return None
        raw = math.floor(value * self.per_unit + 0.5)
        return min(max(raw, self.low), self.high)

    def encode_many(self, values: Iterable[float]) -> list[int | None]:
        return [self.encode(value) for value in values]

    def decode(self, raw: int | None) -> float | None:
        """Reading in ``unit`` from a raw integer; ``None`` stays ``None``."""
        return None if raw is None else raw / self.per_unit


# ---------------------------------------------------------------------------------------------
# Object catalogue


class Syntax(Enum):
    """SMI base types of the objects served (the adapter maps them to its library's classes)."""

    INTEGER = "Integer32"
    UNSIGNED = "Unsigned32"  # also Gauge32: same wire type
    TIMETICKS = "TimeTicks"
    OCTETS = "OCTET STRING"
    OID = "OBJECT IDENTIFIER"
    BITS = "BITS"


@dataclass(frozen=True)
class MibObject:
    """One object type: its OID (without instance), SMI syntax and, if numeric, its scale."""

    name: str
    oid: Oid
    syntax: Syntax
    scale: Scale | None = None

    def instance(self, *index: int) -> Oid:
        """OID of one instance: ``.0`` for a scalar, the row index for a column."""
        return self.oid + (index or (0,))

    def encode(self, value: float | None) -> int | None:
        """Raw value of a reading in SI units (numeric objects only)."""
        return scale_of(self).encode(value)

    def decode(self, raw: int | None) -> float | None:
        """Reading in SI units from a raw value (numeric objects only)."""
        return scale_of(self).decode(raw)


def scale_of(obj: MibObject) -> Scale:
    """The scale of a numeric object; asking for one of a text object is a programming error."""
    if obj.scale is None:
        raise TypeError(f"{obj.name} has no scale")
    return obj.scale


_I, _U, _S = Syntax.INTEGER, Syntax.UNSIGNED, Syntax.OCTETS

# RFC 3418 SNMPv2-MIB system group
SYSTEM: Oid = (1, 3, 6, 1, 2, 1, 1)
SYS_DESCR = MibObject("sysDescr", (*SYSTEM, 1), _S)
SYS_OBJECT_ID = MibObject("sysObjectID", (*SYSTEM, 2), Syntax.OID)
SYS_UPTIME = MibObject("sysUpTime", (*SYSTEM, 3), Syntax.TIMETICKS, Scale(100, "s", 0, UINT32_MAX))
SYS_CONTACT = MibObject("sysContact", (*SYSTEM, 4), _S)
SYS_NAME = MibObject("sysName", (*SYSTEM, 5), _S)
SYS_LOCATION = MibObject("sysLocation", (*SYSTEM, 6), _S)
SYS_SERVICES = MibObject("sysServices", (*SYSTEM, 7), _I)

# RFC 1628 UPS-MIB
UPS_MIB: Oid = (1, 3, 6, 1, 2, 1, 33)
UPS_IDENT: Oid = (*UPS_MIB, 1, 1)
UPS_IDENT_MANUFACTURER = MibObject("upsIdentManufacturer", (*UPS_IDENT, 1), _S)
UPS_IDENT_MODEL = MibObject("upsIdentModel", (*UPS_IDENT, 2), _S)
UPS_IDENT_UPS_SOFTWARE = MibObject("upsIdentUPSSoftwareVersion", (*UPS_IDENT, 3), _S)
UPS_IDENT_AGENT_SOFTWARE = MibObject("upsIdentAgentSoftwareVersion", (*UPS_IDENT, 4), _S)
UPS_IDENT_NAME = MibObject("upsIdentName", (*UPS_IDENT, 5), _S)
UPS_IDENT_ATTACHED_DEVICES = MibObject("upsIdentAttachedDevices", (*UPS_IDENT, 6), _S)

UPS_BATTERY: Oid = (*UPS_MIB, 1, 2)
UPS_BATTERY_STATUS = MibObject("upsBatteryStatus", (*UPS_BATTERY, 1), _I)
UPS_SECONDS_ON_BATTERY = MibObject(
    "upsSecondsOnBattery", (*UPS_BATTERY, 2), _I, Scale(1, "s", 0, INT32_MAX)
)
UPS_MINUTES_REMAINING = MibObject(
    "upsEstimatedMinutesRemaining", (*UPS_BATTERY, 3), _I, Scale(1, "min", 1, INT32_MAX)
)
UPS_CHARGE_REMAINING = MibObject(
    "upsEstimatedChargeRemaining", (*UPS_BATTERY, 4), _I, Scale(1, "%", 0, 100)
)
UPS_BATTERY_VOLTAGE = MibObject("upsBatteryVoltage", (*UPS_BATTERY, 5), _I, Scale(10, "V", 0))
UPS_BATTERY_CURRENT = MibObject("upsBatteryCurrent", (*UPS_BATTERY, 6), _I, Scale(10, "A"))
UPS_BATTERY_TEMPERATURE = MibObject("upsBatteryTemperature", (*UPS_BATTERY, 7), _I, Scale(1, "°C"))

UPS_INPUT: Oid = (*UPS_MIB, 1, 3)
UPS_INPUT_NUM_LINES = MibObject("upsInputNumLines", (*UPS_INPUT, 2), _I)
UPS_INPUT_ENTRY: Oid = (*UPS_INPUT, 3, 1)
UPS_INPUT_FREQUENCY = MibObject("upsInputFrequency", (*UPS_INPUT_ENTRY, 2), _I, Scale(10, "Hz", 0))
UPS_INPUT_VOLTAGE = MibObject("upsInputVoltage", (*UPS_INPUT_ENTRY, 3), _I, Scale(1, "V", 0))

UPS_OUTPUT: Oid = (*UPS_MIB, 1, 4)
UPS_OUTPUT_SOURCE = MibObject("upsOutputSource", (*UPS_OUTPUT, 1), _I)
UPS_OUTPUT_FREQUENCY = MibObject("upsOutputFrequency", (*UPS_OUTPUT, 2), _I, Scale(10, "Hz", 0))
UPS_OUTPUT_NUM_LINES = MibObject("upsOutputNumLines", (*UPS_OUTPUT, 3), _I)
UPS_OUTPUT_ENTRY: Oid = (*UPS_OUTPUT, 4, 1)
UPS_OUTPUT_VOLTAGE = MibObject("upsOutputVoltage", (*UPS_OUTPUT_ENTRY, 2), _I, Scale(1, "V", 0))

UPS_CONFIG: Oid = (*UPS_MIB, 1, 9)
UPS_CONFIG_INPUT_VOLTAGE = MibObject("upsConfigInputVoltage", (*UPS_CONFIG, 1), _I, Scale(1, "V"))
UPS_CONFIG_INPUT_FREQ = MibObject("upsConfigInputFreq", (*UPS_CONFIG, 2), _I, Scale(10, "Hz"))
UPS_CONFIG_OUTPUT_VOLTAGE = MibObject("upsConfigOutputVoltage", (*UPS_CONFIG, 3), _I, Scale(1, "V"))
UPS_CONFIG_OUTPUT_FREQ = MibObject("upsConfigOutputFreq", (*UPS_CONFIG, 4), _I, Scale(10, "Hz"))
UPS_CONFIG_LOW_BATT_TIME = MibObject("upsConfigLowBattTime", (*UPS_CONFIG, 7), _I, Scale(1, "min"))


class BatteryStatus(IntEnum):
    """upsBatteryStatus."""

    UNKNOWN = 1
    NORMAL = 2
    LOW = 3
    DEPLETED = 4


class OutputSource(IntEnum):
    """upsOutputSource (NUT maps NORMAL to ``OL`` and BATTERY to ``OB``)."""

    OTHER = 1
    NONE = 2
    NORMAL = 3
    BYPASS = 4
    BATTERY = 5
    BOOSTER = 6
    REDUCER = 7


# BRM-BATTERY-MIB, under the IANA documentation enterprise number (RFC 5612)
ENTERPRISE: Oid = (1, 3, 6, 1, 4, 1, 32473)
BRM_BATTERY_MIB: Oid = (*ENTERPRISE, 1)
BRM_OBJECTS: Oid = (*BRM_BATTERY_MIB, 1)
BRM_SIMULATOR_AGENT: Oid = (*BRM_BATTERY_MIB, 3, 1)  # the simulator's sysObjectID

BRM_BATTERY_TABLE: Oid = (*BRM_OBJECTS, 1)
BRM_BATTERY_ENTRY: Oid = (*BRM_BATTERY_TABLE, 1)
_BE = BRM_BATTERY_ENTRY
BRM_BATTERY_ID = MibObject("brmBatteryId", (*_BE, 3), _S)
BRM_BATTERY_SERIAL = MibObject("brmBatterySerial", (*_BE, 4), _S)
BRM_BATTERY_STRING_ID = MibObject("brmBatteryStringId", (*_BE, 5), _S)
BRM_BATTERY_POSITION = MibObject("brmBatteryPosition", (*_BE, 6), _U)
BRM_BATTERY_VOLTAGE = MibObject("brmBatteryVoltage", (*_BE, 7), _U, Scale(1000, "V", 0, UINT32_MAX))
BRM_BATTERY_TEMPERATURE = MibObject("brmBatteryTemperature", (*_BE, 8), _I, Scale(10, "°C"))
BRM_BATTERY_RESISTANCE = MibObject(
    "brmBatteryResistance", (*_BE, 9), _U, Scale(1_000_000, "Ω", 0, UINT32_MAX)
)
BRM_BATTERY_SOC = MibObject("brmBatterySoc", (*_BE, 10), _U, Scale(10, "%", 0, 1000))
BRM_BATTERY_SOH = MibObject("brmBatterySoh", (*_BE, 11), _U, Scale(10, "%", 0, 1000))
BRM_BATTERY_READING_STATE = MibObject("brmBatteryReadingState", (*_BE, 12), _I)
BRM_BATTERY_MISSING = MibObject("brmBatteryMissingReadings", (*_BE, 13), Syntax.BITS)
BRM_BATTERY_MANUFACTURER = MibObject("brmBatteryManufacturer", (*_BE, 14), _S)
BRM_BATTERY_MODEL = MibObject("brmBatteryModel", (*_BE, 15), _S)
BRM_BATTERY_NOMINAL_VOLTAGE = MibObject(
    "brmBatteryNominalVoltage", (*_BE, 16), _U, Scale(1000, "V", 0, UINT32_MAX)
)
BRM_BATTERY_NOMINAL_CAPACITY = MibObject(
    "brmBatteryNominalCapacity", (*_BE, 17), _U, Scale(10, "Ah", 0, UINT32_MAX)
)
BRM_BATTERY_INSTALLED = MibObject("brmBatteryInstalledDate", (*_BE, 18), _S)
BRM_BATTERY_WARRANTY = MibObject("brmBatteryWarrantyMonths", (*_BE, 19), _U)

BRM_STRING_TABLE: Oid = (*BRM_OBJECTS, 2)
BRM_STRING_ENTRY: Oid = (*BRM_STRING_TABLE, 1)
_SE = BRM_STRING_ENTRY
BRM_STRING_ID = MibObject("brmStringId", (*_SE, 2), _S)
BRM_STRING_VOLTAGE = MibObject("brmStringVoltage", (*_SE, 3), _U, Scale(1000, "V", 0, UINT32_MAX))
BRM_STRING_CURRENT = MibObject("brmStringCurrent", (*_SE, 4), _I, Scale(1000, "A"))
BRM_STRING_STATE = MibObject("brmStringState", (*_SE, 5), _I)
BRM_STRING_BLOCK_COUNT = MibObject("brmStringBlockCount", (*_SE, 6), _U)
BRM_STRING_MISSING = MibObject("brmStringMissingReadings", (*_SE, 7), Syntax.BITS)


CATALOGUE: dict[Oid, MibObject] = {
    value.oid: value for value in list(globals().values()) if isinstance(value, MibObject)
}


def object_of(instance: Oid) -> MibObject | None:
    """The object type an instance OID belongs to (longest matching object OID)."""
    for end in range(len(instance) - 1, 0, -1):
        found = CATALOGUE.get(instance[:end])
        if found is not None:
            return found
    return None


class ReadingState(IntEnum):
    """brmBatteryReadingState: how many of a block's five readings the monitor gave."""

    COMPLETE = 1
    PARTIAL = 2
    UNAVAILABLE = 3


class StringState(IntEnum):
    """brmStringState."""

    FLOAT = 1
    DISCHARGING = 2
    RECHARGING = 3


# Bit numbers of brmBatteryMissingReadings, in reading-name order of the telemetry schema.
BATTERY_READINGS: tuple[str, ...] = (
    "voltage",
    "temperature",
    "internal_resistance",
    "soc_pct",
    "soh_pct",
)
BATTERY_READING_OBJECTS: dict[str, MibObject] = {
    "voltage": BRM_BATTERY_VOLTAGE,
    "temperature": BRM_BATTERY_TEMPERATURE,
    "internal_resistance": BRM_BATTERY_RESISTANCE,
    "soc_pct": BRM_BATTERY_SOC,
    "soh_pct": BRM_BATTERY_SOH,
}
STRING_READINGS: tuple[str, ...] = ("voltage", "current")
STRING_READING_OBJECTS: dict[str, MibObject] = {
    "voltage": BRM_STRING_VOLTAGE,
    "current": BRM_STRING_CURRENT,
}


# ---------------------------------------------------------------------------------------------
# BITS, contexts and communities


def encode_bits(bits: Iterable[int]) -> bytes:
    """SMIv2 BITS: bit 0 is the most significant bit of the first octet (RFC 2578 7.1.4)."""
    numbers = sorted(set(bits))
    if numbers and numbers[0] < 0:
        raise ValueError("bit numbers start at 0")
    octets = bytearray((numbers[-1] // 8 + 1) if numbers else 1)
    for bit in numbers:
        octets[bit // 8] |= 0x80 >> (bit % 8)
    return bytes(octets)


def decode_bits(octets: bytes) -> frozenset[int]:
    return frozenset(
        index * 8 + bit
        for index, octet in enumerate(octets)
        for bit in range(8)
        if octet & 0x80 >> bit
    )


_CONTEXT_RE = re.compile(r"^ups-(\d{2})$")


def context_name(ups_number: int) -> str:
    """SNMPv3 context of UPS ``ups_number`` (from 1): ``ups-01``."""
    if not 1 <= ups_number <= 99:
        raise ValueError(f"UPS number must be 1..99, got {ups_number}")
    return f"ups-{ups_number:02d}"


def ups_of_context(name: str | bytes) -> int | None:
    """UPS number a context names: ``""`` is UPS 1, ``ups-NN`` is UPS NN, else ``None``."""
    text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
    if text == "":
        return 1
    match = _CONTEXT_RE.match(text)
    number = int(match[1]) if match else 0
    return number if number >= 1 else None


def community_for(base: str, ups_number: int) -> str:
    """v1/v2c community of UPS ``ups_number``: ``base`` for UPS 1, ``base@N`` for UPS N.

    Community string indexing as Cisco agents do it: one agent, one community per context.
    """
    if not 1 <= ups_number <= 99:
        raise ValueError(f"UPS number must be 1..99, got {ups_number}")
    return base if ups_number == 1 else f"{base}@{ups_number}"


def ups_of_community(community: str, base: str) -> int | None:
    """Inverse of ``community_for``; ``base@1`` is accepted for UPS 1 too."""
    if community == base:
        return 1
    prefix = base + "@"
    rest = community[len(prefix) :] if community.startswith(prefix) else ""
    return int(rest) if rest.isdigit() and 1 <= int(rest) <= 99 else None


# ---------------------------------------------------------------------------------------------
# Values of the live groups, from plain readings


def finite(values: Iterable[float]) -> list[float]:
    return [value for value in values if value is not None and math.isfinite(value)]


def mean_or_nan(values: Iterable[float]) -> float:
    """Mean of the finite values; NaN when there is none (the value is then not served)."""
    known = finite(values)
    return sum(known) / len(known) if known else math.nan


def sum_or_nan(values: Sequence[float]) -> float:
    """Sum when every value is known; NaN otherwise, since a partial sum would mislead."""
    known = finite(values)
    return sum(known) if values and len(known) == len(values) else math.nan


@dataclass(frozen=True)
class UpsReadings:
    """What one UPS card knows about its batteries, in SI units; NaN = not known."""

    seconds_on_battery: float
    minutes_remaining: float
    charge_pct: float
    voltage_v: float
    current_a: float
    temperature_c: float
    on_battery: bool

    @classmethod
    def of_strings(
        cls,
        *,
        seconds_on_battery: float,
        minutes_remaining: float,
        charge_pct: float,
        string_voltages: Sequence[float],
        string_currents: Sequence[float],
        block_temperatures: Iterable[float],
        on_battery: bool,
    ) -> UpsReadings:
        """Strings in parallel share the bus voltage (mean) and add their currents (sum)."""
        return cls(
            seconds_on_battery,
            minutes_remaining,
            charge_pct,
            mean_or_nan(string_voltages),
            sum_or_nan(string_currents),
            mean_or_nan(block_temperatures),
            on_battery,
        )


@dataclass(frozen=True)
class Mains:
    """Nominal AC figures of the simulated UPS (the twin models batteries, not the grid)."""

    voltage_v: float = 230.0
    frequency_hz: float = 50.0
    low_battery_minutes: int = 5


def battery_status(
    charge_pct: float, minutes_remaining: float, low_minutes: float
) -> BatteryStatus:
    """upsBatteryStatus: low at or under upsConfigLowBattTime, depleted at no charge or time."""
    charge_known, minutes_known = math.isfinite(charge_pct), math.isfinite(minutes_remaining)
    if not charge_known and not minutes_known:
        return BatteryStatus.UNKNOWN
    if (charge_known and charge_pct <= 0) or (minutes_known and minutes_remaining <= 0):
        return BatteryStatus.DEPLETED
    if minutes_known and minutes_remaining <= low_minutes:
        return BatteryStatus.LOW
    return BatteryStatus.NORMAL


def output_source(on_battery: bool) -> OutputSource:
    return OutputSource.BATTERY if on_battery else OutputSource.NORMAL


def ups_live_values(readings: UpsReadings, mains: Mains = Mains()) -> dict[Oid, int | None]:
    """Instance OID → raw value of the UPS-MIB objects that follow the batteries and mains."""
    r = readings
    input_v = 0.0 if r.on_battery else mains.voltage_v
    input_hz = 0.0 if r.on_battery else mains.frequency_hz
    status = battery_status(r.charge_pct, r.minutes_remaining, mains.low_battery_minutes)
    scaled: list[tuple[MibObject, float, tuple[int, ...]]] = [
        (UPS_SECONDS_ON_BATTERY, r.seconds_on_battery, ()),
        (UPS_MINUTES_REMAINING, r.minutes_remaining, ()),
        (UPS_CHARGE_REMAINING, r.charge_pct, ()),
        (UPS_BATTERY_VOLTAGE, r.voltage_v, ()),
        (UPS_BATTERY_CURRENT, r.current_a, ()),
        (UPS_BATTERY_TEMPERATURE, r.temperature_c, ()),
        (UPS_INPUT_FREQUENCY, input_hz, (1,)),
        (UPS_INPUT_VOLTAGE, input_v, (1,)),
        (UPS_OUTPUT_FREQUENCY, mains.frequency_hz, ()),
        (UPS_OUTPUT_VOLTAGE, mains.voltage_v, (1,)),
    ]
    values: dict[Oid, int | None] = {
        UPS_BATTERY_STATUS.instance(): int(status),
        UPS_OUTPUT_SOURCE.instance(): int(output_source(r.on_battery)),
    }
    for obj, value, index in scaled:
        values[obj.instance(*index)] = obj.encode(value)
    return values


def ups_config_values(mains: Mains = Mains()) -> dict[Oid, int]:
    """The constant upsInput/upsOutput line counts and upsConfig group."""
    return {
        UPS_INPUT_NUM_LINES.instance(): 1,
        UPS_OUTPUT_NUM_LINES.instance(): 1,
        UPS_CONFIG_INPUT_VOLTAGE.instance(): round(mains.voltage_v),
        UPS_CONFIG_INPUT_FREQ.instance(): round(mains.frequency_hz * 10),
        UPS_CONFIG_OUTPUT_VOLTAGE.instance(): round(mains.voltage_v),
        UPS_CONFIG_OUTPUT_FREQ.instance(): round(mains.frequency_hz * 10),
        UPS_CONFIG_LOW_BATT_TIME.instance(): mains.low_battery_minutes,
    }


def reading_state(missing: int, total: int) -> ReadingState:
    if missing == 0:
        return ReadingState.COMPLETE
    return ReadingState.UNAVAILABLE if missing >= total else ReadingState.PARTIAL


def battery_row_values(
    string_no: int, position: int, readings: dict[str, float]
) -> dict[Oid, int | bytes | None]:
    """Live columns of one brmBatteryEntry (index string_no.position) from SI readings.

    A missing reading is ``None`` (not served: noSuchInstance) and sets its bit in
    brmBatteryMissingReadings; brmBatteryReadingState summarises the row.
    """
    values: dict[Oid, int | bytes | None] = {}
    missing: list[int] = []
    for bit, name in enumerate(BATTERY_READINGS):
        obj = BATTERY_READING_OBJECTS[name]
        raw = obj.encode(readings.get(name))
        values[obj.instance(string_no, position)] = raw
        if raw is None:
            missing.append(bit)
    state = reading_state(len(missing), len(BATTERY_READINGS))
    values[BRM_BATTERY_READING_STATE.instance(string_no, position)] = int(state)
    values[BRM_BATTERY_MISSING.instance(string_no, position)] = encode_bits(missing)
    return values


def string_row_values(
    string_no: int, voltage_v: float, current_a: float, state: StringState
) -> dict[Oid, int | bytes | None]:
    """Live columns of one brmStringEntry (index string_no)."""
    values: dict[Oid, int | bytes | None] = {}
    missing: list[int] = []
    for bit, (name, value) in enumerate(zip(STRING_READINGS, (voltage_v, current_a), strict=True)):
        obj = STRING_READING_OBJECTS[name]
        raw = obj.encode(value)
        values[obj.instance(string_no)] = raw
        if raw is None:
            missing.append(bit)
    values[BRM_STRING_STATE.instance(string_no)] = int(state)
    values[BRM_STRING_MISSING.instance(string_no)] = encode_bits(missing)
    return values


def split_row_oid(oid: Oid, entry: Oid) -> tuple[int, Oid] | None:
    """(column number, row index) of an instance OID under a table entry, else ``None``."""
    if len(oid) <= len(entry) + 1 or oid[: len(entry)] != entry:
        return None
    return oid[len(entry)], oid[len(entry) + 1 :]


def decode_battery_row(columns: dict[int, int | bytes]) -> dict[str, float | None]:
    """SI readings of one brmBatteryEntry from its raw columns (column number → raw value).

    For the edge agent: a reading is ``None`` when its column is absent or flagged missing.
    """
    missing = decode_bits(bytes(columns.get(BRM_BATTERY_MISSING.oid[-1], b"")))
    readings: dict[str, float | None] = {}
    for bit, name in enumerate(BATTERY_READINGS):
        obj = BATTERY_READING_OBJECTS[name]
        raw = columns.get(obj.oid[-1])
        usable = bit not in missing and isinstance(raw, int)
        readings[name] = obj.decode(raw) if usable else None  # type: ignore[arg-type]
    return readings
