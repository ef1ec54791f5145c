"""Per-layer probe outputs for one outer fold: out-of-fold on its training rows (for calibration), refitted on its test rows.

Invariant: the calibration outputs of outer fold ``f`` come from probes fitted on inner folds of
fold ``f``'s training rows only, each at the hyperparameter the probe step chose for (``f``, layer)
from those same rows (the probe table's ``hyperparameter`` row), and predict only rows they were
not fitted on; the test outputs come from the probe refitted on all training rows at that
hyperparameter (``probing.probes.refit_probe``, the probe step's own refit). Test rows are never
fitted on. Outputs are class or label probabilities ``(n, K)`` in ``classes`` order, or values.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold

from plmexit.probing.linear import LinearProbe
from plmexit.probing.probes import refit_probe


def inner_splits(y: np.ndarray, task_type: str, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inner (fit, held-out) index pairs of a training part: stratified by class (multi-label: by each
    row's rarest label) as the probes' inner folds are, plain shuffled K-fold for regression."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        if task_type == "regression":
            return list(KFold(n_splits=n_splits, shuffle=True, random_state=seed).split(y))
        if task_type == "multilabel":
            counts = y.sum(axis=0)
            strata = np.array([min(np.flatnonzero(r), key=lambda k: (counts[k], k)) if r.any() else -1 for r in y])
        else:
            strata = y
        _, counts = np.unique(strata, return_counts=True)
        k = max(2, min(n_splits, int(counts.max())))
        return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), strata))


def probe_outputs(probe: LinearProbe, X: np.ndarray, classes: list[str] | None) -> np.ndarray:
    """A probe's outputs on ``X`` in the task's class order (a class the fit rows lacked gets probability 0)."""
    if probe.task_type == "regression":
        return probe.predict(X)
    P = probe.probabilities(X)
    if probe.task_type == "multilabel":
        return P
    full = np.zeros((len(X), len(classes)))
    full[:, [classes.index(c) for c in probe.classes]] = P
    return full


def _constant_outputs(y: np.ndarray, task_type: str, classes: list[str] | None, n: int) -> np.ndarray:
    """What a layer with no signal (no hyperparameter was chosen) predicts: the fit rows' mean or class frequencies."""
    if task_type == "regression":
        return np.full(n, float(np.mean(y)))
    if task_type == "multilabel":
        return np.tile(np.asarray(y, dtype=float).mean(axis=0), (n, 1))
    freq = np.array([np.mean(y == c) for c in classes])
    return np.tile(freq, (n, 1))


@dataclass(frozen=True)
class ConstantProbe:
    """A layer with no signal as a probe (``LinearProbe``'s interface for ``probe_outputs``): its fit rows' mean or
    class (label) frequencies, whatever the features."""

    task_type: str
    outputs: np.ndarray  # (K,) probabilities in ``classes`` order, or (1,) the mean value
    classes: list[str]

    def probabilities(self, X: np.ndarray) -> np.ndarray:
        return np.tile(self.outputs, (len(X), 1))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.full(len(X), float(self.outputs[0]))


def fitted_probe(X: np.ndarray, y: np.ndarray, task_type: str, classes: list[str] | None, hyperparameter: float, max_iter: int = 2000):
    """The probe fitted on every row of ``X`` at ``hyperparameter`` (``refit_probe``), or a ``ConstantProbe`` for a layer
    with no signal (NaN) or a classification fit with one class."""
    if not np.isfinite(hyperparameter) or (task_type == "classification" and len(np.unique(y)) < 2):
        constant = np.atleast_1d(_constant_outputs(y, task_type, classes, 1)[0])
        return ConstantProbe(task_type, constant, list(classes) if task_type != "regression" else [])
    return refit_probe(X, y, task_type, hyperparameter, classes if task_type == "multilabel" else None, max_iter)


def _fit_predict(X, y, fit, predict, task_type, classes, hyperparameter, max_iter):
    return probe_outputs(fitted_probe(X[fit], y[fit], task_type, classes, hyperparameter, max_iter), X[predict], classes)


def fold_probes(
    layer_features, y: np.ndarray, task_type: str, classes: list[str] | None, train: np.ndarray, hyperparameters: np.ndarray, max_iter: int = 2000,
) -> dict:
    """``{layer: probe}`` refitted on an outer fold's training rows at its chosen hyperparameters: the probes whose
    outputs ``fold_outputs`` gives for the fold's test rows, to run inside a forward (``exit.adaptive``)."""
    return {
        k: fitted_probe(np.asarray(layer_features(k), dtype=np.float64)[train], y[train], task_type, classes, h, max_iter)
        for k, h in enumerate(hyperparameters)
    }


def fold_outputs(
    layer_features, y: np.ndarray, task_type: str, classes: list[str] | None, train: np.ndarray, test: np.ndarray,
    hyperparameters: np.ndarray, inner_folds: int, seed: int, max_iter: int = 2000,
) -> tuple[np.ndarray, np.ndarray]:
    """``(calibration, test)`` outputs ``(L + 1, n_train, ...)`` and ``(L + 1, n_test, ...)`` of one outer fold.

    ``layer_features(k)`` gives layer ``k``'s features ``(n, D)`` for every row; ``hyperparameters``
    ``(L + 1,)`` the fold's chosen value per layer (NaN: the layer has no signal). Inner splits are
    the same at every layer, so a row's calibration outputs across layers come from probes fitted
    on the same rows.
    """
    splits = inner_splits(y[train], task_type, inner_folds, seed)
    calibration, tested = [], []
    for k, hyperparameter in enumerate(hyperparameters):
        X = np.asarray(layer_features(k), dtype=np.float64)
        Xt = X[train]
        yt = y[train]
        held = None
        for fit, out in splits:
            part = _fit_predict(Xt, yt, fit, out, task_type, classes, hyperparameter, max_iter)
            if held is None:
                held = np.zeros((len(train),) + part.shape[1:])
            held[out] = part
        calibration.append(held)
        tested.append(_fit_predict(X, y, train, test, task_type, classes, hyperparameter, max_iter))
    return np.stack(calibration), np.stack(tested)
