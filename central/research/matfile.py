"""Opening an uploaded ``.mat`` file safely, and one view of its contents whatever its version.

Uploads come from anyone, so the version is read from the header bytes (never the name) and
every hostile shape is refused before a library can be tricked into allocating it: a v5 file's
zlib streams are inflated chunk by chunk against a budget and its nested matrices checked
against the bytes that hold them (scipy sizes object arrays from declared dimensions); an HDF5
dataset's declared shape is checked before it is read (a compression bomb declares a huge shape).
Whatever scipy or h5py raise while reading becomes :class:`InvalidMatFileError`.

v4/v5/v7 files are loaded by ``scipy.io.loadmat`` (bounded by the budget); a v5 file's variables
are inflated once, by the check, into an uncompressed temporary file that scipy then reads (on
disk, not in memory, while scipy builds its arrays). v7.3 files stay open in
``h5py`` and are read one dataset at a time through :class:`MatNode`, which gives layout readers
the same struct/cell/array view of both.
"""

from __future__ import annotations

import math
import struct
import tempfile
import warnings
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

import h5py
import numpy as np
import scipy.io
from scipy.io.matlab import MatlabFunction, MatlabObject, MatlabOpaque, MatReadError, MatReadWarning

from central.research.cells import InvalidMatFileError

# Everything a v5 file inflates to, summed over its variables: what scipy will hold in memory.
MAX_DECOMPRESSED_BYTES = 512 * 2**20
# One array: an HDF5 dataset's declared shape × item size, or a v5 cell/struct array's pointers.
MAX_ARRAY_BYTES = 64 * 2**20
# Deeper nesting than any lab file needs; scipy recurses through it on the C stack.
MAX_NESTING = 32

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
HEADER_BYTES = 128
HDF5_OFFSET = 512  # MATLAB's v7.3 files are HDF5 with the 128-byte header in a 512-byte userblock

UNREADABLE = "Unable to parse .mat file"
NOT_MAT = "File format not recognized"
TOO_LARGE = "File too large once decompressed"
BAD_CONTENTS = "Unexpected contents in .mat file"

# v5 element and class codes (MATLAB's MAT-file format reference).
_MI_INT8, _MI_INT32, _MI_UINT32, _MI_MATRIX, _MI_COMPRESSED = 1, 5, 6, 14, 15
# Numeric and text element types (int8…uint32, single, double, int64, uint64, utf8…utf32).
_DATA_TYPES = frozenset({1, 2, 3, 4, 5, 6, 7, 9, 12, 13, 16, 17, 18})
_INT8, _INT32, _UINT32 = frozenset({_MI_INT8}), frozenset({_MI_INT32}), frozenset({_MI_UINT32})
_MX_CELL, _MX_OBJECT, _MX_CHAR, _MX_SPARSE, _MX_DOUBLE = 1, 3, 4, 5, 6  # 2 is a struct
_MX_FUNCTION, _MX_OPAQUE = 16, 17
_CLASSES = frozenset(range(1, 17))  # cell … uint64, function handle (opaque: 17, apart)
_HEADER_ELEMENT_MAX = 2**20  # dims, names, field names: metadata, never this large
_CHUNK = 2**16
# v4: M (byte order) 0–4, O 0, P (number type) 0–5, T (matrix type) 0–2; P gives the item size.
_V4_ITEMSIZE = {0: 8, 1: 4, 2: 4, 3: 2, 4: 2, 5: 1}
_V4_NAME_MAX = 4096
_ATTRIBUTE_MAX = 1024  # MATLAB_class, MATLAB_empty: a few bytes

# What scipy and h5py raise on a damaged file; anything else is a bug and propagates, and so
# does MemoryError: the worker running the parser reports that one as the file's demand.
_READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    OverflowError,
    RuntimeError,
    AttributeError,
    zlib.error,
    struct.error,
    MatReadError,
)


class MatVersion(StrEnum):
    """The container format, as the header bytes say."""

    V4 = "4"
    V5 = "5"  # also v6 and v7: the same container, v7 with zlib-compressed variables
    V73 = "7.3"


@dataclass(frozen=True)
class Budget:
    """Limits on what one file may make us allocate; tests lower them."""

    max_decompressed_bytes: int = MAX_DECOMPRESSED_BYTES
    max_array_bytes: int = MAX_ARRAY_BYTES


