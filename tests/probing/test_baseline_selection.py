"""The baselines in selection: their gains reuse the gain's paired bootstrap, and a task no layer lifts above chance
gets its own verdict, no saving, and is left out of the across-task means."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from plmexit.errors import InputError
from plmexit.probing.choice import (
    ACROSS_TASK_COLUMNS,
    BASELINE_SUMMARY_COLUMNS,
    NOT_ABOVE_CHANCE,
    SUMMARY_COLUMNS,
    across_tasks,
    baseline_gains,
    baseline_scores,
    bootstrap_gain,
    describe,
    select_layer,
    verdict,
)
from plmexit.probing.folds import DEPLOY_FOLD
from plmexit.probing.tables import BASELINE_COLUMNS

from probe_tables import INNER, TEST, long_table

SELECTED = {0: 2, 1: 2, 2: 3}  # select_layer(long_table(INNER, TEST)): folds' layers; the final layer is 4


@pytest.fixture(scope="module")
def selection() -> dict:
    selection = select_layer(long_table(INNER, TEST), "spearman")
    assert {f["fold"]: f["layer"] for f in selection["folds"]} == SELECTED
    return selection


def predictions(seed: int = 0, n: int = 25) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Layer predictions (layers 2, 3, 4) and baseline predictions (chance: the training mean; onehot: noisy truth) of folds 0..2."""
    rng = np.random.default_rng(seed)
    layers, baselines = [], []
    for fold in range(3):
        truth = rng.normal(size=n)
        ids = [f"f{fold}_{i:02d}" for i in range(n)]
        for layer, noise in ((2, 0.5), (3, 0.7), (4, 1.5)):
            layers.append(pd.DataFrame({"model": "m", "task": "t", "layer": layer, "fold": fold, "id": ids, "label": truth,
                                        "prediction": truth + noise * rng.normal(size=n)}))
        for name, prediction in (("chance", np.full(n, 0.1 * fold)), ("onehot", truth + 2.0 * rng.normal(size=n))):
            baselines.append(pd.DataFrame({"model": "m", "task": "t", "baseline": name, "fold": fold, "id": ids, "label": truth, "prediction": prediction}))
    return pd.concat(layers, ignore_index=True), pd.concat(baselines, ignore_index=True)


def baseline_table(scores: dict[str, list[float]]) -> pd.DataFrame:
    rows = [("m", "t", name, fold, "spearman", v) for name, values in scores.items() for fold, v in enumerate(values)]
    rows += [("m", "t", name, DEPLOY_FOLD, "inner_spearman", np.nan) for name in scores]
    return pd.DataFrame(rows, columns=BASELINE_COLUMNS)


def test_baseline_scores_are_means_over_the_evaluation_folds():
    scores = baseline_scores(baseline_table({"chance": [0.0, 0.0, 0.0], "onehot": [0.1, 0.2, 0.6]}), "spearman")
    assert scores == {"chance": 0.0, "onehot": pytest.approx(0.3)}
    with pytest.raises(InputError, match="no 'accuracy' rows"):
        baseline_scores(baseline_table({"chance": [0.0]}), "accuracy")


def test_gains_over_baselines_are_the_gains_bootstrap_with_the_baseline_in_place_of_the_final_layer(selection):
    layers, baselines = predictions()
    scores = {"chance": 0.0, "onehot": 0.25}

    gains = baseline_gains(layers, baselines, scores, selection, "regression", n_boot=60, seed=5)

    assert list(gains) == BASELINE_SUMMARY_COLUMNS
    assert gains["final_gain_over_chance"] == pytest.approx(selection["final_score"])
    assert gains["nested_gain_over_chance"] == pytest.approx(selection["nested_score"])
    assert gains["final_gain_over_baseline"] == pytest.approx(selection["final_score"] - 0.25)
    assert (gains["chance_score"], gains["baseline_features"], gains["baseline_score"]) == (0.0, "onehot", 0.25)
    # Each interval is bootstrap_gain's on a table where the baseline's predictions stand in for the final layer's.
    for column, name, chosen in (("final_gain_over_chance", "chance", {0: 4, 1: 4, 2: 4}),
                                 ("final_gain_over_baseline", "onehot", {0: 4, 1: 4, 2: 4}),
                                 ("nested_gain_over_chance", "chance", SELECTED)):
        swapped = layers[layers.layer != 9].copy()
        standin = baselines[baselines.baseline == name].drop(columns="baseline").assign(layer=9)
        table = pd.concat([swapped[swapped.layer.isin(set(chosen.values()))], standin[swapped.columns]], ignore_index=True)
        versus = {**selection, "n_layers": 9, "folds": [{"fold": f, "layer": layer} for f, layer in chosen.items()]}
        expected = bootstrap_gain(table, versus, "regression", n_boot=60, seed=5)
        assert (gains[column + "_ci_low"], gains[column + "_ci_high"]) == expected
    # The chance predictor is constant within a fold: Spearman 0 on every resample, so its gains' intervals are the layers'.
    assert gains["final_gain_over_chance_ci_low"] > 0


