"""Layer selection, the gain's bootstrap interval and the across-task view, on hand-built tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from plmexit.errors import InputError
from plmexit.probing.choice import (
    ACROSS_TASK_COLUMNS,
    MIN_ACROSS_TASKS,
    SUMMARY_COLUMNS,
    across_tasks,
    bootstrap_gain,
    describe,
    select_layer,
    summarize,
    verdict,
)
from plmexit.probing.folds import DEPLOY_FOLD
from plmexit.probing.metrics import CONFUSION_METRICS, METRICS, confusion, fmax, fmax_of_terms, fmax_terms, spearman

from probe_tables import INNER, TEST, as_selection, long_table


def test_select_layer_exact():
    selection = select_layer(long_table(INNER, TEST), "spearman")

    hyper = {"hyperparameter": 10.0, "final_hyperparameter": 10.0}
    assert selection["folds"] == [
        {"fold": 0, "layer": 2, "inner_score": 0.70, "test_score": 0.50, "final_test_score": 0.20,
         "test_metrics": {"mse": 98.0, "spearman": 0.50}, "final_test_metrics": {"mse": 96.0, "spearman": 0.20}, **hyper},
        {"fold": 1, "layer": 2, "inner_score": 0.65, "test_score": 0.45, "final_test_score": 0.10,
         "test_metrics": {"mse": 98.0, "spearman": 0.45}, "final_test_metrics": {"mse": 96.0, "spearman": 0.10}, **hyper},
        {"fold": 2, "layer": 3, "inner_score": 0.66, "test_score": 0.45, "final_test_score": 0.15,
         "test_metrics": {"mse": 97.0, "spearman": 0.45}, "final_test_metrics": {"mse": 96.0, "spearman": 0.15}, **hyper},
    ]
    assert {k: selection[k] for k in ("model", "task", "metric", "status", "n_layers", "n_folds", "tolerance", "deployed_layer", "fold_layers")} == {
        "model": "esm2_tiny", "task": "toy", "metric": "spearman", "status": "ok", "n_layers": 4, "n_folds": 3, "tolerance": 0.0,
        "deployed_layer": 2, "fold_layers": [2, 2, 3],
    }
    assert selection["nested_score"] == pytest.approx((0.50 + 0.45 + 0.45) / 3)  # each fold's own choice, held out
    assert selection["final_score"] == pytest.approx((0.20 + 0.10 + 0.15) / 3)
    assert selection["gain"] == pytest.approx((0.50 + 0.45 + 0.45) / 3 - (0.20 + 0.10 + 0.15) / 3)
    assert selection["deployed_compute_saved"] == 0.5  # (4 - 2) / 4
    assert selection["folds_compute_saved"] == pytest.approx((0.5 + 0.5 + 0.25) / 3)
    assert selection["fold_agreement"] == pytest.approx(2 / 3)
    assert selection["deployed_inner_score"] == pytest.approx(np.mean(INNER[2]))
    assert selection["oracle_layer"] == 0 and selection["oracle_score"] == pytest.approx(0.90)
    assert selection["mean_test_score_by_layer"] == pytest.approx({0: 0.90, 1: 0.30, 2: 0.45, 3: 0.4666666667, 4: 0.15})


def test_selection_ignores_test_scores():
    boosted = [row[:] for row in TEST]
    boosted[4] = [0.99, 0.99, 0.99]  # make the final layer the test-set winner too

    selection = select_layer(long_table(INNER, boosted), "spearman")

    assert [f["layer"] for f in selection["folds"]] == [2, 2, 3]
    assert selection["deployed_layer"] == 2
    assert selection["oracle_layer"] == 4


def test_tolerance_prefers_the_shallowest_layer_within_reach():
    selection = select_layer(long_table(INNER, TEST), "spearman", tolerance=0.02)

    assert [f["layer"] for f in selection["folds"]] == [2, 2, 2]  # fold 2: 0.65 is within 0.02 of 0.66
    assert selection["nested_score"] == pytest.approx((0.50 + 0.45 + 0.40) / 3)
    assert selection["tolerance"] == 0.02

    wide = select_layer(long_table(INNER, TEST), "spearman", tolerance=0.25)
    assert [f["layer"] for f in wide["folds"]] == [1, 1, 2]


def test_exact_inner_ties_go_to_the_shallowest_layer():
    inner = [[0.1, 0.1], [0.8, 0.8], [0.5, 0.5], [0.8, 0.8]]
    test = [[0.0, 0.0], [0.3, 0.3], [0.2, 0.2], [0.6, 0.6]]

    selection = select_layer(long_table(inner, test), "spearman")

    assert selection["deployed_layer"] == 1 and selection["fold_layers"] == [1, 1]
    assert selection["deployed_compute_saved"] == pytest.approx(2 / 3)


def test_the_deployed_layer_is_chosen_on_all_training_rows_not_by_a_vote_of_folds():
    """Folds choosing [3, 1] do not vote: the deployed layer is the procedure run on all training rows."""
    inner = [[0.1, 0.1], [0.2, 0.9], [0.3, 0.3], [0.9, 0.2]]  # fold 0 picks 3, fold 1 picks 1
    test = [[0.0, 0.0], [0.3, 0.5], [0.2, 0.2], [0.7, 0.1]]

    selection = select_layer(long_table(inner, test, deploy=[0.1, 0.5, 0.6, 0.55]), "spearman")

    assert [f["layer"] for f in selection["folds"]] == [3, 1]
    assert selection["deployed_layer"] == 2 and selection["fold_agreement"] == 0.0
    assert selection["nested_score"] == pytest.approx((0.7 + 0.5) / 2)
    assert selection["deployed_compute_saved"] == pytest.approx(1 / 3)
    assert selection["folds_compute_saved"] == pytest.approx((0 + 2 / 3) / 2)


def test_every_number_describes_its_own_layer():
    """Folds choosing [2, 2, 6, 6, 5]: the old summary paired the mode's saving (layer 2) with the folds' mean score."""
    n = 7
    choices = [2, 2, 6, 6, 5]
    inner = [[0.9 if layer == choice else 0.1 for choice in choices] for layer in range(n)]
    test = [[0.30 if layer == 2 else 0.55 if layer in (5, 6) else 0.1 for _ in choices] for layer in range(n)]

    selection = select_layer(long_table(inner, test, deploy=[0.9 if layer == 6 else 0.2 for layer in range(n)]), "spearman")

    assert selection["fold_layers"] == choices
    assert selection["deployed_layer"] == 6 and selection["deployed_compute_saved"] == 0.0
    assert selection["nested_score"] == pytest.approx((0.30 * 2 + 0.55 * 3) / 5)
    assert selection["folds_compute_saved"] == pytest.approx(np.mean([(6 - c) / 6 for c in choices]))
    assert selection["fold_agreement"] == pytest.approx(2 / 5)


def test_a_layer_without_signal_is_never_chosen():
    """NaN inner scores (constant training features) lose even to negative scores."""
    nan = float("nan")
    inner = [[nan, nan], [-0.2, -0.1], [nan, nan]]
    test = [[0.0, 0.0], [0.1, 0.2], [0.0, 0.0]]

    selection = select_layer(long_table(inner, test, deploy=[nan, -0.15, nan]), "spearman")

    assert selection["status"] == "ok" and selection["fold_layers"] == [1, 1] and selection["deployed_layer"] == 1
    assert selection["oracle_layer"] == 1


def test_a_task_where_no_layer_has_signal_is_no_signal_not_a_saving():
    """Every variant embedded alike (mutations cut away): before, every layer tied at 0 and layer 0 'saved' 100%."""
    nan = float("nan")
    inner = [[nan, nan]] * 4
    test = [[0.0, 0.0]] * 4

    selection = select_layer(long_table(inner, test, deploy=[nan] * 4), "spearman")

    assert selection["status"] == "no_signal"
    assert selection["deployed_layer"] is None and selection["fold_layers"] == [None, None]
    for key in ("gain", "nested_score", "deployed_compute_saved", "folds_compute_saved", "fold_agreement", "oracle_layer"):
        assert selection[key] is None, key
    with pytest.raises(InputError, match="no layer to compare with the final one"):
        bootstrap_gain(pd.DataFrame(columns=["layer", "fold", "id", "label", "prediction"]), selection, "regression", n_boot=5, seed=0)


def test_hyperparameters_on_the_edge_of_their_grid_are_reported():
    def hyper(layer, fold):
        return (1e5, 1.0) if (layer, fold) == (2, 1) else (0.1, -1.0) if (layer, fold) == (2, DEPLOY_FOLD) else (10.0, 0.0)

    selection = select_layer(long_table(INNER, TEST, hyper=hyper), "spearman")

    assert selection["folds"][1]["hyperparameter"] == 1e5
    assert selection["deployed_hyperparameter"] == 0.1
    assert selection["hyperparameters_on_grid_edge"] == [
        {"fold": 1, "layer": 2, "value": 1e5, "edge": "highest"}, {"fold": DEPLOY_FOLD, "layer": 2, "value": 0.1, "edge": "lowest"},
    ]


def test_a_probe_table_without_deploy_rows_is_an_error():
    table = long_table(INNER, TEST)

    with pytest.raises(InputError, match=r"no 'inner_spearman' rows for fold -1 \(the deploy rows\), so no deployed layer; rerun `plmexit probe`"):
        select_layer(table[table.fold != DEPLOY_FOLD], "spearman")


def test_selection_by_a_classification_metric():
    selection = select_layer(long_table(INNER, TEST, metric="macro_f1"), "macro_f1")

    assert selection["metric"] == "macro_f1" and selection["deployed_layer"] == 2


def test_missing_metric_rows():
    table = long_table(INNER, TEST)

    with pytest.raises(InputError, match=r"no 'accuracy' rows \(metrics: hyperparameter, hyperparameter_edge, inner_spearman, mse, spearman\); select by the metric the probes were run with"):
        select_layer(table, "accuracy")
    with pytest.raises(InputError, match=r"no 'inner_spearman' rows"):
        select_layer(table[table.metric != "inner_spearman"], "spearman")


def test_summarize_column_order_and_sorting():
    first = as_selection(select_layer(long_table(INNER, TEST, model="esm2_b", task="x"), "spearman"))
    second = as_selection(select_layer(long_table(INNER, TEST, model="esm2_a", task="y"), "spearman"))
    third = as_selection(select_layer(long_table(INNER, TEST, model="esm2_a", task="b"), "spearman"))

    summary = summarize([first, second, third])

    assert list(summary.columns) == SUMMARY_COLUMNS
    assert SUMMARY_COLUMNS[:9] == ["model", "task", "dms_id", "fold_scheme", "metric", "status", "verdict", "n_layers", "deployed_layer"]
    assert summary[["model", "task"]].values.tolist() == [["esm2_a", "b"], ["esm2_a", "y"], ["esm2_b", "x"]]
    assert summary["deployed_layer"].tolist() == [2, 2, 2]
    assert summary["fold_layers"].tolist() == ["2;2;3"] * 3
    assert list(summary.index) == [0, 1, 2]
    assert summary["deployed_compute_saved"].tolist() == [0.5, 0.5, 0.5] and summary["layer_norm"].tolist() == ["raw"] * 3
    assert summary["gain_ci_low"].tolist() == pytest.approx([first.gain - 0.1] * 3)


@pytest.mark.parametrize(
    ("low", "high", "smallest", "expected"),
    [
        (0.02, 0.10, 50, "better_than_final"),
        (-0.10, -0.01, 50, "worse_than_final"),
        (-0.05, 0.08, 50, "not_distinguishable"),
        (0.05, 0.50, 50, "too_little_data"),  # wider than MAX_INTERVAL_WIDTH
        (0.02, 0.10, 6, "too_little_data"),  # 30 items in 5 folds: a clear-looking gain on noise
    ],
)
def test_verdict(low, high, smallest, expected):
    assert verdict({"status": "ok", "gain_ci_low": low, "gain_ci_high": high, "min_test_fold_size": smallest}) == expected


def test_describe_says_layer_scores_interval_saving_and_verdict():
    row = {"model": "esm2_8M", "task": "loc", "status": "ok", "deployed_layer": 4, "n_layers": 6, "metric": "accuracy",
           "nested_score": 0.712, "final_score": 0.695, "gain": 0.017, "gain_ci_low": -0.004, "gain_ci_high": 0.038,
           "deployed_time_saved": 0.31, "verdict": "not_distinguishable"}

    assert describe(row) == (
        "esm2_8M / loc: layer 4 of 6, accuracy 0.712 against 0.695 at the final layer (gain +0.017, 95% interval -0.004 to +0.038), "
        "31% of forward time saved: not distinguishable from the final layer"
    )
    assert describe({**row, "status": "no_signal"}) == "esm2_8M / loc: no layer carries a signal (see its selection JSON)"


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


LOCATIONS = np.array(["Cytoplasm", "Mitochondrion", "Nucleus", "Plastid"])


@pytest.mark.filterwarnings("ignore:A single label was found")  # scikit-learn on the one-label case
@pytest.mark.parametrize("metric", ["accuracy", "macro_f1", "mcc"])
def test_confusion_metrics_equal_scikit_learns(metric):
    rng = np.random.default_rng(0)
    cases = [(LOCATIONS[rng.integers(0, 3, n)], LOCATIONS[rng.integers(1, 4, n)]) for n in (1, 2, 7, 50)]  # each side lacks a label the other has
    cases += [(LOCATIONS[[0, 0, 0]], LOCATIONS[[0, 0, 0]]), (LOCATIONS[[0, 1, 2]], LOCATIONS[[3, 3, 3]])]  # one label; no hit
    for truth, predicted in cases:
        names, codes = np.unique(np.concatenate([truth, predicted]), return_inverse=True)
        counts = confusion(codes[: len(truth)], codes[len(truth) :], len(names))
        assert CONFUSION_METRICS[metric](counts) == pytest.approx(METRICS["classification"][metric](truth, predicted), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1", "mcc"])
def test_the_classification_bootstrap_equals_the_metric_by_metric_one(selection, metric, monkeypatch):
    rng = np.random.default_rng(1)
    frames = []
    for fold in range(3):
        truth = LOCATIONS[rng.integers(0, 4, 30)]
        for layer in (2, 3, 4):
            prediction = np.where(rng.random(30) < (0.8 if layer < 4 else 0.5), truth, LOCATIONS[rng.integers(0, 4, 30)])
            frames.append(pd.DataFrame({"layer": layer, "fold": fold, "id": [f"f{fold}_{i:02d}" for i in range(30)], "label": truth, "prediction": prediction}))
    predictions = pd.concat(frames, ignore_index=True)
    classified = {**selection, "metric": metric}

    fast = bootstrap_gain(predictions, classified, "classification", n_boot=50, seed=0)
    monkeypatch.setattr("plmexit.probing.choice.CONFUSION_METRICS", {})  # scikit-learn's metric on every resample
    slow = bootstrap_gain(predictions, classified, "classification", n_boot=50, seed=0)

    assert fast == pytest.approx(slow, rel=1e-12, abs=1e-15)


def test_fmax_of_any_resample_is_fmax_of_its_items_terms():
    rng = np.random.default_rng(2)
    truth, scores = rng.random((40, 7)) < 0.3, rng.random((40, 7)).astype(np.float32)
    truth[3] = False  # an item with no true class
    terms = fmax_terms(truth, scores)
    for items in (np.arange(40), rng.integers(0, 40, 40), np.array([3, 3, 5]), np.array([3])):
        assert fmax_of_terms(terms[items]) == fmax(truth[items], scores[items])  # the same sums, in the same order


def test_the_multilabel_bootstrap_equals_the_metric_by_metric_one(selection, monkeypatch):
    rng = np.random.default_rng(3)
    frames = []
    for fold in range(3):
        truth = rng.random((30, 6)) < 0.3
        for layer in (2, 3, 4):
            scores = np.clip(truth + rng.normal(0, 0.4 if layer < 4 else 0.8, truth.shape), 0, 1)
            frames.append(pd.DataFrame({"layer": layer, "fold": fold, "id": [f"f{fold}_{i:02d}" for i in range(30)],
                                        "label": list(truth.astype(int)), "prediction": list(scores)}))
    predictions = pd.concat(frames, ignore_index=True)
    labelled = {**selection, "metric": "fmax"}

    fast = bootstrap_gain(predictions, labelled, "multilabel", n_boot=50, seed=0)
    monkeypatch.setattr("plmexit.probing.choice.TERM_METRICS", {})  # Fmax of every resample's rows
    slow = bootstrap_gain(predictions, labelled, "multilabel", n_boot=50, seed=0)

    assert fast == slow


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


def test_clusters_of_one_item_give_the_item_bootstrap(selection):
    predictions = predictions_table(selected_noise=0.5, final_noise=1.0)
    singletons = {i: i for i in predictions["id"]}

    assert bootstrap_gain(predictions, selection, "regression", n_boot=40, seed=3, clusters=singletons) == bootstrap_gain(
        predictions, selection, "regression", n_boot=40, seed=3
    )


def test_a_cluster_bootstrap_resamples_positions_and_is_wider_when_positions_are_correlated(selection):
    """Variants at one position share an error: resampling them singly understates the uncertainty."""
    rng = np.random.default_rng(0)
    frames, clusters = [], {}
    for fold in range(3):
        positions = np.repeat(np.arange(8), 10)  # 8 positions x 10 variants
        ids = [f"f{fold}_p{p}_{i}" for i, p in enumerate(positions)]
        clusters.update({i: f"{fold}:{p}" for i, p in zip(ids, positions)})
        truth = rng.normal(size=8)[positions] + 0.3 * rng.normal(size=len(positions))
        for layer in (2, 3, 4):
            shared = rng.normal(size=8)[positions]  # an error common to a position's variants
            frames.append(pd.DataFrame({"layer": layer, "fold": fold, "id": ids, "label": truth, "prediction": truth + shared}))
    predictions = pd.concat(frames, ignore_index=True)

    items = bootstrap_gain(predictions, selection, "regression", n_boot=300, seed=0)
    positions = bootstrap_gain(predictions, selection, "regression", n_boot=300, seed=0, clusters=clusters)

    assert positions[1] - positions[0] > 1.5 * (items[1] - items[0])


def test_clusters_that_cross_folds_are_drawn_once_for_all_folds(selection):
    """Random folds test each position in several folds; its error is shared across them. Drawn within each
    fold (as nested clusters are) positions would be resampled independently per fold, as items are."""
    rng = np.random.default_rng(1)
    positions = np.repeat(np.arange(24), 6)  # 24 positions x 6 variants, spread over the 3 folds at random
    ids = np.array([f"p{p}_{i}" for i, p in enumerate(positions)])
    folds = rng.permutation(np.arange(len(ids)) % 3)
    truth = rng.normal(size=24)[positions] + 0.3 * rng.normal(size=len(ids))
    frames = [
        pd.DataFrame({"layer": layer, "fold": folds, "id": ids, "label": truth, "prediction": truth + rng.normal(size=24)[positions]})
        for layer in (2, 3, 4)
    ]
    predictions = pd.concat(frames, ignore_index=True)
    clusters = {i: int(p) for i, p in zip(ids, positions)}
    within_folds = {i: f"{f}:{p}" for i, p, f in zip(ids, positions, folds)}  # the same positions, as if each fold's were its own

    items = bootstrap_gain(predictions, selection, "regression", n_boot=300, seed=0)
    crossing = bootstrap_gain(predictions, selection, "regression", n_boot=300, seed=0, clusters=clusters)
    nested = bootstrap_gain(predictions, selection, "regression", n_boot=300, seed=0, clusters=within_folds)

    # Widths with this seed: items 0.25, positions drawn within folds 0.38, drawn once for all folds 0.54.
    assert crossing[1] - crossing[0] > 1.3 * (nested[1] - nested[0]) and nested[1] - nested[0] > items[1] - items[0]


# --- across tasks --------------------------------------------------------------------------------------


def across_summary() -> pd.DataFrame:
    rows = [
        # model, task, dms_id, fold_scheme, metric, status, n_layers, deployed_layer, oracle_layer, gain, deployed_compute_saved, deployed_time_saved
        ("esm2_a", "t1", None, None, "accuracy", "ok", 6, 6, 6, 0.0, 0.0, 0.0),
        ("esm2_a", "t2", None, None, "accuracy", "ok", 6, 2, 6, 0.125, 4 / 6, 0.5),
        ("esm2_a", "t3", None, None, "accuracy", "ok", 6, 3, 1, 0.375, 3 / 6, 0.25),
        ("esm2_a", "t4", None, None, "accuracy", "ok", 6, 6, 6, 0.0, 0.0, 0.0),
        ("esm2_b", "t1", None, None, "accuracy", "ok", 3, 1, 3, 0.25, 2 / 3, 0.5),
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


COLUMNS = ["model", "task", "dms_id", "fold_scheme", "metric", "status", "n_layers", "deployed_layer", "oracle_layer", "gain",
           "deployed_compute_saved", "deployed_time_saved"]


def test_across_tasks_exact():
    across = across_tasks(across_summary(), n_boot=500, seed=0)

    assert list(across.columns) == ACROSS_TASK_COLUMNS
    assert across["model"].tolist() == ["esm2_a", "esm2_b"]
    a, b = across.to_dict("records")
    assert (a["metric"], a["scheme"], a["n_tasks"], a["n_no_signal"]) == ("accuracy", "-", 4, 0)
    assert (a["final_selected_fraction"], a["final_oracle_fraction"], a["mean_gain"]) == (0.5, 0.75, 0.125)
    assert a["mean_deployed_compute_saved"] == pytest.approx(7 / 24) and a["mean_deployed_time_saved"] == 0.1875
    assert 0.0 <= a["mean_gain_ci_low"] < 0.125 < a["mean_gain_ci_high"] <= 0.375  # means of 4 draws from the gains
    # One task: every resample is that task, so the interval is a point.
    assert b == {
        "model": "esm2_b", "metric": "accuracy", "scheme": "-", "n_tasks": 1, "n_no_signal": 0, "final_selected_fraction": 0.0,
        "final_oracle_fraction": 1.0, "mean_gain": 0.25, "mean_gain_ci_low": 0.25, "mean_gain_ci_high": 0.25, "verdict": "too_little_data",
        "mean_deployed_compute_saved": pytest.approx(2 / 3), "mean_deployed_time_saved": 0.5, "n_not_above_chance": 0,
    }


def test_across_tasks_never_mixes_metrics_and_counts_each_assay_once():
    """Before: one mean over Spearman, accuracy and Fmax together, each assay counted three times (once per scheme)."""
    rows = [
        ("m", "loc", None, None, "accuracy", "ok", 4, 2, 4, 0.10, 0.5, 0.4),
        ("m", "ec", None, None, "fmax", "ok", 4, 4, 4, 0.00, 0.0, 0.0),
        ("m", "gb1", None, None, "spearman", "ok", 4, 3, 3, 0.30, 0.25, 0.2),
    ]
    for assay, gains in (("A", (0.2, 0.0, 0.1)), ("B", (0.0, 0.0, 0.0))):
        for scheme, gain in zip(("fold_random_5", "fold_modulo_5", "fold_contiguous_5"), gains):
            rows.append(("m", f"{assay}.{scheme}", assay, scheme, "spearman", "ok", 4, 4 if gain == 0 else 1, 4, gain, 0.0 if gain == 0 else 0.75, 0.0))
    rows.append(("m", "C.fold_random_5", "C", "fold_random_5", "spearman", "no_signal", 4, None, None, None, None, None))

    across = across_tasks(pd.DataFrame(rows, columns=COLUMNS), n_boot=50, seed=0).set_index(["metric", "scheme"])

    assert sorted(across.index) == sorted([
        ("accuracy", "-"), ("fmax", "-"), ("spearman", "-"), ("spearman", "all"),
        ("spearman", "fold_contiguous_5"), ("spearman", "fold_modulo_5"), ("spearman", "fold_random_5"),
    ])
    assert across.loc[("spearman", "fold_random_5"), ["n_tasks", "n_no_signal", "mean_gain"]].tolist() == [3, 1, pytest.approx(0.1)]
    assert across.loc[("spearman", "fold_contiguous_5"), "mean_gain"] == pytest.approx(0.05)
    # Each assay once: A's three schemes average to 0.1, B's to 0; GB1 (no scheme) is not mixed in, nor C (one scheme only).
    everything = across.loc[("spearman", "all")]
    assert (everything["n_tasks"], everything["n_no_signal"], everything["mean_gain"]) == (2, 0, pytest.approx(0.05))
    assert everything["final_selected_fraction"] == pytest.approx((1 / 3 + 1) / 2)
    assert across.loc[("spearman", "-"), "mean_gain"] == pytest.approx(0.3)
    assert across.loc[("accuracy", "-"), "mean_gain"] == pytest.approx(0.1)


def _scheme_rows(assay: str, gains: dict[str, float | None]) -> list[tuple]:
    """An assay's summary rows, one per scheme: a gain, or None for no_signal."""
    return [("m", f"{assay}.{scheme}", assay, scheme, "spearman", "ok" if gain is not None else "no_signal", 4,
             None if gain is None else 2, None if gain is None else 4, gain, None if gain is None else 0.5, None if gain is None else 0.4)
            for scheme, gain in gains.items()]