@contextmanager
def reading(context: str) -> Iterator[None]:
    """Turn an exception raised by scipy/h5py while reading ``context`` into InvalidMatFileError."""
    try:
        yield
    except InvalidMatFileError:
        raise
    except _READ_ERRORS as exc:
        raise InvalidMatFileError(UNREADABLE, [f"{context}: {type(exc).__name__}: {exc}"]) from exc


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.0f} MiB"


# --- Recognising the version (pure) -------------------------------------------------------------


def sniff_version(head: bytes) -> tuple[MatVersion, str]:
    """Version and byte order ('<' or '>') from the first 520 bytes of a file.

    Mirrors scipy's own dispatch (a zero among the first four bytes means v4) so that the
    checks run here are those of the reader scipy will pick.
    """
    if 0 in head[:4]:
        byte_order = _v4_byte_order(head[:20])
        if byte_order is None:
            raise InvalidMatFileError(
                NOT_MAT,
                ["not a MATLAB file: no v5/v7.3 header and the first bytes are no v4 header"],
            )
        return MatVersion.V4, byte_order
    if len(head) < HEADER_BYTES or head[126:128] not in (b"IM", b"MI"):
        hint = (
            "an HDF5 file without MATLAB's 512-byte header; save it with MATLAB's -v7.3 "
            "or scipy.io.savemat"
            if head.startswith(HDF5_SIGNATURE)
            else "no MATLAB header (128 bytes ending in the 'IM' endian mark)"
        )
        raise InvalidMatFileError(NOT_MAT, [f"not a MATLAB .mat file: {hint}"])
    byte_order = "<" if head[126:128] == b"IM" else ">"
    (version,) = struct.unpack(f"{byte_order}H", head[124:126])
    if version == 0x0200 or head.startswith(b"MATLAB 7.3"):
        if head[HDF5_OFFSET : HDF5_OFFSET + len(HDF5_SIGNATURE)] != HDF5_SIGNATURE:
            raise InvalidMatFileError(
                UNREADABLE,
                [f"the header says MATLAB 7.3 but no HDF5 data starts at byte {HDF5_OFFSET}"],
            )
        return MatVersion.V73, byte_order
    if version != 0x0100:
        raise InvalidMatFileError(
            NOT_MAT, [f"unknown MAT-file version 0x{version:04x} in the header"]
        )
    return MatVersion.V5, byte_order


def _v4_fields(header: bytes, byte_order: str) -> tuple[int, int, int, int, int] | None:
    """(rows, columns, complex flag, name length, item size) if ``header`` is a sane v4 header."""
    if len(header) < 20:
        return None
    mopt, rows, cols, imagf, namlen = struct.unpack(f"{byte_order}5i", header[:20])
    machine, zero, precision, kind = mopt // 1000, mopt // 100 % 10, mopt // 10 % 10, mopt % 10
    if not 0 <= mopt < 5000 or zero != 0 or precision not in _V4_ITEMSIZE or kind > 2:
        return None
    if machine != (0 if byte_order == "<" else 1):
        return None
    if rows < 0 or cols < 0 or imagf not in (0, 1) or not 1 <= namlen <= _V4_NAME_MAX:
        return None
    return rows, cols, imagf, namlen, _V4_ITEMSIZE[precision]


def _v4_byte_order(header: bytes) -> str | None:
    return next((order for order in "<>" if _v4_fields(header, order) is not None), None)


# --- Pre-scanning before scipy reads (bounded, streaming) ---------------------------------------


def _check_v4(fh: BinaryIO, size: int, byte_order: str, budget: Budget) -> None:
    """Every v4 variable header sane and its data inside the file, in total within the budget."""
    position = total = 0
    while position < size:
        fh.seek(position)
        fields = _v4_fields(fh.read(20), byte_order)
        if fields is None:
            raise InvalidMatFileError(
                UNREADABLE, [f"byte {position}: not a MAT v4 variable header"]
            )
        rows, cols, imagf, namlen, itemsize = fields
        data = rows * cols * itemsize * (1 + imagf)
        position += 20 + namlen + data
        total += data
        if position > size:
            raise InvalidMatFileError(
                UNREADABLE, ["the file is truncated: a v4 variable runs past it"]
            )
        if total > budget.max_decompressed_bytes:
            raise InvalidMatFileError(
                TOO_LARGE, [f"over {_mib(budget.max_decompressed_bytes)} of v4 variables"]
            )


