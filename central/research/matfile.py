"""Opening an uploaded ``.mat`` file safely, and one view of its contents whatever its version.

Uploads come from anyone, so the version is read from the header bytes (never the name) and
every hostile shape is refused before a library can be tricked into allocating it: a v5 file's
zlib streams are inflated chunk by chunk against a budget and each matrix is checked against
the bytes that hold it before scipy reads it (scipy sizes object arrays from declared
dimensions); an HDF5 dataset's declared shape is checked before it is read (a compression bomb
declares a huge shape). Whatever scipy or h5py raise while reading becomes
:class:`InvalidMatFileError`.

Both v5 and v7.3 files are read lazily through :class:`MatNode`, which gives layout readers the
same struct/cell/array view of both, and reads only what they ask for:
- v5/v7: the variables are inflated once, in chunks, into an uncompressed temporary file; a
  node's header is read there when the node is reached; its numbers and one-row text straight
  from the mapped file, anything else by scipy's MAT reader (``loadmat``'s engine) at the node's
  own offset. A NASA file's charge and impedance runs, which nothing stores, are never made into
  arrays.
- v7.3 (HDF5): ``h5py``, one dataset at a time.
- v4 (no nesting, rare): ``scipy.io.loadmat``, whole, after a check of every header.
"""

from __future__ import annotations

import errno
import math
import mmap
import struct
import tempfile
import warnings
from abc import ABC, abstractmethod
from array import array
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO, NamedTuple

import h5py
import numpy as np
import scipy.io
from isal import isal_zlib
from scipy.io.matlab import MatlabFunction, MatlabObject, MatlabOpaque, MatReadError, MatReadWarning

# loadmat's own reader, used to read one matrix at a time; loadmat offers no lazy access.
from scipy.io.matlab._mio5 import MatFile5Reader

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
_MI_UINT8, _MI_UINT16, _MI_UTF8, _MI_UTF16, _MI_UTF32 = 2, 4, 16, 17, 18
# Numeric and text element types (int8…uint32, single, double, int64, uint64, utf8…utf32).
_DATA_TYPES = frozenset({1, 2, 3, 4, 5, 6, 7, 9, 12, 13, 16, 17, 18})
# The data types of numbers, as numpy spells them (the others are text: UTF-8, -16, -32).
_NUMBER_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8"}
_NUMBER_TYPES |= {12: "i8", 13: "u8"}
_INT8, _INT32, _UINT32 = frozenset({_MI_INT8}), frozenset({_MI_INT32}), frozenset({_MI_UINT32})
_TAG = {order: struct.Struct(f"{order}2I") for order in "<>"}  # an element's type and size
_FLAGS = {order: struct.Struct(f"{order}3I") for order in "<>"}  # and an array flags' first word
_MX_CELL, _MX_STRUCT, _MX_OBJECT, _MX_CHAR, _MX_SPARSE, _MX_DOUBLE = 1, 2, 3, 4, 5, 6
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
    isal_zlib.error,
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


def _inflate_into(fh: BinaryIO, nbytes: int, spent: list[int], budget: int, image: BinaryIO) -> int:
    """One compressed top-level element, inflated chunk by chunk into ``image``: its length.

    Every byte produced counts (``spent``: the running total for the whole file), so a zlib bomb
    is stopped at most one chunk past the budget; no more than a chunk is ever in memory. ISA-L's
    inflate gives the same bytes as zlib's in two thirds of the time (the bulk of reading a v7).
    """
    inflater = isal_zlib.decompressobj()
    left, written = nbytes, 0
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
        image.write(piece)
        written += len(piece)
        if not piece and not pending and not left:
            break
    if not inflater.eof:
        raise InvalidMatFileError(UNREADABLE, ["a compressed variable is cut short or corrupt"])
    return written


def _copy_into(fh: BinaryIO, nbytes: int, spent: list[int], budget: int, image: BinaryIO) -> None:
    """One uncompressed top-level element, copied chunk by chunk against the same budget."""
    spent[0] += nbytes
    if spent[0] > budget:
        raise InvalidMatFileError(
            TOO_LARGE, [f"the variables decompress to over {_mib(budget)}, the limit per file"]
        )
    left = nbytes
    while left:
        chunk = fh.read(min(_CHUNK, left))
        image.write(chunk)
        left -= len(chunk)


