"""Choose the layer per task from a probe table without looking at test scores.

Invariant: the layer for evaluation fold ``f`` is chosen from the ``inner_<metric>`` scores,
which probes compute on fold ``f``'s training rows only; the reported ``best_score`` is the mean
over folds of the test score of each fold's chosen layer, so it is a held-out estimate. The
``oracle`` layer (best mean test score) is reported too and is optimistic by construction.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from plmexit.errors import InputError
from plmexit.probes import INNER_PREFIX

PROBE_COLUMNS = ["model", "task", "layer", "fold", "metric", "value"]


def select_layer(table: pd.DataFrame, metric: str, tolerance: float = 0.0) -> dict:
    """Nested-by-fold layer choice for one (model, task) probe table.

    Within each fold the shallowest layer whose inner score is within ``tolerance`` of that
    fold's best inner score wins, so equal accuracy goes to the cheaper model.
    """
    if table["model"].nunique() != 1 or table["task"].nunique() != 1:
        raise InputError("a probe table must hold one model and one task; select each (model, task) on its own")
    inner_metric = INNER_PREFIX + metric
    for name in (metric, inner_metric):
        if not (table["metric"] == name).any():
            raise InputError(f"no {name!r} rows (metrics: {', '.join(sorted(table['metric'].unique()))}); select by the metric the probes were run with")
    test = table[table.metric == metric].pivot(index="layer", columns="fold", values="value")
    inner = table[table.metric == inner_metric].pivot(index="layer", columns="fold", values="value")
    n_layers = int(test.index.max())
    folds = []
    for fold in test.columns:
        scores = inner[fold]
        chosen = int(scores[scores >= scores.max() - tolerance].index.min())
        folds.append(
            {
                "fold": int(fold),
                "layer": chosen,
                "inner_score": float(scores[chosen]),
                "test_score": float(test.at[chosen, fold]),
                "final_test_score": float(test.at[n_layers, fold]),
            }
        )
    counts = Counter(f["layer"] for f in folds)
    top = max(counts.values())
    best_layer = min(layer for layer, count in counts.items() if count == top)
    mean_test = test.mean(axis=1)
    best_score = float(np.mean([f["test_score"] for f in folds]))
    final_score = float(mean_test[n_layers])
    (model,), (task,) = table["model"].unique(), table["task"].unique()
    return {
        "model": str(model),
        "task": str(task),
        "metric": metric,
        "n_layers": n_layers,
        "n_folds": len(folds),
        "tolerance": tolerance,
        "best_layer": best_layer,
        "best_score": best_score,
        "final_score": final_score,
        "gain": best_score - final_score,
        "compute_saved": (n_layers - best_layer) / n_layers,
        "oracle_layer": int(mean_test.idxmax()),
        "oracle_score": float(mean_test.max()),
        "folds": folds,
        "mean_test_score_by_layer": {int(k): float(v) for k, v in mean_test.items()},
    }


SUMMARY_COLUMNS = [
    "model", "task", "metric", "n_layers", "best_layer", "best_score", "final_score", "gain",
    "compute_saved", "oracle_layer", "oracle_score", "n_folds",
]


def summarize(selections: list[dict]) -> pd.DataFrame:
    """One row per (model, task) selection, sorted."""
    rows = pd.DataFrame([{key: s[key] for key in SUMMARY_COLUMNS} for s in selections], columns=SUMMARY_COLUMNS)
    return rows.sort_values(["model", "task"]).reset_index(drop=True)
