"""Recognising the MAT version from header bytes, and refusing hostile files without a crash."""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import zlib

import h5py
import numpy as np
import pytest
import scipy.io

from central.research.cells import InvalidMatFileError
from central.research.matfile import (
    HDF5_SIGNATURE,
    NOT_MAT,
    TOO_LARGE,
    UNREADABLE,
    MatVersion,
    open_mat,
    sniff_version,
)
from central.research.parse import NO_BATTERY_DATA, open_research_file
from tests.central.research.support import (
    DATA,
    SEVERSON_TRAIN,
    v73_battery,
    v73_bomb,
    v73_header,
    write_v73,
)

V5_FILE = DATA / "nasa_pcoe" / "B0050.mat"


def _v5_header(byte_order: str = "<", version: int = 0x0100, text: bytes = b"MATLAB 5.0") -> bytes:
    mark = b"IM" if byte_order == "<" else b"MI"
    return text.ljust(116, b" ") + b"\0" * 8 + struct.pack(f"{byte_order}H", version) + mark


def _v4_header(
    byte_order: str = "<", mopt: int | None = None, rows: int = 2, cols: int = 3
) -> bytes:
    mopt = (0 if byte_order == "<" else 1000) if mopt is None else mopt
    return struct.pack(f"{byte_order}5i", mopt, rows, cols, 0, 2) + b"x\0"


def _refused(path, **budget) -> InvalidMatFileError:
    with pytest.raises(InvalidMatFileError) as caught, open_research_file(path, **budget) as cells:
        for cell in cells:
            for _ in cell.cycles():
                pass
    return caught.value


# --- sniffing (pure) ----------------------------------------------------------------------------


@pytest.mark.parametrize("byte_order", ["<", ">"])
def test_v5_header_in_either_byte_order(byte_order):
    assert sniff_version(_v5_header(byte_order)) == (MatVersion.V5, byte_order)


def test_v73_needs_hdf5_after_the_header():
    head = v73_header().ljust(512, b"\0") + HDF5_SIGNATURE
    assert sniff_version(head) == (MatVersion.V73, "<")
    with pytest.raises(InvalidMatFileError, match=UNREADABLE) as caught:
        sniff_version(v73_header().ljust(520, b"\0"))
    assert caught.value.issues == ["the header says MATLAB 7.3 but no HDF5 data starts at byte 512"]


def test_header_text_claiming_73_counts_even_with_the_v5_version_number():
    with pytest.raises(InvalidMatFileError, match=UNREADABLE):
        sniff_version(_v5_header(text=b"MATLAB 7.3 MAT-file").ljust(520, b"\0"))


@pytest.mark.parametrize("byte_order", ["<", ">"])
def test_v4_is_recognised_by_a_sane_first_header(byte_order):
    assert sniff_version(_v4_header(byte_order)) == (MatVersion.V4, byte_order)


@pytest.mark.parametrize(
    "head",
    [
        _v4_header(mopt=3),  # T = 3: no such matrix type
        _v4_header(mopt=60),  # P = 6: no such number type
        _v4_header(mopt=1000),  # says big-endian, reads sane only as little-endian
        _v4_header(rows=-1),
        b"\0" * 100,  # name length 0
        _v5_header(version=0x0300),
        b"%PDF-1.7 " * 20,
        HDF5_SIGNATURE + b"\0" * 600,  # HDF5 without MATLAB's header
    ],
    ids=[
        "v4-type",
        "v4-precision",
        "v4-order",
        "v4-rows",
        "zeros",
        "v5-version",
        "pdf",
        "bare-hdf5",
    ],
)
def test_anything_else_is_not_a_mat_file(head):
    with pytest.raises(InvalidMatFileError):
        sniff_version(head)


def test_bare_hdf5_is_explained():
    with pytest.raises(InvalidMatFileError, match=NOT_MAT) as caught:
        sniff_version(HDF5_SIGNATURE + b"\0" * 600)
    assert "HDF5 file without MATLAB's 512-byte header" in caught.value.issues[0]


# --- files that are not .mat at all ------------------------------------------------------------


def test_random_bytes_named_mat(tmp_path):
    path = tmp_path / "random.mat"
    path.write_bytes(np.random.default_rng(7).integers(1, 256, 4096, dtype=np.uint8).tobytes())
    assert _refused(path).message == NOT_MAT


def test_a_text_file(tmp_path):
    path = tmp_path / "notes.mat"
    path.write_text("cycle,capacity\n1,1.05\n2,1.04\n" * 20)
    assert _refused(path).message == NOT_MAT