def _inflate(fh: BinaryIO, nbytes: int, spent: list[int], budget: int) -> bytearray:
    """One compressed top-level element, inflated chunk by chunk against the file's budget.

    Every byte produced counts (``spent``: the running total for the whole file), so a zlib bomb
    is stopped at most one chunk past the budget. The output is held whole for the walk (the
    walk over one buffer is several times faster than over a stream of chunks), then written
    out and dropped before scipy reads: scipy's own arrays are as large, so the peak is unchanged.
    """
    inflater = zlib.decompressobj()
    inflated = bytearray()
    left = nbytes
    pending = b""
    while not inflater.eof:
        if not pending and left:
            pending = fh.read(min(_CHUNK, left))
            if not pending:
                break
            left -= len(pending)
        # Also called without input: zlib may still hold output that did not fit in one chunk.
        piece = inflater.decompress(pending, _CHUNK)
        pending = inflater.unconsumed_tail
        spent[0] += len(piece)
        if spent[0] > budget:
            raise InvalidMatFileError(
                TOO_LARGE, [f"the variables decompress to over {_mib(budget)}, the limit per file"]
            )
        inflated += piece
        if not piece and not pending and not left:
            break
    if not inflater.eof:
        raise InvalidMatFileError(UNREADABLE, ["a compressed variable is cut short or corrupt"])
    return inflated


class _Cursor:
    """A position in one top-level element's bytes, held in memory."""

    def __init__(self, data: bytes | bytearray) -> None:
        self._data = memoryview(data)
        self._size = len(data)
        self.position = 0

    def read(self, n: int, end: int) -> memoryview:
        """Exactly ``n`` bytes, which must lie before ``end`` (the enclosing matrix's end)."""
        start = self.position
        self.skip(n, end)
        return self._data[start : self.position]

    def skip(self, n: int, end: int) -> None:
        """Step over ``n`` bytes (array data)."""
        stop = self.position + n
        if stop > end:
            raise InvalidMatFileError(UNREADABLE, ["an element runs past the matrix that holds it"])
        if stop > self._size:
            raise InvalidMatFileError(UNREADABLE, ["the file is truncated inside a variable"])
        self.position = stop


def _element(
    flow: _Cursor, end: int, byte_order: str, allowed: frozenset[int], *, keep: bool = True
) -> tuple[int, bytes]:
    """One sub-element (type, data) in the small or the full tag format, of an allowed type.

    scipy looks the type up in a table without checking it: a stray type crashes the process.
    Data that is not kept (array contents) is stepped over, not held.
    """
    tag = flow.read(8, end)
    mdtype, nbytes = struct.unpack(f"{byte_order}2I", tag)
    small = mdtype >> 16  # small format: size in the upper half, data in the tag's last 4 bytes
    if small:
        mdtype, nbytes = mdtype & 0xFFFF, small
    if mdtype not in allowed:
        raise InvalidMatFileError(UNREADABLE, [f"a matrix element of unexpected type {mdtype}"])
    if small:
        if nbytes > 4:
            raise InvalidMatFileError(UNREADABLE, ["a small data element claims over 4 bytes"])
        return mdtype, tag[4 : 4 + nbytes]
    if not keep:
        flow.skip(nbytes + -nbytes % 8, end)
        return mdtype, b""
    if nbytes > _HEADER_ELEMENT_MAX:
        raise InvalidMatFileError(UNREADABLE, [f"a matrix header element claims {nbytes} bytes"])
    data = flow.read(nbytes, end)
    flow.skip(-nbytes % 8, end)
    return mdtype, data


def _walk_matrix(flow: _Cursor, end: int, depth: int, byte_order: str, budget: Budget) -> None:
    """Check one miMATRIX payload the way scipy will read it, so that reading stays bounded.

    scipy reads nested matrices in sequence without bounding each by its byte count, sizes
    object arrays from declared dimensions and looks element types up unchecked: so the walk
    requires exactly the elements scipy will read, of valid types, filling each nested matrix.
    """
    if flow.position == end:
        return  # an empty matrix
    if depth > MAX_NESTING:
        raise InvalidMatFileError(UNREADABLE, [f"matrices nested deeper than {MAX_NESTING} levels"])
    children, data_elements = _matrix_header(flow, end, byte_order, budget)
    if children * 8 > end - flow.position:  # every child holds at least its 8-byte tag
        raise InvalidMatFileError(
            UNREADABLE, [f"a matrix declares {children} elements its bytes cannot hold"]
        )
    for _ in range(children):
        mdtype, nbytes = struct.unpack(f"{byte_order}2I", flow.read(8, end))
        if mdtype != _MI_MATRIX:
            raise InvalidMatFileError(UNREADABLE, [f"element type {mdtype} where a matrix belongs"])
        if flow.position + nbytes > end:
            raise InvalidMatFileError(UNREADABLE, ["an element runs past the matrix that holds it"])
        _walk_matrix(flow, flow.position + nbytes, depth + 1, byte_order, budget)
    for _ in range(data_elements):
        _element(flow, end, byte_order, _DATA_TYPES, keep=False)
    if depth and flow.position != end:  # scipy would read the next matrix from the wrong place
        raise InvalidMatFileError(UNREADABLE, ["a matrix holds more than its declared contents"])
    flow.skip(end - flow.position, end)  # a top-level matrix: scipy seeks past any slack


