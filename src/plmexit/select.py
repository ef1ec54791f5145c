"""Choose the layer per task from a probe table without looking at test scores, and say how sure.

Invariant: the layer for evaluation fold ``f`` is chosen from the ``inner_<metric>`` scores,
which probes compute on fold ``f``'s training rows only; the reported ``best_score`` is the mean
over folds of the test score of each fold's chosen layer, so it is a held-out estimate. The
``oracle`` layer (best mean test score) is reported too and is optimistic by construction.
Intervals are percentile bootstraps with a fixed seed: over test items (paired, within folds)
for one task's gain, over tasks for the mean gain.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from plmexit.errors import InputError
from plmexit.probes import INNER_PREFIX, METRICS

PROBE_COLUMNS = ["model", "task", "layer", "fold", "metric", "value"]
CONFIDENCE_LEVEL = 0.95


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0
    return float(np.quantile(values, tail)), float(np.quantile(values, 1.0 - tail))


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
    every = table[~table.metric.str.startswith(INNER_PREFIX)].set_index(["fold", "layer", "metric"])["value"].sort_index()
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
                # Every test metric (e.g. MSE beside Spearman) of the chosen and of the final layer.
                "test_metrics": {str(k): float(v) for k, v in every.loc[(fold, chosen)].items()},
                "final_test_metrics": {str(k): float(v) for k, v in every.loc[(fold, n_layers)].items()},
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


def bootstrap_gain(
    predictions: pd.DataFrame, selection: dict, task_type: str, n_boot: int, seed: int, level: float = CONFIDENCE_LEVEL,
) -> tuple[float, float]:
    """Percentile interval of the gain (selected minus final layer), resampling test items.

    Within each fold the same resampled items score both the fold's selected layer and the
    final layer (a paired bootstrap); the gain of a resample is the mean over folds, as
    ``best_score - final_score`` is.
    """
    if selection["metric"] not in METRICS.get(task_type, {}):
        raise InputError(f"metric {selection['metric']!r} is not a {task_type} metric ({', '.join(METRICS.get(task_type, {}))})")
    metric = METRICS[task_type][selection["metric"]]
    final = selection["n_layers"]
    pairs = []
    for fold in selection["folds"]:
        rows = predictions[predictions.fold == fold["fold"]]
        chosen = rows[rows.layer == fold["layer"]].sort_values("id")
        last = rows[rows.layer == final].sort_values("id")
        if len(chosen) == 0 or not np.array_equal(chosen["id"].to_numpy(), last["id"].to_numpy()):
            raise InputError(f"predictions for fold {fold['fold']} do not cover layers {fold['layer']} and {final} alike; rerun `plmexit probe`")
        pairs.append((_values(chosen["label"]), _values(chosen["prediction"]), _values(last["prediction"])))
    rng = np.random.default_rng(seed)
    gains = np.empty(n_boot)
    for b in range(n_boot):
        per_fold = []
        for truth, selected, last in pairs:
            items = rng.integers(0, len(truth), len(truth))
            per_fold.append(metric(truth[items], selected[items]) - metric(truth[items], last[items]))
        gains[b] = np.mean(per_fold)
    return _percentile_interval(gains, level)


def _values(column: pd.Series) -> np.ndarray:
    """A predictions column as an array; rows holding vectors (multi-label) become a matrix."""
    values = column.to_numpy()
    return np.stack(values) if len(values) and isinstance(values[0], np.ndarray) else values


SUMMARY_COLUMNS = [
    "model", "task", "metric", "n_layers", "best_layer", "best_score", "final_score", "gain", "gain_ci_low",
    "gain_ci_high", "compute_saved", "flops_saved", "time_saved", "oracle_layer", "oracle_score", "n_folds", "split",
    "n_sequences", "n_truncated", "layer_norm",
]


def summarize(selections: list[dict]) -> pd.DataFrame:
    """One row per (model, task) selection, sorted."""
    rows = pd.DataFrame([{key: s[key] for key in SUMMARY_COLUMNS} for s in selections], columns=SUMMARY_COLUMNS)
    return rows.sort_values(["model", "task"]).reset_index(drop=True)


ACROSS_TASK_COLUMNS = [
    "model", "n_tasks", "final_selected_fraction", "final_oracle_fraction", "mean_gain", "mean_gain_ci_low",
    "mean_gain_ci_high", "mean_flops_saved", "mean_time_saved",
]


def across_tasks(summary: pd.DataFrame, n_boot: int, seed: int, level: float = CONFIDENCE_LEVEL) -> pd.DataFrame:
    """Per model: how often the final layer wins, and the mean gain over tasks with a bootstrap interval.

    ``final_selected_fraction`` counts tasks whose held-out selection is the final layer;
    ``final_oracle_fraction`` those whose best test score is at the final layer, which is the
    figure same-split studies report (17.9% over 13 PLMs x 15 tasks in PLMSommelier).
    """
    rows = []
    rng = np.random.default_rng(seed)
    for model, group in summary.groupby("model", sort=True):
        gains = group["gain"].to_numpy(dtype=float)
        low, high = _percentile_interval(gains[rng.integers(0, len(gains), (n_boot, len(gains)))].mean(axis=1), level)
        rows.append(
            {
                "model": model,
                "n_tasks": len(group),
                "final_selected_fraction": float((group["best_layer"] == group["n_layers"]).mean()),
                "final_oracle_fraction": float((group["oracle_layer"] == group["n_layers"]).mean()),
                "mean_gain": float(gains.mean()),
                "mean_gain_ci_low": low,
                "mean_gain_ci_high": high,
                "mean_flops_saved": float(group["flops_saved"].mean()),
                "mean_time_saved": float(group["time_saved"].mean()),
            }
        )
    return pd.DataFrame(rows, columns=ACROSS_TASK_COLUMNS)
