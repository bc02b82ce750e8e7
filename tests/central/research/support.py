"""Helpers shared by the research parser tests: where the real data lives, and writers for
small files in MATLAB's own shapes (v5 through scipy, v7.3 through h5py as MATLAB lays it out).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from tests.support import SHARED_DATA

DATA = SHARED_DATA
NASA_FILES = sorted((DATA / "nasa_pcoe").glob("*.mat"))
SEVERSON_TRAIN = DATA / "severson" / "severson_train_v73.mat"
SEVERSON_TEST = DATA / "severson" / "severson_test1_v73.mat"
TABLE_ONLY = DATA / "negative" / "matlab_table_only.mat"


def v73_header(
    text: bytes = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .",
) -> bytes:
    """MATLAB's 128-byte header as a v7.3 file has it (version 0x0200, little-endian 'IM')."""
    return text.ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0200) + b"IM"


class V73Writer:
    """Writes Python values the way MATLAB's ``save -v7.3`` stores them.

    dict → struct (group), list of dicts → struct array (fields as reference arrays), list →
    cell array (references into ``#refs#``), str → uint16 char, numbers → double; MATLAB's
    shapes are HDF5's reversed, so a 1×n row is stored n×1.
    """

    def __init__(self, h5: h5py.File) -> None:
        self._h5 = h5
        self._refs = h5.require_group("#refs#")
        self._count = 0

    def write(self, parent: h5py.Group, name: str, value: object) -> None:
        if isinstance(value, Mapping):
            group = parent.create_group(name)
            self._struct_attrs(group, list(value))
            for key, item in value.items():
                self.write(group, key, item)
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            group = parent.create_group(name)
            self._struct_attrs(group, list(value[0]))
            for key in value[0]:
                refs = [self._referenced(element[key]) for element in value]
                group.create_dataset(key, data=np.array(refs, dtype=h5py.ref_dtype).reshape(-1, 1))
        elif isinstance(value, list):
            refs = [self._referenced(item) for item in value]
            dataset = parent.create_dataset(
                name, data=np.array(refs, dtype=h5py.ref_dtype).reshape(-1, 1)
            )
            dataset.attrs["MATLAB_class"] = np.bytes_(b"cell")
        elif isinstance(value, str):
            codes = np.frombuffer(value.encode("utf-16-le"), dtype="<u2").reshape(-1, 1)
            dataset = parent.create_dataset(name, data=codes)
            dataset.attrs["MATLAB_class"] = np.bytes_(b"char")
            dataset.attrs["MATLAB_int_decode"] = np.int32(2)
        else:
            array = np.asarray(value, dtype=np.float64)
            if array.size == 0:
                dataset = parent.create_dataset(name, data=np.zeros(2, dtype=np.uint64))
                dataset.attrs["MATLAB_empty"] = np.uint8(1)
            else:
                dataset = parent.create_dataset(name, data=array.reshape(-1, 1))
            dataset.attrs["MATLAB_class"] = np.bytes_(b"double")

    def _referenced(self, value: object) -> h5py.Reference:
        name = f"r{self._count}"
        self._count += 1
        self.write(self._refs, name, value)
        return self._refs[name].ref

    @staticmethod
    def _struct_attrs(group: h5py.Group, fields: list[str]) -> None:
        group.attrs["MATLAB_class"] = np.bytes_(b"struct")
        names = np.empty(len(fields), dtype=object)
        names[:] = [np.array(list(field), dtype="S1") for field in fields]
        group.attrs.create("MATLAB_fields", names, dtype=h5py.vlen_dtype(np.dtype("S1")))


def write_v73(path: Path, variables: Mapping[str, object]) -> Path:
    """A v7.3 .mat file: HDF5 after a 512-byte user block whose start is MATLAB's header."""
    with h5py.File(path, "w", userblock_size=512) as h5:
        writer = V73Writer(h5)
        for name, value in variables.items():
            writer.write(h5, name, value)
    with path.open("r+b") as fh:
        fh.write(v73_header())
    return path


def mat_struct(**fields: object) -> np.ndarray:
    """A 1×1 struct as ``loadmat(struct_as_record=True, squeeze_me=False)`` returns it."""
    return mat_struct_array([fields])


def mat_struct_array(elements: list[dict[str, object]]) -> np.ndarray:
    """A 1×N struct array in loadmat's in-memory form, for tests without files."""
    names = list(elements[0])
    array = np.empty((1, len(elements)), dtype=[(name, object) for name in names])
    for index, element in enumerate(elements):
        for name in names:
            array[0, index][name] = _as_loaded(element[name])
    return array


def _as_loaded(value: object) -> object:
    if isinstance(value, np.ndarray) and (value.dtype.names or value.dtype == object):
        return value
    if isinstance(value, str):
        return np.array([value])
    return np.atleast_2d(np.asarray(value, dtype=np.float64))


def v73_battery(path: Path, **create_dataset: object) -> None:
    """A generic-layout v7.3 file whose capacity_ah dataset is declared as given (an absurd shape,
    a compression bomb)."""
    write_v73(path, {"battery": {"cycle_index": np.arange(1.0, 4.0), "capacity_ah": np.ones(3)}})
    with h5py.File(path, "r+") as h5:
        del h5["battery/capacity_ah"]
        dataset = h5["battery"].create_dataset("capacity_ah", dtype="f8", **create_dataset)
        dataset.attrs["MATLAB_class"] = np.bytes_(b"double")


def v73_bomb(path: Path) -> None:
    """2 GiB of zeros declared, a few chunks written: a small file that would inflate enormously."""
    chunk = 2**20
    v73_battery(path, shape=(256 * chunk,), chunks=(chunk,), compression="gzip", fillvalue=0.0)
    with h5py.File(path, "r+") as h5:
        for start in range(0, 4 * chunk, chunk):
            h5["battery/capacity_ah"][start : start + chunk] = np.zeros(chunk)