def test_the_all_row_holds_only_assays_seen_under_every_scheme_and_counts_assays():
    """Before: ``all`` averaged BLAT over three schemes beside NUD15 over one, and counted NUD15's no_signal
    rows (3) against assays (2)."""
    rows = [
        *_scheme_rows("BLAT", {"fold_random_5": 0.3, "fold_modulo_5": 0.0, "fold_contiguous_5": 0.0}),
        *_scheme_rows("NUD15", {"fold_contiguous_5_built": -0.3}),  # a built scheme counts as the published one
        *_scheme_rows("SPG1", {"fold_random_5": None, "fold_modulo_5": None, "fold_contiguous_5": 0.2}),
        *_scheme_rows("GFP", {"fold_random_5": 0.0, "fold_modulo_5_built": 0.3, "fold_contiguous_5": 0.0}),
    ]

    across = across_tasks(pd.DataFrame(rows, columns=COLUMNS), n_boot=50, seed=0).set_index(["metric", "scheme"])
    everything = across.loc[("spearman", "all")]

    # BLAT and GFP (0.1 each over their three schemes) and SPG1, no_signal under two schemes, counted once; NUD15 left out.
    assert (everything["n_tasks"], everything["n_no_signal"], everything["mean_gain"]) == (3, 1, pytest.approx(0.1))
    assert across.loc[("spearman", "fold_random_5"), ["n_tasks", "n_no_signal"]].tolist() == [3, 1]
    assert across.loc[("spearman", "fold_contiguous_5_built"), ["n_tasks", "n_no_signal"]].tolist() == [1, 0]
    assert everything["verdict"] == "too_little_data"  # two assays with a signal


