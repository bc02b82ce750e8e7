"""Fit the early-life cycle-life model (Severson et al. 2019) and compare it with the paper.

    .venv/bin/python scripts/fit_early_life.py [--write] [--train PATH] [--test PATH]

Only the training file is fitted on, the model shipped is the one with the lowest cross-validated
error on it; the primary test file is only reported. ``--write`` rewrites
``central/research/early_life_model.json`` (the same bytes for the same data and library).
Needs the ``research-fit`` extra (scikit-learn).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import ElasticNet, ElasticNetCV
from sklearn.model_selection import RepeatedKFold

from central.research import early_life as el
from central.research.cells import ParsedCell
from central.research.parse import open_research_file

REPO = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout, or where BRM_SHARED_DATA says.
DATA_DIR = Path(os.environ.get("BRM_SHARED_DATA", REPO.parent / "shared" / "data")) / "severson"
TRAIN_FILE = DATA_DIR / "severson_train_v73.mat"
TEST_FILE = DATA_DIR / "severson_test1_v73.mat"
MODEL_FILE = REPO / "central" / "research" / el.MODEL_RESOURCE
OUTLIER_CELL = 22  # position in the primary test file (life 148); the paper's figures leave it out

DISCHARGE_FEATURES = (
    el.LOG_MIN,
    el.LOG_VARIANCE,
    el.LOG_SKEWNESS,
    el.LOG_KURTOSIS,
    el.CAPACITY_2,
    el.CAPACITY_GAIN,
)
MODELS = {
    "variance": (el.LOG_VARIANCE,),
    "discharge": DISCHARGE_FEATURES,
    # The paper's full model also uses charge time, temperature and resistance: not in these files.
    "full": (*DISCHARGE_FEATURES, el.FADE_SLOPE, el.FADE_INTERCEPT),
}
PAPER_RMSE = {"variance": (103, 138), "discharge": (76, 91), "full": (51, 118)}

# The paper chose the elastic net's hyper-parameters by 4-fold CV with Monte Carlo repeats. Fewer
# than ~20 repeats let the chosen penalty swing by an order of magnitude with the split seed.
L1_RATIOS = (0.1, 0.5, 0.7, 0.9, 0.95, 0.99, 1.0)
CV_FOLDS = 4
CV_REPEATS = 20
CV_SEED = 0
INTERVAL_LEVEL = 0.9
PARAMETER_DIGITS = 12  # significant digits kept in the JSON: far below any effect on a prediction
METRIC_DECIMALS = 6


@dataclass(frozen=True)
class Cell:
    """What the fit needs of one cell: where it sits in its file, its life, its features."""

    position: int
    life: int
    features: dict[str, float]


@dataclass(frozen=True)
class Fit:
    """A fitted candidate: the shipped parameters and its cross-validated record on training."""

    model: el.LinearModel
    alpha: float
    l1_ratio: float
    cv_log10_residuals: np.ndarray  # out-of-fold, every repeat pooled
    cv_predictions: np.ndarray  # out-of-fold cycle life, one row per repeat


def cell_inputs(cell: ParsedCell) -> tuple[dict[int, np.ndarray], dict[int, float]]:
    """The Qdlin curves and plausible capacities of a parsed cell's early cycles."""
    curves: dict[int, np.ndarray] = {}
    capacities: dict[int, float] = {}
    for cycle in cell.cycles():
        if cycle.index > el.LAST_CYCLE:
            break
        if cycle.qdlin is not None and cycle.index in el.CURVE_CYCLES:
            curves[cycle.index] = cycle.qdlin
        if cycle.capacity_ah is not None:
            capacities[cycle.index] = cycle.capacity_ah
    return curves, capacities


def load_cells(path: Path) -> list[Cell]:
    """Every cell of a Severson file with its stated life, read through the research parser."""
    cells = []
    with open_research_file(path) as parsed:
        for position, cell in enumerate(parsed, start=1):
            if cell.stated_cycle_life is None or cell.voltage_grid is None:
                raise ValueError(f"{path.name} cell {position} has no cycle life or Vdlin grid")
            curves, capacities = cell_inputs(cell)
            values = el.features(curves, capacities, cell.voltage_grid)
            cells.append(Cell(position, cell.stated_cycle_life, values))
    return cells


