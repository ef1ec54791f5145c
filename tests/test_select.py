"""Layer selection, the gain's bootstrap interval and the across-task view, on hand-built tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from plmexit.errors import InputError
from plmexit.probes import spearman
from plmexit.select import (
    ACROSS_TASK_COLUMNS, PROBE_COLUMNS, SUMMARY_COLUMNS, across_tasks, bootstrap_gain, select_layer, summarize,
)

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
        {"fold": 0, "layer": 2, "inner_score": 0.70, "test_score": 0.50, "final_test_score": 0.20,
         "test_metrics": {"mse": 98.0, "spearman": 0.50}, "final_test_metrics": {"mse": 96.0, "spearman": 0.20}},
        {"fold": 1, "layer": 2, "inner_score": 0.65, "test_score": 0.45, "final_test_score": 0.10,
         "test_metrics": {"mse": 98.0, "spearman": 0.45}, "final_test_metrics": {"mse": 96.0, "spearman": 0.10}},
        {"fold": 2, "layer": 3, "inner_score": 0.66, "test_score": 0.45, "final_test_score": 0.15,
         "test_metrics": {"mse": 97.0, "spearman": 0.45}, "final_test_metrics": {"mse": 96.0, "spearman": 0.15}},
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


def with_select_task_fields(selection: dict) -> dict:
    """What ``steps.select_task`` adds to ``select_layer``'s result before it is summarised."""
    cost_saved = selection["compute_saved"]
    return {**selection, "gain_ci_low": selection["gain"] - 0.1, "gain_ci_high": selection["gain"] + 0.1,
            "flops_saved": cost_saved, "time_saved": cost_saved / 2, "layer_norm": "raw", "split": "3-fold cross-validation, seed 0",
            "n_sequences": 30, "n_truncated": 0}


def test_summarize_column_order_and_sorting():
    first = with_select_task_fields(select_layer(long_table(INNER, TEST, model="esm2_b", task="x"), "spearman"))
    second = with_select_task_fields(select_layer(long_table(INNER, TEST, model="esm2_a", task="y"), "spearman"))
    third = with_select_task_fields(select_layer(long_table(INNER, TEST, model="esm2_a", task="b"), "spearman"))

    summary = summarize([first, second, third])

    assert list(summary.columns) == SUMMARY_COLUMNS
    assert SUMMARY_COLUMNS[:5] == ["model", "task", "metric", "n_layers", "best_layer"]
    assert summary[["model", "task"]].values.tolist() == [["esm2_a", "b"], ["esm2_a", "y"], ["esm2_b", "x"]]
    assert summary["best_layer"].tolist() == [2, 2, 2]
    assert list(summary.index) == [0, 1, 2]
    assert summary["flops_saved"].tolist() == [0.5, 0.5, 0.5] and summary["layer_norm"].tolist() == ["raw"] * 3
    assert summary["gain_ci_low"].tolist() == pytest.approx([first["gain"] - 0.1] * 3)


def test_summarize_nothing():
    assert list(summarize([]).columns) == SUMMARY_COLUMNS


# --- the gain's paired bootstrap interval ------------------------------------------------------------

# select_layer(long_table(INNER, TEST)) chooses layers 2, 2, 3 for folds 0, 1, 2; the final layer is 4.
SELECTED = {0: 2, 1: 2, 2: 3}


def predictions_table(selected_noise: float, final_noise: float, n_items: int = 20, seed: int = 0) -> pd.DataFrame:
    """Regression predictions (columns layer, fold, id, label, prediction) for layers 2, 3, 4 and folds 0..2."""
    rng = np.random.default_rng(seed)
    frames = []
    for fold in range(3):
        truth = rng.normal(size=n_items)
        ids = [f"f{fold}_{i:02d}" for i in range(n_items)]
        for layer in (2, 3, 4):
            noise = final_noise if layer == 4 else selected_noise
            prediction = truth + noise * rng.normal(size=n_items)
            frames.append(pd.DataFrame({"layer": layer, "fold": fold, "id": ids, "label": truth, "prediction": prediction}))
    return pd.concat(frames, ignore_index=True)


def point_gain(predictions: pd.DataFrame) -> float:
    """Mean over folds of spearman(selected layer) - spearman(final layer): what the bootstrap resamples."""
    gains = []
    for fold, layer in SELECTED.items():
        chosen = predictions[(predictions.fold == fold) & (predictions.layer == layer)]
        final = predictions[(predictions.fold == fold) & (predictions.layer == 4)]
        truth = chosen["label"].to_numpy()
        gains.append(spearman(truth, chosen["prediction"].to_numpy()) - spearman(truth, final["prediction"].to_numpy()))
    return float(np.mean(gains))


@pytest.fixture(scope="module")
def selection() -> dict:
    selection = select_layer(long_table(INNER, TEST), "spearman")
    assert {f["fold"]: f["layer"] for f in selection["folds"]} == SELECTED and selection["n_layers"] == 4
    return selection


def test_bootstrap_gain_is_deterministic_for_a_seed(selection):
    predictions = predictions_table(selected_noise=0.5, final_noise=1.0)

    first = bootstrap_gain(predictions, selection, "regression", n_boot=40, seed=3)

    assert bootstrap_gain(predictions, selection, "regression", n_boot=40, seed=3) == first
    assert bootstrap_gain(predictions.sample(frac=1.0, random_state=0), selection, "regression", n_boot=40, seed=3) == first  # row order is irrelevant
    assert bootstrap_gain(predictions, selection, "regression", n_boot=40, seed=4) != first
    assert first[0] < first[1]


