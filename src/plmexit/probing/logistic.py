"""Standardise + L2 logistic regression, solved in the span of the training rows.

Invariant: every fit minimises exactly scikit-learn's ``LogisticRegression(C=C)`` objective on
``StandardScaler``-standardised features — mean log-loss plus ``||W||^2 / (2 C n)``, intercepts
unpenalised, multinomial for three or more classes and a single sigmoid for two — with the same
L-BFGS-B solver and stopping rule, so the optimum is scikit-learn's (``benchmarks/probe_speed.py``
measures the agreement). Only the coordinates and the solver's path change (``fit``: a diagonal
preconditioner, two to three times fewer evaluations on embeddings): with fewer rows than features, the optimal
weights lie in the span of the standardised training rows (the gradient of every term does), so
the problem is solved over that span's ``n`` orthonormal coordinates instead of ``d`` features.
The sigmoid link also fits several independent binary problems (one-vs-rest) as one: their
objectives add up and share no parameter.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.exceptions import ConvergenceWarning

# Directions of the training rows with a variance below this fraction of the largest carry no
# signal a probe can use (float16 storage alone adds noise far above it) and would only make the
# row-Gram eigenvectors inaccurate. The optimal weight along a direction is proportional to its
# singular value, here under 1e-5 of the largest, so dropping them changes no logit measurably.
SPAN_TOLERANCE = 1e-10
# scikit-learn's defaults for the lbfgs solver (``tol`` and its fixed line-search settings).
TOLERANCE = 1e-4
LINE_SEARCH_STEPS = 50
RELATIVE_FTOL = 64 * np.finfo(np.float64).eps


def feature_scale(variance: np.ndarray, n: int, mean: np.ndarray) -> np.ndarray:
    """StandardScaler's scale: the standard deviation, or 1 for a constant feature.

    A feature counts as constant within StandardScaler's bound on the rounding error of a
    constant column's variance: (n * eps * |value|)^2.
    """
    scale = np.sqrt(np.maximum(variance, 0.0))
    constant = variance <= (n * np.finfo(np.float64).eps * np.abs(mean)) ** 2 + np.finfo(np.float64).tiny
    scale[constant] = 1.0
    return scale


@dataclass(frozen=True)
class RowSpan:
    """StandardScaler fitted on training rows, then the orthonormal basis of those rows' span.

    ``basis`` is ``(d, r)`` with ``r <= n``, or ``None`` when there are at least as many rows as
    features (the span is then all of feature space and the features are used as they are).
    """

    mean: np.ndarray
    scale: np.ndarray
    basis: np.ndarray | None

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Rows ``(m, d)`` as coordinates ``(m, r)`` of their standardised features in the span."""
        S = (np.asarray(X, dtype=np.float64) - self.mean) / self.scale
        return S if self.basis is None else S @ self.basis


def row_span(X: np.ndarray) -> tuple[RowSpan, np.ndarray]:
    """Standardise ``X`` (training rows) and return the basis with the rows' own coordinates."""
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    mean = X.mean(axis=0)
    scale = feature_scale(X.var(axis=0), n, mean)
    S = (X - mean) / scale
    if n >= d:
        return RowSpan(mean, scale, None), S
    eigenvalues, U = np.linalg.eigh(S @ S.T)  # (n, n) row Gram; S = U diag(sqrt(l)) V^T
    keep = eigenvalues > eigenvalues[-1] * SPAN_TOLERANCE
    root = np.sqrt(eigenvalues[keep])
    basis = S.T @ (U[:, keep] / root)  # (d, r): V, orthonormal columns
    return RowSpan(mean, scale, basis), U[:, keep] * root


@dataclass(frozen=True)
class LinearModel:
    """Weights ``(r, K)`` over a ``RowSpan``'s coordinates and intercepts ``(K,)``."""

    weights: np.ndarray
    intercept: np.ndarray
    link: str  # "softmax": one column per class; "sigmoid": one independent binary column each

    def logits(self, F: np.ndarray) -> np.ndarray:
        """Logits ``(m, K)`` of rows given as span coordinates ``(m, r)`` (``span.transform``)."""
        return F @ self.weights + self.intercept

    def probabilities(self, F: np.ndarray) -> np.ndarray:
        """Class probabilities ``(m, K)`` of rows given as span coordinates."""
        Z = self.logits(F)
        if self.link == "sigmoid":
            return expit(Z)
        E = np.exp(Z - Z.max(axis=1, keepdims=True))
        return E / E.sum(axis=1, keepdims=True)


