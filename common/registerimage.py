"""Encoding engineering values into Modbus registers: single values and whole-device images.

The simulator builds a unit's registers from the twin in one vectorised step (numpy), so a read
costs a slice. Not-representable values (None, NaN, out of range) become the map's sentinel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import numpy as np

from common.registercodec import date_to_yyyymmdd, encode_string
from common.registermap import (
    NUMERIC_TYPES,
    ByteOrder,
    FieldSpec,
    RegisterMap,
    RegisterType,
    Value,
    field_spans,
)


def _swap_bytes(words: np.ndarray) -> np.ndarray:
    return ((words >> 8) | (words << 8)) & 0xFFFF


def encode_array(
    spec: FieldSpec,
    values: Sequence[float | None] | np.ndarray,
    byte_order: ByteOrder = "big",
    word_order: ByteOrder = "big",
) -> np.ndarray:
    """Registers of many values of a numeric field, shaped (n, width), dtype uint16.

    None, NaN, infinities and values the type (or the field's range) cannot hold all become the
    sentinel: a monitor reports "not available" rather than a made-up number.
    """
    if spec.type is RegisterType.STRING:
        raise TypeError(f"field {spec.name} is a string: use encode_value")
    width, low, high = NUMERIC_TYPES[spec.type][:3]
    if not isinstance(values, np.ndarray):
        values = [math.nan if v is None else v for v in values]
    engineering = np.asarray(values, dtype=np.float64).reshape(-1)
    valid = np.isfinite(engineering)
    if spec.minimum is not None:
        valid &= engineering >= spec.minimum
    if spec.maximum is not None:
        valid &= engineering <= spec.maximum
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = engineering / spec.scale
    if spec.type is RegisterType.FLOAT32:
        with np.errstate(over="ignore", invalid="ignore"):
            raw32 = scaled.astype(np.float32)
        valid &= np.isfinite(raw32)
        bits = raw32.view(np.uint32).astype(np.int64)
    else:
        raw = np.rint(scaled)
        valid &= (raw >= low) & (raw <= high)
        if spec.enum is not None:
            valid &= np.isin(raw, list(spec.enum))
        bits = np.where(valid, raw, 0).astype(np.int64) & ((1 << (16 * width)) - 1)
        valid &= bits != spec.sentinel
    bits = np.where(valid, bits, spec.sentinel)
    return _to_words(bits, width, byte_order, word_order)


def _to_words(
    bits: np.ndarray, width: int, byte_order: ByteOrder, word_order: ByteOrder
) -> np.ndarray:
    words = np.stack([(bits >> (16 * (width - 1 - w))) & 0xFFFF for w in range(width)], axis=1)
    if word_order == "little":
        words = words[:, ::-1]
    if byte_order == "little":
        words = _swap_bytes(words)
    return words.astype(np.uint16)


def encode_value(
    spec: FieldSpec,
    value: Value | date | None,
    byte_order: ByteOrder = "big",
    word_order: ByteOrder = "big",
) -> list[int]:
    """Registers of one value (None or NaN gives the sentinel; a string is NUL-padded)."""
    if spec.type is RegisterType.STRING:
        return encode_string(spec, value, byte_order)
    if isinstance(value, date):
        value = date_to_yyyymmdd(value)
    if isinstance(value, str):
        raise TypeError(f"field {spec.name} is numeric, got {value!r}")
    return [int(w) for w in encode_array(spec, [value], byte_order, word_order)[0]]


def blank_image(regmap: RegisterMap, block_count: int) -> np.ndarray:
    """A device's registers from address 0 with every value "not available" (gaps read 0)."""
    spans = field_spans(regmap, block_count)
    size = max((s.address + s.spec.width for s in spans), default=0)
    image = np.zeros(size, dtype=np.uint16)
    for span in spans:
        if span.spec.type is not RegisterType.STRING:
            words = encode_value(span.spec, None, regmap.byte_order, regmap.word_order)
            image[span.address : span.address + span.spec.width] = words
    return image


def write_fields(
    regmap: RegisterMap,
    image: np.ndarray,
    values: Mapping[str, Any],
    block_count: int,
) -> None:
    """Encode ``values`` into ``image`` in place, keyed by field name.

    A field of a single group takes one value; a field of a repeated group takes a sequence of
    ``block_count`` values (a numpy array is encoded in one vectorised step).
    """
    for name, value in values.items():
        group, spec = regmap.group_of(name), regmap.field(name)
        start = group.base + spec.offset
        if group.repeat is None:
            words = encode_value(spec, value, regmap.byte_order, regmap.word_order)
            image[start : start + spec.width] = words
            continue
        if len(value) != block_count:
            raise ValueError(f"field {name} needs {block_count} values, got {len(value)}")
        if spec.type is RegisterType.STRING:
            rows = np.array([encode_value(spec, v, regmap.byte_order) for v in value])
        else:
            rows = encode_array(spec, value, regmap.byte_order, regmap.word_order)
        addresses = start + group.size * np.arange(block_count)[:, None] + np.arange(spec.width)
        image[addresses] = rows.reshape(block_count, spec.width)


# --------------------------------------------------------------------------- dates
