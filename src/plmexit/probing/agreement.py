"""Whether two probe tables of one task (say fp32 and int8 embeddings) lead to the same science.

Invariant: "the same" is judged against fold-to-fold noise of the reference table, never against
a fixed number. Three checks, each on the outer folds' test scores (``n`` folds, metric oriented
higher-is-better):

- per layer, the mean test-score change ``d_k`` is within one standard error of that layer's
  reference mean (``sd_f(s_ref[k, f]) / sqrt(n)``): no layer's score moved more than resampling folds moves it;
- the deployed layer (``choice.select_layer``) is the reference's deployed layer ``r`` or *tied*
  with it: a layer ``k`` whose paired test-score difference ``|mean_f(s[r, f] - s[k, f])|`` in the
  reference is at most one standard error of that paired difference, so a move between layers the
  folds cannot tell apart is not a change (the deployed layer is chosen on inner scores, so ``r``
  need not be the best test layer; the tie is taken around it, not around the best);
- the nested gain over the final layer changes by at most one standard error of the reference's
  per-fold gain (``sd_f(chosen_f - final_f) / sqrt(n)``).

One standard error is a strict bar (about a 68% interval): a precision passes only if its effect
is smaller than what rerunning the folds would change.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from plmexit.probing.choice import select_layer
from plmexit.probing.folds import DEPLOY_FOLD


def _test_scores(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    scores = table[(table.metric == metric) & (table.fold != DEPLOY_FOLD)]
    return scores.pivot(index="layer", columns="fold", values="value").sort_index()


def _se(values: np.ndarray, axis: int = -1) -> np.ndarray:
    n = values.shape[axis]
    return np.std(values, axis=axis, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(np.delete(values.shape, axis))


def tied_layers(scores: pd.DataFrame, layer: int) -> list[int]:
    """Layers whose mean test score differs from ``layer``'s by at most one paired standard error over folds."""
    values = scores.to_numpy()
    difference = values[scores.index.get_loc(layer)] - values  # (layers, folds)
    return [int(k) for k, row in zip(scores.index, difference) if abs(row.mean()) <= _se(row) + 1e-12]


def compare(reference: pd.DataFrame, other: pd.DataFrame, metric: str) -> dict:
    """Compare ``other``'s probe table with ``reference``'s (same task, layers and folds); see the module doc."""
    ref_scores, scores = _test_scores(reference, metric), _test_scores(other, metric)
    if not ref_scores.index.equals(scores.index) or not ref_scores.columns.equals(scores.columns):
        raise ValueError("the two probe tables hold different layers or folds; compare tables of one task and one fold scheme")
    ref_sel, sel = select_layer(reference, metric), select_layer(other, metric)
    diff = (scores - ref_scores).mean(axis=1)
    noise = pd.Series(_se(ref_scores.to_numpy()), index=ref_scores.index)
    ratio = (diff.abs() / noise.where(noise > 0)).fillna(0.0)
    tied = [] if ref_sel["deployed_layer"] is None else tied_layers(ref_scores, ref_sel["deployed_layer"])
    ref_gains = np.array([f["test_score"] - f["final_test_score"] for f in ref_sel["folds"] if f["layer"] is not None])
    gain_noise = float(_se(ref_gains)) if len(ref_gains) > 1 else 0.0
    gain_change = None if ref_sel["gain"] is None or sel["gain"] is None else sel["gain"] - ref_sel["gain"]
    checks = {
        "layer_scores_within_noise": bool((ratio <= 1.0).all()),
        "deployed_layer_tied": sel["deployed_layer"] == ref_sel["deployed_layer"] or sel["deployed_layer"] in tied,
        "gain_within_noise": gain_change is not None and abs(gain_change) <= gain_noise + 1e-12,
    }
    return {
        "metric": metric,
        "n_folds": int(ref_scores.shape[1]),
        "reference_scores_by_layer": {int(k): float(v) for k, v in ref_scores.mean(axis=1).items()},
        "scores_by_layer": {int(k): float(v) for k, v in scores.mean(axis=1).items()},
        "score_change_by_layer": {int(k): float(v) for k, v in diff.items()},
        "fold_noise_by_layer": {int(k): float(v) for k, v in noise.items()},
        "max_change_over_noise": float(ratio.max()),
        "reference_deployed_layer": ref_sel["deployed_layer"],
        "deployed_layer": sel["deployed_layer"],
        "reference_tied_layers": tied,
        "reference_gain": ref_sel["gain"],
        "gain": sel["gain"],
        "gain_change": gain_change,
        "gain_noise": gain_noise,
        "reference_fold_layers": ref_sel["fold_layers"],
        "fold_layers": sel["fold_layers"],
        "checks": checks,
        "unchanged": all(checks.values()),
    }
