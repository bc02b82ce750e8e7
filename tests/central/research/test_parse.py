"""The entry point: layouts recognised by structure, and files with no battery data refused."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from central.research.cells import InvalidMatFileError, Layout
from central.research.matfile import ScipyNode
from central.research.parse import NO_BATTERY_DATA, cells_from_variables, open_research_file
from tests.central.research.support import DATA, SEVERSON_TRAIN, TABLE_ONLY, mat_struct


def test_a_table_only_file_has_no_battery_data():
    with pytest.raises(InvalidMatFileError) as caught, open_research_file(TABLE_ONLY):
        pass
    error = caught.value
    assert error.message == NO_BATTERY_DATA
    assert error.issues[0] == (
        "variables found: T_cells (MATLAB table object 'T_cells'); "
        "T_policies (MATLAB table object 'T_policies')"
    )
    assert error.issues[1].startswith(
        "T_cells is a MATLAB table object 'T_cells', which only MATLAB can read"
    )
    assert error.issues[2].startswith("T_policies is a MATLAB table object 'T_policies'")
    assert any(issue.startswith("expected NASA PCoE:") for issue in error.issues)


def test_an_unrecognised_struct_lists_what_was_found_and_expected(tmp_path):
    path = tmp_path / "other.mat"
    scipy.io.savemat(path, {"results": {"soc": np.ones(3), "ocv": np.ones(3)}})
    with pytest.raises(InvalidMatFileError) as caught, open_research_file(path):
        pass
    assert caught.value.issues == [
        "variables found: results (1×1 struct with fields soc, ocv)",
        "expected Severson batch: a struct array (MATLAB's 'batch') with fields summary "
        "(cycle, QDischarge), cycles (Qdlin), cycle_life, Vdlin",
        "expected NASA PCoE: a struct with field cycle (1×N struct: type, ambient_temperature, "
        "time, data)",
        "expected generic: a struct 'battery' (1×1, or 1×M for M cells) with fields cycle_index "
        "and capacity_ah, optionally voltage/current/temperature/time_s cell arrays (README: the "
        "generic .mat layout)",
    ]


def test_a_file_without_variables(tmp_path):
    path = tmp_path / "none.mat"
    scipy.io.savemat(path, {})
    with pytest.raises(InvalidMatFileError) as caught, open_research_file(path):
        pass
    assert caught.value.issues[0] == "the file holds no variables"


def test_recognition_is_by_structure_not_by_name():
    entries = mat_struct(
        type="discharge", ambient_temperature=24.0, time=np.zeros(6), data=mat_struct(Capacity=1.8)
    )
    variables = {
        name: ScipyNode(value, name)
        for name, value in {
            "anything": mat_struct(cycle=entries),
            "battery_notes": np.array(["not a struct"]),
        }.items()
    }
    with pytest.raises(InvalidMatFileError) as caught:
        cells_from_variables(variables)
    # Recognised as NASA (not "no battery data"), then refused for what the discharge lacks.
    assert caught.value.issues == [
        "anything.cycle.data lacks Voltage_measured, Current_measured, Temperature_measured, Time"
    ]


@pytest.mark.parametrize(
    "path", [DATA / "nasa_pcoe" / "B0025.mat", SEVERSON_TRAIN], ids=["v5", "v73"]
)
def test_the_callers_own_errors_pass_through_unchanged(path):
    with pytest.raises(ZeroDivisionError), open_research_file(path) as cells:
        assert cells[0].layout in (Layout.NASA_PCOE, Layout.SEVERSON_BATCH)
        _ = 1 / 0
