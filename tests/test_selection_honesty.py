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

from plmexit import probes, select

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
    return pd.DataFrame(rows, columns=select.PROBE_COLUMNS), pd.concat(predictions, ignore_index=True)


def noise_layers(rng: np.random.Generator, n_items: int = N_ITEMS) -> list[np.ndarray]:
    return [rng.normal(size=(n_items, DIM)) for _ in range(N_LAYERS + 1)]


def assert_layer_three_wins(table: pd.DataFrame, predictions: pd.DataFrame, metric: str, n_folds: int, n_boot: int) -> dict:
    selection = select.select_layer(table, metric)

    assert (selection["n_layers"], selection["n_folds"]) == (N_LAYERS, n_folds)
    assert [f["layer"] for f in selection["folds"]] == [SIGNAL_LAYER] * n_folds  # every fold, on training rows only
    assert selection["deployed_layer"] == SIGNAL_LAYER and selection["oracle_layer"] == SIGNAL_LAYER
    assert selection["deployed_compute_saved"] == (N_LAYERS - SIGNAL_LAYER) / N_LAYERS
    low, high = select.bootstrap_gain(predictions, selection, "classification" if metric == "accuracy" else "regression", n_boot=n_boot, seed=0)
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

    strict = select.select_layer(table, "spearman")
    tolerant = select.select_layer(table, "spearman", tolerance=0.02)  # inner scores: ~0.981 (layer 2), ~0.988 (layer 5)

    assert strict["deployed_layer"] == 5
    assert [f["layer"] for f in tolerant["folds"]] == [2] * 5
    assert tolerant["deployed_layer"] == 2 and tolerant["deployed_compute_saved"] == 0.75
    assert tolerant["nested_score"] == pytest.approx(strict["nested_score"], abs=0.02)


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
        selection = select.select_layer(table, "spearman")
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
