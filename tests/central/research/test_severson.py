"""The Severson batch layout on the two real v7.3 files, checked against h5py read directly."""

from __future__ import annotations

import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from central.research.cells import Layout
from central.research.labels import rul_labels, state_of_health
from central.research.parse import open_research_file
from tests.central.research.support import SEVERSON_TEST, SEVERSON_TRAIN, mat_struct_array

SAMPLED_CYCLES = (2, 50, 100)


@dataclass
class Direct:
    """What h5py says about one cell, read without the parser."""

    barcode: str
    cycle_life: float
    cycles: np.ndarray
    q_discharge: np.ndarray
    vdlin: np.ndarray
    qdlin: dict[int, np.ndarray]


def _direct(path: Path) -> list[Direct]:
    with h5py.File(path, "r") as h5:
        batch = h5["batch"]
        cells = []
        for i in range(batch["summary"].shape[0]):
            summary = h5[batch["summary"][i, 0]]
            qdlin_refs = h5[batch["cycles"][i, 0]]["Qdlin"][()].ravel()
            cells.append(
                Direct(
                    barcode="".join(map(chr, h5[batch["barcode"][i, 0]][()].ravel())),
                    cycle_life=float(h5[batch["cycle_life"][i, 0]][()].item()),
                    cycles=summary["cycle"][()].ravel(),
                    q_discharge=summary["QDischarge"][()].ravel(),
                    vdlin=h5[batch["Vdlin"][i, 0]][()].ravel(),
                    qdlin={k: h5[qdlin_refs[k - 1]][()].ravel() for k in SAMPLED_CYCLES},
                )
            )
    return cells


@dataclass
class Parsed:
    layouts: set[Layout]
    labels: list[str]
    cycle_counts: list[int]
    indices: list[list[int]]
    capacities: list[list[float | None]]
    stated_life: list[int | None]
    qdlin: list[dict[int, np.ndarray]]
    qdlin_sizes: set[int | None]
    grids: list[np.ndarray | None]
    metadata: set[tuple]
    empty_arrays: bool
    peak_bytes: int = 0


def _parse(path: Path) -> Parsed:
    """Every cycle of the file, traced: the peak includes what this test keeps."""
    tracemalloc.start()
    try:
        parsed = _parse_traced(path)
        parsed.peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return parsed


def _parse_traced(path: Path) -> Parsed:
    with open_research_file(path) as cells:
        parsed = Parsed(set(), [], [], [], [], [], [], set(), [], set(), True)
        for cell in cells:
            parsed.layouts.add(cell.layout)
            parsed.labels.append(cell.label)
            parsed.cycle_counts.append(cell.cycle_count)
            parsed.stated_life.append(cell.stated_cycle_life)
            parsed.grids.append(cell.voltage_grid)
            parsed.metadata.add(
                (
                    cell.nominal_capacity_ah,
                    cell.chemistry,
                    cell.manufacturer,
                    cell.stated_life_threshold,
                )
            )
            indices, capacities, sampled = [], [], {}
            for cycle in cell.cycles():
                indices.append(cycle.index)
                capacities.append(cycle.capacity_ah)
                parsed.qdlin_sizes.add(None if cycle.qdlin is None else cycle.qdlin.size)
                parsed.empty_arrays &= (
                    cycle.current.size == cycle.temperature.size == cycle.time_s.size == 0
                    and cycle.voltage is cell.voltage_grid
                )
                if cycle.index in SAMPLED_CYCLES:
                    sampled[cycle.index] = cycle.qdlin
            parsed.indices.append(indices)
            parsed.capacities.append(capacities)
            parsed.qdlin.append(sampled)
    return parsed


@pytest.fixture(scope="module", params=[SEVERSON_TRAIN, SEVERSON_TEST], ids=["train", "test1"])
def severson(request) -> tuple[Path, Parsed, list[Direct]]:
    return request.param, _parse(request.param), _direct(request.param)


def test_one_cell_per_batch_element(severson):
    path, parsed, direct = severson
    assert len(parsed.labels) == len(direct) == {SEVERSON_TRAIN: 41, SEVERSON_TEST: 43}[path]
    assert parsed.layouts == {Layout.SEVERSON_BATCH}
    assert parsed.labels == [f"{d.barcode} #{i + 1}" for i, d in enumerate(direct)]
    assert parsed.metadata == {(1.1, "LFP", "A123", 0.8)}


