"""Ridge probes per evaluation fold: standardise + ridge, every alpha from one eigendecomposition per fit.

Invariant: each fold's fit solves exactly the problem of scikit-learn's
``make_pipeline(StandardScaler(), RidgeCV(alphas))`` (leave-one-out inner split,
``reference.reference_ridge``) or of ``GridSearchCV`` over inner folds of whole mutated positions
(``reference.reference_ridge_grouped``) on that fold's training rows only; the work is shared
across folds and alphas, never the data.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from scipy import linalg

from plmexit.errors import InputError
from plmexit.probing import logistic
from plmexit.probing.folds import FoldFit, constant_rows, fit_parts, grid_edge, inner_groups
from plmexit.probing.options import INNER_SPLITS


def ridge_folds(X: np.ndarray, y: np.ndarray, folds: np.ndarray, alphas, score, inner_split: str = "loo", inner_folds: int = 3,
                positions: np.ndarray | None = None) -> list[FoldFit]:
    """Standardise + ridge per evaluation fold, then the deploy fold, every alpha from one eigendecomposition per fit.

    With ``inner_split="loo"`` it equals scikit-learn's
    ``make_pipeline(StandardScaler(), RidgeCV(alphas, scoring=score))`` fitted on each fold's
    training rows (see ``reference_ridge``): one eigendecomposition per fold gives every alpha's
    coefficients, exact leave-one-out predictions (hat-matrix diagonal, intercept included) and
    test predictions, and the inner score is ``score`` of the pooled leave-one-out predictions.
    With ``modulo`` or ``contiguous`` the training rows are split into ``inner_folds`` folds of
    whole mutated positions (``inner_groups``), each inner fit gets every alpha from its own
    eigendecomposition, and the inner score is the mean over inner folds of ``score`` on that
    fold's held-out rows, as scikit-learn's ``GridSearchCV`` scores it (``reference_ridge_grouped``;
    the standard definition for grouped K-fold, whereas leave-one-out pools its predictions). The
    refit on all training rows then needs only the chosen alpha: one linear solve.

    Each fit works on whichever Gram matrix is smaller: with more fitting rows than features the
    standardised feature Gram (``D x D``; one Gram matrix per layer serves every fit, each fit's
    being the total minus its left-out rows'), else the standardised
    row Gram (``n x n``, the kernel form), so a few hundred variants embedded 5,120 wide cost an
    ``n``-sized problem. Ties between alphas go to the first in ``alphas``, as both references.
    Training features that are all one vector give a NaN inner score and hyperparameter.
    """
    if inner_split not in INNER_SPLITS:
        raise InputError(f"inner split {inner_split!r} is not one of {', '.join(INNER_SPLITS)}")
    if inner_split != "loo" and (positions is None or len(positions) != len(y)):
        raise InputError(f"inner split {inner_split!r} needs one mutated position per row")
    X = np.asarray(X, dtype=np.float64)
    # Standardisation makes the fit shift-invariant; centring on the mean of all rows first keeps
    # the Gram matrix free of cancellation when a feature's offset dwarfs its spread.
    offset = X.mean(axis=0)
    y = np.asarray(y, dtype=np.float64)
    alphas = np.asarray(alphas, dtype=np.float64)
    path = RidgePath(X, offset, alphas)
    parts = fit_parts(folds)
    fits = []
    for fold, train, test in parts:
        y_train = y[train]
        if inner_split == "loo":
            fitted, leverage, predict = path.fit(train, y, test, loo=True)
            loo = y_train[:, None] - (y_train[:, None] - fitted) / (1.0 - leverage)
            inner = np.array([score(y_train, loo[:, j]) for j in range(len(alphas))])
            best = int(np.argmax(inner))  # first maximum, as RidgeCV
            predictions = predict(best)
        else:
            groups = inner_groups(np.asarray(positions)[train], inner_split, inner_folds)
            inner = np.zeros(len(alphas))
            for g in range(inner_folds):
                held = train[groups == g]
                held_predictions = path.fit(train[groups != g], y, held)[2](None)  # (n_held, A)
                inner += np.array([score(y[held], held_predictions[:, j]) for j in range(len(alphas))]) / inner_folds
            best = int(np.argmax(inner))  # first maximum, as GridSearchCV
            # The refit needs one alpha only: a linear solve, a fraction of an eigendecomposition's cost.
            predictions = path.fit_one(train, y, test, alphas[best])
        inner_score, alpha = float(inner[best]), float(alphas[best])
        if constant_rows(X[train]):
            inner_score, alpha = float("nan"), float("nan")
        fits.append(FoldFit(fold, test, predictions, inner_score, alpha, grid_edge(alpha, alphas)))
    return fits


class RidgePath:
    """Standardise + ridge fits on row subsets of one layer ``X``, every alpha at once.

    ``Xc`` is the layer centred on the mean of all its rows (``offset``); the feature Gram of
    all rows is computed once, on first need, and each primal fit subtracts its left-out rows'.
    """

    def __init__(self, X: np.ndarray, offset: np.ndarray, alphas: np.ndarray):
        self.X, self.Xc, self.offset, self.alphas = X, X - offset, offset, alphas
        self.total = self.Xc.sum(axis=0)
        self.gram = None

    def fit(self, rows: np.ndarray, y: np.ndarray, predict_rows: np.ndarray, loo: bool = False):
        """Fit on ``rows``; returns (fitted ``(n, A)``, leverage ``(n, A)``, predict), the first two only with ``loo``.

        ``predict(j)`` gives alpha ``j``'s predictions of ``predict_rows``; ``predict(None)`` all alphas' ``(m, A)``.
        """
        mean, scale, standardised_gram = self._standardise(rows)
        X = self.Xc
        if standardised_gram is not None:
            return _ridge_primal(standardised_gram, X[rows], X[predict_rows], mean, scale, y[rows], self.alphas, loo)
        return _ridge_dual((X[rows] - mean) / scale, (X[predict_rows] - mean) / scale, y[rows], self.alphas, loo)

    def fit_one(self, rows: np.ndarray, y: np.ndarray, predict_rows: np.ndarray, alpha: float) -> np.ndarray:
        """Predictions of ``predict_rows`` by the fit on ``rows`` at one ``alpha``: one symmetric solve, primal or dual."""
        mean, scale, weights, y_mean = self.coefficients(rows, y, alpha)
        return y_mean + ((self.Xc[predict_rows] - mean) / scale) @ weights

    def coefficients(self, rows: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """The fit on ``rows`` at one ``alpha``: ``(mean of Xc, scale, weights on standardised features, intercept)``."""
        mean, scale, standardised_gram = self._standardise(rows)
        X = self.Xc
        y_mean = float(y[rows].mean())
        y_centred = y[rows] - y_mean
        if standardised_gram is not None:
            system = standardised_gram + alpha * np.eye(len(scale))
            return mean, scale, linalg.solve(system, (X[rows].T @ y_centred) / scale, assume_a="sym"), y_mean
        S = (X[rows] - mean) / scale
        dual = linalg.solve(S @ S.T + alpha * np.eye(len(rows)), y_centred, assume_a="sym")
        return mean, scale, S.T @ dual, y_mean

    def _standardise(self, rows: np.ndarray):
        """The fit rows' mean (of ``Xc``) and StandardScaler scale, and their standardised feature Gram when ``n >= D`` (else None).

        The scale is StandardScaler's, from the variance of the raw rows: a feature constant on the
        fit rows must get scale 1. Neither the Gram difference nor the centred ``Xc`` would do: both
        leave rounding noise in a constant feature (a one-hot column, 0 on every fit row, is -offset
        there) that would count as spread and be divided by it.
        """
        X = self.Xc
        n, d = len(rows), X.shape[1]
        left_out = np.setdiff1d(np.arange(len(X)), rows, assume_unique=True)
        mean = (self.total - X[left_out].sum(axis=0)) / n
        scale = logistic.feature_scale(self.X[rows].var(axis=0), n, self.offset + mean)
        if n < d:
            return mean, scale, None
        self.gram = X.T @ X if self.gram is None else self.gram
        centred = self.gram - X[left_out].T @ X[left_out] - n * np.outer(mean, mean)  # (D, D): sum over fit rows of (x - mean)(x - mean)^T
        return mean, scale, centred / np.outer(scale, scale)


def _column(values: np.ndarray, j: int | None) -> np.ndarray:
    """Column ``j`` (one alpha's predictions), or every column for ``None``."""
    return values if j is None else values[:, j]


def _ridge_primal(standardised_gram, X_train, X_test, mean, scale, y_train, alphas, loo=True):
    """Every alpha from the eigenvectors of the standardised feature Gram ``(D, D)``."""
    eigenvalues, eigenvectors = np.linalg.eigh(standardised_gram)
    eigenvalues = np.maximum(eigenvalues, 0.0)
    # Rows of X in the eigenbasis of the standardised training data: (x - mean) / scale @ V.
    projection = eigenvectors / scale[:, None]
    shift = mean @ projection
    y_mean = y_train.mean()
    shrink = 1.0 / (eigenvalues[:, None] + alphas[None, :])  # (D, A)
    # P_train^T y_c without forming P_train (n x D) when leave-one-out does not need it.
    coefs = (projection.T @ (X_train.T @ (y_train - y_mean)))[:, None] * shrink  # (D, A)
    predictions = y_mean + (X_test @ projection - shift) @ coefs  # (m, A)
    predict = partial(_column, predictions)
    if not loo:
        return None, None, predict
    P_train = X_train @ projection - shift  # (n, D)
    fitted = y_mean + P_train @ coefs  # (n, A)
    leverage = 1.0 / len(y_train) + (P_train**2) @ shrink  # (n, A): hat-matrix diagonal with the intercept
    return fitted, leverage, predict


def _ridge_dual(S_train, S_test, y_train, alphas, loo=True):
    """Every alpha from the eigenvectors of the standardised row Gram ``K = S S^T`` ``(n, n)``.

    With centred ``S`` the fitted values are ``U diag(l / (l + a)) U^T y_c`` and the hat
    diagonal ``1/n + sum_j U_ij^2 l_j / (l_j + a)``, the same quantities as the primal form.
    """
    eigenvalues, U = np.linalg.eigh(S_train @ S_train.T)
    eigenvalues = np.maximum(eigenvalues, 0.0)
    y_mean = y_train.mean()
    shrink = 1.0 / (eigenvalues[:, None] + alphas[None, :])  # (n, A)
    projected = (U.T @ (y_train - y_mean))[:, None] * shrink  # (n, A): U^T y_c / (l + a)
    predictions = y_mean + (S_test @ S_train.T @ U) @ projected  # (m, A)
    predict = partial(_column, predictions)
    if not loo:
        return None, None, predict
    fitted = y_mean + U @ (eigenvalues[:, None] * projected)
    leverage = 1.0 / len(y_train) + (U**2) @ (eigenvalues[:, None] * shrink)
    return fitted, leverage, predict