class _Cursor:
    """A position in a v5 image's bytes (one shared read-only view of the mapped file)."""

    def __init__(self, data: memoryview, position: int = 0) -> None:
        self._data = data
        self._size = len(data)
        self.position = position

    def read(self, n: int, end: int) -> bytes:
        """Exactly ``n`` bytes, which must lie before ``end`` (the enclosing matrix's end)."""
        start = self.position
        self.skip(n, end)
        return self._data[start : self.position].tobytes()

    def unpack(self, layout: struct.Struct, position: int) -> tuple[int, ...]:
        """Numbers at ``position``, already known to lie inside (stepped over)."""
        return layout.unpack_from(self._data, position)

    def bytes_at(self, position: int, n: int) -> bytes:
        return self._data[position : position + n].tobytes()

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
    tag = flow.position
    flow.skip(8, end)
    mdtype, nbytes = flow.unpack(_TAG[byte_order], tag)
    small = mdtype >> 16  # small format: size in the upper half, data in the tag's last 4 bytes
    if small:
        mdtype, nbytes = mdtype & 0xFFFF, small
    if mdtype not in allowed:
        raise InvalidMatFileError(UNREADABLE, [f"a matrix element of unexpected type {mdtype}"])
    if small:
        if nbytes > 4:
            raise InvalidMatFileError(UNREADABLE, ["a small data element claims over 4 bytes"])
        return mdtype, flow.bytes_at(tag + 4, nbytes)
    if not keep:
        flow.skip(nbytes + -nbytes % 8, end)
        return mdtype, b""
    if nbytes > _HEADER_ELEMENT_MAX:
        raise InvalidMatFileError(UNREADABLE, [f"a matrix header element claims {nbytes} bytes"])
    data = flow.read(nbytes, end)
    flow.skip(-nbytes % 8, end)
    return mdtype, data


def _text(data: bytes) -> str:
    return data.split(b"\0", 1)[0].decode("latin1")


class _Header(NamedTuple):
    """What a matrix's leading elements say: enough to navigate it without reading its data.

    A tuple: a NASA file has hundreds of matrices a layout looks into, each made once.
    """

    matrix_class: int
    is_complex: bool
    is_logical: bool
    dims: tuple[int, ...]
    name: str
    children: int  # nested matrices that follow (cell elements, struct fields × elements)
    data_elements: int  # then data elements (numbers, text, sparse indices)
    field_names: tuple[str, ...] = ()
    class_name: str = ""  # of an object or opaque value
    object_name: str = ""  # an opaque value's own name (MATLAB stores it there, not as the name)


def _matrix_header(flow: _Cursor, end: int, byte_order: str, budget: Budget) -> _Header:
    """Read a matrix's flags, dimensions and name, and a struct's field names.

    The flags (8 bytes) never fit the small element format: their tag and first word are read
    at once.
    """
    tag = flow.position
    flow.skip(16, end)
    mdtype, nbytes, flag_word = flow.unpack(_FLAGS[byte_order], tag)
    if (mdtype & 0xFFFF) not in _UINT32:
        raise InvalidMatFileError(UNREADABLE, [f"a matrix element of unexpected type {mdtype}"])
    if mdtype >> 16 or nbytes != 8:
        raise InvalidMatFileError(UNREADABLE, ["a matrix without its array flags"])
    matrix_class, is_complex = flag_word & 0xFF, bool(flag_word & 0x0800)
    is_logical = bool(flag_word & 0x0200)
    if matrix_class == _MX_OPAQUE:  # three names, then one matrix (scipy's reading of MATLAB's)
        name, _, class_name = (_text(_element(flow, end, byte_order, _INT8)[1]) for _ in range(3))
        return _Header(matrix_class, False, False, (1, 1), name, 1, 0, (), class_name, name)
    if matrix_class not in _CLASSES:
        raise InvalidMatFileError(UNREADABLE, [f"a matrix of unknown class {matrix_class}"])
    _, dims_data = _element(flow, end, byte_order, _INT32)
    if len(dims_data) < 8 or len(dims_data) % 4:
        raise InvalidMatFileError(UNREADABLE, ["a matrix with malformed dimensions"])
    dims = struct.unpack(f"{byte_order}{len(dims_data) // 4}i", dims_data)
    if any(d < 0 for d in dims):
        raise InvalidMatFileError(UNREADABLE, [f"a matrix with negative dimensions {dims}"])
    name = _text(_element(flow, end, byte_order, _INT8)[1])
    children, data_elements, field_names, class_name = 0, 0, (), ""
    if matrix_class == _MX_CHAR:
        data_elements = 1
    elif matrix_class == _MX_SPARSE:  # row indices, column pointers, real (and imaginary) values
        data_elements = 3 + is_complex
    elif matrix_class == _MX_FUNCTION:
        children = 1
    elif matrix_class >= _MX_DOUBLE:  # numeric
        data_elements = 1 + is_complex
    else:
        children, field_names, class_name = _container(
            flow,
            end,
            byte_order=byte_order,
            matrix_class=matrix_class,
            count=math.prod(dims),
            budget=budget,
        )
    return _Header(
        matrix_class,
        is_complex,
        is_logical,
        dims,
        name,
        children,
        data_elements,
        field_names,
        class_name,
    )


