"""The NASA PCoE layout on every real file, checked against scipy read directly."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from central.research.cells import Layout, ParsedCycle
from central.research.labels import state_of_health
from central.research.matfile import ScipyNode
from central.research.parse import cells_from_variables, open_research_file
from central.research.store import UploadMetadata, cell_record
from tests.central.research.support import DATA, NASA_FILES, mat_struct, mat_struct_array


def _raw_entries(path: Path) -> np.ndarray:
    """The file's ``cycle`` entries, 1-D, as scipy loads them."""
    loaded = scipy.io.loadmat(path)
    return loaded[path.stem]["cycle"][0, 0].ravel()


def _raw_discharges(path: Path) -> list[np.void]:
    return [e["data"][0, 0] for e in _raw_entries(path) if e["type"][0] == "discharge"]


def _parse(path: Path) -> tuple[list, list[ParsedCycle]]:
    with open_research_file(path) as cells:
        return cells, [cycle for cell in cells for cycle in cell.cycles()]


def _coulomb_ah(data: np.void) -> float:
    return np.trapezoid(np.abs(data["Current_measured"].ravel()), data["Time"].ravel()) / 3600


@pytest.fixture(scope="module")
def b0050() -> tuple[list[np.void], list[ParsedCycle]]:
    path = DATA / "nasa_pcoe" / "B0050.mat"
    return _raw_discharges(path), _parse(path)[1]


def test_all_thirteen_files_are_present():
    assert [p.stem for p in NASA_FILES] == [
        *(f"B00{n}" for n in range(25, 33)),
        *(f"B00{n}" for n in range(45, 49)),
        "B0050",
    ]


@pytest.mark.parametrize("path", NASA_FILES, ids=lambda p: p.stem)
def test_each_file_is_one_cell_whose_cycles_are_its_discharge_runs(path):
    discharges = _raw_discharges(path)
    cells, cycles = _parse(path)
    (cell,) = cells
    assert (cell.layout, cell.label, cell.nominal_capacity_ah) == (Layout.NASA_PCOE, path.stem, 2.0)
    assert cell.chemistry == "Li-ion"
    assert cell.cycle_count == len(discharges) == len(cycles)
    assert [c.index for c in cycles] == list(range(1, len(discharges) + 1))
    for cycle, data in zip(cycles, discharges, strict=True):
        np.testing.assert_array_equal(cycle.voltage, data["Voltage_measured"].ravel())
        np.testing.assert_array_equal(cycle.current, data["Current_measured"].ravel())
        np.testing.assert_array_equal(cycle.temperature, data["Temperature_measured"].ravel())
        np.testing.assert_array_equal(cycle.time_s, data["Time"].ravel())
        stated = data["Capacity"].ravel()
        if stated.size and 0.02 <= stated[0] <= 2.5:  # the file's figure is plausible: kept
            assert cycle.capacity_ah == stated[0]
            assert state_of_health(cycle.capacity_ah, 2.0) == pytest.approx(stated[0] / 2.0)


def test_empty_capacity_in_b0050_is_not_invented(b0050):
    raw, cycles = b0050
    empty = [i for i, data in enumerate(raw) if data["Capacity"].size == 0]
    assert [i + 1 for i in empty] == [22, 23, 24, 25]
    for i in empty:
        # The current hardly flowed: coulomb counting gives a few mAh, no measurement at all.
        assert _coulomb_ah(raw[i]) < 0.02
        assert cycles[i].capacity_ah is None


def test_zero_capacity_falls_back_to_coulomb_counting(b0050):
    raw, cycles = b0050
    zero = [
        i for i, data in enumerate(raw) if data["Capacity"].size and data["Capacity"][0, 0] == 0
    ]
    assert [i + 1 for i in zero] == [17]
    assert cycles[16].capacity_ah == pytest.approx(_coulomb_ah(raw[16]))
    assert cycles[16].capacity_ah == pytest.approx(0.1237, abs=1e-4)


def test_zero_capacities_in_b0045_are_coulomb_counted():
    path = DATA / "nasa_pcoe" / "B0045.mat"
    raw = _raw_discharges(path)
    _, cycles = _parse(path)
    zero = [i for i, data in enumerate(raw) if data["Capacity"][0, 0] == 0]
    assert len(zero) == 2
    for i in zero:
        assert cycles[i].capacity_ah == pytest.approx(_coulomb_ah(raw[i]))


