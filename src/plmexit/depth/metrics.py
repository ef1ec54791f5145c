"""ProteinGym's zero-shot metrics, as ``proteingym/performance_DMS_benchmarks.py`` defines them.

Invariant: each function returns what ProteinGym's code returns for the same arrays (ProteinGym
repository, commit bb685245f8f4bb95a5b54b470396c23826cd6284, ``performance_DMS_benchmarks.py``):
Spearman of ``DMS_score`` and the model score (``scipy.stats.spearmanr``); NDCG over the top 10%
by model score with min-max gains of ``DMS_score`` (``calc_ndcg``); top-10% recall
(``calc_toprecall``); ROC AUC of ``DMS_score_bin`` by score (``roc_auc_score``); MCC of
``DMS_score_bin`` against the score cut at its median (``matthews_corrcoef``). Every metric is
higher-is-better. Tested against ProteinGym's functions copied into the tests and scikit-learn.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import rankdata, spearmanr

# ProteinGym's calc_ndcg and calc_toprecall defaults: the top 10% (a percentage).
TOP_PERCENT = 10


def spearman(truth, score) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant side gives NaN, which is the answer
        return float(spearmanr(truth, score).statistic)


def ndcg(truth, score, top: float = TOP_PERCENT) -> float:
    """``calc_ndcg(y_true, y_score)`` with ``quantile=True``: k = floor(n * top / 100); gains are
    min-max scaled ``truth``; ranks by descending score (ties by position, as a double argsort)."""
    truth, score = np.asarray(truth, dtype=float), np.asarray(score, dtype=float)
    k = int(np.floor(truth.shape[0] * (top / 100)))
    gains = (truth - truth.min()) / (truth.max() - truth.min())

    def dcg(order_by: np.ndarray) -> tuple[float, int]:
        ranks = np.argsort(np.argsort(-order_by)) + 1
        keep = (ranks <= k) & (gains != 0)
        return float(np.sum(gains[keep] / np.log2(ranks[keep] + 1))), int(keep.sum())

    found, kept = dcg(score)
    if kept == 0:  # none of the top k has a gain: ProteinGym returns 0
        return 0.0
    return found / dcg(gains)[0]


def top_recall(truth, score, top: float = TOP_PERCENT) -> float:
    """``calc_toprecall``: of the variants at or above truth's (100 - top) percentile, the fraction
    also at or above the score's (100 - top) percentile."""
    truth, score = np.asarray(truth, dtype=float), np.asarray(score, dtype=float)
    top_true = truth >= np.percentile(truth, 100 - top)
    top_model = score >= np.percentile(score, 100 - top)
    return float((top_true & top_model).sum() / top_true.sum()) if top_true.sum() > 0 else 0.0


def auc(binary, score) -> float:
    """ROC AUC of 0/1 ``binary`` by ``score``, ties counted one half (equal to ``roc_auc_score``);
    NaN when one class is absent (where ProteinGym's ``try`` records NaN)."""
    binary, score = np.asarray(binary).astype(int), np.asarray(score, dtype=float)
    positives = int(binary.sum())
    negatives = len(binary) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(score)  # midranks: a tie between a positive and a negative counts 1/2
    return float((ranks[binary == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def mcc(binary, score) -> float:
    """MCC of 0/1 ``binary`` against ``score >= median(score)``; 0 when a margin is empty (as
    ``matthews_corrcoef``)."""
    binary = np.asarray(binary).astype(int)
    score = np.asarray(score, dtype=float)
    predicted = (score >= np.median(score)).astype(int)
    tp = float(np.sum((binary == 1) & (predicted == 1)))
    tn = float(np.sum((binary == 0) & (predicted == 0)))
    fp = float(np.sum((binary == 0) & (predicted == 1)))
    fn = float(np.sum((binary == 1) & (predicted == 0)))
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denominator) if denominator > 0 else 0.0


def zero_shot_metrics(truth, score, binary=None) -> dict[str, float]:
    """ProteinGym's zero-shot metrics of one score column: Spearman, NDCG and top recall always;
    AUC and MCC where the assay has ``DMS_score_bin`` (``binary``)."""
    out = {"spearman": spearman(truth, score), "ndcg": ndcg(truth, score), "top_recall": top_recall(truth, score)}
    if binary is not None:
        out["auc"] = auc(binary, score)
        out["mcc"] = mcc(binary, score)
    return out