def test_cycles_are_the_files_own_cycle_numbers(severson):
    _, parsed, direct = severson
    for cell, truth, count in zip(parsed.indices, direct, parsed.cycle_counts, strict=True):
        assert cell == truth.cycles.astype(int).tolist() == list(range(2, 101))
        assert count == len(cell)


def test_capacity_is_qdischarge_where_plausible(severson):
    _, parsed, direct = severson
    implausible = 0
    for capacities, truth in zip(parsed.capacities, direct, strict=True):
        for parsed_ah, file_ah in zip(capacities, truth.q_discharge, strict=True):
            if file_ah > 1.25 * 1.1:  # e.g. 30.97 Ah logged at cycle 12 of a 1.1 Ah cell
                implausible += 1
                assert parsed_ah is None
            else:
                assert parsed_ah == pytest.approx(file_ah)
                assert state_of_health(parsed_ah, 1.1) == pytest.approx(file_ah / 1.1)
    assert implausible == 2  # two cells per file carry a ~31 Ah outlier


def test_qdlin_and_grid_match_the_file(severson):
    _, parsed, direct = severson
    assert parsed.qdlin_sizes == {1000}
    assert parsed.empty_arrays
    for grid, sampled, truth in zip(parsed.grids, parsed.qdlin, direct, strict=True):
        np.testing.assert_array_equal(grid, truth.vdlin)
        assert grid[0] == pytest.approx(3.6) and grid[-1] == pytest.approx(2.0)
        for k in SAMPLED_CYCLES:
            np.testing.assert_array_equal(sampled[k], truth.qdlin[k])
            assert sampled[k].dtype == np.float64 and sampled[k].ndim == 1


def test_stated_cycle_life_gives_rul_labels_beyond_the_stored_cycles(severson):
    path, parsed, direct = severson
    assert parsed.stated_life == [round(d.cycle_life) for d in direct]
    if path == SEVERSON_TEST:
        assert parsed.stated_life[21] == 148  # the paper's known outlier cell
    soh = [state_of_health(c, 1.1) for c in parsed.capacities[0]]
    labels = rul_labels(parsed.indices[0], soh, 0.8, parsed.stated_life[0], 0.8)
    assert labels[0] == parsed.stated_life[0] - 2
    assert labels[-1] == parsed.stated_life[0] - 100


def test_parsing_a_whole_file_stays_lazy(severson):
    """Peak Python allocations while reading every cycle stay far below the file's size."""
    path, parsed, _ = severson
    size = path.stat().st_size
    assert parsed.peak_bytes < size / 5, f"peak {parsed.peak_bytes / 2**20:.1f} MiB"


def test_cycles_cannot_be_read_after_the_file_is_closed():
    with open_research_file(SEVERSON_TRAIN) as cells:
        cell = cells[0]
    with pytest.raises(RuntimeError, match="closed"):
        next(cell.cycles())


def test_the_same_structure_in_a_v5_file_is_read_through_scipy(tmp_path):
    grid = np.linspace(3.6, 2.0, 5)
    cycles = mat_struct_array([{"Qdlin": np.empty((0, 0))}] + [{"Qdlin": grid * k} for k in (1, 2)])
    summary = [{"cycle": [[2.0, 3.0]], "QDischarge": [[1.05, 1.04]]}]
    batch = mat_struct_array(
        [
            {
                "barcode": "EL1",
                "policy_readable": "4C-4C",
                "cycle_life": 700.0,
                "Vdlin": grid,
                "summary": mat_struct_array(summary),
                "cycles": cycles,
            }
        ]
    )
    path = tmp_path / "batch_v5.mat"
    scipy.io.savemat(path, {"batch": batch})
    with open_research_file(path) as cells:
        (cell,) = cells
        parsed = list(cell.cycles())
    assert (cell.label, cell.stated_cycle_life, cell.notes) == (
        "EL1 #1",
        700,
        ("charging policy 4C-4C",),
    )
    assert [c.index for c in parsed] == [2, 3]
    assert [c.capacity_ah for c in parsed] == [1.05, 1.04]
    np.testing.assert_array_equal(parsed[1].qdlin, grid * 2)
