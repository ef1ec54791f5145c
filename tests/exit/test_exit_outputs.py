"""Per-layer probe outputs of one outer fold: out-of-fold on the training rows, refitted on the test rows (numpy, no models)."""

from __future__ import annotations

import numpy as np
import pytest

from plmexit.exit import calibration, gates
from plmexit.exit.outputs import fold_outputs
from plmexit.probing.probes import refit_probe


def planted_layers(n: int, L: int, rng) -> tuple[list[np.ndarray], np.ndarray]:
    """Layer k's 6 features carry the signal with strength k (layer 0 none)."""
    signal = rng.normal(size=n)
    return [np.column_stack([k * signal + rng.normal(size=n), rng.normal(size=(n, 5))]) for k in range(L + 1)], signal


@pytest.mark.parametrize("task_type", ["classification", "multilabel", "regression"])
def test_fold_outputs_never_fit_the_rows_they_predict(task_type):
    rng = np.random.default_rng(0)
    L, n = 3, 90
    layers, signal = planted_layers(n, L, rng)
    if task_type == "classification":
        y, classes, hyper = np.where(signal > 0.3, "b", np.where(signal < -0.3, "a", "c")), ["a", "b", "c"], 1.0
    elif task_type == "multilabel":
        y, classes, hyper = np.column_stack([signal > 0, signal < 0.5]).astype(int), ["x", "y"], 1.0
    else:
        y, classes, hyper = signal + rng.normal(0, 0.1, n), None, 10.0
    train, test = np.arange(60), np.arange(60, 90)
    hyperparameters = np.full(L + 1, hyper)
    hyperparameters[0] = np.nan  # a layer with no signal predicts the training rows' prior
    cal, tested = fold_outputs(lambda k: layers[k], y, task_type, classes, train, test, hyperparameters, 3, 0)
    assert cal.shape[:2] == (L + 1, 60) and tested.shape[:2] == (L + 1, 30)
    refit = refit_probe(layers[L][train], y[train], task_type, hyper, classes if task_type == "multilabel" else None)
    expected = refit.predict(layers[L][test]) if task_type == "regression" else refit.probabilities(layers[L][test])
    np.testing.assert_allclose(tested[L], expected, rtol=1e-10)
    assert np.allclose(tested[0], tested[0][0])  # the prior, the same for every row
    # Out-of-fold: changing a training row's label moves its own calibration output only through other rows' fits.
    if task_type == "regression":
        moved = y.copy()
        moved[0] += 100.0
        cal_moved, _ = fold_outputs(lambda k: layers[k], moved, task_type, classes, train, test, hyperparameters, 3, 0)
        assert cal_moved[L, 0] == pytest.approx(cal[L, 0])
        gate = "patience"
    else:
        gate = "probability"
    grid = gates.threshold_grid(gate, 20, 3)
    tolerance = 0.1 * float(np.std(y[train])) if task_type == "regression" else 0.0
    chosen = calibration.learn_then_test(cal, gate, task_type, grid, 0.2, 0.2, 1, L, tolerance)
    assert chosen.n_calibration == 60 and len(chosen.tested) >= 1
