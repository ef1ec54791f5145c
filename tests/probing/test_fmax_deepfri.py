"""plmexit's ``fmax`` against DeepFRI's own EC scoring code, copied below line for line.

Where the reference comes from: flatironinstitute/DeepFRI (every ref of its history, HEAD
3bd6c7eae67894ccedbe1117e33b3abe544bca71) ships no evaluation code; its ``.gitignore`` keeps the
result scripts out. The script behind the paper's Fmax circulates in later work as "written based
on DeepFRI evaluation.py https://github.com/flatironinstitute/DeepFRI":
ZhonghuiGu/HEAL, ``evaluation_matrics.py``, commit d4dd92fb5921bc61a3ccb24a6109b07029d2f8e5 (the
file is unchanged up to HEAD def3a3d478e6e809dacba9c24ff1a2ee87468b61). BioColLab/PFresGO,
``evaluation.py``, commit 595cc5aac75eb97ea4eee6f8753a836c50c50de4, carries the same GO branch
(same threshold loop, same ``>``, same ``recall / n``). Only the EC path is copied here: EC
numbers are what plmexit's multi-label benchmark scores. Changes to the copy: the pickle is
replaced by arguments, GO propagation and the IC tables are left out, and ``np.int`` (removed from
NumPy) is ``int``.

What the EC path does, and how it differs from CAFA's evaluator (BioComputingUP/CAFA-evaluator,
``src/cafaeval/evaluation.py``): thresholds ``t / 100.0`` for t in 1..99 (CAFA: the same grid),
a term is called when its score is ``> t`` (CAFA: ``>= t``), precision is averaged over proteins
with at least one call (as CAFA), recall is summed over proteins with a true term and divided by
all n proteins (CAFA divides by the benchmark proteins, which all have a true term), thresholds
with no call or F = 0 are skipped, and ``max`` of an empty list raises where nothing is ever
called correctly (plmexit returns 0.0 there). Predictions are first propagated from each EC number
to its parent ``a.b.c.-`` and then every column with a ``-`` is dropped, from truth and scores.
"""

from __future__ import annotations

import numpy as np
import pytest

from plmexit.probing.metrics import fmax

# ---- DeepFRI's EC scoring, after ZhonghuiGu/HEAL evaluation_matrics.py @ d4dd92f -------------


def propagate_ec_preds(Y_hat, goterms):
    go2id = {go: ii for ii, go in enumerate(goterms)}
    for goterm in goterms:
        if goterm.find('-') == -1:
            parent = goterm.split('.')
            parent[-1] = '-'
            parent = ".".join(parent)
            if parent in go2id:
                Y_hat[:, go2id[parent]] = np.maximum(Y_hat[:, go2id[goterm]],
                                                     Y_hat[:, go2id[parent]])

    return Y_hat


class Method(object):
    def __init__(self, Y_true, Y_pred, goterms):  # was (method_name, pckl_fn): the pickle's fields
        self.Y_true = Y_true
        self.Y_pred = Y_pred
        self.goterms = goterms
        self.ont = 'ec'
        self._propagate_preds()
        if self.ont == 'ec':
            goidx = [i for i, goterm in enumerate(self.goterms) if goterm.find('-') == -1]
            self.Y_true = self.Y_true[:, goidx]
            self.Y_pred = self.Y_pred[:, goidx]
            self.goterms = [self.goterms[idx] for idx in goidx]

    def _propagate_preds(self):
        if self.ont == 'ec':
            self.Y_pred = propagate_ec_preds(self.Y_pred, self.goterms)

    def _cafa_ec_aupr(self, labels, preds):
        # propagate goterms (take into account goterm specificity)

        # number of test proteins
        n = labels.shape[0]

        goterms = np.asarray(self.goterms)

        prot2goterms = {}
        for i in range(0, n):
            prot2goterms[i] = set(goterms[np.where(labels[i] == 1)[0]])

        # CAFA-like F-max predictions
        F_list = []
        AvgPr_list = []
        AvgRc_list = []
        thresh_list = []

        for t in range(1, 100):
            threshold = t/100.0
            predictions = (preds > threshold).astype(int)  # np.int in the original

            m = 0
            precision = 0.0
            recall = 0.0
            for i in range(0, n):
                pred_gos = set(goterms[np.where(predictions[i] == 1)[0]])
                num_pred = len(pred_gos)
                num_true = len(prot2goterms[i])
                num_overlap = len(prot2goterms[i].intersection(pred_gos))
                if num_pred > 0:
                    m += 1
                    precision += float(num_overlap)/num_pred
                if num_true > 0:
                    recall += float(num_overlap)/num_true

            if m > 0:
                AvgPr = precision/m
                AvgRc = recall/n

                if AvgPr + AvgRc > 0:
                    F_score = 2*(AvgPr*AvgRc)/(AvgPr + AvgRc)
                    # record in list
                    F_list.append(F_score)
                    AvgPr_list.append(AvgPr)
                    AvgRc_list.append(AvgRc)
                    thresh_list.append(threshold)

        F_list = np.asarray(F_list)
        AvgPr_list = np.asarray(AvgPr_list)
        AvgRc_list = np.asarray(AvgRc_list)
        thresh_list = np.asarray(thresh_list)

        return AvgRc_list, AvgPr_list, F_list, thresh_list

    def _protein_centric_fmax(self, keep_pidx=None):
        """ Compute protein-centric AUPR """
        if keep_pidx is not None:
            Y_true = self.Y_true[keep_pidx]
            Y_pred = self.Y_pred[keep_pidx]
        else:
            Y_true = self.Y_true
            Y_pred = self.Y_pred

        # compute recall/precision
        Recall, Precision, Fscore, thresholds = self._cafa_ec_aupr(Y_true,
                                                                   Y_pred)
        return Fscore, Recall, Precision, thresholds

    def fmax(self, keep_pidx):
        fscore, _, _, _ = self._protein_centric_fmax(keep_pidx=keep_pidx)

        return max(fscore)