def _matrix_header(flow: _Cursor, end: int, byte_order: str, budget: Budget) -> tuple[int, int]:
    """Read a matrix's flags, dimensions and name: how many matrices and data elements follow."""
    _, flags = _element(flow, end, byte_order, _UINT32)
    if len(flags) != 8:
        raise InvalidMatFileError(UNREADABLE, ["a matrix without its array flags"])
    (flag_word,) = struct.unpack(f"{byte_order}I", flags[:4])
    matrix_class, is_complex = flag_word & 0xFF, bool(flag_word & 0x0800)
    if matrix_class == _MX_OPAQUE:  # three names, then one matrix (scipy's reading of MATLAB's)
        for _ in range(3):
            _element(flow, end, byte_order, _INT8)
        return 1, 0
    if matrix_class not in _CLASSES:
        raise InvalidMatFileError(UNREADABLE, [f"a matrix of unknown class {matrix_class}"])
    _, dims_data = _element(flow, end, byte_order, _INT32)
    if len(dims_data) < 8 or len(dims_data) % 4:
        raise InvalidMatFileError(UNREADABLE, ["a matrix with malformed dimensions"])
    dims = struct.unpack(f"{byte_order}{len(dims_data) // 4}i", dims_data)
    if any(d < 0 for d in dims):
        raise InvalidMatFileError(UNREADABLE, [f"a matrix with negative dimensions {dims}"])
    _element(flow, end, byte_order, _INT8)  # the name
    if matrix_class == _MX_CHAR:
        return 0, 1
    if matrix_class == _MX_SPARSE:  # row indices, column pointers, real (and imaginary) values
        return 0, 3 + is_complex
    if matrix_class >= _MX_DOUBLE and matrix_class != _MX_FUNCTION:  # numeric
        return 0, 1 + is_complex
    count = math.prod(dims)
    return _child_count(flow, end, matrix_class, count, byte_order=byte_order, budget=budget), 0


