"""Linear probes on one layer's embeddings, per evaluation fold.

Invariant: for test fold ``f`` everything that is fitted or chosen — the scaler, the
regularisation strength, and the ``inner_<metric>`` score that layer selection later uses — sees
only the training rows (``fold != f``). The test rows are touched once, to score the refitted
probe. Inner folds mimic the outer scheme: where the outer folds hold out whole mutated positions
(ProteinGym's modulo and contiguous schemes), so do the inner ones (``inner_groups``), else the
inner score rewards features that memorise positions. Each probe solves a stock scikit-learn
pipeline's problem (``plmexit.probing.reference``: ``reference_ridge``, ``reference_ridge_grouped``,
``reference_logistic``) but shares work across folds and regularisation strengths; probes do no
file I/O.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy import linalg
from scipy.special import expit
from scipy.stats import spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, mean_squared_error
from sklearn.model_selection import StratifiedKFold

from plmexit.data.tasks import TRAIN_ONLY_FOLD
from plmexit.errors import InputError
from plmexit.probing import logistic
from plmexit.probing.linear import LinearProbe
from plmexit.probing.options import DEFAULT_LOGISTIC_CS, DEFAULT_RIDGE_ALPHAS, INNER_SPLITS  # noqa: F401 - re-exported: the probes' settings

INNER_PREFIX = "inner_"
# Probe-table fold of the selection procedure run on the deploy rows (``deploy_rows``; the layer a
# user ships): only ``inner_<metric>`` and the hyperparameter rows, no test metrics.
DEPLOY_FOLD = -1
# Probe-table metrics that are not scores: the chosen ridge alpha / logistic C, and where it sits
# on its grid (-1 lowest value, +1 highest, 0 inside).
HYPERPARAMETER = "hyperparameter"
HYPERPARAMETER_EDGE = "hyperparameter_edge"


# Predictions closer than this, relative to their largest magnitude, are one tied value to Spearman.
# Probes that predict exactly equal values (a one-hot's rows whose every varying column is unseen
# in training, e.g. all variants at a held-out position) return them with rounding noise of
# ~1e-16 relative, and ranking that noise gives a random correlation instead of the ties' 0.
PREDICTION_TIE_TOLERANCE = 1e-10


def spearman(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Spearman's rho, predictions within ``PREDICTION_TIE_TOLERANCE`` tied; 0.0 when either side is constant (no rank information)."""
    y_pred = _snap_ties(np.asarray(y_pred, dtype=np.float64))
    if np.ptp(y_true) == 0 or np.ptp(y_pred) == 0:
        return 0.0
    return float(spearmanr(y_true, y_pred).statistic)


def _snap_ties(values: np.ndarray) -> np.ndarray:
    """``values`` with each run of sorted neighbours closer than the tolerance replaced by the run's first value."""
    if len(values) < 2 or not np.all(np.isfinite(values)):
        return values
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    new_run = np.concatenate([[True], np.diff(ordered) > PREDICTION_TIE_TOLERANCE * np.max(np.abs(ordered))])
    snapped = np.empty_like(values)
    snapped[order] = ordered[np.flatnonzero(new_run)[np.cumsum(new_run) - 1]]
    return snapped


# Protein-centric Fmax as DeepFRI scores EC numbers (``Method._cafa_ec_aupr`` of its evaluation
# script; tests/probing/test_fmax_deepfri.py holds a line-by-line copy): thresholds 0.01, ..., 0.99
# (``t / 100.0`` for t in 1..99) and a class is called when its score is strictly above the
# threshold. CAFA's evaluator (BioComputingUP/CAFA-evaluator) calls at ``>=`` on a 0.01 grid up to
# 0.99; DeepFRI's numbers follow ``>``.
FMAX_THRESHOLDS = np.arange(1, 100) / 100
# Micro and macro F1 of a multi-label probe call a class when its probability reaches this.
MULTILABEL_THRESHOLD = 0.5


