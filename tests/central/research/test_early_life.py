"""Early-life cycle-life prediction: features on hand-computed curves, the errors the API turns
into 422, and the shipped model against the real Severson cells and its own fitting script."""

from __future__ import annotations

import json
import math
from importlib import resources

import numpy as np
import pytest

from central.research import early_life as el
from scripts import fit_early_life as fit_script
from tests.central.research.support import SEVERSON_TEST, SEVERSON_TRAIN

# ΔQ = [0, 0, 0, -0.04]: mean -0.01, deviations [.01, .01, .01, -.03], so m2 = 3e-4,
# m3 = -6e-6, m4 = 2.1e-7: skewness -2/√3, kurtosis 7/3, and var (n−1) = 4e-4 for n = 4.
DELTA_Q = np.array([0.0, 0.0, 0.0, -0.04])
Q10 = np.array([0.0, 0.3, 0.7, 1.05])


def capacities() -> dict[int, float]:
    """Flat 1.05 Ah with a 1.07 Ah peak at cycle 50; a line 1.0455 − 0.0005·n over 91–100."""
    values = {cycle: 1.05 for cycle in range(2, 91)}
    values[50] = 1.07
    values.update({cycle: 1.0455 - 0.0005 * cycle for cycle in range(91, 101)})
    return values


def curves(repeat: int = 1) -> tuple[dict[int, np.ndarray], np.ndarray]:
    q10 = np.tile(Q10, repeat)
    grid = np.linspace(3.6, 2.0, q10.size)
    return {10: q10, 100: q10 + np.tile(DELTA_Q, repeat)}, grid