def test_impossibly_high_capacity_is_dropped(b0050):
    raw, cycles = b0050
    high = [
        i for i, data in enumerate(raw) if data["Capacity"].size and data["Capacity"][0, 0] > 2.5
    ]
    assert [i + 1 for i in high] == [6]
    assert raw[5]["Capacity"][0, 0] == pytest.approx(2.6401, abs=1e-4)
    assert _coulomb_ah(raw[5]) > 2.5  # counting does not rescue it either
    assert cycles[5].capacity_ah is None


def test_ambient_temperature_is_the_discharge_runs_own():
    path = DATA / "nasa_pcoe" / "B0045.mat"
    entries = _raw_entries(path)
    by_type = {(e["type"][0], int(e["ambient_temperature"][0, 0])) for e in entries}
    assert by_type == {("discharge", 4), ("charge", 4), ("impedance", 24)}  # changes in the file
    _, cycles = _parse(path)
    assert {c.ambient_temperature_c for c in cycles} == {4.0}
    _, cycles_43 = _parse(DATA / "nasa_pcoe" / "B0029.mat")
    assert {c.ambient_temperature_c for c in cycles_43} == {43.0}


def test_complex_impedance_entries_are_present_and_ignored():
    path = DATA / "nasa_pcoe" / "B0025.mat"
    impedance = [e["data"][0, 0] for e in _raw_entries(path) if e["type"][0] == "impedance"]
    assert len(impedance) == 21
    assert np.iscomplexobj(impedance[0]["Battery_impedance"])
    cells, cycles = _parse(path)
    assert cells[0].cycle_count == 28 == len(cycles)


def test_load_side_fields_are_present_and_not_taken_for_measurements():
    path = DATA / "nasa_pcoe" / "B0025.mat"
    data = _raw_discharges(path)[0]
    assert {"Voltage_load", "Current_load"} <= set(data.dtype.names)
    _, cycles = _parse(path)
    np.testing.assert_array_equal(cycles[0].voltage, data["Voltage_measured"].ravel())
    assert not np.array_equal(cycles[0].voltage, data["Voltage_load"].ravel())


def _nasa_variables(discharge: dict) -> dict[str, ScipyNode]:
    """A NASA-shaped cell in loadmat's in-memory form: one charge, one discharge."""
    charge = mat_struct(Voltage_measured=[4.2], Current_measured=[1.5], Time=[0.0])
    entries = mat_struct_array(
        [
            {"type": "charge", "ambient_temperature": 24, "time": np.zeros(6), "data": charge},
            {
                "type": "discharge",
                "ambient_temperature": 24,
                "time": np.zeros(6),
                "data": mat_struct(**discharge),
            },
        ]
    )
    return {"B9999": ScipyNode(mat_struct(cycle=entries), "B9999")}


def test_a_three_sample_discharge_gives_no_capacity():
    """The data README's 3-sample runs, built in memory: these 13 files' shortest has 24."""
    shortest = min(d["Time"].size for d in _raw_discharges(DATA / "nasa_pcoe" / "B0050.mat"))
    assert shortest == 24
    samples = {
        "Voltage_measured": [4.1, 3.9, 3.7],
        "Current_measured": [-2.0, -2.0, -2.0],
        "Temperature_measured": [24.0, 25.0, 26.0],
        "Time": [0.0, 10.0, 20.0],
    }
    for capacity in (np.empty((0, 0)), 0.0):
        (cell,) = cells_from_variables(_nasa_variables({**samples, "Capacity": capacity}))
        (cycle,) = list(cell.cycles())
        assert cycle.index == 1 and cycle.capacity_ah is None
        np.testing.assert_array_equal(cycle.voltage, [4.1, 3.9, 3.7])


@pytest.mark.parametrize("path", NASA_FILES, ids=lambda p: p.stem)
def test_a_file_is_read_in_a_fraction_of_its_size(path):
    """Only the discharge runs become arrays, packed one cycle at a time; the inflated file
    waits on disk. (``loadmat`` of the whole file needs more than twice the file's size.)"""
    tracemalloc.start()
    try:
        with open_research_file(path) as cells:
            records = [
                cell_record(cell, UploadMetadata(path.name), position=1, default_eol_threshold=0.8)
                for cell in cells
            ]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(records[0].cycles) == len(_raw_discharges(path))
    assert peak < path.stat().st_size / 2