def _child_count(
    flow: _Cursor, end: int, matrix_class: int, count: int, *, byte_order: str, budget: Budget
) -> int:
    """How many matrices a cell/struct/object/function holds; scipy allocates ``count`` slots."""
    if matrix_class == _MX_FUNCTION:
        return 1
    if count * 8 > budget.max_array_bytes:
        raise InvalidMatFileError(
            TOO_LARGE, [f"a cell or struct array of {count} elements, over the limit per array"]
        )
    if matrix_class == _MX_CELL:
        return count
    if matrix_class == _MX_OBJECT:
        _element(flow, end, byte_order, _INT8)  # the class name
    _, length_data = _element(flow, end, byte_order, _INT32)
    _, names = _element(flow, end, byte_order, _INT8)
    if len(length_data) != 4:
        raise InvalidMatFileError(UNREADABLE, ["a struct without its field-name length"])
    (name_length,) = struct.unpack(f"{byte_order}i", length_data)
    if name_length <= 0:  # scipy divides by it
        raise InvalidMatFileError(UNREADABLE, [f"a struct with field names of {name_length} bytes"])
    return count * (len(names) // name_length)


def _write_checked_v5(
    fh: BinaryIO, size: int, byte_order: str, budget: Budget, image: BinaryIO
) -> None:
    """Walk every top-level element: inside the file, within budget, structurally bounded.

    What was checked goes to ``image`` as an uncompressed v5 file (the header, then each
    variable's matrix inflated), which scipy then reads: the file is inflated once, not twice,
    and the inflated bytes wait on disk, not in memory, while scipy builds its arrays.
    """
    position, spent = HEADER_BYTES, [0]
    fh.seek(0)
    image.write(fh.read(HEADER_BYTES))
    while position < size:
        fh.seek(position)
        tag = fh.read(8)
        if len(tag) < 8:
            if tag.strip(b"\0"):
                raise InvalidMatFileError(UNREADABLE, ["the file ends inside a variable's tag"])
            return  # trailing padding
        mdtype, nbytes = struct.unpack(f"{byte_order}2I", tag)
        if mdtype not in (_MI_MATRIX, _MI_COMPRESSED) or nbytes == 0:
            raise InvalidMatFileError(
                UNREADABLE, [f"byte {position}: no variable (element {mdtype})"]
            )
        if position + 8 + nbytes > size:
            raise InvalidMatFileError(
                UNREADABLE,
                [f"truncated: a variable needs {nbytes} bytes, {size - position - 8} remain"],
            )
        if mdtype == _MI_COMPRESSED:
            data = _inflate(fh, nbytes, spent, budget.max_decompressed_bytes)
        else:
            spent[0] += nbytes
            if spent[0] > budget.max_decompressed_bytes:
                limit = _mib(budget.max_decompressed_bytes)
                raise InvalidMatFileError(
                    TOO_LARGE, [f"the variables decompress to over {limit}, the limit per file"]
                )
            data = fh.read(nbytes)
        flow = _Cursor(data)
        if mdtype == _MI_COMPRESSED:
            inner_type, inner_bytes = struct.unpack(f"{byte_order}2I", flow.read(8, 8))
            if inner_type != _MI_MATRIX:
                raise InvalidMatFileError(UNREADABLE, ["a compressed variable holds no matrix"])
            _walk_matrix(flow, 8 + inner_bytes, 0, byte_order, budget)
            image.write(memoryview(data)[: 8 + inner_bytes])  # scipy reads no further either
        else:
            _walk_matrix(flow, nbytes, 0, byte_order, budget)
            image.write(tag)
            image.write(data)
        del flow, data  # the only references: dropped before the next variable, and scipy
        position += 8 + nbytes


# --- One view of both libraries' contents -------------------------------------------------------


class Kind(StrEnum):
    """What a MATLAB value is, as far as layout readers care."""

    STRUCT = "struct"
    CELL = "cell"
    CHAR = "char"
    NUMERIC = "numeric"
    OBJECT = "object"  # tables, class instances, function handles, sparse: nothing to read


class MatNode(ABC):
    """A MATLAB value, named by its MATLAB path (``battery(2).voltage{5}``) for error messages."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    @abstractmethod
    def kind(self) -> Kind: ...

    @property
    @abstractmethod
    def shape(self) -> tuple[int, ...]:
        """MATLAB's dimensions (rows first)."""

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @abstractmethod
    def fields(self) -> tuple[str, ...]:
        """Field names of a struct (empty for anything else)."""

    @abstractmethod
    def field(self, name: str, index: int = 0) -> MatNode:
        """Field ``name`` of element ``index`` (0-based, MATLAB's linear order) of a struct."""

    @abstractmethod
    def cell(self, index: int) -> MatNode:
        """Element ``index`` (0-based, MATLAB's linear order) of a cell array."""

    @abstractmethod
    def numbers(self) -> np.ndarray:
        """A real numeric array as 1-D float64 in MATLAB's linear order."""

    @abstractmethod
    def text(self) -> str:
        """A char array as text (rows joined by newlines)."""

    @abstractmethod
    def describe(self) -> str:
        """A short type for messages, e.g. ``1×80 struct``."""

    def scalar(self) -> float | None:
        """A single number, or ``None`` for an empty array."""
        values = self.numbers()
        if values.size > 1:
            raise InvalidMatFileError(
                BAD_CONTENTS, [f"{self.name} should be one number, has {values.size}"]
            )
        return float(values[0]) if values.size else None

    def _child_name(self, name: str, index: int) -> str:
        return f"{self.name}.{name}" if self.size == 1 else f"{self.name}({index + 1}).{name}"

    def _need(self, kind: Kind) -> None:
        if self.kind is not kind:
            raise InvalidMatFileError(
                BAD_CONTENTS, [f"{self.name} should be a {kind}, is {self.describe()}"]
            )

    def _need_index(self, index: int) -> None:
        if not 0 <= index < self.size:
            raise InvalidMatFileError(
                BAD_CONTENTS, [f"{self.name} has {self.size} elements, not {index + 1}"]
            )


def _shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape))


