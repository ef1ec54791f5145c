"""The metrics every probe table holds, per task type, and which way each is better.

Invariant: every metric is a function of (truth, prediction) on test rows alone, and
``HIGHER_IS_BETTER`` gives each one's orientation (layer selection only ever maximises, so a
selection metric is always a higher-is-better one). ``CONFUSION_METRICS`` compute the
classification metrics from a confusion matrix by scikit-learn's own formulas, equal to
``METRICS["classification"]`` (tested).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, mean_squared_error

# Predictions closer than this, relative to their largest magnitude, are one tied value to Spearman.
# Probes that predict exactly equal values (a one-hot's rows whose every varying column is unseen
# in training, e.g. all variants at a held-out position) return them with rounding noise of
# ~1e-16 relative, and ranking that noise gives a random correlation instead of the ties' 0.
PREDICTION_TIE_TOLERANCE = 1e-10


def spearman(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Spearman's rho, predictions within ``PREDICTION_TIE_TOLERANCE`` tied; 0.0 when either side is constant (no rank information).

    Computed as ``scipy.stats.spearmanr`` computes it for two vectors, without its checks and dispatch (a
    bootstrap scores thousands of resamples, where those cost more than the arithmetic): both sides stacked as columns,
    ranked with ties given their average rank (``scipy.stats.rankdata``'s default), and the Pearson
    correlation of the ranks from ``np.corrcoef``. The ranks are exact, so the value is scipy's to the
    last bit (tests/probing/test_metrics.py); a NaN on either side gives NaN, as scipy's default does.
    """
    y_pred = _snap_ties(np.asarray(y_pred, dtype=np.float64))
    if np.ptp(y_true) == 0 or np.ptp(y_pred) == 0:
        return 0.0
    pair = np.column_stack((y_true, y_pred))
    if np.isnan(pair).any():
        return float("nan")
    ranked = np.column_stack((_average_ranks(pair[:, 0]), _average_ranks(pair[:, 1])))
    return float(np.corrcoef(ranked, rowvar=False)[1, 0])


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of their ranks (``scipy.stats.rankdata(values)``, by its own algorithm)."""
    order = np.argsort(values)
    ordered = values[order]
    first = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    dense = np.empty(len(values), dtype=np.intp)
    dense[order] = np.cumsum(first)
    edges = np.concatenate((np.flatnonzero(first), [len(values)]))
    return 0.5 * (edges[dense] + edges[dense - 1] + 1)


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
    return fmax_of_terms(fmax_terms(truth, scores))


def fmax_terms(truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Each item's terms of ``fmax`` at every threshold, ``(n, 3, T)``: its precision (0 where it has no call),
    whether it has a call, and its recall (0 where it has no true class). Fmax of any multiset of the items
    (a bootstrap resample) is ``fmax_of_terms`` of their rows, without comparing their ``K`` scores again."""
    truth = np.asarray(truth, dtype=bool)
    scores = np.asarray(scores)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    called = scores[None, :, :] > FMAX_THRESHOLDS.astype(scores.dtype)[:, None, None]  # (T, n, K)
    hits = (called & truth[None]).sum(axis=2)
    n_called = called.sum(axis=2)
    n_true = truth.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(n_called > 0, hits / n_called, 0.0), n_called > 0, np.where(n_true > 0, hits / n_true, 0.0)
    return np.stack(terms, axis=1).transpose(2, 1, 0)  # (n, 3, T): an item's rows index like its truth and scores


def fmax_of_terms(terms: np.ndarray) -> float:
    """``fmax`` of the items whose ``fmax_terms`` rows are ``terms``: each threshold's sums over the items in
    their order, as ``fmax`` sums them."""
    precision, has_call, recall = np.ascontiguousarray(np.asarray(terms, dtype=np.float64).transpose(1, 2, 0))  # each (T, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = precision.sum(axis=1) / np.maximum(has_call.sum(axis=1), 1)
        recall = recall.sum(axis=1) / max(terms.shape[0], 1)
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