def _container(
    flow: _Cursor, end: int, *, byte_order: str, matrix_class: int, count: int, budget: Budget
) -> tuple[int, tuple[str, ...], str]:
    """A cell's, struct's or object's nested matrices, field names and class name."""
    if count * 8 > budget.max_array_bytes:  # scipy allocates a slot per element
        raise InvalidMatFileError(
            TOO_LARGE, [f"a cell or struct array of {count} elements, over the limit per array"]
        )
    if matrix_class == _MX_CELL:
        return count, (), ""
    class_name = ""
    if matrix_class == _MX_OBJECT:
        class_name = _text(_element(flow, end, byte_order, _INT8)[1])
    field_names = _field_names(flow, end, byte_order)
    return count * len(field_names), field_names, class_name


def _field_names(flow: _Cursor, end: int, byte_order: str) -> tuple[str, ...]:
    """A struct's (or object's) field names: one length, then the names padded to it."""
    _, length_data = _element(flow, end, byte_order, _INT32)
    _, names = _element(flow, end, byte_order, _INT8)
    if len(length_data) != 4:
        raise InvalidMatFileError(UNREADABLE, ["a struct without its field-name length"])
    (name_length,) = struct.unpack(f"{byte_order}i", length_data)
    if name_length <= 0:  # scipy divides by it
        raise InvalidMatFileError(UNREADABLE, [f"a struct with field names of {name_length} bytes"])
    return tuple(
        _text(names[i : i + name_length])
        for i in range(0, len(names) - name_length + 1, name_length)
    )


def _walk_matrix(flow: _Cursor, end: int, depth: int, byte_order: str, budget: Budget) -> None:
    """Check one miMATRIX payload the way scipy will read it, so that reading stays bounded."""
    if flow.position == end:
        return  # an empty matrix
    if depth > MAX_NESTING:
        raise InvalidMatFileError(UNREADABLE, [f"matrices nested deeper than {MAX_NESTING} levels"])
    header = _matrix_header(flow, end, byte_order, budget)
    _walk_contents(flow, end, header, depth=depth, byte_order=byte_order, budget=budget)


def _walk_contents(
    flow: _Cursor, end: int, header: _Header, *, depth: int, byte_order: str, budget: Budget
) -> None:
    """Check what follows a matrix's header (``flow`` is just past it).

    scipy reads nested matrices in sequence without bounding each by its byte count, sizes
    object arrays from declared dimensions and looks element types up unchecked: so the walk
    requires exactly the elements scipy will read, of valid types, filling each nested matrix.
    """
    _check_room(header, flow, end)
    for _ in range(header.children):
        mdtype, nbytes = struct.unpack(f"{byte_order}2I", flow.read(8, end))
        if mdtype != _MI_MATRIX:
            raise InvalidMatFileError(UNREADABLE, [f"element type {mdtype} where a matrix belongs"])
        if flow.position + nbytes > end:
            raise InvalidMatFileError(UNREADABLE, ["an element runs past the matrix that holds it"])
        _walk_matrix(flow, flow.position + nbytes, depth + 1, byte_order, budget)
    for _ in range(header.data_elements):
        _element(flow, end, byte_order, _DATA_TYPES, keep=False)
    if depth and flow.position != end:  # scipy would read the next matrix from the wrong place
        raise InvalidMatFileError(UNREADABLE, ["a matrix holds more than its declared contents"])