class ScipyNode(MatNode):
    """A value as ``loadmat(struct_as_record=True, squeeze_me=False)`` returns it, in memory."""

    def __init__(self, value: object, name: str) -> None:
        super().__init__(name)
        self._value = value

    @property
    def kind(self) -> Kind:
        value = self._value
        if isinstance(value, MatlabOpaque | MatlabFunction | MatlabObject) or not isinstance(
            value, np.ndarray
        ):
            return Kind.OBJECT
        if value.dtype.names:
            return Kind.STRUCT
        if value.dtype.kind == "O":
            return Kind.CELL
        if value.dtype.kind in "US":
            return Kind.CHAR
        if value.dtype.kind in "biufc":
            return Kind.NUMERIC
        return Kind.OBJECT

    @property
    def shape(self) -> tuple[int, ...]:
        return self._value.shape if isinstance(self._value, np.ndarray) else (1, 1)

    def _flat(self) -> np.ndarray:
        return np.ravel(self._value, order="F")

    def fields(self) -> tuple[str, ...]:
        return tuple(self._value.dtype.names) if self.kind is Kind.STRUCT else ()

    def field(self, name: str, index: int = 0) -> MatNode:
        self._need(Kind.STRUCT)
        self._need_index(index)
        if name not in self.fields():
            raise InvalidMatFileError(BAD_CONTENTS, [f"{self.name} has no field '{name}'"])
        return ScipyNode(self._flat()[index][name], self._child_name(name, index))

    def cell(self, index: int) -> MatNode:
        self._need(Kind.CELL)
        self._need_index(index)
        return ScipyNode(self._flat()[index], f"{self.name}{{{index + 1}}}")

    def numbers(self) -> np.ndarray:
        self._need(Kind.NUMERIC)
        if self._value.dtype.kind == "c":
            raise InvalidMatFileError(
                BAD_CONTENTS, [f"{self.name} is complex; real numbers expected"]
            )
        return np.asarray(self._flat(), dtype=np.float64)

    def text(self) -> str:
        self._need(Kind.CHAR)
        return "\n".join(str(row) for row in self._value.ravel())

    def describe(self) -> str:
        value = self._value
        if isinstance(value, MatlabOpaque):  # s0: the object's name, s2: its class
            if not value.size:
                return "MATLAB opaque object"
            name, cls = (value[0][key].decode(errors="replace") for key in ("s0", "s2"))
            return f"MATLAB {cls} object '{name}'"
        if isinstance(value, MatlabObject):
            return f"MATLAB {value.classname} object"
        if isinstance(value, MatlabFunction):
            return "MATLAB function handle"
        if not isinstance(value, np.ndarray):
            return type(value).__name__
        kind = self.kind
        detail = value.dtype.name if kind is Kind.NUMERIC else kind.value
        return f"{_shape_text(self.shape)} {detail}"


_MATLAB_NUMERIC = {
    "double",
    "single",
    "logical",
    *(f"{sign}int{bits}" for sign in ("", "u") for bits in (8, 16, 32, 64)),
}


def _attr_text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _small_attribute(obj: h5py.Group | h5py.Dataset, name: str) -> object:
    """A MATLAB bookkeeping attribute (``None`` if absent), refused if it claims to be large."""
    key = name.encode()
    if not h5py.h5a.exists(obj.id, key):
        return None
    attribute = h5py.h5a.open(obj.id, key)
    dtype, shape = attribute.dtype, attribute.shape
    if dtype.kind == "O" or math.prod(shape) * dtype.itemsize > _ATTRIBUTE_MAX:
        raise InvalidMatFileError(UNREADABLE, [f"the {name} attribute of {obj.name} is malformed"])
    value = np.empty(shape, dtype=dtype)
    attribute.read(value)
    return value.ravel()[0] if value.size else None


def _is_reference(dataset: h5py.Dataset) -> bool:
    return h5py.check_dtype(ref=dataset.dtype) is h5py.Reference