def fmax(truth: np.ndarray, scores: np.ndarray) -> float:
    """Protein-centric maximum F-measure of per-class scores ``(n, K)`` against 0/1 truth ``(n, K)``.

    DeepFRI's published EC scoring: at each threshold ``t`` in ``FMAX_THRESHOLDS`` a class is
    called when its score is ``> t``; precision is averaged over the items with at least one class
    called, recall is summed over the items with at least one true class and divided by all ``n``
    items (an item with no true class counts as recall 0). Fmax is the best harmonic mean over the
    thresholds where something is called. Where nothing is ever called or no call is right,
    DeepFRI's script has no threshold to take the maximum over (it raises); this returns 0.0.
    Scores are compared in their own floating precision, as NumPy compares DeepFRI's
    ``preds > t / 100.0``.
    """
    truth = np.asarray(truth, dtype=bool)
    scores = np.asarray(scores)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    called = scores[None, :, :] > FMAX_THRESHOLDS.astype(scores.dtype)[:, None, None]  # (T, n, K)
    hits = (called & truth[None]).sum(axis=2)
    n_called = called.sum(axis=2)
    n_true = truth.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n_called > 0, hits / n_called, 0.0).sum(axis=1) / np.maximum((n_called > 0).sum(axis=1), 1)
        recall = np.where(n_true > 0, hits / n_true, 0.0).sum(axis=1) / max(len(truth), 1)
        f = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(f.max())


def _thresholded_f1(average: str):
    return lambda truth, scores: f1_score(np.asarray(truth, dtype=int), np.asarray(scores) >= MULTILABEL_THRESHOLD, average=average, zero_division=0.0)


METRICS = {
    "regression": {"spearman": spearman, "mse": mean_squared_error},
    "classification": {
        "accuracy": accuracy_score,
        "macro_f1": lambda t, p: f1_score(t, p, average="macro", zero_division=0.0),
        "mcc": matthews_corrcoef,
    },
    # Truth is a 0/1 matrix (items x classes), predictions are per-class probabilities.
    "multilabel": {"fmax": fmax, "micro_f1": _thresholded_f1("micro"), "macro_f1": _thresholded_f1("macro")},
}


# The classification metrics from a confusion matrix ``C`` (rows truth, columns prediction, over
# the labels of truth and prediction together), by scikit-learn's own formulas, so equal to
# ``METRICS["classification"]`` (tested): the bootstrap scores thousands of resamples, and
# scikit-learn's input checks cost ~100x the arithmetic on a few hundred items.
def _accuracy_from_confusion(c: np.ndarray) -> float:
    return float(np.trace(c) / c.sum())


def _macro_f1_from_confusion(c: np.ndarray) -> float:
    true_sum, pred_sum = c.sum(axis=1), c.sum(axis=0)
    present = (true_sum + pred_sum) > 0  # scikit-learn averages over the labels that occur in either
    return float(np.mean(2.0 * np.diag(c)[present] / (true_sum + pred_sum)[present]))


def _mcc_from_confusion(c: np.ndarray) -> float:
    t_sum, p_sum = c.sum(axis=1, dtype=np.float64), c.sum(axis=0, dtype=np.float64)
    n = p_sum.sum()
    cov_ytyp = np.trace(c) * n - np.dot(t_sum, p_sum)
    cov_ypyp = n**2 - np.dot(p_sum, p_sum)
    cov_ytyt = n**2 - np.dot(t_sum, t_sum)
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / np.sqrt(cov_ytyt * cov_ypyp))


CONFUSION_METRICS = {"accuracy": _accuracy_from_confusion, "macro_f1": _macro_f1_from_confusion, "mcc": _mcc_from_confusion}


def confusion(truth_codes: np.ndarray, predicted_codes: np.ndarray, n_labels: int) -> np.ndarray:
    """``(n_labels, n_labels)`` counts of integer-coded labels: rows truth, columns prediction."""
    return np.bincount(truth_codes * n_labels + predicted_codes, minlength=n_labels * n_labels).reshape(n_labels, n_labels)


# Orientation of every metric written to a probe table; selection only ever maximises.
HIGHER_IS_BETTER = {"spearman": True, "mse": False, "accuracy": True, "macro_f1": True, "mcc": True, "fmax": True, "micro_f1": True}


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


def evaluation_folds(folds: np.ndarray) -> list[int]:
    """Fold ids that serve as a test part (``-1`` marks train-only rows)."""
    return sorted(int(f) for f in np.unique(folds) if f >= 0)


