"""Probe tables and selections as the pipeline writes them, hand-built for the selection and figure tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from plmexit.probing.choice import BASELINE_SUMMARY_COLUMNS
from plmexit.probing.folds import DEPLOY_FOLD
from plmexit.probing.probes import HYPERPARAMETER, HYPERPARAMETER_EDGE
from plmexit.probing.selection import Selection
from plmexit.probing.tables import PROBE_COLUMNS

# Rows are layers 0..4, columns are folds 0..2. Layer 0 has the best *test* scores but poor inner
# scores: a selection that peeked at test scores would pick it.
INNER = [
    [0.10, 0.10, 0.10],
    [0.50, 0.60, 0.40],
    [0.70, 0.65, 0.65],
    [0.60, 0.50, 0.66],
    [0.40, 0.30, 0.30],
]
TEST = [
    [0.90, 0.90, 0.90],
    [0.30, 0.35, 0.25],
    [0.50, 0.45, 0.40],
    [0.55, 0.40, 0.45],
    [0.20, 0.10, 0.15],
]


def long_table(inner, test, metric="spearman", model="esm2_tiny", task="toy", extra_metric=True, deploy=None, hyper=None) -> pd.DataFrame:
    """A probe table as ``plmexit probe`` writes it: per layer and fold the test metric(s), the inner score and the
    chosen hyperparameter; per layer the deploy fold's inner score (default: the mean of the folds' inner scores)."""
    rows = []
    for layer, (inner_row, test_row) in enumerate(zip(inner, test)):
        for fold, (inner_value, test_value) in enumerate(zip(inner_row, test_row)):
            rows.append((model, task, layer, fold, metric, test_value))
            rows.append((model, task, layer, fold, f"inner_{metric}", inner_value))
            if extra_metric:  # another metric in the table must not confuse selection
                rows.append((model, task, layer, fold, "mse", 100.0 - layer))
            value, edge = hyper(layer, fold) if hyper else (10.0, 0.0)
            rows.extend([(model, task, layer, fold, HYPERPARAMETER, value), (model, task, layer, fold, HYPERPARAMETER_EDGE, edge)])
        deployed = np.mean(inner_row) if deploy is None else deploy[layer]
        rows.append((model, task, layer, DEPLOY_FOLD, f"inner_{metric}", deployed))
        value, edge = hyper(layer, DEPLOY_FOLD) if hyper else (10.0, 0.0)
        rows.extend([(model, task, layer, DEPLOY_FOLD, HYPERPARAMETER, value), (model, task, layer, DEPLOY_FOLD, HYPERPARAMETER_EDGE, edge)])
    return pd.DataFrame(rows, columns=PROBE_COLUMNS)


def with_select_task_fields(selection: dict, dms_id=None, fold_scheme=None) -> dict:
    """What ``select_steps.select_task`` adds to ``select_layer``'s result (of a task with a signal) before it is written."""
    saved = selection["deployed_compute_saved"]
    return {**selection, "test_unit": "items", "bootstrap": {"resamples": 20, "seed": 0, "level": 0.95, "unit": "test items"},
            "gain_ci_low": selection["gain"] - 0.1, "gain_ci_high": selection["gain"] + 0.1,
            "deployed_time_saved": saved / 2, "folds_time_saved": selection["folds_compute_saved"] / 2, "min_test_fold_size": 10,
            "model_name": selection["model"], "layer_norm": "raw", "n_truncated": 0, "split": "3-fold cross-validation, seed 0", "n_sequences": 30,
            "task_info": {"split": "3-fold cross-validation, seed 0", "n_sequences": 30, "dms_id": dms_id, "fold_scheme": fold_scheme},
            "dms_id": dms_id, "fold_scheme": fold_scheme, **dict.fromkeys(BASELINE_SUMMARY_COLUMNS), "verdict": "too_little_data"}


def as_selection(layer_choice: dict, dms_id=None, fold_scheme=None, **changes) -> Selection:
    """The ``Selection`` record ``select_task`` writes for ``select_layer``'s result, with ``changes`` to its fields."""
    return Selection.from_dict({**with_select_task_fields(layer_choice, dms_id, fold_scheme), **changes}, "a hand-built selection")


def hand_selection(model: str, task: str, n_layers: int, fold_layers: list[int | None], **changes) -> dict:
    """A complete selection JSON (as ``Selection.to_dict`` writes it) whose fold ``f`` chose ``fold_layers[f]``; ``changes`` replace fields."""
    folds = [{"fold": f, "layer": layer, "inner_score": 0.5, "test_score": 0.5, "final_test_score": 0.5, "test_metrics": {},
              "final_test_metrics": {}, "hyperparameter": 1.0, "final_hyperparameter": 1.0} for f, layer in enumerate(fold_layers)]
    choice = {
        "model": model, "task": task, "metric": "spearman", "status": "ok", "n_layers": n_layers, "n_folds": len(folds), "tolerance": 0.0,
        "deployed_layer": n_layers, "deployed_inner_score": 0.5, "deployed_hyperparameter": 1.0, "fold_layers": list(fold_layers),
        "fold_agreement": 1.0, "nested_score": 0.5, "final_score": 0.5, "gain": 0.0, "deployed_compute_saved": 0.0, "folds_compute_saved": 0.0,
        "oracle_layer": n_layers, "oracle_score": 0.5, "folds": folds, "mean_test_score_by_layer": dict.fromkeys(range(n_layers + 1), 0.5),
        "hyperparameters_on_grid_edge": [],
    }
    return {**with_select_task_fields(choice), **changes}