def test_an_empty_file(tmp_path):
    path = tmp_path / "empty.mat"
    path.write_bytes(b"")
    assert _refused(path).issues == ["the file is empty"]


def test_a_73_header_with_no_hdf5_after_it(tmp_path):
    path = tmp_path / "fake73.mat"
    path.write_bytes(v73_header() + os.urandom(2048))
    assert "no HDF5 data starts at byte 512" in _refused(path).issues[0]


# --- damaged real files ------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.001, 0.3, 0.999])
def test_truncated_v5(tmp_path, fraction):
    data = V5_FILE.read_bytes()
    path = tmp_path / "cut.mat"
    path.write_bytes(data[: int(len(data) * fraction)])
    error = _refused(path)
    assert error.message == UNREADABLE
    assert "truncated" in error.issues[0]


@pytest.mark.parametrize("keep", [600, 4096, 10**6, -100])
def test_truncated_v73(tmp_path, keep):
    path = tmp_path / "cut73.mat"
    with SEVERSON_TRAIN.open("rb") as source, path.open("wb") as target:
        size = SEVERSON_TRAIN.stat().st_size
        target.write(source.read(keep if keep > 0 else size + keep))
    assert _refused(path).message == UNREADABLE


def test_corrupt_compressed_v5_data(tmp_path):
    data = bytearray(V5_FILE.read_bytes())
    data[5000:5016] = b"\xff" * 16
    path = tmp_path / "corrupt.mat"
    path.write_bytes(bytes(data))
    assert _refused(path).message == UNREADABLE


# --- bombs and absurd shapes -------------------------------------------------------------------


def test_v5_zlib_bomb_is_stopped_by_the_decompressed_budget(tmp_path):
    path = tmp_path / "bomb.mat"
    scipy.io.savemat(path, {"zeros": np.zeros(4 * 2**20)}, do_compression=True)  # 32 MiB
    assert path.stat().st_size < 100_000
    # Within the default budget the file reads (and holds no battery data) ...
    with pytest.raises(InvalidMatFileError, match=NO_BATTERY_DATA), open_research_file(path):
        pass
    # ... and over a lowered one it is refused before scipy inflates it.
    error = _refused(path, max_decompressed_bytes=8 * 2**20)
    assert error.message == TOO_LARGE
    assert error.issues == ["the variables decompress to over 8 MiB, the limit per file"]


def _v5_cell_declaring(dims: tuple[int, ...]) -> bytes:
    """A compressed miMATRIX cell array whose dimensions claim far more than its bytes hold."""
    flags = struct.pack("<2I", 6, 8) + struct.pack("<2I", 1, 0)  # miUINT32: class 1 = cell
    dims_element = struct.pack("<2I", 5, 4 * len(dims)) + struct.pack(f"<{len(dims)}i", *dims)
    name = struct.pack("<HH", 1, 1) + b"c\0\0\0"  # small miINT8 element
    payload = flags + dims_element + name
    matrix = struct.pack("<2I", 14, len(payload)) + payload
    compressed = zlib.compress(matrix)
    return _v5_header() + struct.pack("<2I", 15, len(compressed)) + compressed


def test_v5_cell_array_with_absurd_dimensions(tmp_path):
    path = tmp_path / "cells.mat"
    path.write_bytes(_v5_cell_declaring((100_000, 100_000)))
    error = _refused(path)
    assert error.message == TOO_LARGE
    assert "10000000000 elements" in error.issues[0]


def test_v5_cell_array_declaring_more_elements_than_its_bytes(tmp_path):
    path = tmp_path / "cells.mat"
    path.write_bytes(_v5_cell_declaring((1, 1000)))  # within the budget, but no elements follow
    assert _refused(path).issues == ["a matrix declares 1000 elements its bytes cannot hold"]


def test_v5_nesting_deeper_than_any_lab_file(tmp_path):
    value: object = np.zeros(1)
    for _ in range(40):
        wrapper = np.empty((1, 1), dtype=object)
        wrapper[0, 0] = value
        value = wrapper
    path = tmp_path / "deep.mat"
    scipy.io.savemat(path, {"deep": value})
    # Opening reads the top level only: the file holds no battery data ...
    with pytest.raises(InvalidMatFileError, match=NO_BATTERY_DATA), open_research_file(path):
        pass
    # ... and a reader going down is stopped before scipy would recurse that deep.
    with open_mat(path) as contents, pytest.raises(InvalidMatFileError) as caught:
        node = contents.variables["deep"]
        for _ in range(40):
            node = node.cell(0)
    assert caught.value.issues == ["matrices nested deeper than 32 levels"]