def fit(F: np.ndarray, Y: np.ndarray, C: float, link: str, start: LinearModel | None = None,
    max_iter: int = 2000, tol: float = TOLERANCE) -> LinearModel:
    """Minimise the probe objective over span coordinates ``F`` ``(n, r)`` for 0/1 targets ``Y`` ``(n, K)``.

    ``link`` is ``"softmax"`` (``Y`` one-hot, multinomial) or ``"sigmoid"`` (each column its own
    binary problem). ``start`` warm-starts from another fit over the same coordinates, as
    scikit-learn's ``warm_start`` does along a path of ``C``.

    The stopping rule is scikit-learn's: every gradient entry over ``F``'s coordinates (and the
    intercepts) at most ``tol``, or the objective's relative decrease below ``RELATIVE_FTOL``. The
    path L-BFGS-B takes to it is preconditioned (``diagonal_scale``): the weights are searched for
    in coordinates scaled to the objective's curvature along each of ``F``'s columns, which takes
    far fewer steps where the columns' scales spread over orders of magnitude, as a row span's
    principal coordinates do. The optimum is the same problem's; only the iterates differ.
    """
    n, r = F.shape
    K = Y.shape[1]
    penalty = 1.0 / (C * n)
    scale = diagonal_scale(F, penalty)
    Fs = F * scale
    # Column-major F^T is what BLAS reads fastest for the gradient's F^T G.
    Ft = np.ascontiguousarray(F.T)
    largest = [np.inf]  # the largest gradient entry at the last point evaluated, in F's coordinates

    def loss_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        V, b = theta[: r * K].reshape(r, K), theta[r * K:]
        W = V * scale[:, None]
        Z = Fs @ V + b  # (n, K), = F @ W + b
        if link == "softmax":
            top = Z.max(axis=1, keepdims=True)
            E = np.exp(Z - top)
            total = E.sum(axis=1, keepdims=True)
            loss = float(np.sum(np.log(total) + top) - np.sum(Z * Y))
            G = E / total - Y
        else:
            loss = float(np.sum(np.logaddexp(0.0, Z)) - np.sum(Z * Y))
            G = expit(Z) - Y
        G /= n
        gradient_W = Ft @ G + penalty * W
        gradient_b = G.sum(axis=0)
        largest[0] = max(float(np.abs(gradient_W).max(initial=0.0)), float(np.abs(gradient_b).max()))
        return loss / n + 0.5 * penalty * float(np.sum(W * W)), np.concatenate(((gradient_W * scale[:, None]).ravel(), gradient_b))

    def stop_when_converged(intermediate_result) -> None:
        # Called after each iteration, whose point is the last one evaluated (the line search's accepted step);
        # scipy passes the OptimizeResult by this parameter's name and ends the run on StopIteration.
        if largest[0] <= tol:
            raise StopIteration

    if start is None:
        theta = np.zeros(r * K + K)
    else:
        theta = np.concatenate(((start.weights / scale[:, None]).ravel(), start.intercept))
    # L-BFGS-B's own gradient test runs over the scaled coordinates; this bound makes it imply the rule above.
    scaled_tol = tol * min(1.0, float(scale.min(initial=1.0)))
    result = minimize(loss_gradient, theta, jac=True, method="L-BFGS-B", callback=stop_when_converged,
                      options={"maxiter": max_iter, "maxls": LINE_SEARCH_STEPS, "gtol": scaled_tol, "ftol": RELATIVE_FTOL})
    if result.status == 1:
        warnings.warn(f"logistic probe at C={C:g} stopped after {max_iter} iterations before converging", ConvergenceWarning, stacklevel=2)
    return LinearModel(result.x[: r * K].reshape(r, K) * scale[:, None], result.x[r * K:], link)


def diagonal_scale(F: np.ndarray, penalty: float) -> np.ndarray:
    """Per-column scale ``(r,)`` that makes the objective's curvature about one along each of ``F``'s columns.

    The Hessian's diagonal entry for a weight on column ``j`` is ``sum_i p_i (1 - p_i) F_ij^2 / n + penalty``,
    at most ``||F_j||^2 / (4 n) + penalty`` (``p (1 - p) <= 1/4``); weights are searched for as
    ``W = scale * V``. On a row span's principal coordinates the columns are orthogonal, so the data
    term's curvature is diagonal up to the probabilities' variation.
    """
    squares = np.einsum("ij,ij->j", F, F)
    return 1.0 / np.sqrt(squares / (4.0 * len(F)) + penalty)

