"""Linear probes: planted signal is found, inner scores see training rows only, settings are checked."""

from __future__ import annotations

import numpy as np
import pytest

from plmexit.errors import InputError
from plmexit.probes import ProbeSettings, evaluation_folds, probe_layer, spearman

# A short grid keeps the suite fast; the defaults are exercised by the CLI test.
FAST_CS = (0.01, 1.0)


def as_dict(rows) -> dict[tuple[int, str], float]:
    return {(fold, metric): value for fold, metric, value in rows}


def regression_data(n: int = 90, d: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + 0.1 * rng.normal(size=n)
    return X, y, np.arange(n) % 3


def classification_data(n_per_class: int = 20, d: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = {"cyto": -3.0, "nuc": 0.0, "mito": 3.0}
    X = np.vstack([rng.normal(loc=c, size=(n_per_class, d)) for c in centres.values()])
    y = np.repeat(np.array(list(centres), dtype=object), n_per_class)
    folds = np.tile(np.arange(3), len(y) // 3)
    return X, y, folds


def test_regression_probe_recovers_planted_signal():
    X, y, folds = regression_data()

    rows = as_dict(probe_layer(X, y, folds, ProbeSettings("regression", "spearman")))

    assert set(rows) == {(f, m) for f in range(3) for m in ("spearman", "mse", "inner_spearman")}
    for fold in range(3):
        assert rows[fold, "spearman"] > 0.95
        assert rows[fold, "inner_spearman"] > 0.95
        assert rows[fold, "mse"] < 0.1 * np.var(y)


def test_regression_probe_on_noise_finds_nothing():
    X, _, folds = regression_data()
    y = np.random.default_rng(1).normal(size=len(X))

    rows = as_dict(probe_layer(X, y, folds, ProbeSettings("regression", "spearman")))

    assert all(abs(rows[f, "spearman"]) < 0.5 for f in range(3))


def test_classification_probe_separates_separable_classes():
    X, y, folds = classification_data()

    rows = as_dict(probe_layer(X, y, folds, ProbeSettings("classification", "macro_f1", logistic_cs=FAST_CS)))

    assert set(rows) == {(f, m) for f in range(3) for m in ("accuracy", "macro_f1", "mcc", "inner_macro_f1")}
    for fold in range(3):
        assert rows[fold, "accuracy"] >= 0.95
        assert rows[fold, "inner_macro_f1"] >= 0.95


@pytest.mark.parametrize("task_type", ["regression", "classification"])
def test_test_rows_never_influence_the_inner_score(task_type):
    if task_type == "regression":
        X, y, folds = regression_data()
        settings = ProbeSettings("regression", "spearman")
        changed_y = y.copy()
        changed_y[folds == 0] = np.random.default_rng(5).normal(scale=1e6, size=(folds == 0).sum())
    else:
        X, y, folds = classification_data()
        settings = ProbeSettings("classification", "accuracy", logistic_cs=FAST_CS)
        changed_y = y.copy()
        changed_y[folds == 0] = np.roll(y[folds == 0], 7)  # every test label wrong
    changed_X = X.copy()
    changed_X[folds == 0] *= -5.0

    before = as_dict(probe_layer(X, y, folds, settings))
    after = as_dict(probe_layer(changed_X, changed_y, folds, settings))

    inner = f"inner_{settings.selection_metric}"
    assert after[0, inner] == before[0, inner]  # fold 0's inner score saw no fold-0 row
    assert after[0, settings.selection_metric] != before[0, settings.selection_metric]
    assert after[1, inner] != before[1, inner]  # ...while fold 1 trains on them


def test_train_only_rows_are_never_tested():
    X, y, folds = regression_data()
    folds = folds.copy()
    folds[:30] = -1

    rows = probe_layer(X, y, folds, ProbeSettings("regression", "spearman"))

    assert {fold for fold, _, _ in rows} == {0, 1, 2}
    assert evaluation_folds(np.array([-1, 2, 0, 2, -1])) == [0, 2]
    assert evaluation_folds(np.array([-1, -1])) == []


def test_train_only_rows_are_trained_on():
    X, y, folds = regression_data()
    extra = folds.copy()
    extra[folds == 2] = -1  # fold 2 stops being tested but still trains folds 0 and 1

    rows = as_dict(probe_layer(X, y, extra, ProbeSettings("regression", "spearman")))
    without = as_dict(probe_layer(X[folds != 2], y[folds != 2], folds[folds != 2], ProbeSettings("regression", "spearman")))

    assert set(rows) == {(f, m) for f in (0, 1) for m in ("spearman", "mse", "inner_spearman")}
    assert rows[0, "inner_spearman"] != without[0, "inner_spearman"]


def test_a_training_part_with_one_class_is_an_error():
    X, _, _ = classification_data()
    y = np.array(["a"] * 30 + ["b"] * 30, dtype=object)
    folds = np.repeat([0, 1], 30)

    with pytest.raises(InputError, match=r"a training part holds only class 'b'"):
        probe_layer(X, y, folds, ProbeSettings("classification", "accuracy", logistic_cs=FAST_CS))


@pytest.mark.parametrize(
    ("task_type", "metric", "message"),
    [
        ("regression", "mse", r"selection metric 'mse' is not one of spearman for a regression task"),
        ("regression", "accuracy", r"selection metric 'accuracy' is not one of spearman"),
        ("classification", "spearman", r"selection metric 'spearman' is not one of accuracy, macro_f1, mcc for a classification task"),
        ("ranking", "spearman", r"task type 'ranking' is not one of regression, classification"),
    ],
)
def test_probe_settings_reject_bad_metrics(task_type, metric, message):
    with pytest.raises(InputError, match=message):
        ProbeSettings(task_type, metric)


def test_spearman_exact_values():
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0])) == 1.0
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == -1.0
    assert spearman(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0])) == pytest.approx(0.8)


def test_spearman_of_constant_input_is_zero():
    assert spearman(np.array([1.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0])) == 0.0
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([5.0, 5.0, 5.0])) == 0.0