def _two_cells_uncompressed(tmp_path):
    cells = np.empty((1, 2), dtype=object)
    cells[0, 0], cells[0, 1] = np.ones((1, 3)), np.ones((1, 3))
    path = tmp_path / "cells.mat"
    scipy.io.savemat(path, {"c": cells}, do_compression=False)
    data = bytearray(path.read_bytes())
    first_child = 128 + 8 + 16 + 16 + 8  # header, tag, flags, dims, name ('c' as small element)
    assert struct.unpack("<2I", data[first_child : first_child + 8])[0] == 14  # miMATRIX
    return path, data, first_child + 8  # where the child's array flags element starts


def test_v5_flags_claiming_a_missing_imaginary_part(tmp_path):
    """scipy would read the next matrix as the imaginary part and crash the process."""
    path, data, flags = _two_cells_uncompressed(tmp_path)
    data[flags + 9] |= 0x08  # the complex bit of the first child's flags
    path.write_bytes(bytes(data))
    with open_mat(path) as contents:
        cells = contents.variables["c"]
        with pytest.raises(InvalidMatFileError) as caught:
            cells.cell(0).numbers()
        assert caught.value.issues == ["c{1} is complex; real numbers expected"]
        assert cells.cell(1).numbers().tolist() == [1.0, 1.0, 1.0]


def test_v5_data_element_of_an_invalid_type(tmp_path):
    """scipy looks element types up unchecked: type 0 crashes the process."""
    path, data, flags = _two_cells_uncompressed(tmp_path)
    data_tag = flags + 16 + 16 + 8  # the first child's flags, dims, empty name
    assert struct.unpack("<I", data[data_tag : data_tag + 4])[0] == 9  # miDOUBLE
    data[data_tag] = 0
    path.write_bytes(bytes(data))
    with open_mat(path) as contents, pytest.raises(InvalidMatFileError) as caught:
        contents.variables["c"].cell(0).numbers()
    assert caught.value.issues == ["a matrix element of unexpected type 0"]


def test_hdf5_dataset_with_absurd_dimensions(tmp_path):
    path = tmp_path / "absurd.mat"
    v73_battery(path, shape=(10**9, 10**6), chunks=(1000, 1000), compression="gzip")
    assert path.stat().st_size < 100_000
    error = _refused(path)
    assert error.message == TOO_LARGE
    assert error.issues[0].startswith("battery.capacity_ah declares 1000000000×1000000 items")


def test_hdf5_compression_bomb(tmp_path):
    path = tmp_path / "bomb73.mat"
    v73_bomb(path)
    assert path.stat().st_size < 200_000
    assert _refused(path).message == TOO_LARGE


def test_the_array_budget_is_a_parameter(tmp_path):
    path = tmp_path / "small.mat"
    write_v73(path, {"battery": {"cycle_index": np.arange(1.0, 4.0), "capacity_ah": np.ones(3)}})
    with open_research_file(path) as cells:
        assert cells[0].cycle_count == 3
    assert _refused(path, max_array_bytes=16).message == TOO_LARGE


def test_links_in_hdf5_are_not_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere.mat"
    shutil.copy(SEVERSON_TRAIN, elsewhere)
    path = tmp_path / "link.mat"
    write_v73(path, {"readme": "see batch"})
    with h5py.File(path, "r+") as h5:
        h5["batch"] = h5py.ExternalLink(str(elsewhere), "/batch")
    error = _refused(path)
    assert error.message == NO_BATTERY_DATA
    assert "MATLAB reader: batch is a link to other data; links are not followed" in error.issues


def test_v4_file_is_read_and_holds_no_battery_data(tmp_path):
    path = tmp_path / "old.mat"
    scipy.io.savemat(path, {"capacity": np.ones((3, 1))}, format="4")
    error = _refused(path)
    assert error.message == NO_BATTERY_DATA
    assert error.issues[0] == "variables found: capacity (3×1 float64)"


def test_v4_header_declaring_more_data_than_the_file_has(tmp_path):
    path = tmp_path / "v4.mat"
    path.write_bytes(_v4_header(rows=100_000, cols=100_000) + b"\0" * 64)
    assert _refused(path).issues == ["the file is truncated: a v4 variable runs past it"]


