"""Decoding Modbus registers into engineering values, driven by a register map (no numpy: the
edge agent runs on small boards, and the encode side lives in ``common.registerimage``).

Not-available sentinels (SunSpec convention) and out-of-range raw values decode to ``None``;
``None``, NaN and unrepresentable values encode to the sentinel, never to a made-up number.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from common.registermap import (
    NUMERIC_TYPES,
    ByteOrder,
    FieldKey,
    FieldSpec,
    RegisterMap,
    RegisterType,
    Value,
    field_spans,
)


def encode_string(spec: FieldSpec, value: object, byte_order: ByteOrder) -> list[int]:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"field {spec.name} is a string, got {value!r}")
    try:
        data = (value or "").encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"field {spec.name}: {value!r} is not ASCII") from None
    capacity = 2 * spec.width
    if len(data) > capacity:
        raise ValueError(f"field {spec.name}: {value!r} is longer than {capacity} characters")
    data = data.ljust(capacity, b"\0")
    fmt = ">" if byte_order == "big" else "<"
    return list(struct.unpack(f"{fmt}{spec.width}H", data))


def decode_value(
    spec: FieldSpec,
    registers: Sequence[int],
    byte_order: ByteOrder = "big",
    word_order: ByteOrder = "big",
) -> Value | None:
    """The engineering value of one field's registers; None for the sentinel or out of range."""
    if len(registers) != spec.width:
        raise ValueError(f"field {spec.name} takes {spec.width} registers, got {len(registers)}")
    if spec.type is RegisterType.STRING:
        text = _to_bytes(registers, byte_order, "big").rstrip(b"\0 ")
        return text.decode("ascii", errors="replace") or None
    data = _to_bytes(registers, byte_order, word_order)
    if int.from_bytes(data, "big") == spec.sentinel:
        return None
    return _engineering(spec, struct.unpack(f">{NUMERIC_TYPES[spec.type].struct_code}", data)[0])


def _to_bytes(registers: Sequence[int], byte_order: ByteOrder, word_order: ByteOrder) -> bytes:
    """The value's bytes, most significant first, whatever order the device sends them in."""
    words = list(registers) if word_order == "big" else list(registers)[::-1]
    return struct.pack(f"{'>' if byte_order == 'big' else '<'}{len(words)}H", *words)


def _engineering(spec: FieldSpec, raw: float) -> Value | None:
    if spec.type is RegisterType.FLOAT32:
        if not math.isfinite(raw):
            return None
        value: Value = _shortest_float32(raw) * spec.scale
    elif spec.enum is not None and raw not in spec.enum:
        return None
    elif spec.scale == 1.0:
        value = int(raw)
    else:
        value = round(raw * spec.scale, _decimals(spec.scale))
    if spec.minimum is not None and value < spec.minimum:
        return None
    if spec.maximum is not None and value > spec.maximum:
        return None
    return value


def _shortest_float32(raw: float) -> float:
    """The shortest decimal that reads back as the same float32: what the device meant."""
    for digits in range(1, 10):
        candidate = float(f"{raw:.{digits}g}")
        try:
            if struct.unpack(">f", struct.pack(">f", candidate))[0] == raw:
                return candidate
        except OverflowError:  # rounded past the float32 maximum
            continue
    return raw


def _decimals(scale: float) -> int:
    """Digits after the point a scale produces (0.001 gives 3), so 13.5 decodes as 13.5."""
    exponent = Decimal(repr(scale)).as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def decode_registers(
    regmap: RegisterMap, start_address: int, registers: Sequence[int], block_count: int
) -> dict[FieldKey, Value | None]:
    """Decode every value wholly inside one read (address ``start_address`` onwards).

    Values cut by the read's ends are left out (plans from ``plan_reads`` never cut one).
    """
    end = start_address + len(registers)
    decoded: dict[FieldKey, Value | None] = {}
    for span in field_spans(regmap, block_count):
        if span.address < start_address or span.address + span.spec.width > end:
            continue
        offset = span.address - start_address
        chunk = registers[offset : offset + span.spec.width]
        decoded[span.key] = decode_value(span.spec, chunk, regmap.byte_order, regmap.word_order)
    return decoded


# --------------------------------------------------------------------------- register images


def date_to_yyyymmdd(value: date) -> int:
    """A date as the decimal number yyyymmdd that the map's date fields hold."""
    return value.year * 10_000 + value.month * 100 + value.day


def yyyymmdd_to_date(value: int | None) -> date | None:
    """The date a yyyymmdd field holds, or None when it holds no valid date."""
    if value is None:
        return None
    try:
        return date(value // 10_000, value // 100 % 100, value % 100)
    except ValueError:
        return None