@pytest.mark.parametrize(("gains", "expected"), [
    ([0.05 + 0.001 * k for k in range(MIN_ACROSS_TASKS)], "better_than_final"),
    ([-0.05 - 0.001 * k for k in range(MIN_ACROSS_TASKS)], "worse_than_final"),
    ([0.05 * (-1) ** k for k in range(MIN_ACROSS_TASKS)], "not_distinguishable"),
    ([0.05 + 0.001 * k for k in range(MIN_ACROSS_TASKS - 1)], "too_little_data"),  # a clear interval over too few tasks
    ([0.9 * (-1) ** k for k in range(MIN_ACROSS_TASKS)], "too_little_data"),  # wider than MAX_INTERVAL_WIDTH
])
def test_an_across_task_interval_gets_the_small_sample_guard_of_a_task(gains, expected):
    rows = [("m", f"t{k}", None, None, "accuracy", "ok", 4, 2, 4, gain, 0.5, 0.4) for k, gain in enumerate(gains)]

    across = across_tasks(pd.DataFrame(rows, columns=COLUMNS), n_boot=200, seed=0)

    assert across["verdict"].tolist() == [expected]


def test_across_tasks_is_deterministic_for_a_seed():
    summary = across_summary()

    pd.testing.assert_frame_equal(across_tasks(summary, n_boot=200, seed=1), across_tasks(summary, n_boot=200, seed=1))
    assert not across_tasks(summary, n_boot=200, seed=1).equals(across_tasks(summary, n_boot=200, seed=2))


def test_across_tasks_of_nothing():
    assert list(across_tasks(across_summary().iloc[:0], n_boot=10, seed=0).columns) == ACROSS_TASK_COLUMNS