def _small_files(tmp_path) -> dict[str, bytes]:
    vectors = np.empty((1, 3), dtype=object)
    vectors[0, :] = [np.ones((1, 5)), np.zeros((1, 5)), np.ones((1, 5))]
    battery = {"cycle_index": np.arange(1.0, 4.0), "capacity_ah": np.ones(3), "label": "x"}
    v5 = tmp_path / "v5.mat"
    scipy.io.savemat(v5, {"battery": battery | {"voltage": vectors}}, do_compression=False)
    v73 = write_v73(tmp_path / "v73.mat", {"battery": battery | {"voltage": [np.ones(5)] * 3}})
    return {"v5": v5.read_bytes(), "v73": v73.read_bytes()}


@pytest.mark.parametrize("fmt", ["v5", "v73"])
def test_damaged_files_never_escape_as_another_error(tmp_path, fmt):
    """Random byte damage (which found scipy segfaults and an HDF5 hang) is parsed or refused."""
    original = _small_files(tmp_path)[fmt]
    path = tmp_path / "damaged.mat"
    path.write_bytes(original)
    with open_research_file(path) as cells:
        assert [len(list(cell.cycles())) for cell in cells] == [3]
    rng = np.random.default_rng(2026)
    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(150):
        damaged = bytearray(original)
        for position in rng.integers(128 if fmt == "v5" else 512, len(damaged), rng.integers(1, 5)):
            damaged[position] = rng.choice(
                [0, 255, int(rng.integers(256)), damaged[position] ^ 0x80]
            )
        path.write_bytes(bytes(damaged))
        try:
            with open_research_file(path) as cells:
                for cell in cells:
                    for _ in cell.cycles():
                        pass
            outcomes["parsed"] += 1
        except InvalidMatFileError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 10 and outcomes["parsed"] > 10


def test_v5_variables_of_the_same_name_keep_the_last_and_say_so(tmp_path):
    first, second = tmp_path / "first.mat", tmp_path / "second.mat"
    scipy.io.savemat(first, {"a": np.ones(2)}, do_compression=True)
    scipy.io.savemat(second, {"a": np.zeros(3)}, do_compression=True)
    path = tmp_path / "twice.mat"
    path.write_bytes(first.read_bytes() + second.read_bytes()[128:])
    with open_mat(path) as contents:
        assert contents.variables["a"].numbers().tolist() == [0.0, 0.0, 0.0]
        assert contents.warnings == ('Duplicate variable name "a": the last one is read',)


def test_v5_values_cannot_be_read_after_the_file_is_closed():
    with open_mat(V5_FILE) as contents:
        capacity = contents.variables["B0050"].field("cycle").field("ambient_temperature")
    with pytest.raises(RuntimeError, match="closed"):
        capacity.numbers()


def test_v5_nodes_describe_themselves_as_matlab_does(tmp_path):
    path = tmp_path / "kinds.mat"
    cells = np.empty((1, 2), dtype=object)
    cells[0, 0], cells[0, 1] = np.ones(2), "text"
    values = {
        "flags": np.array([[True, False]]),
        "counts": np.arange(3, dtype=np.uint16).reshape(1, 3),
        "name": "B0005",
        "box": cells,
        "rec": {"x": np.ones(1)},
    }
    scipy.io.savemat(path, values, do_compression=True)
    with open_mat(path) as contents:
        described = {name: node.describe() for name, node in contents.variables.items()}
        assert contents.variables["box"].cell(1).text() == "text"
        assert contents.variables["rec"].field("x").scalar() == 1.0
    assert described == {
        "flags": "1×2 logical",
        "counts": "1×3 uint16",
        "name": "1×5 char",
        "box": "1×2 cell",
        "rec": "1×1 struct",
    }


def test_hdf5_data_kept_in_another_file_is_not_read(tmp_path):
    """An external dataset would make the reader open a file the uploader named."""
    outside = tmp_path / "outside.bin"
    outside.write_bytes(np.ones(3).tobytes())
    path = tmp_path / "external.mat"
    v73_battery(path, shape=(3,), external=[(str(outside), 0, 24)])
    assert _refused(path).issues == ["battery.capacity_ah keeps its data in other files"]


def _values(node) -> object:
    return node.text() if node.kind.value == "char" else node.numbers().tolist()


