"""Linear probes on one layer's embeddings, per evaluation fold: the probe settings, the fits, their table rows, the refit.

Invariant: for test fold ``f`` everything that is fitted or chosen — the scaler, the
regularisation strength, and the ``inner_<metric>`` score that layer selection later uses — sees
only the training rows (``fold != f``; ``folds``). The test rows are touched once, to score the
refitted probe. A regression task gets a ridge probe (``ridge``), a classification task a
logistic one and a multi-label task one-vs-rest logistic ones (``classifiers``); each solves a
stock scikit-learn pipeline's problem (``plmexit.probing.reference``: ``reference_ridge``,
``reference_ridge_grouped``, ``reference_logistic``) but shares work across folds and
regularisation strengths; probes do no file I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from plmexit.errors import InputError
from plmexit.probing.classifiers import logistic_probe, logistic_refit, one_vs_rest_probe, one_vs_rest_refit
from plmexit.probing.folds import DEPLOY_FOLD, FoldFit, constant_rows, fit_parts, grid_edge
from plmexit.probing.linear import LinearProbe
from plmexit.probing.metrics import HIGHER_IS_BETTER, METRICS
from plmexit.probing.options import DEFAULT_LOGISTIC_CS, DEFAULT_RIDGE_ALPHAS, INNER_SPLITS
from plmexit.probing.ridge import RidgePath, ridge_folds

INNER_PREFIX = "inner_"
# Probe-table metrics that are not scores: the chosen ridge alpha / logistic C, and where it sits
# on its grid (-1 lowest value, +1 highest, 0 inside).
HYPERPARAMETER = "hyperparameter"
HYPERPARAMETER_EDGE = "hyperparameter_edge"


@dataclass(frozen=True)
class ProbeSettings:
    task_type: str
    selection_metric: str
    ridge_alphas: tuple[float, ...] = DEFAULT_RIDGE_ALPHAS
    logistic_cs: tuple[float, ...] = DEFAULT_LOGISTIC_CS
    inner_folds: int = 3
    seed: int = 0
    max_iter: int = 2000
    inner_split: str = "loo"  # regression only; classifiers always use stratified inner K-fold

    def __post_init__(self):
        if self.task_type not in METRICS:
            raise InputError(f"task type {self.task_type!r} is not one of {', '.join(METRICS)}")
        if self.inner_split not in INNER_SPLITS:
            raise InputError(f"inner split {self.inner_split!r} is not one of {', '.join(INNER_SPLITS)} (--inner-split)")
        if self.inner_split != "loo" and self.task_type != "regression":
            raise InputError(
                f"inner split {self.inner_split!r} groups variants by mutated position, for regression tasks only; "
                f"a {self.task_type} probe uses stratified inner folds (drop --inner-split)"
            )
        if self.selection_metric not in METRICS[self.task_type] or not HIGHER_IS_BETTER[self.selection_metric]:
            allowed = [m for m in METRICS[self.task_type] if HIGHER_IS_BETTER[m]]
            raise InputError(
                f"selection metric {self.selection_metric!r} is not one of {', '.join(allowed)} for a {self.task_type} task; "
                "fix the task's metric in the config (--metric)"
            )


def probe_layer(X: np.ndarray, y: np.ndarray, folds: np.ndarray, settings: ProbeSettings, positions: np.ndarray | None = None) -> list[FoldFit]:
    """Fit one probe per evaluation fold on features ``X`` (training rows only), then the deploy probe on the deploy rows.

    Returns one ``FoldFit`` per evaluation fold, in fold order, followed by the ``DEPLOY_FOLD``
    fit on ``deploy_rows(folds)`` (the train-only rows of fold -1 where there are any, so an
    official test file never chooses the deployed layer; every row of a cross-validated task). ``positions`` (one mutated position per row) is needed when
    ``settings.inner_split`` groups by position.
    """
    if settings.task_type == "regression":
        score = METRICS["regression"][settings.selection_metric]
        return ridge_folds(X, y, folds, settings.ridge_alphas, score, settings.inner_split, settings.inner_folds, positions)
    fits = []
    parts = fit_parts(folds)
    for fold, train, test in parts:
        fit = one_vs_rest_probe if settings.task_type == "multilabel" else logistic_probe
        predict, inner_score, c = fit(X[train], y[train], settings)
        if constant_rows(X[train]):
            inner_score, c = float("nan"), float("nan")
        fits.append(FoldFit(fold, test, predict(X[test]), inner_score, c, grid_edge(c, settings.logistic_cs)))
    return fits


def fold_metrics(fits: list[FoldFit], y: np.ndarray, settings: ProbeSettings) -> list[tuple[int, str, float]]:
    """Rows ``(fold, metric, value)``: every test metric, the ``inner_<metric>`` selection score and the hyperparameter rows.

    The ``DEPLOY_FOLD`` fit has no test rows, so it gets only the inner score and hyperparameter rows.
    """
    rows = []
    for fit in fits:
        if fit.fold != DEPLOY_FOLD:
            truth = y[fit.test]
            rows.extend((fit.fold, name, float(fn(truth, fit.predictions))) for name, fn in METRICS[settings.task_type].items())
        rows.append((fit.fold, INNER_PREFIX + settings.selection_metric, float(fit.inner_score)))
        rows.append((fit.fold, HYPERPARAMETER, float(fit.hyperparameter)))
        rows.append((fit.fold, HYPERPARAMETER_EDGE, float(fit.edge)))
    return rows


def refit_probe(X: np.ndarray, y: np.ndarray, task_type: str, hyperparameter: float, classes: list[str] | None = None,
                max_iter: int = 2000) -> LinearProbe:
    """The probe fitted on every row of ``X`` at one chosen ``hyperparameter``, as plain coefficients.

    This is the refit step of ``probe_layer``'s procedure, by the same code: given the training
    rows of fold ``f`` and fold ``f``'s chosen hyperparameter (a probe table's ``hyperparameter``
    row) it predicts fold ``f``'s test rows as the probe step did (up to rounding), and given the
    deploy rows (``deploy_rows``) with the ``DEPLOY_FOLD`` hyperparameter it is the probe a user ships. ``y`` is as
    ``probe_layer`` takes it (values, classes, or a multi-label 0/1 matrix whose columns are
    ``classes``).
    """
    if task_type not in METRICS:
        raise InputError(f"task type {task_type!r} is not one of {', '.join(METRICS)}")
    if not np.isfinite(hyperparameter) or hyperparameter <= 0:
        raise InputError(f"hyperparameter {hyperparameter!r} is not a positive number; the layer carries no signal to fit")
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    if task_type == "regression":
        y = np.asarray(y, dtype=np.float64)
        offset = X.mean(axis=0)
        mean, scale, weights, intercept = RidgePath(X, offset, np.array([hyperparameter])).coefficients(np.arange(n), y, hyperparameter)
        return LinearProbe(task_type, offset + mean, scale, weights[:, None], np.array([intercept]), "identity", [], hyperparameter, n)
    if task_type == "classification":
        found = np.unique(y)
        if len(found) < 2:
            raise InputError(f"the training rows hold only class {found[0]!r}; a classifier needs at least two classes")
        span, model = logistic_refit(X, y, found, hyperparameter, max_iter)
        weights = model.weights if span.basis is None else span.basis @ model.weights
        return LinearProbe(task_type, span.mean, span.scale, weights, model.intercept, model.link, [str(c) for c in found], hyperparameter, n)
    Y = np.asarray(y, dtype=int)
    if classes is None or len(classes) != Y.shape[1]:
        raise InputError(f"a multi-label probe needs one class name per column of y ({Y.shape[1]}), got {classes!r}")
    varying, span, model = one_vs_rest_refit(X, Y, hyperparameter, max_iter)
    weights = np.zeros((X.shape[1], Y.shape[1]))
    intercept = np.zeros(Y.shape[1])
    if model is not None:
        weights[:, varying] = model.weights if span.basis is None else span.basis @ model.weights
        intercept[varying] = model.intercept
    constant = [None if v else float(Y[0, j]) for j, v in enumerate(varying)]
    return LinearProbe(task_type, span.mean, span.scale, weights, intercept, "sigmoid", list(classes), hyperparameter, n, constant)