def _check_room(header: _Header, flow: _Cursor, end: int) -> None:
    if header.children * 8 > end - flow.position:  # every child holds at least its 8-byte tag
        raise InvalidMatFileError(
            UNREADABLE, [f"a matrix declares {header.children} elements its bytes cannot hold"]
        )


def _write_image(
    fh: BinaryIO, size: int, byte_order: str, budget: Budget, image: BinaryIO
) -> list[tuple[int, int]]:
    """Every top-level element, inside the file and within budget, written uncompressed to
    ``image`` (the header, then each variable's matrix): where each matrix's tag starts and ends.

    The file is inflated once, in chunks, and the inflated bytes wait on disk, not in memory.
    """
    position, spent, matrices = HEADER_BYTES, [0], []
    fh.seek(0)
    image.write(fh.read(HEADER_BYTES))
    while position < size:
        fh.seek(position)
        tag = fh.read(8)
        if len(tag) < 8:
            if tag.strip(b"\0"):
                raise InvalidMatFileError(UNREADABLE, ["the file ends inside a variable's tag"])
            break  # trailing padding
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
        start = image.tell()
        if mdtype == _MI_COMPRESSED:
            written = _inflate_into(fh, nbytes, spent, budget.max_decompressed_bytes, image)
        else:
            image.write(tag)
            _copy_into(fh, nbytes, spent, budget.max_decompressed_bytes, image)
            written = 8 + nbytes
        matrices.append((start, start + written))
        position += 8 + nbytes
    return matrices