def test_v5_numbers_and_text_are_read_as_loadmat_gives_them(tmp_path):
    """Numbers and one-row text come straight from the image; other text through scipy."""
    path = tmp_path / "types.mat"
    values = {
        "doubles": np.array([[1.5, -2.0], [3.25, np.inf]]),
        "singles": np.array([[0.5, 1.5, 2.5]], dtype=np.float32),
        "bytes": np.array([[1, 250]], dtype=np.uint8),  # two bytes: inside the tag
        "shorts": np.array([[-3, 7, 9]], dtype=np.int16),
        "words": np.array([[2**31 - 1]], dtype=np.int32),
        "longs": np.array([[-(2**40), 2**40]], dtype=np.int64),
        "line": "discharge",
        "accented": "Ampère",
        "block": np.array(["abc", "def"]),  # two rows
    }
    scipy.io.savemat(path, values, do_compression=True)
    loaded = scipy.io.loadmat(path)
    with open_mat(path) as contents:
        read = {name: _values(node) for name, node in contents.variables.items()}
    for name in values:
        if name in ("line", "accented", "block"):
            assert read[name] == "\n".join(loaded[name]), name
        else:
            expected = np.ravel(loaded[name], order="F").astype(np.float64).tolist()
            assert read[name] == expected, name
    assert read["accented"] == "Ampère"
    assert read["block"] == "abc\ndef"


def _uncompressed_row(tmp_path, values: np.ndarray) -> tuple[object, bytearray]:
    path = tmp_path / "row.mat"
    scipy.io.savemat(path, {"v": values}, do_compression=False)
    return path, bytearray(path.read_bytes())


def test_v5_whole_numbers_stored_in_a_smaller_type_are_read_as_doubles(tmp_path):
    """MATLAB stores a double matrix of small whole numbers as bytes: the class says double."""
    path, data = _uncompressed_row(tmp_path, np.array([[3, 1, 200]], dtype=np.uint8))
    flags = 128 + 8 + 8  # header, the matrix tag, the flags element's tag
    assert data[flags] == 9  # mxUINT8_CLASS
    data[flags] = 6  # mxDOUBLE_CLASS
    path.write_bytes(bytes(data))
    with open_mat(path) as contents:
        node = contents.variables["v"]
        assert node.describe() == "1×3 double"
        assert node.numbers().tolist() == [3.0, 1.0, 200.0]


def test_v5_data_shorter_than_the_dimensions_is_refused(tmp_path):
    path, data = _uncompressed_row(tmp_path, np.arange(4.0).reshape(1, 4))
    dims = 128 + 8 + 16 + 8  # header, matrix tag, flags element, the dimensions' tag
    assert struct.unpack("<2i", data[dims : dims + 8]) == (1, 4)
    data[dims + 4 : dims + 8] = struct.pack("<i", 5)
    path.write_bytes(bytes(data))
    with open_mat(path) as contents, pytest.raises(InvalidMatFileError) as caught:
        contents.variables["v"].numbers()
    assert caught.value.issues == ["v holds 32 bytes for 5 values of 8"]


def test_hdf5_reference_to_neither_an_array_nor_a_struct_is_refused(tmp_path):
    """A cell element may point at any HDF5 object: a committed datatype holds nothing to read."""
    path = write_v73(tmp_path / "cells.mat", {"c": [np.ones(2), np.ones(3)]})
    with h5py.File(path, "r+") as h5:
        h5["#refs#/kind"] = np.dtype("f8")
        references = h5["c"][()]
        references.flat[1] = h5["#refs#/kind"].ref
        h5["c"][...] = references
    with open_mat(path) as contents:
        cells = contents.variables["c"]
        assert cells.cell(0).numbers().tolist() == [1.0, 1.0]
        with pytest.raises(InvalidMatFileError) as caught:
            cells.cell(1)
    assert caught.value.issues == ["c{2}: a reference to neither an array nor a struct"]


def test_a_scratch_file_holds_each_image_and_nothing_of_a_longer_one_before(tmp_path):
    """A reader writes image after image over one scratch file: the second, shorter one reads
    as it does from a file of its own, and no byte of the first is left after it."""
    long, short = tmp_path / "long.mat", tmp_path / "short.mat"
    scipy.io.savemat(long, {"v": np.arange(5000.0), "w": "first"}, do_compression=True)
    scipy.io.savemat(short, {"v": np.array([[7.5, 8.5]])}, do_compression=True)
    with tempfile.TemporaryFile() as scratch:
        with open_mat(long, scratch=scratch) as contents:
            assert _values(contents.variables["w"]) == "first"
        long_image = scratch.seek(0, os.SEEK_END)
        with open_mat(short, scratch=scratch) as contents:
            assert {n: _values(v) for n, v in contents.variables.items()} == {"v": [7.5, 8.5]}
        short_image = scratch.seek(0, os.SEEK_END)
        with tempfile.TemporaryFile() as alone:
            with open_mat(short, scratch=alone):
                assert short_image == alone.seek(0, os.SEEK_END) < long_image
            scratch.seek(0)
            alone.seek(0)
            assert scratch.read() == alone.read()
