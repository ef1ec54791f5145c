"""The shipped probe: refitting at a fold's chosen hyperparameter reproduces that fold's predictions, and the plain dict round-trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from plmexit.errors import InputError
from plmexit.probing import probes
from plmexit.probing.folds import DEPLOY_FOLD
from plmexit.probing.linear import LinearProbe


def _data(task_type: str, n: int = 60, d: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=d) + rng.normal(size=d)
    signal = X[:, 0] - X[:, 1]
    if task_type == "regression":
        y = signal + 0.3 * rng.normal(size=n)
    elif task_type == "classification":
        y = np.array(["a", "b", "c"])[np.digitize(signal + 0.3 * rng.normal(size=n), [-1, 1])]
    else:
        y = np.column_stack([signal > 0, X[:, 2] > 0, np.zeros(n, dtype=bool)]).astype(int)  # last label never present
    return X, y, np.arange(n) % 3


@pytest.mark.parametrize(("task_type", "metric", "d"), [
    ("regression", "spearman", 12), ("regression", "spearman", 80), ("classification", "accuracy", 12),
    ("classification", "accuracy", 80), ("multilabel", "fmax", 12),
])
def test_a_refit_at_the_chosen_hyperparameter_predicts_as_the_probe_step(task_type, metric, d):
    X, y, folds = _data(task_type, d=d)
    settings = probes.ProbeSettings(task_type, metric, ridge_alphas=(0.1, 10.0, 1000.0), logistic_cs=(0.01, 1.0, 100.0))
    classes = ["x", "y", "z"] if task_type == "multilabel" else None
    for fit in probes.probe_layer(X, y, folds, settings):
        train = np.flatnonzero(folds != fit.fold) if fit.fold != DEPLOY_FOLD else np.arange(len(y))
        probe = probes.refit_probe(X[train], y[train], task_type, fit.hyperparameter, classes)
        shipped = LinearProbe.from_dict(json.loads(probe.to_json()))
        assert json.loads(probe.to_json()) == probe.to_dict()
        predicted = shipped.predict(X[fit.test])
        if task_type == "classification":
            assert list(predicted) == list(fit.predictions)
        else:
            np.testing.assert_allclose(predicted, fit.predictions, rtol=1e-7, atol=1e-9)
    assert shipped.n_training_rows == len(y) and shipped.hyperparameter == fit.hyperparameter


def test_a_two_class_probe_has_one_sigmoid_column():
    X, y, _ = _data("classification")
    y = np.where(y == "a", "neg", "pos")
    probe = probes.refit_probe(X, y, "classification", 1.0)
    assert (probe.link, probe.classes, probe.weights.shape) == ("sigmoid", ["neg", "pos"], (X.shape[1], 1))
    p = probe.probabilities(X)
    assert np.allclose(p.sum(axis=1), 1) and list(probe.predict(X)) == list(np.where(p[:, 1] > 0.5, "pos", "neg"))


def test_a_multilabel_probe_keeps_a_constant_label_constant():
    X, Y, _ = _data("multilabel")
    probe = probes.refit_probe(X, Y, "multilabel", 1.0, ["x", "y", "z"])
    assert probe.constant_probability == [None, None, 0.0]
    assert np.all(probe.predict(X)[:, 2] == 0.0)


def test_a_malformed_probe_is_one_clear_error():
    X, y, _ = _data("regression")
    data = probes.refit_probe(X, y, "regression", 1.0).to_dict()
    with pytest.raises(InputError, match="probe.json: not a plmexit probe"):
        LinearProbe.from_dict({"weights": []}, "probe.json")
    with pytest.raises(InputError, match="probe.json: malformed probe .*KeyError"):
        LinearProbe.from_dict({k: v for k, v in data.items() if k != "scale"}, "probe.json")
    with pytest.raises(InputError, match="link 'softmax' does not fit task type 'regression'"):
        LinearProbe.from_dict({**data, "link": "softmax"}, "probe.json")
    with pytest.raises(InputError, match="takes 12-wide embeddings"):
        LinearProbe.from_dict(data).predict(X[:, :5])
    with pytest.raises(InputError, match="not a positive number"):
        probes.refit_probe(X, y, "regression", float("nan"))
