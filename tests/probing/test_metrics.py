"""plmexit.probing.metrics.spearman against scipy.stats.spearmanr: the same value to the last bit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from plmexit.probing.metrics import _snap_ties, spearman


def scipy_spearman(y_true, y_pred) -> float:
    """plmexit's Spearman as it was written on scipy: the same tie snapping and constant rule, then spearmanr."""
    y_pred = _snap_ties(np.asarray(y_pred, dtype=np.float64))
    if np.ptp(y_true) == 0 or np.ptp(y_pred) == 0:
        return 0.0
    return float(spearmanr(y_true, y_pred).statistic)


def cases():
    rng = np.random.default_rng(0)
    for n in (2, 3, 7, 50, 400):
        yield rng.normal(size=n), rng.normal(size=n)
        yield rng.integers(0, 4, n).astype(float), rng.normal(size=n)  # ties in the truth
        yield rng.normal(size=n), rng.integers(0, 3, n) + 1e-14 * rng.random(n)  # near-ties snapped together
        draw = rng.integers(0, n, n)  # a bootstrap resample: every value repeated
        truth, predicted = rng.normal(size=n), rng.normal(size=n)
        yield truth[draw], predicted[draw]
    yield np.arange(5.0), np.arange(5.0)[::-1]
    yield np.array([1, 2, 3, 4]), np.array([0.1, 0.4, 0.2, 0.3])  # integer truth
    yield np.ones(4), np.arange(4.0)  # a constant side
    yield np.arange(4.0), np.full(4, 2.0)


@pytest.mark.parametrize("case", range(len(list(cases()))))
def test_spearman_is_scipys_to_the_last_bit(case):
    y_true, y_pred = list(cases())[case]
    assert spearman(y_true, y_pred) == scipy_spearman(y_true, y_pred)


def test_a_nan_gives_nan_as_scipy_does():
    with np.errstate(invalid="ignore"):
        assert np.isnan(spearman(np.array([1.0, np.nan, 3.0]), np.array([1.0, 2.0, 4.0])))
    assert np.isnan(scipy_spearman(np.array([1.0, np.nan, 3.0]), np.array([1.0, 2.0, 4.0])))
