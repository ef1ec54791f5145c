"""ProteinGym's zero-shot metrics equal ProteinGym's own functions (copied below) and scikit-learn's."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import matthews_corrcoef, roc_auc_score

from plmexit.depth import metrics


# --- proteingym/performance_DMS_benchmarks.py, ProteinGym commit bb685245f8f4bb95a5b54b470396c23826cd6284, verbatim ---
def minmax(x):
    return ( (x - np.min(x)) / (np.max(x) - np.min(x)) )  # noqa: E201, E202


def calc_ndcg(y_true, y_score, **kwargs):
    if 'quantile' not in kwargs:
        kwargs['quantile'] = True
    if 'top' not in kwargs:
        kwargs['top'] = 10
    if kwargs['quantile']:
        k = np.floor(y_true.shape[0]*(kwargs['top']/100)).astype(int)
    else:
        k = kwargs['top']
    if isinstance(y_true, pd.Series):
        y_true = y_true.values
    if isinstance(y_score, pd.Series):
        y_score = y_score.values
    gains = minmax(y_true)
    ranks = np.argsort(np.argsort(-y_score)) + 1

    if k == 'all':
        k = len(ranks)
    #sub to top k
    ranks_k = ranks[ranks <= k]
    gains_k = gains[ranks <= k]
    #all terms with a gain of 0 go to 0
    ranks_fil = ranks_k[gains_k != 0]
    gains_fil = gains_k[gains_k != 0]

    #if none of the ranks made it return 0
    if len(ranks_fil) == 0:
        return (0)

    #discounted cumulative gains
    dcg = np.sum([g/np.log2(r+1) for r,g in zip(ranks_fil, gains_fil)])

    #ideal dcg - calculated based on the top k actual gains
    ideal_ranks = np.argsort(np.argsort(-gains)) + 1
    ideal_ranks_k = ideal_ranks[ideal_ranks <= k]
    ideal_gains_k = gains[ideal_ranks <= k]
    ideal_ranks_fil = ideal_ranks_k[ideal_gains_k != 0]
    ideal_gains_fil = ideal_gains_k[ideal_gains_k != 0]
    idcg = np.sum([g/np.log2(r+1) for r,g in zip(ideal_ranks_fil, ideal_gains_fil)])

    #normalize
    ndcg = dcg/idcg

    return (ndcg)


def calc_toprecall(true_scores, model_scores, top_true=10, top_model=10):
    top_true = (true_scores >= np.percentile(true_scores, 100-top_true))
    top_model = (model_scores >= np.percentile(model_scores, 100-top_model))

    TP = (top_true) & (top_model)
    recall = TP.sum() / (top_true.sum()) if top_true.sum() > 0 else 0

    return (recall)
# --- end of ProteinGym's code ---


def cases():
    rng = np.random.default_rng(0)
    for n in (5, 37, 400):
        truth = rng.normal(size=n)
        yield truth, truth + rng.normal(scale=2, size=n), (truth > 0.3).astype(int)
        yield np.round(truth, 1), np.round(rng.normal(size=n), 1), rng.integers(0, 2, n)  # ties on both sides
    truth = rng.normal(size=50)
    yield truth, -truth, (truth > 0).astype(int)


@pytest.mark.parametrize("truth, score, binary", list(cases()))
def test_metrics_equal_proteingyms_functions(truth, score, binary):
    assert metrics.spearman(truth, score) == pytest.approx(spearmanr(truth, score)[0], abs=1e-12)
    assert metrics.ndcg(truth, score) == pytest.approx(calc_ndcg(truth, score), abs=1e-12)
    assert metrics.top_recall(truth, score) == pytest.approx(calc_toprecall(truth, score), abs=1e-12)
    assert metrics.auc(binary, score) == pytest.approx(roc_auc_score(y_true=binary, y_score=score), abs=1e-12)
    series = pd.Series(score)
    median_cutoff = series.median()
    predicted = series.map(lambda x: 1 if x >= median_cutoff else 0)  # ProteinGym's binarisation of the score
    assert metrics.mcc(binary, score) == pytest.approx(matthews_corrcoef(y_true=binary, y_pred=predicted), abs=1e-12)


def test_metrics_without_a_binary_column_and_with_one_class():
    truth = np.arange(20.0)
    assert set(metrics.zero_shot_metrics(truth, truth)) == {"spearman", "ndcg", "top_recall"}
    found = metrics.zero_shot_metrics(truth, truth, np.ones(20))
    assert np.isnan(found["auc"]) and found["mcc"] == 0.0 and found["spearman"] == 1.0 and found["ndcg"] == 1.0
