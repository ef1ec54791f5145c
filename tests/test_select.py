"""Layer selection on hand-built probe tables with exact expected results."""

from __future__ import annotations

import pandas as pd
import pytest

from plmexit.errors import InputError
from plmexit.select import PROBE_COLUMNS, SUMMARY_COLUMNS, select_layer, summarize

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


def long_table(inner, test, metric="spearman", model="esm2_tiny", task="toy", extra_metric=True) -> pd.DataFrame:
    rows = []
    for layer, (inner_row, test_row) in enumerate(zip(inner, test)):
        for fold, (inner_value, test_value) in enumerate(zip(inner_row, test_row)):
            rows.append((model, task, layer, fold, metric, test_value))
            rows.append((model, task, layer, fold, f"inner_{metric}", inner_value))
            if extra_metric:  # another metric in the table must not confuse selection
                rows.append((model, task, layer, fold, "mse", 100.0 - layer))
    return pd.DataFrame(rows, columns=PROBE_COLUMNS)


def test_select_layer_exact():
    selection = select_layer(long_table(INNER, TEST), "spearman")

    assert selection["folds"] == [
        {"fold": 0, "layer": 2, "inner_score": 0.70, "test_score": 0.50, "final_test_score": 0.20},
        {"fold": 1, "layer": 2, "inner_score": 0.65, "test_score": 0.45, "final_test_score": 0.10},
        {"fold": 2, "layer": 3, "inner_score": 0.66, "test_score": 0.45, "final_test_score": 0.15},
    ]
    assert {k: selection[k] for k in ("model", "task", "metric", "n_layers", "n_folds", "tolerance", "best_layer")} == {
        "model": "esm2_tiny", "task": "toy", "metric": "spearman", "n_layers": 4, "n_folds": 3, "tolerance": 0.0, "best_layer": 2,
    }
    assert selection["best_score"] == pytest.approx((0.50 + 0.45 + 0.45) / 3)  # each fold's own choice, held out
    assert selection["final_score"] == pytest.approx((0.20 + 0.10 + 0.15) / 3)
    assert selection["gain"] == pytest.approx((0.50 + 0.45 + 0.45) / 3 - (0.20 + 0.10 + 0.15) / 3)
    assert selection["compute_saved"] == 0.5  # (4 - 2) / 4
    assert selection["oracle_layer"] == 0 and selection["oracle_score"] == pytest.approx(0.90)
    assert selection["mean_test_score_by_layer"] == pytest.approx({0: 0.90, 1: 0.30, 2: 0.45, 3: 0.4666666667, 4: 0.15})


def test_selection_ignores_test_scores():
    boosted = [row[:] for row in TEST]
    boosted[4] = [0.99, 0.99, 0.99]  # make the final layer the test-set winner too

    selection = select_layer(long_table(INNER, boosted), "spearman")

    assert [f["layer"] for f in selection["folds"]] == [2, 2, 3]
    assert selection["best_layer"] == 2
    assert selection["oracle_layer"] == 4


def test_tolerance_prefers_the_shallowest_layer_within_reach():
    selection = select_layer(long_table(INNER, TEST), "spearman", tolerance=0.02)

    assert [f["layer"] for f in selection["folds"]] == [2, 2, 2]  # fold 2: 0.65 is within 0.02 of 0.66
    assert selection["best_score"] == pytest.approx((0.50 + 0.45 + 0.40) / 3)
    assert selection["tolerance"] == 0.02

    wide = select_layer(long_table(INNER, TEST), "spearman", tolerance=0.25)
    assert [f["layer"] for f in wide["folds"]] == [1, 1, 2]


def test_exact_inner_ties_go_to_the_shallowest_layer():
    inner = [[0.1, 0.1], [0.8, 0.8], [0.5, 0.5], [0.8, 0.8]]
    test = [[0.0, 0.0], [0.3, 0.3], [0.2, 0.2], [0.6, 0.6]]

    selection = select_layer(long_table(inner, test), "spearman")

    assert selection["best_layer"] == 1
    assert selection["compute_saved"] == pytest.approx(2 / 3)


def test_tied_fold_votes_go_to_the_shallowest_layer():
    inner = [[0.1, 0.1], [0.2, 0.9], [0.3, 0.3], [0.9, 0.2]]  # fold 0 picks 3, fold 1 picks 1
    test = [[0.0, 0.0], [0.3, 0.5], [0.2, 0.2], [0.7, 0.1]]

    selection = select_layer(long_table(inner, test), "spearman")

    assert [f["layer"] for f in selection["folds"]] == [3, 1]
    assert selection["best_layer"] == 1
    assert selection["best_score"] == pytest.approx((0.7 + 0.5) / 2)


def test_selection_by_a_classification_metric():
    selection = select_layer(long_table(INNER, TEST, metric="macro_f1"), "macro_f1")

    assert selection["metric"] == "macro_f1" and selection["best_layer"] == 2


def test_missing_metric_rows():
    table = long_table(INNER, TEST)

    with pytest.raises(InputError, match=r"no 'accuracy' rows \(metrics: inner_spearman, mse, spearman\); select by the metric the probes were run with"):
        select_layer(table, "accuracy")
    with pytest.raises(InputError, match=r"no 'inner_spearman' rows"):
        select_layer(table[table.metric != "inner_spearman"], "spearman")


def test_summarize_column_order_and_sorting():
    first = select_layer(long_table(INNER, TEST, model="esm2_b", task="x"), "spearman")
    second = select_layer(long_table(INNER, TEST, model="esm2_a", task="y"), "spearman")
    third = select_layer(long_table(INNER, TEST, model="esm2_a", task="b"), "spearman")

    summary = summarize([first, second, third])

    assert list(summary.columns) == SUMMARY_COLUMNS
    assert SUMMARY_COLUMNS[:5] == ["model", "task", "metric", "n_layers", "best_layer"]
    assert summary[["model", "task"]].values.tolist() == [["esm2_a", "b"], ["esm2_a", "y"], ["esm2_b", "x"]]
    assert summary["best_layer"].tolist() == [2, 2, 2]
    assert list(summary.index) == [0, 1, 2]


def test_summarize_nothing():
    assert list(summarize([]).columns) == SUMMARY_COLUMNS