def test_bootstrap_interval_of_a_clear_gain_contains_the_point_gain_and_excludes_zero(selection):
    predictions = predictions_table(selected_noise=0.1, final_noise=3.0)
    gain = point_gain(predictions)

    low, high = bootstrap_gain(predictions, selection, "regression", n_boot=100, seed=0)

    assert gain > 0.3
    assert 0.0 < low <= gain <= high


def test_identical_predictions_give_a_point_interval(selection):
    """Paired resampling: the same items score both layers, so no resample can show a difference."""
    predictions = predictions_table(selected_noise=0.5, final_noise=0.5)
    for fold, layer in SELECTED.items():
        final = (predictions.fold == fold) & (predictions.layer == 4)
        chosen = (predictions.fold == fold) & (predictions.layer == layer)
        predictions.loc[final, "prediction"] = predictions.loc[chosen, "prediction"].to_numpy()

    assert point_gain(predictions) == 0.0
    assert bootstrap_gain(predictions, selection, "regression", n_boot=50, seed=0) == (0.0, 0.0)


def test_bootstrap_of_a_classification_gain_exact():
    """Selected layer right on every item, final layer wrong on every item: every resample gains exactly 1."""
    table = long_table([[0.9, 0.9], [0.1, 0.1]], [[0.5, 0.5], [0.5, 0.5]], metric="accuracy")
    selection = select_layer(table, "accuracy")
    labels = np.array(["cyto", "nuc", "mito", "nuc"], dtype=object)
    wrong = np.array(["nuc", "mito", "cyto", "cyto"], dtype=object)
    predictions = pd.concat(
        pd.DataFrame({"layer": layer, "fold": fold, "id": [f"{fold}{i}" for i in range(4)], "label": labels,
                      "prediction": labels if layer == 0 else wrong})
        for fold in (0, 1) for layer in (0, 1)
    )

    assert [f["layer"] for f in selection["folds"]] == [0, 0] and selection["n_layers"] == 1
    assert bootstrap_gain(predictions, selection, "classification", n_boot=20, seed=0) == (1.0, 1.0)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("drop final layer of fold 1", r"predictions for fold 1 do not cover layers 2 and 4 alike; rerun `plmexit probe`"),
        ("drop selected layer of fold 2", r"predictions for fold 2 do not cover layers 3 and 4 alike"),
        ("other items in the final layer of fold 0", r"predictions for fold 0 do not cover layers 2 and 4 alike"),
    ],
)
def test_predictions_that_do_not_pair_up_are_an_error(selection, damage, message):
    predictions = predictions_table(selected_noise=0.5, final_noise=1.0)
    if damage == "drop final layer of fold 1":
        predictions = predictions[~((predictions.fold == 1) & (predictions.layer == 4))]
    elif damage == "drop selected layer of fold 2":
        predictions = predictions[~((predictions.fold == 2) & (predictions.layer == 3))]
    else:
        rows = (predictions.fold == 0) & (predictions.layer == 4)
        predictions.loc[rows, "id"] = predictions.loc[rows, "id"] + "x"

    with pytest.raises(InputError, match=message):
        bootstrap_gain(predictions, selection, "regression", n_boot=10, seed=0)


# --- across tasks --------------------------------------------------------------------------------------


def across_summary() -> pd.DataFrame:
    rows = [
        # model, task, n_layers, best_layer, oracle_layer, gain, flops_saved, time_saved
        ("esm2_a", "t1", 6, 6, 6, 0.0, 0.0, 0.0),
        ("esm2_a", "t2", 6, 2, 6, 0.125, 4 / 6, 0.5),
        ("esm2_a", "t3", 6, 3, 1, 0.375, 3 / 6, 0.25),
        ("esm2_a", "t4", 6, 6, 6, 0.0, 0.0, 0.0),
        ("esm2_b", "t1", 3, 1, 3, 0.25, 2 / 3, 0.5),
    ]
    return pd.DataFrame(rows, columns=["model", "task", "n_layers", "best_layer", "oracle_layer", "gain", "flops_saved", "time_saved"])


def test_across_tasks_exact():
    across = across_tasks(across_summary(), n_boot=500, seed=0)

    assert list(across.columns) == ACROSS_TASK_COLUMNS
    assert across["model"].tolist() == ["esm2_a", "esm2_b"]
    a, b = across.to_dict("records")
    assert (a["n_tasks"], a["final_selected_fraction"], a["final_oracle_fraction"], a["mean_gain"]) == (4, 0.5, 0.75, 0.125)
    assert a["mean_flops_saved"] == pytest.approx(7 / 24) and a["mean_time_saved"] == 0.1875
    assert 0.0 <= a["mean_gain_ci_low"] < 0.125 < a["mean_gain_ci_high"] <= 0.375  # means of 4 draws from the gains
    # One task: every resample is that task, so the interval is a point.
    assert b == {
        "model": "esm2_b", "n_tasks": 1, "final_selected_fraction": 0.0, "final_oracle_fraction": 1.0, "mean_gain": 0.25,
        "mean_gain_ci_low": 0.25, "mean_gain_ci_high": 0.25, "mean_flops_saved": pytest.approx(2 / 3), "mean_time_saved": 0.5,
    }


def test_across_tasks_is_deterministic_for_a_seed():
    summary = across_summary()

    pd.testing.assert_frame_equal(across_tasks(summary, n_boot=200, seed=1), across_tasks(summary, n_boot=200, seed=1))
    assert not across_tasks(summary, n_boot=200, seed=1).equals(across_tasks(summary, n_boot=200, seed=2))


def test_across_tasks_of_nothing():
    assert list(across_tasks(across_summary().iloc[:0], n_boot=10, seed=0).columns) == ACROSS_TASK_COLUMNS