def fit_parts(folds: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """``(fold, training rows, test rows)`` of every evaluation fold, in fold order, then the deploy fold's
    (``DEPLOY_FOLD``: ``deploy_rows``, no test rows): what every probe and baseline is fitted on."""
    parts = [(fold, np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)) for fold in evaluation_folds(folds)]
    return parts + [(DEPLOY_FOLD, deploy_rows(folds), np.arange(0))]


def deploy_rows(folds: np.ndarray) -> np.ndarray:
    """Indices of the rows the deployed layer and the shipped probe are fitted on: rows that are never a test row.

    Where some rows are train-only (fold ``-1``: an official train/test split's training file)
    those rows, so an official test file never chooses the deployed layer or fits its probe (for
    a train/test split this is fold 0's training part). Where every row is a test row of some fold
    (cross-validation) there are no such rows, and every row is used: each then trains the
    shipped probe, and the nested score, not this fit, is the held-out estimate.
    """
    folds = np.asarray(folds)
    train_only = np.flatnonzero(folds == TRAIN_ONLY_FOLD)
    return train_only if len(train_only) else np.arange(len(folds))


@dataclass
class FoldFit:
    """One fold's probe: test-row predictions and what was chosen on the training rows.

    The fold ``DEPLOY_FOLD`` is the same procedure on the deploy rows (``deploy_rows``; the probe a
    user ships): it has no test rows, so ``test`` and ``predictions`` are empty.
    """

    fold: int
    test: np.ndarray  # indices of the test rows
    predictions: np.ndarray  # (n_test,), or (n_test, K) class probabilities for a multi-label task
    inner_score: float  # training-only cross-validated score of the chosen hyperparameter; NaN when the features are constant
    hyperparameter: float  # ridge alpha or logistic C; NaN when the features are constant (nothing to choose)
    edge: float = 0.0  # where the chosen value sits on its grid: -1 smallest, +1 largest, 0 inside, NaN when none was chosen


def grid_edge(value: float, grid) -> float:
    """-1.0 if ``value`` is the smallest of ``grid``, +1.0 the largest, 0.0 inside (or a one-value grid), NaN for NaN."""
    if np.isnan(value):
        return float("nan")
    if len(set(grid)) < 2:
        return 0.0
    return -1.0 if value == min(grid) else 1.0 if value == max(grid) else 0.0


def _constant_rows(X: np.ndarray) -> bool:
    """True when every row is the same vector: the layer carries nothing a probe could use."""
    return len(X) == 0 or not np.any(X != X[0])


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
        fit = _one_vs_rest if settings.task_type == "multilabel" else _logistic
        predict, inner_score, c = fit(X[train], y[train], settings)
        if _constant_rows(X[train]):
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


def inner_groups(positions: np.ndarray, split: str, k: int) -> np.ndarray:
    """Inner fold (0..k-1) of each training row, by the rule of the outer scheme applied to its positions.

    ``modulo``: the distinct positions, sorted, take folds by rank mod ``k`` (the modulo rule on
    the ranks of the positions present, as RASK's published column numbers them; most published
    columns use the position itself mod 5, which inside outer modulo-5 fold ``f`` would leave
    inner fold ``f`` empty with ``k = 5``, and folds unbalanced on sparse scans). ``contiguous``:
    the sorted distinct positions are cut into ``k`` consecutive blocks, the first ``n mod k``
    one position longer, as ``proteingym.make_folds`` cuts 5.
    """
    distinct, rank = np.unique(np.asarray(positions), return_inverse=True)
    if len(distinct) < k:
        raise InputError(
            f"a training part has {len(distinct)} mutated positions, fewer than {k} inner folds of whole positions; "
            "lower probe.inner_folds (--inner-folds) or use --inner-split loo"
        )
    if split == "modulo":
        return rank % k
    size, extra = divmod(len(distinct), k)
    blocks = np.concatenate([[f] * (size + (f < extra)) for f in range(k)]).astype(int)
    return blocks[rank]


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
    path = _RidgePath(X, offset, alphas)
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
        if _constant_rows(X[train]):
            inner_score, alpha = float("nan"), float("nan")
        fits.append(FoldFit(fold, test, predictions, inner_score, alpha, grid_edge(alpha, alphas)))
    return fits


class _RidgePath:
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


