"""The documented generic layout: a v5 and a v7.3 round trip, and strict validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.io

from central.research.cells import InvalidMatFileError, Layout
from central.research.matfile import ScipyNode
from central.research.parse import cells_from_variables, open_research_file
from tests.central.research.support import mat_struct, mat_struct_array, write_v73

TIME = np.linspace(0.0, 3600.0, 13)


def _cell_content(label: str | None, cycles: int = 3) -> dict[str, object]:
    """A cell in plain Python: lists of vectors become MATLAB cell arrays."""
    content: dict[str, object] = {
        "cycle_index": np.arange(1.0, cycles + 1),
        "capacity_ah": np.array([1.05, math.nan, 0.95, 0.9][:cycles]),  # NaN: count the current
        "voltage": [np.linspace(4.1, 3.0 - k / 10, 13) for k in range(cycles)],
        "current": [np.full(13, -0.5) for _ in range(cycles)],
        "temperature": [np.full(13, 25.0 + k) for k in range(cycles)],
        "time_s": [TIME for _ in range(cycles)],
        "ambient_temperature_c": 25.0,
        "nominal_capacity_ah": 1.1,
        "chemistry": "NMC",
        "manufacturer": "Acme Cells",
        "cycle_life": 640.0,
        "cycle_life_soh": 0.7,
    }
    if label is not None:
        content["label"] = label
    return content


def _cell_array(vectors: list[np.ndarray]) -> np.ndarray:
    array = np.empty((1, len(vectors)), dtype=object)
    for index, vector in enumerate(vectors):
        array[0, index] = np.atleast_2d(np.asarray(vector, dtype=np.float64))
    return array


def _as_v5(content: dict[str, object]) -> dict[str, object]:
    return {k: _cell_array(v) if isinstance(v, list) else v for k, v in content.items()}


def _write(tmp_path, fmt: str, battery: object):
    path = tmp_path / f"generic_{fmt}.mat"
    if fmt == "v73":
        return write_v73(path, {"battery": battery})
    if isinstance(battery, list):
        battery = mat_struct_array([_as_v5(element) for element in battery])
    else:
        battery = _as_v5(battery)
    scipy.io.savemat(path, {"battery": battery})
    return path


@pytest.mark.parametrize("fmt", ["v5", "v73"])
def test_round_trip(tmp_path, fmt):
    path = _write(tmp_path, fmt, _cell_content("cell A"))
    with path.open("rb") as fh:
        assert fh.read(10) == (b"MATLAB 7.3" if fmt == "v73" else b"MATLAB 5.0")
    with open_research_file(path) as cells:
        (cell,) = cells
        cycles = list(cell.cycles())
    assert (cell.layout, cell.label, cell.cycle_count) == (Layout.GENERIC, "cell A", 3)
    assert (cell.nominal_capacity_ah, cell.chemistry, cell.manufacturer) == (
        1.1,
        "NMC",
        "Acme Cells",
    )
    assert (cell.stated_cycle_life, cell.stated_life_threshold) == (640, 0.7)
    assert [c.index for c in cycles] == [1, 2, 3]
    assert cycles[0].capacity_ah == 1.05
    assert cycles[1].capacity_ah == pytest.approx(0.5)  # NaN in the file: 0.5 A for one hour
    assert {c.ambient_temperature_c for c in cycles} == {25.0}
    np.testing.assert_allclose(cycles[2].voltage, np.linspace(4.1, 2.8, 13))
    np.testing.assert_array_equal(cycles[2].temperature, np.full(13, 27.0))
    np.testing.assert_array_equal(cycles[0].time_s, TIME)
    assert all(c.voltage.dtype == np.float64 and c.voltage.ndim == 1 for c in cycles)


@pytest.mark.parametrize("fmt", ["v5", "v73"])
def test_a_struct_array_is_one_cell_per_element(tmp_path, fmt):
    first = _cell_content("first")
    # MATLAB struct array elements share their fields; the second leaves the optional ones [].
    second = {name: np.empty((0, 0)) for name in first} | {
        "cycle_index": np.array([5.0, 10.0]),
        "capacity_ah": np.array([2.0, 1.9]),
        "label": "second",
    }
    path = _write(tmp_path, fmt, [first, second])
    with open_research_file(path) as cells:
        assert [c.label for c in cells] == ["first", "second"]
        second = list(cells[1].cycles())
    assert [c.index for c in second] == [5, 10]
    assert [c.capacity_ah for c in second] == [2.0, 1.9]  # no nominal: judged by sign only
    assert second[0].voltage.size == second[0].current.size == 0
    assert cells[1].stated_cycle_life is None and cells[1].nominal_capacity_ah is None


def _issues(**battery: object) -> list[str]:
    variables = {"battery": ScipyNode(mat_struct(**battery), "battery")}
    with pytest.raises(InvalidMatFileError) as caught:
        cells_from_variables(variables)
    return caught.value.issues


def test_missing_and_misspelt_fields_are_named():
    issues = _issues(cycle_index=[1.0], Capacity_Ah=[1.0])
    assert issues[0] == "battery lacks field capacity_ah"
    assert issues[1].startswith("battery has unknown field Capacity_Ah (allowed: cycle_index,")


def test_counts_that_disagree_with_the_cycles_are_reported_per_element(tmp_path):
    good = _cell_content("ok")
    bad = _cell_content("bad")
    bad["cycle_index"] = np.arange(1.0, 13.0)
    bad["capacity_ah"] = np.ones(10)
    also_bad = _cell_content("also bad") | {"ambient_temperature_c": np.ones(2)}
    path = _write(tmp_path, "v5", [good, bad, also_bad])
    with pytest.raises(InvalidMatFileError) as caught, open_research_file(path):
        pass
    assert caught.value.issues == [
        "battery(2).capacity_ah has 10 values for 12 cycles",
        "battery(2).voltage has 3 vectors for 12 cycles",
        "battery(2).current has 3 vectors for 12 cycles",
        "battery(2).temperature has 3 vectors for 12 cycles",
        "battery(2).time_s has 3 vectors for 12 cycles",
        "battery(3).ambient_temperature_c has 2 values for 3 cycles",
    ]


def test_required_fields_cannot_be_left_empty():
    issues = _issues(cycle_index=np.empty((0, 0)), capacity_ah=np.empty((0, 0)))
    assert issues == ["battery.cycle_index is empty: no cycles"]
    issues = _issues(cycle_index=[1.0, 2.0], capacity_ah=np.empty((0, 0)))
    assert issues == ["battery.capacity_ah has 0 values for 2 cycles"]


def test_vectors_of_one_cycle_must_pair_sample_for_sample():
    issues = _issues(
        cycle_index=[1.0, 2.0],
        capacity_ah=[1.0, 1.0],
        voltage=_cell_array([np.ones(5), np.ones(5)]),
        time_s=_cell_array([np.ones(5), np.ones(4)]),
    )
    assert issues == ["battery cycle 2 has vectors of different lengths: voltage 5, time_s 4"]


def test_bad_values_are_all_reported():
    issues = _issues(
        cycle_index=[3.0, 2.0, 2.5],
        capacity_ah=[1.0, 1.0, 1.0],
        nominal_capacity_ah="1.1",
        cycle_life=-4.0,
        chemistry=7.0,
        voltage=mat_struct(a=1.0),
    )
    assert issues == [
        "battery.cycle_index should hold increasing whole numbers ≥ 0",
        "battery.voltage should be a cell array of 3 vectors, is 1×1 struct",
        "battery.nominal_capacity_ah should be numbers, is 1 char",
        "battery.cycle_life is not a valid cycle_life: [-4.0]",
        "battery.chemistry should be text, is 1×1 float64",
    ]


@pytest.mark.parametrize("life", [np.inf, np.nan, 12.5, 0.0])
def test_a_stated_cycle_life_must_be_a_whole_positive_number(life):
    issues = _issues(cycle_index=[1.0], capacity_ah=[1.0], cycle_life=life)
    assert issues == [f"battery.cycle_life is not a valid cycle_life: [{life}]"]


def test_a_long_list_of_issues_is_capped():
    elements = [{"cycle_index": [1.0, 2.0], "capacity_ah": [1.0]} for _ in range(25)]
    variables = {"battery": ScipyNode(mat_struct_array(elements), "battery")}
    with pytest.raises(InvalidMatFileError) as caught:
        cells_from_variables(variables)
    issues = caught.value.issues
    assert len(issues) == 21
    assert issues[0] == "battery(1).capacity_ah has 1 values for 2 cycles"
    assert issues[-1] == "… and 5 more"


def test_recognised_by_structure_whatever_the_variable_is_called():
    variables = {
        "my_cell": ScipyNode(mat_struct(cycle_index=[1.0, 2.0], capacity_ah=[1.0, 0.9]), "my_cell"),
        "notes": ScipyNode(np.array(["lab book 7"]), "notes"),
    }
    (cell,) = cells_from_variables(variables)
    assert (cell.layout, cell.label, cell.cycle_count) == (Layout.GENERIC, "my_cell", 2)
