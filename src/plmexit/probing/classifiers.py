"""Logistic and one-vs-rest probes of one training part: C chosen by inner stratified K-fold on that part, then refit.

Invariant: the inner folds that choose C split only the rows given (a fold's training rows, or the
deploy rows), and every fit minimises scikit-learn's ``LogisticRegression`` objective on
``StandardScaler``-standardised features (``logistic``, which solves it over the span of the
rows); the C path is walked from strongest to weakest regularisation with warm starts, and ties
go to the strongest. A multi-label task fits one sigmoid per label (one-vs-rest) with one C.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import expit
from sklearn.model_selection import StratifiedKFold

from plmexit.errors import InputError
from plmexit.probing import logistic
from plmexit.probing.metrics import METRICS

if TYPE_CHECKING:
    from plmexit.probing.probes import ProbeSettings


def logistic_probe(X: np.ndarray, y: np.ndarray, settings: ProbeSettings):
    """Standardise + logistic regression (multinomial, or one sigmoid for two classes), C by inner stratified CV.

    Returns (predict: X -> labels, inner score, C).
    """
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise InputError(f"a training part holds only class {classes[0]!r}; a classifier needs at least two classes")
    score = METRICS["classification"][settings.selection_metric]
    cs = sorted(settings.logistic_cs)
    inner = StratifiedKFold(n_splits=max(2, min(settings.inner_folds, int(counts.max()))), shuffle=True, random_state=settings.seed)
    scores = np.zeros((inner.get_n_splits(), len(cs)))
    with warnings.catch_warnings():
        # Rare classes make some inner folds lack a class; scores there are still valid.
        warnings.filterwarnings("ignore", message="The least populated class")
        splits = list(inner.split(X, y))
    for i, (fit_rows, score_rows) in enumerate(splits):
        present = np.unique(y[fit_rows])
        if len(present) == 1:
            # A class with a single training member leaves one inner fit part with one class:
            # the only classifier it supports predicts that class, whatever C is.
            scores[i, :] = score(y[score_rows], np.repeat(present, len(score_rows)))
            continue
        Y, link = _class_targets(y[fit_rows], present)
        for j, logits in enumerate(_c_path(X[fit_rows], Y, X[score_rows], cs, link, settings)):
            scores[i, j] = score(y[score_rows], _classes_of(logits, present))
    mean = scores.mean(axis=0)
    best = int(np.argmax(mean))  # first maximum: the strongest regularisation among ties
    span, model = logistic_refit(X, y, classes, cs[best], settings.max_iter)
    return (lambda X_new: _classes_of(model.logits(span.transform(X_new)), classes)), float(mean[best]), float(cs[best])


def logistic_refit(X: np.ndarray, y: np.ndarray, classes: np.ndarray, c: float, max_iter: int):
    """The classifier on all of ``X`` at one C: ``(span, model)``."""
    span, F = logistic.row_span(X)
    Y, link = _class_targets(y, classes)
    return span, logistic.fit(F, Y, c, link, max_iter=max_iter)


def _class_targets(y: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, str]:
    """0/1 targets and link as scikit-learn fits them: one sigmoid column for two classes, else one-hot softmax."""
    if len(classes) == 2:
        return (y == classes[1]).astype(np.float64)[:, None], "sigmoid"
    return (y[:, None] == classes[None, :]).astype(np.float64), "softmax"


def _classes_of(logits: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Predicted labels from ``_class_targets``-shaped logits (a positive sigmoid logit is the second class)."""
    if logits.shape[1] == 1:
        return np.where(logits[:, 0] > 0, classes[1], classes[0])
    return classes[np.argmax(logits, axis=1)]


def _c_path(X_fit: np.ndarray, Y: np.ndarray, X_score: np.ndarray, cs, link: str, settings: ProbeSettings):
    """Logits of the score rows at each C of ``cs`` (ascending), fitted on the fit rows only.

    One standardisation and row span serves the whole path, which is walked from strongest to
    weakest regularisation with warm starts, so each fit starts near its solution.
    """
    span, F = logistic.row_span(X_fit)
    F_score = span.transform(X_score)
    model = None
    for c in cs:
        model = logistic.fit(F, Y, c, link, model, settings.max_iter)
        yield model.logits(F_score)


def multilabel_splits(Y: np.ndarray, settings: ProbeSettings) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inner (fit rows, score rows) of a multi-label training part, stratified by each row's rarest class."""
    counts = Y.sum(axis=0)
    rarest = np.array([min(np.flatnonzero(row), key=lambda k: (counts[k], k)) if row.any() else -1 for row in Y])
    inner = StratifiedKFold(n_splits=max(2, min(settings.inner_folds, int(np.bincount(rarest + 1).max()))), shuffle=True, random_state=settings.seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        return list(inner.split(Y, rarest))


def one_vs_rest_probe(X: np.ndarray, Y: np.ndarray, settings: ProbeSettings):
    """Standardise + one binary logistic regression per class (one-vs-rest), one C for all classes.

    C is chosen by inner K-fold on these rows (split stratified by each row's rarest class),
    walking the grid with warm starts as ``logistic_probe`` does. A class that is absent, or present in
    every row, of a fitting part gets its constant frequency as probability. Returns
    (predict: X -> (n, K) probabilities, inner score, C).
    """
    Y = np.asarray(Y, dtype=int)
    score = METRICS["multilabel"][settings.selection_metric]
    cs = sorted(settings.logistic_cs)
    splits = multilabel_splits(Y, settings)
    scores = np.zeros((len(splits), len(cs)))
    for i, (fit_rows, score_rows) in enumerate(splits):
        target = Y[fit_rows]
        varying = target.min(axis=0) != target.max(axis=0)
        probabilities = np.tile(target[0].astype(np.float64), (len(score_rows), 1))
        if not varying.any():
            scores[i, :] = score(Y[score_rows], probabilities)
            continue
        for j, logits in enumerate(_c_path(X[fit_rows], target[:, varying].astype(np.float64), X[score_rows], cs, "sigmoid", settings)):
            probabilities[:, varying] = expit(logits)
            scores[i, j] = score(Y[score_rows], probabilities)
    mean = scores.mean(axis=0)
    best = int(np.argmax(mean))  # first maximum: the strongest regularisation among ties
    varying, span, model = one_vs_rest_refit(X, Y, cs[best], settings.max_iter)

    def predict(X_new: np.ndarray) -> np.ndarray:
        probabilities = np.tile(Y[0].astype(np.float64), (len(X_new), 1))
        if model is not None:
            probabilities[:, varying] = model.probabilities(span.transform(X_new))
        return probabilities

    return predict, float(mean[best]), float(cs[best])


def one_vs_rest_refit(X: np.ndarray, Y: np.ndarray, c: float, max_iter: int):
    """The one-vs-rest classifiers on all of ``X`` at one C: ``(varying, span, model)``; ``model`` is
    None when no class varies (every probability is then the constant of ``Y``'s first row)."""
    varying = Y.min(axis=0) != Y.max(axis=0)
    span, F = logistic.row_span(X)
    model = logistic.fit(F, Y[:, varying].astype(np.float64), c, "sigmoid", max_iter=max_iter) if varying.any() else None
    return varying, span, model