def design(cells: Sequence[Cell], names: Sequence[str]) -> np.ndarray:
    """One row per cell, one column per feature, in the model's order."""
    return np.array([[cell.features[name] for name in names] for cell in cells])


def lives(cells: Iterable[Cell]) -> np.ndarray:
    """Stated cycle lives: the ground truth, since the files stop at cycle 100."""
    return np.array([cell.life for cell in cells], dtype=float)


def _round(values: np.ndarray | float) -> Any:
    """Parameters as the JSON keeps them, so that fitted and shipped models predict alike."""
    rounded = np.vectorize(lambda v: float(f"{v:.{PARAMETER_DIGITS}g}"))(values)
    return rounded.tolist() if np.ndim(rounded) else float(rounded)


def fit(name: str, cells: Sequence[Cell]) -> Fit:
    """Elastic net on standardised features → log10 life, hyper-parameters by repeated 4-fold CV."""
    names = MODELS[name]
    x = design(cells, names)
    y = np.log10(lives(cells))
    means, scales = np.asarray(_round(x.mean(axis=0))), np.asarray(_round(x.std(axis=0)))
    z = (x - means) / scales
    splits = list(
        RepeatedKFold(n_splits=CV_FOLDS, n_repeats=CV_REPEATS, random_state=CV_SEED).split(z)
    )
    search = ElasticNetCV(l1_ratio=list(L1_RATIOS), cv=splits, max_iter=100_000)
    with warnings.catch_warnings():
        # The path's smallest penalties converge slowly; the final refit below converges fully.
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(z, y)
    alpha, l1_ratio = float(search.alpha_), float(search.l1_ratio_)

    def refit(rows: np.ndarray) -> ElasticNet:
        return ElasticNet(alpha=alpha, l1_ratio=l1_ratio, tol=1e-12, max_iter=1_000_000).fit(
            z[rows], y[rows]
        )

    oof = np.empty((CV_REPEATS, len(cells)))
    for index, (train_rows, held_out) in enumerate(splits):
        oof[index // CV_FOLDS, held_out] = refit(train_rows).predict(z[held_out])
    final = refit(np.arange(len(cells)))
    residuals = (oof - y).ravel()
    model = el.LinearModel(
        name=name,
        feature_names=names,
        means=means,
        scales=scales,
        coefficients=np.asarray(_round(final.coef_)),
        intercept=_round(float(final.intercept_)),
        log10_interval_half_width=_round(float(np.quantile(np.abs(residuals), INTERVAL_LEVEL))),
        interval_level=INTERVAL_LEVEL,
    )
    return Fit(model, alpha, l1_ratio, residuals, 10.0**oof)


def predictions(model: el.LinearModel, cells: Sequence[Cell]) -> np.ndarray:
    """Through the runtime's own code path, so the figures are those of the shipped model."""
    return np.array([model.predict(cell.features).cycle_life for cell in cells])


def errors(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """RMSE in cycles and mean absolute percentage error, the paper's two figures."""
    return {
        "rmse_cycles": round(float(np.sqrt(np.mean((predicted - actual) ** 2))), METRIC_DECIMALS),
        "mean_abs_pct_error": round(
            float(100 * np.mean(np.abs(predicted - actual) / actual)), METRIC_DECIMALS
        ),
    }


def report(fitted: Fit, train: Sequence[Cell], test: Sequence[Cell]) -> dict[str, dict[str, Any]]:
    """Figures per set; the primary test with and without the outlier, each labelled."""
    kept = [cell for cell in test if cell.position != OUTLIER_CELL]
    cv = errors(fitted.cv_predictions, np.broadcast_to(lives(train), fitted.cv_predictions.shape))
    cv["rmse_log10"] = round(float(np.sqrt(np.mean(fitted.cv_log10_residuals**2))), 9)
    return {
        "train": {"cells": len(train), **errors(predictions(fitted.model, train), lives(train))},
        "train_cv": {"cells": len(train), **cv},
        "test1_without_outlier": {
            "cells": len(kept),
            **errors(predictions(fitted.model, kept), lives(kept)),
        },
        "test1_all": {"cells": len(test), **errors(predictions(fitted.model, test), lives(test))},
    }


def choose(fits: dict[str, Fit], figures: dict[str, dict[str, dict[str, Any]]]) -> str:
    """The lowest CV error of log10 life: the quantity the elastic net itself is fitted and tuned
    on. Training data only."""
    return min(fits, key=lambda name: figures[name]["train_cv"]["rmse_log10"])


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def document(
    chosen: Fit,
    figures: dict[str, dict[str, dict[str, Any]]],
    train_path: Path,
    test_path: Path,
) -> dict[str, Any]:
    """The JSON the runtime loads: the chosen model, how it was chosen and how it scores."""
    model = chosen.model
    return {
        "model": model.name,
        "target": "log10_cycle_life",
        "feature_names": list(model.feature_names),
        "feature_means": model.means.tolist(),
        "feature_scales": model.scales.tolist(),
        "coefficients": model.coefficients.tolist(),
        "intercept": model.intercept,
        "interval": {
            "level": model.interval_level,
            "log10_half_width": model.log10_interval_half_width,
            "basis": "quantile of |out-of-fold log10 residuals| on training, all CV repeats",
        },
        "fit": {
            "method": "elastic net on standardised features (scikit-learn ElasticNetCV)",
            "alpha": _round(chosen.alpha),
            "l1_ratio": chosen.l1_ratio,
            "l1_ratio_grid": list(L1_RATIOS),
            "cv": f"RepeatedKFold(n_splits={CV_FOLDS}, n_repeats={CV_REPEATS}, "
            f"random_state={CV_SEED})",
            "selection": "lowest CV RMSE of log10 cycle life on the training set",
            "scikit_learn": sklearn.__version__,
        },
        "metrics": figures[model.name],
        "candidates": {
            name: {"train_cv": model_figures["train_cv"]}
            for name, model_figures in sorted(figures.items())
        },
        "data": {
            "train": {"file": train_path.name, "sha256": sha256(train_path)},
            "test1": {
                "file": test_path.name,
                "sha256": sha256(test_path),
                "outlier_cell": OUTLIER_CELL,
            },
        },
    }


def dumps(content: dict[str, Any]) -> str:
    """Sorted keys and a fixed layout, so a refit with the same result rewrites the same bytes."""
    return json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def table(figures: dict[str, dict[str, dict[str, Any]]], chosen: str) -> str:
    rows = [
        f"{'model':<10} {'set':<42} {'cells':>5} {'RMSE':>7} {'err %':>6} {'paper RMSE':>10}",
    ]
    sets = (
        ("train", "train", 0),
        ("train_cv", f"train, out-of-fold ({CV_FOLDS}-fold x{CV_REPEATS})", None),
        ("test1_without_outlier", f"primary test without cell {OUTLIER_CELL} (paper's)", 1),
        ("test1_all", f"primary test with cell {OUTLIER_CELL}", None),
    )
    for name, model_figures in figures.items():
        for key, label, anchor in sets:
            row = model_figures[key]
            paper = "" if anchor is None else str(PAPER_RMSE[name][anchor])
            rows.append(
                f"{name + (' *' if name == chosen else ''):<10} {label:<42} {row['cells']:>5} "
                f"{row['rmse_cycles']:>7.1f} {row['mean_abs_pct_error']:>6.1f} {paper:>10}"
            )
    rows.append(
        "CV log10 RMSE: "
        + ", ".join(f"{name} {figures[name]['train_cv']['rmse_log10']:.4f}" for name in figures)
        + "; * = shipped (lowest CV log10 RMSE)"
    )
    return "\n".join(row.rstrip() for row in rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {MODEL_FILE.name}")
    parser.add_argument("--train", type=Path, default=TRAIN_FILE)
    parser.add_argument("--test", type=Path, default=TEST_FILE)
    args = parser.parse_args(argv)
    train, test = load_cells(args.train), load_cells(args.test)
    fits = {name: fit(name, train) for name in MODELS}
    figures = {name: report(fitted, train, test) for name, fitted in fits.items()}
    chosen = choose(fits, figures)
    print(table(figures, chosen))
    if args.write:
        MODEL_FILE.write_text(
            dumps(document(fits[chosen], figures, args.train, args.test)), encoding="utf-8"
        )
        print(f"wrote {MODEL_FILE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
