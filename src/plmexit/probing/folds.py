"""The folds a probe is fitted and scored on: evaluation folds, the deploy fold, inner splits, and one fold's fit.

Invariant: for test fold ``f`` everything that is fitted or chosen sees only the training rows
(``fold != f``); the test rows are touched once, to score the refitted probe. The deploy fold
(``DEPLOY_FOLD``) is the same procedure on ``deploy_rows``, the rows that are never a test row.
Inner folds mimic the outer scheme: where the outer folds hold out whole mutated positions
(ProteinGym's modulo and contiguous schemes), so do the inner ones (``inner_groups``), else the
inner score rewards features that memorise positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from plmexit.data.tasks import TRAIN_ONLY_FOLD
from plmexit.errors import InputError

# Probe-table fold of the selection procedure run on the deploy rows (``deploy_rows``; the layer a
# user ships): only ``inner_<metric>`` and the hyperparameter rows, no test metrics.
DEPLOY_FOLD = -1


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


def constant_rows(X: np.ndarray) -> bool:
    """True when every row is the same vector: the layer carries nothing a probe could use."""
    return len(X) == 0 or not np.any(X != X[0])



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