def test_with_the_final_layers_predictions_as_chance_the_nested_interval_is_the_gains(selection):
    """Same units, resamples and seed as the gain: the baseline in the final layer's place gives the gain's interval exactly."""
    layers, baselines = predictions(seed=1)
    final = layers[layers.layer == 4].drop(columns="layer").assign(baseline="chance")
    baselines = pd.concat([baselines[baselines.baseline == "onehot"], final[baselines.columns]], ignore_index=True)

    gains = baseline_gains(layers, baselines, {"chance": 0.0, "onehot": 0.0}, selection, "regression", n_boot=80, seed=2)

    assert (gains["nested_gain_over_chance_ci_low"], gains["nested_gain_over_chance_ci_high"]) == bootstrap_gain(layers, selection, "regression", n_boot=80, seed=2)
    assert (gains["final_gain_over_chance_ci_low"], gains["final_gain_over_chance_ci_high"]) == (0.0, 0.0)


def test_baselines_must_be_chance_and_one_feature_baseline(selection):
    layers, baselines = predictions()
    with pytest.raises(InputError, match="not chance and one feature baseline"):
        baseline_gains(layers, baselines, {"onehot": 0.1}, selection, "regression", n_boot=10, seed=0)


BASE = {"status": "ok", "gain_ci_low": 0.02, "gain_ci_high": 0.10, "min_test_fold_size": 50}


@pytest.mark.parametrize(
    ("nested_low", "final_low", "expected"),
    [
        (-0.01, 0.0, NOT_ABOVE_CHANCE),  # neither beats chance beyond its interval (a low bound of 0 does not)
        (0.01, -0.2, "better_than_final"),  # the nested selection beats chance
        (-0.2, 0.01, "better_than_final"),  # the final layer does
        (None, None, "better_than_final"),  # no baselines were fitted
    ],
)
def test_the_verdict_of_a_task_no_layer_lifts_above_chance(nested_low, final_low, expected):
    selection = {**BASE, "nested_gain_over_chance_ci_low": nested_low, "final_gain_over_chance_ci_low": final_low}
    assert verdict(selection) == expected
    # Too little data says nothing either, but no saving is claimed where nothing beats chance.
    assert verdict({**selection, "min_test_fold_size": 5}) == (NOT_ABOVE_CHANCE if expected == NOT_ABOVE_CHANCE else "too_little_data")
    assert verdict({**selection, "status": "no_signal"}) == "no_signal"


def test_describe_says_no_saving():
    row = {"model": "tiny", "task": "NUD15", "status": "ok", "verdict": NOT_ABOVE_CHANCE, "metric": "spearman", "nested_score": 0.04,
           "final_score": 0.02, "chance_score": 0.0, "nested_gain_over_chance_ci_low": -0.05, "final_gain_over_chance_ci_low": -0.08,
           "deployed_layer": 0, "n_layers": 2, "deployed_time_saved": None}
    assert describe(row) == (
        "tiny / NUD15: no layer beats chance: spearman 0.040 (nested) and 0.020 (final layer) against 0.000 by chance "
        "(95% intervals of the gains over chance start at -0.050 and -0.080); no layer to deploy, no saving"
    )


def test_across_tasks_counts_tasks_not_above_chance_and_leaves_them_out_of_the_means():
    columns = ["model", "task", "dms_id", "fold_scheme", "metric", "status", "verdict", "n_layers", "deployed_layer", "oracle_layer", "gain",
               "deployed_compute_saved", "deployed_time_saved"]
    rows = [
        ("m", "a", None, None, "accuracy", "ok", "better_than_final", 4, 2, 2, 0.2, 0.5, 0.4),
        ("m", "b", None, None, "accuracy", "ok", NOT_ABOVE_CHANCE, 4, 0, 1, 0.0, None, None),
        ("m", "c", None, None, "accuracy", "no_signal", "no_signal", 4, None, None, None, None, None),
    ]
    across = across_tasks(pd.DataFrame(rows, columns=columns), n_boot=20, seed=0)

    assert list(across.columns) == ACROSS_TASK_COLUMNS and ACROSS_TASK_COLUMNS[-1] == "n_not_above_chance"
    (row,) = across.to_dict("records")
    assert (row["n_tasks"], row["n_no_signal"], row["n_not_above_chance"]) == (3, 1, 1)
    assert (row["mean_gain"], row["mean_deployed_time_saved"], row["final_selected_fraction"]) == (0.2, 0.4, 0.0)


def test_the_summary_ends_with_the_baseline_columns():
    assert SUMMARY_COLUMNS[-len(BASELINE_SUMMARY_COLUMNS):] == BASELINE_SUMMARY_COLUMNS
    assert SUMMARY_COLUMNS[: -len(BASELINE_SUMMARY_COLUMNS)][-1] == "layer_norm"  # appended: every earlier column keeps its place