class _V5Image:
    """A v5 file's variables, inflated and checked, open for :class:`V5Node` to read from.

    The image is mapped read-only: walking its headers reads the page cache, not a copy.
    Numbers and one-row text are viewed there and copied out; anything else is read by scipy's
    MAT-file reader (the engine of ``scipy.io.loadmat``), one matrix at a time at its own offset,
    after the walk has checked everything that matrix holds.
    """

    def __init__(self, image: BinaryIO, byte_order: str, budget: Budget) -> None:
        self.byte_order = byte_order
        self.budget = budget
        try:
            self._map = mmap.mmap(image.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:  # the address space left under the reader's memory limit
            if exc.errno == errno.ENOMEM:
                raise MemoryError(str(exc)) from exc
            raise
        self.view = memoryview(self._map)
        self._reader = MatFile5Reader(
            image, struct_as_record=True, squeeze_me=False, chars_as_strings=True
        )
        self._reader.initialize_read()
        self._closed = False

    def cursor(self, position: int, name: str) -> _Cursor:
        """Reading after ``open_research_file`` has exited is the caller's bug, not a bad file."""
        if self._closed:
            raise RuntimeError(f"{name}: the .mat file is closed; read it inside its block")
        return _Cursor(self.view, position)

    def _data(self, node: V5Node) -> tuple[int, int, int]:
        """The one data element of a real numeric or char matrix, checked as the walk checks
        it: its type, where its bytes start and how many there are."""
        flow = self.cursor(node.contents, node.name)
        tag = flow.position
        mdtype, _ = _element(flow, node.end, self.byte_order, _DATA_TYPES, keep=False)
        if node.depth and flow.position != node.end:
            raise InvalidMatFileError(
                UNREADABLE, ["a matrix holds more than its declared contents"]
            )
        word, nbytes = _TAG[self.byte_order].unpack_from(self.view, tag)
        start = tag + 8
        if word >> 16:  # the small format: up to 4 bytes inside the tag
            start, nbytes = tag + 4, word >> 16
        return mdtype, start, nbytes

    def _bytes(self, start: int, nbytes: int) -> memoryview:
        """A view into the image, to be released before the image closes (``with``)."""
        return self.view[start : start + nbytes]

    def numbers(self, node: V5Node) -> np.ndarray:
        """A real numeric matrix's values as float64, viewed in the image and copied out.

        The values are converted from the type they are stored in (MATLAB stores whole numbers
        in the smallest type that holds them), as ``loadmat`` and a conversion would give them.
        """
        mdtype, start, nbytes = self._data(node)
        if mdtype not in _NUMBER_TYPES:
            raise InvalidMatFileError(UNREADABLE, [f"{node.name}: numbers stored as text"])
        dtype = np.dtype(_NUMBER_TYPES[mdtype]).newbyteorder(self.byte_order)
        if nbytes != node.size * dtype.itemsize:
            raise InvalidMatFileError(
                UNREADABLE,
                [f"{node.name} holds {nbytes} bytes for {node.size} values of {dtype.itemsize}"],
            )
        with self._bytes(start, nbytes) as data:
            return np.frombuffer(data, dtype=dtype).astype(np.float64)

    def line(self, node: V5Node) -> str:
        """A one-row char matrix as text, decoded as ``loadmat`` decodes it, except that UTF-16
        code units (MATLAB's own char) are decoded as UTF-16, where scipy keeps their low bytes.

        Trailing NULs are dropped, as numpy's strings drop them.
        """
        mdtype, start, nbytes = self._data(node)
        length = node.size
        if not nbytes:  # files in the wild hold empty text of a non-zero length
            return " " * length
        if mdtype in (_MI_UINT16, _MI_UTF16):
            codec = "utf-16-le" if self.byte_order == "<" else "utf-16-be"
        elif mdtype == _MI_UTF32:
            codec = "utf-32-le" if self.byte_order == "<" else "utf-32-be"
        elif mdtype in (_MI_INT8, _MI_UINT8):
            codec = "ascii"
        elif mdtype == _MI_UTF8:
            codec = "utf-8"
        else:
            raise InvalidMatFileError(UNREADABLE, [f"{node.name}: text stored as numbers"])
        with self._bytes(start, nbytes) as data:
            text = data.tobytes().decode(codec, "replace")
        if len(text) != length:
            raise InvalidMatFileError(
                UNREADABLE, [f"{node.name} holds {len(text)} characters for {length}"]
            )
        return text.rstrip("\0")

    def read(self, node: V5Node) -> object:
        """``node``'s value as ``loadmat`` would give it, once all it holds is checked."""
        flow = self.cursor(node.contents, node.name)
        _walk_contents(
            flow,
            node.end,
            node.header,
            depth=node.depth,
            byte_order=self.byte_order,
            budget=self.budget,
        )
        with reading(node.name), warnings.catch_warnings():
            warnings.simplefilter("ignore", MatReadWarning)
            self._reader.mat_stream.seek(node.start)
            try:
                header, _ = self._reader.read_var_header()
                return self._reader.read_var_array(header, process=True)
            except (UnboundLocalError, ZeroDivisionError) as exc:  # scipy on corrupt arrays
                raise InvalidMatFileError(UNREADABLE, [f"{node.name}: unreadable: {exc}"]) from exc

    def close(self) -> None:
        self._closed = True
        self.view.release()
        self._map.close()


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


_V5_NUMERIC = {6: "double", 7: "single", 8: "int8", 9: "uint8", 10: "int16", 11: "uint16"}
_V5_NUMERIC |= {12: "int32", 13: "uint32", 14: "int64", 15: "uint64"}
_EMPTY_HEADER = _Header(_MX_DOUBLE, False, False, (0, 0), "", 0, 0)  # a zero-byte matrix: []


class V5Node(MatNode):
    """A value of a v5 file, read only when asked for: a layout reader that needs a few fields of
    each cycle never makes the rest of the file into arrays.

    Its header is read when the node is made; a cell's or struct's children are located (by their
    tags, without reading them) when first asked for, and kept once made.
    """

    def __init__(self, image: _V5Image, start: int, end: int, name: str, depth: int) -> None:
        super().__init__(name)
        if depth > MAX_NESTING:
            raise InvalidMatFileError(
                UNREADABLE, [f"matrices nested deeper than {MAX_NESTING} levels"]
            )
        self._image = image
        self.start, self.end, self.depth = start, end, depth  # the tag, the end, the nesting
        self._children: array[int] | None = None
        self._made: dict[int, V5Node] = {}  # children already made: layouts revisit fields
        flow = image.cursor(start + 8, name)
        if flow.position == end:
            self.header = _EMPTY_HEADER
        else:
            self.header = _matrix_header(flow, end, image.byte_order, image.budget)
            _check_room(self.header, flow, end)
        self.contents = flow.position  # where the children or the data start
        self._size = math.prod(self.header.dims)

    @property
    def kind(self) -> Kind:
        matrix_class = self.header.matrix_class
        if matrix_class == _MX_CELL:
            return Kind.CELL
        if matrix_class == _MX_STRUCT:
            return Kind.STRUCT
        if matrix_class == _MX_CHAR:
            return Kind.CHAR
        if matrix_class in _V5_NUMERIC:
            return Kind.NUMERIC
        return Kind.OBJECT  # objects, sparse matrices, function handles, opaque (tables)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.header.dims

    @property
    def size(self) -> int:
        return self._size

    def fields(self) -> tuple[str, ...]:
        return self.header.field_names if self.kind is Kind.STRUCT else ()

    def _child_tags(self) -> array[int]:
        """Where each nested matrix's tag starts, stepping over them (a cell's or struct's)."""
        if self._children is None:
            byte_order, end = self._image.byte_order, self.end
            flow = self._image.cursor(self.contents, self.name)
            tags = array("q")
            layout = _TAG[byte_order]
            for _ in range(self.header.children):
                tag = flow.position
                tags.append(tag)
                flow.skip(8, end)
                mdtype, nbytes = flow.unpack(layout, tag)
                if mdtype != _MI_MATRIX:
                    raise InvalidMatFileError(
                        UNREADABLE, [f"element type {mdtype} where a matrix belongs"]
                    )
                flow.skip(nbytes, end)
            if self.depth and flow.position != end:
                raise InvalidMatFileError(
                    UNREADABLE, ["a matrix holds more than its declared contents"]
                )
            self._children = tags
        return self._children

    def _child(self, position: int, name: str) -> V5Node:
        if position not in self._made:
            start = self._child_tags()[position]  # each tag checked to lie inside
            _, nbytes = self._image.cursor(start, name).unpack(_TAG[self._image.byte_order], start)
            node = V5Node(self._image, start, start + 8 + nbytes, name, self.depth + 1)
            self._made[position] = node
        return self._made[position]

    def field(self, name: str, index: int = 0) -> MatNode:
        self._need(Kind.STRUCT)
        self._need_index(index)
        names = self.header.field_names
        if name not in names:
            raise InvalidMatFileError(BAD_CONTENTS, [f"{self.name} has no field '{name}'"])
        position = index * len(names) + names.index(name)
        return self._child(position, self._child_name(name, index))

    def cell(self, index: int) -> MatNode:
        self._need(Kind.CELL)
        self._need_index(index)
        return self._child(index, f"{self.name}{{{index + 1}}}")

    def _value(self) -> ScipyNode:
        return ScipyNode(self._image.read(self), self.name)

    def numbers(self) -> np.ndarray:
        self._need(Kind.NUMERIC)
        if self.header is _EMPTY_HEADER:
            return np.empty(0)
        if self.header.is_complex:
            raise InvalidMatFileError(
                BAD_CONTENTS, [f"{self.name} is complex; real numbers expected"]
            )
        if self.size * 8 > self._image.budget.max_array_bytes:  # as float64, which callers get
            raise InvalidMatFileError(
                TOO_LARGE,
                [
                    f"{self.name} declares {_shape_text(self.shape)} numbers, over the "
                    f"{_mib(self._image.budget.max_array_bytes)} limit per array"
                ],
            )
        return self._image.numbers(self)

    def text(self) -> str:
        self._need(Kind.CHAR)
        if len(self.shape) == 2 and self.shape[0] == 1:
            return self._image.line(self)
        return self._value().text()

    def describe(self) -> str:
        header = self.header
        matrix_class = header.matrix_class
        if matrix_class == _MX_OPAQUE:
            return f"MATLAB {header.class_name} object '{header.object_name}'"
        if matrix_class == _MX_OBJECT:
            return f"MATLAB {header.class_name} object"
        if matrix_class == _MX_FUNCTION:
            return "MATLAB function handle"
        if matrix_class == _MX_SPARSE:
            return f"{_shape_text(self.shape)} sparse"
        if matrix_class in _V5_NUMERIC:
            numeric = "logical" if header.is_logical else _V5_NUMERIC[matrix_class]
            return f"{_shape_text(self.shape)} {numeric}"
        return f"{_shape_text(self.shape)} {self.kind.value}"


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
    """A MATLAB bookkeeping attribute (``None`` if absent), refused if it claims to be large.

    Read through the low-level API: every cell of a batch file has one, and h5py's generic
    attribute read costs twice as much.
    """
    key = name.encode()
    if not h5py.h5a.exists(obj.id, key):
        return None
    attribute = h5py.h5a.open(obj.id, key)
    if attribute.get_storage_size() > _ATTRIBUTE_MAX:
        raise InvalidMatFileError(UNREADABLE, [f"the {name} attribute of {obj.name} is malformed"])
    stored = attribute.get_type()
    if (
        stored.get_class() == h5py.h5t.STRING
        and not stored.is_variable_str()
        and attribute.get_space().get_simple_extent_type() == h5py.h5s.SCALAR
    ):  # MATLAB_class: one fixed-length string
        text = np.empty((), dtype=f"S{stored.get_size()}")
        attribute.read(text, mtype=stored)
        return text[()]
    dtype, shape = attribute.dtype, attribute.shape
    if dtype.kind == "O" or math.prod(shape) * dtype.itemsize > _ATTRIBUTE_MAX:
        raise InvalidMatFileError(UNREADABLE, [f"the {name} attribute of {obj.name} is malformed"])
    value = np.empty(shape, dtype=dtype)
    attribute.read(value)
    return value.ravel()[0] if value.size else None


def _referenced(file: h5py.File, reference: h5py.Reference, name: str) -> h5py.Group | h5py.Dataset:
    """What ``file[reference]`` gives, without h5py's generic lookup (a batch file holds a
    reference per cycle, and the lookup cost more than reading the cycle's data)."""
    target = h5py.h5r.dereference(reference, file.id)
    if isinstance(target, h5py.h5d.DatasetID):
        return h5py.Dataset(target, readonly=True)  # as h5py's own lookup: shapes are cached
    if isinstance(target, h5py.h5g.GroupID):
        return h5py.Group(target)
    raise InvalidMatFileError(
        BAD_CONTENTS, [f"{name}: a reference to neither an array nor a struct"]
    )


def _read_dataset(dataset: h5py.Dataset, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """The whole dataset (of ``dtype`` and ``shape``, as the caller has them already): numbers
    straight into an array of their own type, as h5py's ``dataset[()]`` would after setting up a
    reader per dataset object (a reference gives a new one each time); anything else (empty or
    null spaces, strings, references) through h5py."""
    if dtype.kind not in "biuf" or not shape or not all(shape):
        return np.asarray(dataset[()])
    values = np.empty(shape, dtype=dtype)
    dataset.id.read(h5py.h5s.ALL, h5py.h5s.ALL, values)
    return values


def _is_reference(dataset: h5py.Dataset) -> bool:
    return h5py.check_dtype(ref=dataset.dtype) is h5py.Reference


class H5Node(MatNode):
    """A value of an open v7.3 file; nothing is read before it is asked for, then only it.

    Field names, members and reference arrays are kept once read: a layout reader asks for the
    same struct's fields once per cycle.
    """

    def __init__(
        self, obj: h5py.Group | h5py.Dataset, name: str, budget: Budget, file: h5py.File
    ) -> None:
        super().__init__(name)
        self._obj = obj
        self._budget = budget
        self._file = file  # ``obj.file`` makes a new File object at each use
        self._shape: tuple[int, ...] | None = None
        self._members: dict[str, h5py.Group | h5py.Dataset] = {}
        self._references: dict[str, np.ndarray] = {}
        with reading(name):
            self._class = _attr_text(_small_attribute(obj, "MATLAB_class"))
            self._empty = bool(_small_attribute(obj, "MATLAB_empty"))
            self._is_object = h5py.h5a.exists(obj.id, b"MATLAB_object_decode")
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
        if self._shape is None:
            self._shape = self._read_shape()
        return self._shape

    def _read_shape(self) -> tuple[int, ...]:
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
                return H5Node(member, child_name, self._budget, self._file)
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
        return H5Node(
            _referenced(self._file, flat[index], child_name), child_name, self._budget, self._file
        )

    def _check_budget(self, dataset: h5py.Dataset, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        """Refuse before reading: a compressed dataset can declare any shape at no cost on disk.
        The dataset's type and shape, which h5py works out anew at each ask."""
        dtype, shape = dataset.dtype, dataset.shape
        itemsize = dtype.itemsize
        declared = math.prod(shape) * itemsize
        plist = dataset.id.get_create_plist()  # once: each of h5py's properties makes its own
        layout = plist.get_layout()
        chunk = math.prod(plist.get_chunk()) * itemsize if layout == h5py.h5d.CHUNKED else 0
        if max(declared, chunk) > self._budget.max_array_bytes:
            raise InvalidMatFileError(
                TOO_LARGE,
                [
                    f"{name} declares {_shape_text(shape)} items of {itemsize} bytes, "
                    f"over the {_mib(self._budget.max_array_bytes)} limit per array"
                ],
            )
        if plist.get_external_count() or layout == h5py.h5d.VIRTUAL:
            raise InvalidMatFileError(UNREADABLE, [f"{name} keeps its data in other files"])
        return dtype, shape

    def _read(self) -> np.ndarray:
        self._need_open()
        with reading(self.name):
            dtype, shape = self._check_budget(self._obj, self.name)
            return _read_dataset(self._obj, dtype, shape)

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
def open_mat(
    path: Path, budget: Budget | None = None, *, scratch: BinaryIO | None = None
) -> Iterator[MatContents]:
    """The file's variables, valid until the context exits (v5 and v7.3 stay open until then).

    ``scratch``: a file the inflated v5 image may be written over (its earlier contents are
    cut off after the image), for a caller that reads file after file; None: a temporary file.
    Rewriting a file's pages costs a fifth of writing as many to a new file.
    """
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
    if version is MatVersion.V4:
        yield contents
    elif version is MatVersion.V5:
        with _open_v5(path, byte_order, budget, scratch) as contents:
            yield contents
    else:
        with _open_v73(path, budget) as contents:
            yield contents


@contextmanager
def _open_v5(
    path: Path, byte_order: str, budget: Budget, scratch: BinaryIO | None
) -> Iterator[MatContents]:
    with ExitStack() as stack:
        if scratch is None:
            image_file = stack.enter_context(tempfile.TemporaryFile())
        else:
            image_file = scratch
            image_file.seek(0)
        with reading("the file"), path.open("rb") as fh:
            matrices = _write_image(fh, fh.seek(0, 2), byte_order, budget, image_file)
            image_file.truncate()  # what an earlier, longer image left after this one
            image_file.flush()
            image = _V5Image(image_file, byte_order, budget)
        try:
            variables: dict[str, MatNode] = {}
            notes: list[str] = []
            for number, (start, end) in enumerate(matrices, start=1):
                node = _top_level(image, start, end, number)
                name = node.header.name
                if not name:  # MATLAB's function workspace (class metadata): no data of ours
                    continue
                if name in variables:
                    notes.append(f'Duplicate variable name "{name}": the last one is read')
                variables[name] = node
            # The caller's own errors inside the block pass through unchanged.
            yield MatContents(variables, tuple(notes))
        finally:
            image.close()


def _top_level(image: _V5Image, start: int, end: int, number: int) -> V5Node:
    """Variable ``number``'s matrix, as its tag says, within what the image holds for it."""
    tag = image.view[start : start + 8].tobytes()
    if len(tag) < 8:
        raise InvalidMatFileError(UNREADABLE, ["a compressed variable holds no matrix"])
    mdtype, nbytes = struct.unpack(f"{image.byte_order}2I", tag)
    if mdtype != _MI_MATRIX:
        raise InvalidMatFileError(UNREADABLE, ["a compressed variable holds no matrix"])
    if start + 8 + nbytes > end:
        raise InvalidMatFileError(UNREADABLE, ["the file is truncated inside a variable"])
    with reading(f"variable {number}"):
        node = V5Node(image, start, start + 8 + nbytes, f"variable {number}", 0)
    node.name = node.header.name or node.name
    return node


@contextmanager
def _open_v73(path: Path, budget: Budget) -> Iterator[MatContents]:
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
                    variables[name] = H5Node(h5[name], name, budget, h5)
                else:
                    skipped.append(f"{name} is a link to other data; links are not followed")
        # The caller's own errors inside the block pass through unchanged.
        yield MatContents(variables, tuple(skipped))
    finally:
        h5.close()


def _load_scipy(fh: BinaryIO) -> MatContents:
    """loadmat of a v4 file, with its warnings kept as messages."""
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