class H5Node(MatNode):
    """A value of an open v7.3 file; nothing is read before it is asked for, then only it.

    Field names, members and reference arrays are kept once read: a layout reader asks for the
    same struct's fields once per cycle.
    """

    def __init__(self, obj: h5py.Group | h5py.Dataset, name: str, budget: Budget) -> None:
        super().__init__(name)
        self._obj = obj
        self._budget = budget
        self._members: dict[str, h5py.Group | h5py.Dataset] = {}
        self._references: dict[str, np.ndarray] = {}
        with reading(name):
            self._class = _attr_text(_small_attribute(obj, "MATLAB_class"))
            self._empty = bool(_small_attribute(obj, "MATLAB_empty"))
            self._is_object = "MATLAB_object_decode" in obj.attrs
            self._is_dataset = isinstance(obj, h5py.Dataset)
            self._fields = () if self._is_dataset or self._is_object else self._field_names()
            self._array_field = None if self._is_dataset else self._struct_array_field()

    @property
    def kind(self) -> Kind:
        if self._is_object:
            return Kind.OBJECT
        if not self._is_dataset:
            return Kind.STRUCT if self._class in (None, "struct") else Kind.OBJECT
        named = {"cell": Kind.CELL, "char": Kind.CHAR, "struct": Kind.STRUCT}
        if self._class in named:
            return named[self._class]
        if self._class in _MATLAB_NUMERIC:
            return Kind.NUMERIC
        if self._class is None:  # written without MATLAB's attributes: judge by type
            dtype = self._obj.dtype
            if _is_reference(self._obj):
                return Kind.CELL
            if dtype.kind in "biuf" or set(dtype.names or ()) == {"real", "imag"}:
                return Kind.NUMERIC
        return Kind.OBJECT

    @property
    def shape(self) -> tuple[int, ...]:
        if self._empty:
            return (0, 0)
        self._need_open()
        if self._is_dataset:
            return tuple(reversed(self._obj.shape)) or (1, 1)
        if self._array_field is not None:
            return tuple(reversed(self._array_field.shape))
        return (1, 1)

    def _field_names(self) -> tuple[str, ...]:
        """The members, not MATLAB_fields: a corrupt variable-length attribute can hang HDF5."""
        return tuple(self._obj.keys())

    def _member(self, name: str) -> h5py.Group | h5py.Dataset:
        """A hard-linked member: soft and external links could reach outside the upload."""
        if name not in self._members:
            if not isinstance(self._obj.get(name, getlink=True), h5py.HardLink):
                raise InvalidMatFileError(
                    UNREADABLE,
                    [f"{self.name}.{name} is missing or a link (links are not followed)"],
                )
            self._members[name] = self._obj[name]
        return self._members[name]

    def _struct_array_field(self) -> h5py.Dataset | None:
        """MATLAB stores a struct array's fields as reference arrays without a class."""
        if self._class not in (None, "struct") or not self._fields:
            return None
        first = self._member(self._fields[0])
        if (
            isinstance(first, h5py.Dataset)
            and _is_reference(first)
            and "MATLAB_class" not in first.attrs
        ):
            return first
        return None

    def fields(self) -> tuple[str, ...]:
        return self._fields

    def _need_open(self) -> None:
        """Reading after ``open_research_file`` has exited is the caller's bug, not a bad file."""
        if not self._obj.id.valid:
            raise RuntimeError(f"{self.name}: the .mat file is closed; read it inside its block")

    def field(self, name: str, index: int = 0) -> MatNode:
        self._need_open()
        self._need(Kind.STRUCT)
        self._need_index(index)
        if self._empty or name not in self._fields:
            raise InvalidMatFileError(BAD_CONTENTS, [f"{self.name} has no field '{name}'"])
        child_name = self._child_name(name, index)
        with reading(child_name):
            member = self._member(name)
            if self._array_field is None:
                return H5Node(member, child_name, self._budget)
            return self._dereference(name, member, index, child_name)

    def cell(self, index: int) -> MatNode:
        self._need_open()
        self._need(Kind.CELL)
        self._need_index(index)
        child_name = f"{self.name}{{{index + 1}}}"
        with reading(child_name):
            return self._dereference("", self._obj, index, child_name)

    def _dereference(
        self, key: str, references: h5py.Group | h5py.Dataset, index: int, child_name: str
    ) -> MatNode:
        """Element ``index`` of a reference array (read whole once: it is small and reused)."""
        if key not in self._references:
            if not isinstance(references, h5py.Dataset) or not _is_reference(references):
                raise InvalidMatFileError(
                    BAD_CONTENTS, [f"{child_name}: expected object references"]
                )
            self._check_budget(references, child_name)
            self._references[key] = np.asarray(references[()]).ravel()
        flat = self._references[key]
        if index >= flat.size:
            raise InvalidMatFileError(BAD_CONTENTS, [f"{child_name}: no such element"])
        if not flat[index]:
            raise InvalidMatFileError(BAD_CONTENTS, [f"{child_name}: null reference"])
        return H5Node(self._obj.file[flat[index]], child_name, self._budget)

    def _check_budget(self, dataset: h5py.Dataset, name: str) -> None:
        """Refuse before reading: a compressed dataset can declare any shape at no cost on disk."""
        itemsize = dataset.dtype.itemsize
        declared = math.prod(dataset.shape) * itemsize
        chunk = math.prod(dataset.chunks) * itemsize if dataset.chunks else 0
        if max(declared, chunk) > self._budget.max_array_bytes:
            raise InvalidMatFileError(
                TOO_LARGE,
                [
                    f"{name} declares {_shape_text(dataset.shape)} items of {itemsize} bytes, "
                    f"over the {_mib(self._budget.max_array_bytes)} limit per array"
                ],
            )
        if dataset.external or dataset.is_virtual:
            raise InvalidMatFileError(UNREADABLE, [f"{name} keeps its data in other files"])

    def _read(self) -> np.ndarray:
        self._need_open()
        with reading(self.name):
            self._check_budget(self._obj, self.name)
            return np.asarray(self._obj[()])

    def numbers(self) -> np.ndarray:
        if self._empty:
            return np.empty(0)
        self._need(Kind.NUMERIC)
        data = self._read()
        if data.dtype.names:
            raise InvalidMatFileError(
                BAD_CONTENTS, [f"{self.name} is complex; real numbers expected"]
            )
        if data.dtype.kind not in "biuf":
            raise InvalidMatFileError(
                BAD_CONTENTS, [f"{self.name} holds {data.dtype}, not numbers"]
            )
        return np.asarray(data, dtype=np.float64).ravel()

    def text(self) -> str:
        if self._empty:
            return ""
        self._need(Kind.CHAR)
        data = self._read()
        rows = np.atleast_2d(data).T  # HDF5 holds MATLAB's transpose
        if data.dtype.kind == "S":
            return "\n".join(b"".join(row).decode(errors="replace") for row in rows)
        if data.dtype.kind not in "iu":
            raise InvalidMatFileError(BAD_CONTENTS, [f"{self.name} holds {data.dtype}, not text"])
        return "\n".join(
            np.asarray(row, dtype="<u2").tobytes().decode("utf-16-le", errors="replace")
            for row in rows
        )

    def describe(self) -> str:
        return f"{_shape_text(self.shape)} {self._class or self.kind.value}"