@pytest.mark.parametrize(("repeat", "variance"), [(1, 4e-4), (250, 3e-4 * 1000 / 999)])
def test_features_match_hand_computed_moments(repeat, variance):
    qdlin, grid = curves(repeat)
    values = el.features(qdlin, capacities(), grid)
    expected = {
        el.LOG_MIN: math.log10(0.04),
        el.LOG_VARIANCE: math.log10(variance),
        el.LOG_SKEWNESS: math.log10(2 / math.sqrt(3)),
        el.LOG_KURTOSIS: math.log10(7 / 3),
        el.CAPACITY_2: 1.05,
        el.CAPACITY_GAIN: 0.02,
        el.FADE_SLOPE: -0.0005,
        el.FADE_INTERCEPT: 1.0455,
    }
    assert values.keys() == expected.keys()
    for name, value in expected.items():
        assert values[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


def test_cycles_after_100_do_not_count():
    qdlin, grid = curves()
    later = {**capacities(), 150: 1.09}
    later_curves = {**qdlin, 150: qdlin[100] - 0.5}
    assert el.features(later_curves, later, grid) == el.features(qdlin, capacities(), grid)


@pytest.mark.parametrize(
    ("last_cycle", "message"),
    [
        (80, "early-life prediction needs cycles 2 to 100; the data end at cycle 80"),
        (0, "the data hold no cycles"),
    ],
)
def test_a_young_cell_has_not_enough_cycles(last_cycle, message):
    qdlin, grid = curves()
    young = {cycle: value for cycle, value in capacities().items() if cycle <= last_cycle}
    young_curves = {cycle: curve for cycle, curve in qdlin.items() if cycle <= last_cycle}
    with pytest.raises(el.NotEnoughCycles, match=message):
        el.features(young_curves, young, grid)


def test_missing_curve_of_cycle_10_is_named():
    qdlin, grid = curves()
    with pytest.raises(el.MissingCurve, match="cycle 10 has no discharge curve"):
        el.features({100: qdlin[100]}, capacities(), grid)


@pytest.mark.parametrize(
    ("bad_curve", "message"),
    [
        (np.empty(0), "cycle 100 has no discharge curve"),
        (np.zeros(3), r"cycle 100's discharge curve has shape \(3,\), the voltage grid 4 points"),
        (np.array([0.0, np.nan, 0.7, 1.0]), "cycle 100's discharge curve holds non-finite values"),
    ],
)
def test_unusable_curve_of_cycle_100(bad_curve, message):
    qdlin, grid = curves()
    with pytest.raises(el.MissingCurve, match=message):
        el.features({**qdlin, 100: bad_curve}, capacities(), grid)


def test_missing_capacity_of_cycle_2():
    qdlin, grid = curves()
    without_2 = {cycle: value for cycle, value in capacities().items() if cycle != 2}
    with pytest.raises(el.MissingCurve, match="cycle 2 has no plausible discharge capacity"):
        el.features(qdlin, without_2, grid)


def test_identical_curves_are_degenerate_but_not_missing():
    qdlin, grid = curves()
    with pytest.raises(el.EarlyLifeInputError, match="degenerate") as raised:
        el.features({10: qdlin[10], 100: qdlin[10]}, capacities(), grid)
    assert not isinstance(raised.value, el.NotEnoughCycles | el.MissingCurve)
    assert isinstance(raised.value, ValueError)


def test_fade_line_needs_half_the_window():
    qdlin, grid = curves()
    sparse = {c: v for c, v in capacities().items() if c < 91 or c in (92, 95, 97, 100)}
    values = el.features(qdlin, sparse, grid)
    assert el.FADE_SLOPE not in values
    assert el.FADE_INTERCEPT not in values
    sparse[99] = capacities()[99]
    assert el.features(qdlin, sparse, grid)[el.FADE_SLOPE] == pytest.approx(-0.0005)


def model_document() -> dict:
    return {
        "model": "toy",
        "target": "log10_cycle_life",
        "feature_names": [el.CAPACITY_2, el.FADE_SLOPE],
        "feature_means": [1.0, 0.0],
        "feature_scales": [0.5, 0.001],
        "coefficients": [0.2, 0.1],
        "intercept": 3.0,
        "interval": {"level": 0.9, "log10_half_width": 0.1},
    }


def test_prediction_is_linear_in_standardised_features_on_log10_life():
    model = el.LinearModel.from_dict(model_document())
    # z = [(1.05 − 1)/0.5, (−0.0005 − 0)/0.001] = [0.1, −0.5]: log10 life = 3 + 0.02 − 0.05.
    prediction = model.predict({el.CAPACITY_2: 1.05, el.FADE_SLOPE: -0.0005, el.LOG_MIN: -1.0})
    assert prediction.cycle_life == pytest.approx(10**2.97, rel=1e-12)
    assert prediction.interval == pytest.approx((10**2.87, 10**3.07), rel=1e-12)
    assert prediction.interval_level == 0.9
    assert prediction.model == "toy"
    assert prediction.features == {el.CAPACITY_2: 1.05, el.FADE_SLOPE: -0.0005}


def test_prediction_names_the_features_it_lacks():
    model = el.LinearModel.from_dict(model_document())
    with pytest.raises(el.MissingCurve, match=f"the toy model needs {el.FADE_SLOPE}"):
        model.predict({el.CAPACITY_2: 1.05})


def test_an_unknown_target_transform_is_refused():
    with pytest.raises(ValueError, match="unsupported target transform 'ln_cycle_life'"):
        el.LinearModel.from_dict({**model_document(), "target": "ln_cycle_life"})


def shipped_document() -> dict:
    text = resources.files("central.research").joinpath(el.MODEL_RESOURCE).read_text("utf-8")
    assert text == fit_script.dumps(json.loads(text)), "the JSON is not as the script writes it"
    return json.loads(text)


@pytest.fixture(scope="module")
def severson_cells() -> tuple[list[fit_script.Cell], list[fit_script.Cell]]:
    return fit_script.load_cells(SEVERSON_TRAIN), fit_script.load_cells(SEVERSON_TEST)


def test_shipped_model_reaches_its_stored_figures_on_the_real_cells(severson_cells):
    train, test = severson_cells
    stored = shipped_document()["metrics"]
    assert [len(train), len(test)] == [41, 43]
    assert test[fit_script.OUTLIER_CELL - 1].life == 148
    kept = [cell for cell in test if cell.position != fit_script.OUTLIER_CELL]
    for key, cells in (("train", train), ("test1_all", test), ("test1_without_outlier", kept)):
        predicted = np.array([el.predict(cell.features).cycle_life for cell in cells])
        actual = np.array([cell.life for cell in cells], dtype=float)
        rmse = float(np.sqrt(np.mean((predicted - actual) ** 2)))
        assert rmse == pytest.approx(stored[key]["rmse_cycles"], rel=1e-6), key
    assert stored["test1_without_outlier"]["rmse_cycles"] <= 91  # the paper's discharge model


def test_fitting_script_reproduces_the_shipped_model(severson_cells):
    train, _ = severson_cells
    shipped = shipped_document()
    assert shipped["data"]["train"]["sha256"] == fit_script.sha256(SEVERSON_TRAIN)
    refit = fit_script.fit(shipped["model"], train)
    model = refit.model
    assert model.name == el.shipped_model().name
    assert list(model.feature_names) == shipped["feature_names"]
    for name, fitted in (
        ("feature_means", model.means),
        ("feature_scales", model.scales),
        ("coefficients", model.coefficients),
    ):
        np.testing.assert_allclose(fitted, shipped[name], rtol=1e-9, atol=1e-12, err_msg=name)
    assert model.intercept == pytest.approx(shipped["intercept"], rel=1e-9)
    assert model.log10_interval_half_width == pytest.approx(
        shipped["interval"]["log10_half_width"], rel=1e-9
    )
    assert (refit.alpha, refit.l1_ratio) == pytest.approx(
        (shipped["fit"]["alpha"], shipped["fit"]["l1_ratio"]), rel=1e-9
    )
