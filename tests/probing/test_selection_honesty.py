"""Proof on synthetic layers that selection finds planted signal and does not feed on noise.

Every "model" here is a stack of per-layer embeddings (layers 0..8, the final layer is 8). The
probes, the long table and the selection are the library's own; only the embeddings are made up.
On pure noise, a selection that peeked at test scores (the oracle) shows a gain over the final
layer that is not there; the nested selection must not.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from plmexit.pipeline.planning import INNER_SPLIT_OF_SCHEME
from plmexit.probing import choice, probes, tables
from plmexit.probing.folds import DEPLOY_FOLD, deploy_rows

N_LAYERS = 8  # layers 0..N_LAYERS, as an 8-block model with its token embedding
N_ITEMS = 250
DIM = 16
SIGNAL_LAYER = 3
# Short grids keep this file fast; the defaults are exercised by test_cli.py.
RIDGE = probes.ProbeSettings("regression", "spearman", ridge_alphas=(1.0, 100.0, 10000.0))
LOGISTIC = probes.ProbeSettings("classification", "accuracy", logistic_cs=(1.0,), inner_folds=2)


def probe_every_layer(layers: list[np.ndarray], y: np.ndarray, folds: np.ndarray, settings: probes.ProbeSettings):
    """The long probe table (PROBE_COLUMNS) and the predictions (layer, fold, id, label, prediction)."""
    rows, predictions = [], []
    for layer, X in enumerate(layers):
        fits = probes.probe_layer(X, y, folds, settings)
        rows.extend(("synthetic", "planted", layer, fold, metric, value) for fold, metric, value in probes.fold_metrics(fits, y, settings))
        predictions.extend(
            pd.DataFrame({"layer": layer, "fold": fit.fold, "id": fit.test, "label": y[fit.test], "prediction": fit.predictions})
            for fit in fits
        )
    return pd.DataFrame(rows, columns=tables.PROBE_COLUMNS), pd.concat(predictions, ignore_index=True)


def noise_layers(rng: np.random.Generator, n_items: int = N_ITEMS) -> list[np.ndarray]:
    return [rng.normal(size=(n_items, DIM)) for _ in range(N_LAYERS + 1)]


def assert_layer_three_wins(table: pd.DataFrame, predictions: pd.DataFrame, metric: str, n_folds: int, n_boot: int) -> dict:
    selection = choice.select_layer(table, metric)

    assert (selection["n_layers"], selection["n_folds"]) == (N_LAYERS, n_folds)
    assert [f["layer"] for f in selection["folds"]] == [SIGNAL_LAYER] * n_folds  # every fold, on training rows only
    assert selection["deployed_layer"] == SIGNAL_LAYER and selection["oracle_layer"] == SIGNAL_LAYER
    assert selection["deployed_compute_saved"] == (N_LAYERS - SIGNAL_LAYER) / N_LAYERS
    low, high = choice.bootstrap_gain(predictions, selection, "classification" if metric == "accuracy" else "regression", n_boot=n_boot, seed=0)
    assert 0.0 < low <= high
    return selection


def test_planted_regression_signal_at_layer_three_is_selected():
    rng = np.random.default_rng(0)
    layers = noise_layers(rng)
    y = layers[SIGNAL_LAYER] @ rng.normal(size=DIM) + 0.1 * rng.normal(size=N_ITEMS)
    folds = np.arange(N_ITEMS) % 5

    table, predictions = probe_every_layer(layers, y, folds, RIDGE)

    selection = assert_layer_three_wins(table, predictions, "spearman", n_folds=5, n_boot=50)

    assert selection["nested_score"] > 0.95  # spearman of a nearly noiseless linear signal
    assert selection["gain"] > 0.7  # the final layer is noise (its spearman is -0.18 with this seed)


def test_planted_classification_signal_at_layer_three_is_selected():
    rng = np.random.default_rng(1)
    n_items = 150
    layers = noise_layers(rng, n_items)
    labels = np.array(["cyto", "mito", "nuc"], dtype=object)
    classes = np.arange(n_items) % 3
    layers[SIGNAL_LAYER] += 1.5 * rng.normal(size=(3, DIM))[classes]  # class-dependent means at layer 3 only
    folds = rng.permutation(np.arange(n_items) % 3)

    table, predictions = probe_every_layer(layers, labels[classes], folds, LOGISTIC)

    # Few resamples: scikit-learn's accuracy costs milliseconds a call, and the gain here is far from zero.
    selection = assert_layer_three_wins(table, predictions, "accuracy", n_folds=3, n_boot=20)

    assert selection["nested_score"] > 0.9
    assert selection["gain"] > 0.4  # chance accuracy is 1/3


def test_equal_signal_at_two_layers_goes_to_the_shallowest_within_tolerance():
    rng = np.random.default_rng(2)
    layers = noise_layers(rng)
    latent = rng.normal(size=(N_ITEMS, 4))
    y = latent @ np.array([1.0, -1.0, 0.5, 2.0]) + 0.3 * rng.normal(size=N_ITEMS)
    # The same latent signal at layers 2 and 5, layer 5 a little cleaner: on its own it would win.
    layers[2] = latent @ rng.normal(size=(4, DIM)) + 0.5 * rng.normal(size=(N_ITEMS, DIM))
    layers[5] = latent @ rng.normal(size=(4, DIM)) + 0.3 * rng.normal(size=(N_ITEMS, DIM))
    folds = np.arange(N_ITEMS) % 5
    table, _ = probe_every_layer(layers, y, folds, RIDGE)

    strict = choice.select_layer(table, "spearman")
    tolerant = choice.select_layer(table, "spearman", tolerance=0.02)  # inner scores: ~0.981 (layer 2), ~0.988 (layer 5)

    assert strict["deployed_layer"] == 5
    assert [f["layer"] for f in tolerant["folds"]] == [2] * 5
    assert tolerant["deployed_layer"] == 2 and tolerant["deployed_compute_saved"] == 0.75
    assert tolerant["nested_score"] == pytest.approx(strict["nested_score"], abs=0.02)


# --- an official train/test split: the test file never chooses the deployed layer -------------------

N_TRAIN, N_TEST = 40, 80  # two test rows for every training row, as GB1's three-vs-rest demo task has


@pytest.mark.parametrize("task_type", ["regression", "classification"])
def test_signal_only_in_the_test_rows_does_not_move_the_deployed_layer(task_type):
    """Layer 0 carries the label on the training rows only, layer 1 on the test rows only, layer 2 nowhere.

    Fitted on every row, the deploy fold would see layer 1's signal on twice as many rows and deploy
    it; fitted on the rows that are never test rows, as fold 0 is, it deploys layer 0.
    """
    rng = np.random.default_rng(7)
    n = N_TRAIN + N_TEST
    folds = np.r_[np.full(N_TRAIN, -1), np.zeros(N_TEST, dtype=int)]
    latent = rng.normal(size=n)
    y = latent if task_type == "regression" else np.where(latent > 0, "up", "down").astype(object)
    train, test = folds == -1, folds == 0
    layers = [rng.normal(size=(n, 4)) for _ in range(3)]
    layers[0][train, 0] += 3 * latent[train]
    layers[1][test, 0] += 3 * latent[test]
    settings = RIDGE if task_type == "regression" else probes.ProbeSettings("classification", "accuracy", logistic_cs=(0.1, 1.0), inner_folds=3)
    metric = settings.selection_metric

    table, _ = probe_every_layer(layers, y, folds, settings)
    selection = choice.select_layer(table, metric)

    inner = table[table.metric == f"inner_{metric}"].pivot(index="layer", columns="fold", values="value")
    hyper = table[table.metric == probes.HYPERPARAMETER].pivot(index="layer", columns="fold", values="value")
    # The deploy fold is fold 0's fit: the same rows, so the same inner scores and hyperparameters at every layer.
    np.testing.assert_array_equal(inner[DEPLOY_FOLD], inner[0])
    np.testing.assert_array_equal(hyper[DEPLOY_FOLD], hyper[0])
    assert selection["folds"][0]["layer"] == 0 and selection["deployed_layer"] == 0
    # The premise: the same procedure on every row (the test file included) would deploy layer 1.
    every_row, _ = probe_every_layer(layers, y, np.full(n, -1), settings)
    assert every_row[every_row.metric == f"inner_{metric}"].set_index("layer")["value"].idxmax() == 1


def test_deploy_rows_are_the_rows_never_tested():
    np.testing.assert_array_equal(deploy_rows(np.array([-1, 0, -1, 0, 0])), [0, 2])  # a train/test split: the training file
    np.testing.assert_array_equal(deploy_rows(np.array([2, 0, 1, 0])), [0, 1, 2, 3])  # cross-validation: every row
    np.testing.assert_array_equal(deploy_rows(np.array([-1, -1])), [0, 1])  # no test file
    np.testing.assert_array_equal(deploy_rows(np.array([-1, 1, 0, -1])), [0, 3])  # train-only rows beside folds: those only


# --- pure noise: the nested gain is zero on average, the oracle's is not -------------------------------

N_SEEDS = 20
# Three folds and two alphas keep 20 seeds at about two seconds. The noise in a mean test score over
# folds depends on the items tested (all N_ITEMS, whatever the fold count), not on the fold count.
NOISE_FOLDS = np.arange(N_ITEMS) % 3
NOISE_RIDGE = probes.ProbeSettings("regression", "spearman", ridge_alphas=(1.0, 10000.0))


@pytest.fixture(scope="module")
def noise_gains() -> np.ndarray:
    """(N_SEEDS, 2): nested gain (best - final) and oracle gain (oracle - final) when no layer knows y."""
    gains = []
    for seed in range(N_SEEDS):
        rng = np.random.default_rng(1000 + seed)
        y = rng.normal(size=N_ITEMS)
        table, _ = probe_every_layer(noise_layers(rng), y, NOISE_FOLDS, NOISE_RIDGE)
        selection = choice.select_layer(table, "spearman")
        gains.append((selection["nested_score"] - selection["final_score"], selection["oracle_score"] - selection["final_score"]))
    return np.array(gains)


def test_nested_gain_on_noise_is_zero_on_average(noise_gains):
    nested = noise_gains[:, 0]
    standard_error = nested.std(ddof=1) / np.sqrt(N_SEEDS)

    # A fold's test Spearman over 83 noise items has sd ~ 1/sqrt(82) ~ 0.11, the mean of 3 folds ~ 0.064, and
    # a difference of two such (selected minus final layer) at most ~ 0.09. Over 20 seeds the mean has a
    # standard error of at most ~ 0.02, so 0.06 (three of those) bounds an unbiased selection. Observed with
    # these seeds: mean -0.004, standard error 0.019. A selection leaking test scores would sit near the
    # oracle's gain (0.12 with these seeds).
    assert abs(nested.mean()) < 2.5 * standard_error
    assert abs(nested.mean()) < 0.06


def test_oracle_gain_on_noise_is_biased_upwards(noise_gains):
    nested, oracle = noise_gains[:, 0], noise_gains[:, 1]

    # Observed with these seeds: oracle gain 0.123 (standard error 0.019), oracle minus nested 0.127 (0.015);
    # 0.05 leaves more than 3.5 standard errors of headroom on both.
    assert (oracle >= 0).all()  # the final layer is one of the oracle's candidates
    assert oracle.mean() > 0.05
    assert (oracle - nested).mean() > 0.05


# --- inner folds that mimic the outer scheme: memorised positions do not win where positions are held out ---

N_POSITIONS = 100
VARIANTS_PER_POSITION = 8
POSITION_LAYER, RESIDUE_LAYER = 0, 1  # two "layers": one memorises positions, one knows the substituted residue


def planted_positions(scheme: str):
    """Layers, labels, outer folds and positions of a planted deep-mutational scan.

    Each variant's effect is its position's mean effect (sd 1.5) plus its new residue's (sd 1) plus
    noise. Layer 0 gives every variant at a position the same random vector, wider than the number
    of positions, so a probe on it memorises each position's mean effect, which says nothing about
    a position never trained on; layer 1 is the one-hot new residue, which carries to new positions.
    Folds are built by the rule of ProteinGym's scheme (``proteingym.make_folds``).
    """
    rng = np.random.default_rng(3)
    positions = np.repeat(np.arange(1, N_POSITIONS + 1), VARIANTS_PER_POSITION)
    residues = np.tile(np.arange(VARIANTS_PER_POSITION), N_POSITIONS)
    y = 1.5 * rng.normal(size=N_POSITIONS)[positions - 1] + rng.normal(size=VARIANTS_PER_POSITION)[residues] + 0.3 * rng.normal(size=len(positions))
    layers = [rng.normal(size=(N_POSITIONS, N_POSITIONS + 8))[positions - 1], np.eye(VARIANTS_PER_POSITION)[residues]]
    folds = {
        "fold_random_5": rng.integers(0, 5, len(positions)),
        "fold_modulo_5": positions % 5,
        "fold_contiguous_5": (positions - 1) // (N_POSITIONS // 5),
    }[scheme]
    return layers, y, folds, positions


def chosen_layers(layers, y, folds, positions, inner_split: str) -> tuple[dict[int, int], pd.DataFrame]:
    """Per fold (the deploy fold included), the layer with the best inner score; and the probe table."""
    settings = probes.ProbeSettings("regression", "spearman", ridge_alphas=(0.1, 1.0, 10.0, 100.0), inner_split=inner_split)
    rows = []
    for layer, X in enumerate(layers):
        fits = probes.probe_layer(X, y, folds, settings, positions)
        rows.extend(("synthetic", "scan", layer, fold, metric, value) for fold, metric, value in probes.fold_metrics(fits, y, settings))
    table = pd.DataFrame(rows, columns=tables.PROBE_COLUMNS)
    inner = table[table.metric == "inner_spearman"].pivot(index="layer", columns="fold", values="value")
    return {int(fold): int(inner[fold].idxmax()) for fold in inner.columns}, table


@pytest.mark.parametrize(("scheme", "inner_split"), [("fold_modulo_5", "modulo"), ("fold_contiguous_5", "contiguous")])
def test_position_grouped_inner_folds_pick_the_features_that_reach_new_positions(scheme, inner_split):
    layers, y, folds, positions = planted_positions(scheme)
    assert INNER_SPLIT_OF_SCHEME[scheme] == inner_split  # what the workflow passes for this scheme

    grouped, table = chosen_layers(layers, y, folds, positions, inner_split)
    loo, _ = chosen_layers(layers, y, folds, positions, "loo")

    test = table[table.metric == "spearman"].pivot(index="layer", columns="fold", values="value")
    assert (test.loc[RESIDUE_LAYER] > test.loc[POSITION_LAYER]).all()  # on held-out positions only residues help
    assert test.loc[RESIDUE_LAYER].mean() > test.loc[POSITION_LAYER].mean() + 0.2
    assert grouped == {fold: RESIDUE_LAYER for fold in [DEPLOY_FOLD, 0, 1, 2, 3, 4]}
    # Leave-one-out over variants keeps each held-out variant's position in training, so memorising wins:
    # the wrong layer, in every fold and for the deployed probe.
    assert loo == {fold: POSITION_LAYER for fold in [DEPLOY_FOLD, 0, 1, 2, 3, 4]}
    assert choice.select_layer(table, "spearman")["deployed_layer"] == RESIDUE_LAYER


def test_under_random_folds_leave_one_out_picks_what_the_test_rewards():
    layers, y, folds, positions = planted_positions("fold_random_5")
    assert INNER_SPLIT_OF_SCHEME["fold_random_5"] == "loo"

    chosen, table = chosen_layers(layers, y, folds, positions, "loo")

    # Random folds test positions that training has seen, so memorising them is what generalises.
    test = table[table.metric == "spearman"].pivot(index="layer", columns="fold", values="value")
    assert (test.loc[POSITION_LAYER] > test.loc[RESIDUE_LAYER]).all()
    assert chosen == {fold: POSITION_LAYER for fold in [DEPLOY_FOLD, 0, 1, 2, 3, 4]}