def _logistic(X: np.ndarray, y: np.ndarray, settings: ProbeSettings):
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
    span, model = _logistic_refit(X, y, classes, cs[best], settings.max_iter)
    return (lambda X_new: _classes_of(model.logits(span.transform(X_new)), classes)), float(mean[best]), float(cs[best])


def _logistic_refit(X: np.ndarray, y: np.ndarray, classes: np.ndarray, c: float, max_iter: int):
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


def _multilabel_splits(Y: np.ndarray, settings: ProbeSettings) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inner (fit rows, score rows) of a multi-label training part, stratified by each row's rarest class."""
    counts = Y.sum(axis=0)
    rarest = np.array([min(np.flatnonzero(row), key=lambda k: (counts[k], k)) if row.any() else -1 for row in Y])
    inner = StratifiedKFold(n_splits=max(2, min(settings.inner_folds, int(np.bincount(rarest + 1).max()))), shuffle=True, random_state=settings.seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        return list(inner.split(Y, rarest))


def _one_vs_rest(X: np.ndarray, Y: np.ndarray, settings: ProbeSettings):
    """Standardise + one binary logistic regression per class (one-vs-rest), one C for all classes.

    C is chosen by inner K-fold on these rows (split stratified by each row's rarest class),
    walking the grid with warm starts as ``_logistic`` does. A class that is absent, or present in
    every row, of a fitting part gets its constant frequency as probability. Returns
    (predict: X -> (n, K) probabilities, inner score, C).
    """
    Y = np.asarray(Y, dtype=int)
    score = METRICS["multilabel"][settings.selection_metric]
    cs = sorted(settings.logistic_cs)
    splits = _multilabel_splits(Y, settings)
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
    varying, span, model = _one_vs_rest_refit(X, Y, cs[best], settings.max_iter)

    def predict(X_new: np.ndarray) -> np.ndarray:
        probabilities = np.tile(Y[0].astype(np.float64), (len(X_new), 1))
        if model is not None:
            probabilities[:, varying] = model.probabilities(span.transform(X_new))
        return probabilities

    return predict, float(mean[best]), float(cs[best])


def _one_vs_rest_refit(X: np.ndarray, Y: np.ndarray, c: float, max_iter: int):
    """The one-vs-rest classifiers on all of ``X`` at one C: ``(varying, span, model)``; ``model`` is
    None when no class varies (every probability is then the constant of ``Y``'s first row)."""
    varying = Y.min(axis=0) != Y.max(axis=0)
    span, F = logistic.row_span(X)
    model = logistic.fit(F, Y[:, varying].astype(np.float64), c, "sigmoid", max_iter=max_iter) if varying.any() else None
    return varying, span, model


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
        mean, scale, weights, intercept = _RidgePath(X, offset, np.array([hyperparameter])).coefficients(np.arange(n), y, hyperparameter)
        return LinearProbe(task_type, offset + mean, scale, weights[:, None], np.array([intercept]), "identity", [], hyperparameter, n)
    if task_type == "classification":
        found = np.unique(y)
        if len(found) < 2:
            raise InputError(f"the training rows hold only class {found[0]!r}; a classifier needs at least two classes")
        span, model = _logistic_refit(X, y, found, hyperparameter, max_iter)
        weights = model.weights if span.basis is None else span.basis @ model.weights
        return LinearProbe(task_type, span.mean, span.scale, weights, model.intercept, model.link, [str(c) for c in found], hyperparameter, n)
    Y = np.asarray(y, dtype=int)
    if classes is None or len(classes) != Y.shape[1]:
        raise InputError(f"a multi-label probe needs one class name per column of y ({Y.shape[1]}), got {classes!r}")
    varying, span, model = _one_vs_rest_refit(X, Y, hyperparameter, max_iter)
    weights = np.zeros((X.shape[1], Y.shape[1]))
    intercept = np.zeros(Y.shape[1])
    if model is not None:
        weights[:, varying] = model.weights if span.basis is None else span.basis @ model.weights
        intercept[varying] = model.intercept
    constant = [None if v else float(Y[0, j]) for j, v in enumerate(varying)]
    return LinearProbe(task_type, span.mean, span.scale, weights, intercept, "sigmoid", list(classes), hyperparameter, n, constant)