# ---- comparisons ---------------------------------------------------------------------------------


def ec_terms(k: int) -> list[str]:
    """``k`` complete EC numbers (no ``-``), so DeepFRI's propagation and column filter keep all."""
    return [f"1.1.1.{i + 1}" for i in range(k)]


def deepfri_fmax(truth: np.ndarray, scores: np.ndarray) -> float:
    return float(Method(truth.copy(), scores.copy(), ec_terms(truth.shape[1])).fmax(None))


def assert_same_fmax(truth: np.ndarray, scores: np.ndarray) -> None:
    assert fmax(truth, scores) == pytest.approx(deepfri_fmax(truth, scores), rel=1e-12, abs=1e-15)


def random_case(seed: int, density: float, n: int = 24, k: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, k)) < density).astype(int)
    truth[0, 0] = 1  # at least one true term, so some threshold can score
    # Informative but noisy scores: true terms drawn higher on average.
    scores = np.clip(rng.normal(0.35 + 0.3 * truth, 0.25), 0.0, 1.0)
    return truth, scores


@pytest.mark.parametrize("density", [0.05, 0.3, 0.8])
@pytest.mark.parametrize("seed", range(4))
def test_random_scores_match_deepfri(seed, density):
    truth, scores = random_case(seed, density)
    assert_same_fmax(truth, scores)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", range(3))
def test_scores_on_the_threshold_grid_match_deepfri(seed, dtype):
    """Scores that equal a threshold (k / 100, and 1.0) are called only below it, in either precision."""
    truth, _ = random_case(seed, 0.3)
    scores = (np.random.default_rng(100 + seed).integers(0, 101, truth.shape) / 100).astype(dtype)
    assert_same_fmax(truth, scores)


def test_rows_without_true_terms_match_deepfri():
    truth, scores = random_case(1, 0.3)
    truth[1::2] = 0  # every other protein has no true term: recall 0 for it, precision 0 where called
    assert_same_fmax(truth, scores)


def test_rows_with_no_call_match_deepfri():
    truth, scores = random_case(2, 0.3)
    scores[::3] = 0.0  # never called
    scores[1::3] = 0.01  # on the lowest threshold, never above it
    assert_same_fmax(truth, scores)


def test_perfect_predictor_scores_one():
    truth, _ = random_case(3, 0.3)
    truth[truth.sum(axis=1) == 0, 0] = 1
    assert fmax(truth, truth.astype(float)) == deepfri_fmax(truth, truth.astype(float)) == 1.0


def test_nothing_called_or_nothing_right_is_zero_where_deepfri_has_no_maximum():
    truth = np.array([[1, 0], [0, 1]])
    for scores in (np.zeros((2, 2)), np.array([[0.0, 0.9], [0.9, 0.0]])):
        with pytest.raises(ValueError, match="empty"):
            deepfri_fmax(truth, scores)
        assert fmax(truth, scores) == 0.0


def test_score_of_one_is_called_at_every_threshold():
    """DeepFRI's last threshold is 0.99 with ``>``: 1.0 and 0.995 are never separated.

    plmexit used to add 1.00 with ``>=`` and scored this 1.0.
    """
    truth = np.array([[1, 0]])
    scores = np.array([[1.0, 0.995]])
    assert fmax(truth, scores) == deepfri_fmax(truth, scores) == pytest.approx(2 / 3)


def test_recall_divides_by_every_protein():
    """Protein 2 has no true term; at 0.1 <= t < 0.9 only protein 1 calls, rightly: P 1, R 1/2.

    plmexit used to average recall over proteins with a true term only and scored this 1.0.
    """
    truth = np.array([[1, 0], [0, 0]])
    scores = np.array([[0.9, 0.1], [0.1, 0.1]])
    assert fmax(truth, scores) == deepfri_fmax(truth, scores) == pytest.approx(2 / 3)


def test_deepfri_drops_partial_ec_columns_before_scoring():
    """Columns such as ``1.1.1.-`` take their children's maximum and are then dropped: DeepFRI's Fmax
    is plmexit's on the complete EC numbers."""
    truth, scores = random_case(4, 0.3, k=6)
    terms = ["1.1.1.1", "1.1.1.-", "1.1.1.2", "2.7.1.-", "2.7.1.5", "3.1.-.-"]
    complete = [i for i, term in enumerate(terms) if "-" not in term]
    reference = Method(truth.copy(), scores.copy(), terms).fmax(None)
    assert fmax(truth[:, complete], scores[:, complete]) == pytest.approx(reference, rel=1e-12)