# --- Opening ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatContents:
    """A file's top-level variables; ``warnings``: what reading noted (scipy, skipped links)."""

    variables: Mapping[str, MatNode]
    warnings: tuple[str, ...] = ()


@contextmanager
def open_mat(path: Path, budget: Budget | None = None) -> Iterator[MatContents]:
    """The file's variables, valid until the context exits (v7.3 stays open until then)."""
    budget = budget or Budget()
    with reading("the file"), path.open("rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(0)
        if size == 0:
            raise InvalidMatFileError(NOT_MAT, ["the file is empty"])
        version, byte_order = sniff_version(fh.read(HDF5_OFFSET + len(HDF5_SIGNATURE)))
        if version is MatVersion.V4:
            _check_v4(fh, size, byte_order, budget)
            fh.seek(0)
            contents = _load_scipy(fh)
        elif version is not MatVersion.V73:
            with tempfile.TemporaryFile() as image:
                _write_checked_v5(fh, size, byte_order, budget, image)
                image.seek(0)
                contents = _load_scipy(image)
    if version is not MatVersion.V73:
        yield contents
        return
    with reading("the file"):
        h5 = h5py.File(path, "r")
    try:
        variables: dict[str, MatNode] = {}
        skipped: list[str] = []
        with reading("the file"):
            for name in h5:
                if name.startswith("#"):  # MATLAB's #refs# and #subsystem#
                    continue
                if isinstance(h5.get(name, getlink=True), h5py.HardLink):
                    variables[name] = H5Node(h5[name], name, budget)
                else:
                    skipped.append(f"{name} is a link to other data; links are not followed")
        # The caller's own errors inside the block pass through unchanged.
        yield MatContents(variables, tuple(skipped))
    finally:
        h5.close()


def _load_scipy(fh: BinaryIO) -> MatContents:
    """loadmat with its warnings kept as messages (tables and objects only warn)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            loaded = scipy.io.loadmat(
                fh, struct_as_record=True, squeeze_me=False, chars_as_strings=True
            )
        except (UnboundLocalError, ZeroDivisionError) as exc:  # scipy on some corrupt arrays
            raise InvalidMatFileError(UNREADABLE, [f"unreadable variable: {exc}"]) from exc
    messages = []
    for warning in caught:
        if issubclass(warning.category, MatReadWarning):
            messages.append(str(warning.message).splitlines()[0])
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    variables = {
        name: ScipyNode(value, name) for name, value in loaded.items() if not name.startswith("__")
    }
    return MatContents(variables, tuple(messages))
