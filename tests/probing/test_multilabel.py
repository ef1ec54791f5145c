"""Multi-label probes (DeepFRI EC): Fmax and F1 exact on worked examples, one-vs-rest probes find
planted signal, and the predictions round-trip through the probe and select steps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from plmexit.probing import tables
from plmexit.probing.folds import DEPLOY_FOLD
from plmexit.probing.metrics import METRICS, fmax
from plmexit.probing.probes import ProbeSettings, probe_layer


def test_fmax_worked_example():
    truth = np.array([[1, 0], [0, 1]])
    # A class is called when its score is above t (DeepFRI's ``>``).
    # t < 0.3: both items call both classes (precision 1/2, recall 1) -> F 2/3.
    # 0.8 <= t < 0.9: item 1 calls class 0 (1, 1), item 2 calls nothing (no precision, recall 0) -> F 2/3.
    # Thresholds in between are worse; from 0.9 on nothing is called.
    assert fmax(truth, np.array([[0.9, 0.8], [0.6, 0.3]])) == pytest.approx(2 / 3)
    assert fmax(truth, np.array([[0.9, 0.2], [0.6, 0.7]])) == 1.0
    assert fmax(truth, np.zeros((2, 2))) == 0.0


def test_thresholded_f1():
    truth = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
    scores = np.array([[0.9, 0.1, 0.4], [0.2, 0.5, 0.1], [0.7, 0.2, 0.6]])
    # Called at 0.5: [1,0,0], [0,1,0], [1,0,1] -> tp 3, fp 1, fn 2.
    assert METRICS["multilabel"]["micro_f1"](truth, scores) == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))
    # Per class F1: class 0 = 1, class 1 = 2/3, class 2 = 0.
    assert METRICS["multilabel"]["macro_f1"](truth, scores) == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_one_vs_rest_probe_finds_planted_signal():
    rng = np.random.default_rng(0)
    n, k = 150, 3
    truth = (rng.random((n, k)) < 0.35).astype(int)
    truth[truth.sum(axis=1) == 0, 0] = 1
    signal = np.hstack([truth * 2.0, rng.normal(size=(n, 5))]) + rng.normal(scale=0.3, size=(n, k + 5))
    noise = rng.normal(size=(n, k + 5))
    folds = np.arange(n) % 3
    settings = ProbeSettings("multilabel", "fmax", logistic_cs=(0.01, 1.0), inner_folds=3)

    good = probe_layer(signal, truth, folds, settings)
    bad = probe_layer(noise, truth, folds, settings)

    *tested, deploy = good
    for fit in tested:
        assert fit.predictions.shape == (n // 3, k) and ((fit.predictions >= 0) & (fit.predictions <= 1)).all()
    assert deploy.fold == DEPLOY_FOLD and deploy.predictions.shape == (0, k) and deploy.inner_score > 0.9
    assert min(fmax(truth[f.test], f.predictions) for f in tested) > 0.9
    assert np.mean([f.inner_score for f in good]) > np.mean([f.inner_score for f in bad]) + 0.2


def test_a_class_constant_in_training_gets_its_constant_probability():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 4))
    truth = np.zeros((40, 2), dtype=int)
    truth[:, 0] = 1  # every row has class 0
    truth[:20, 1] = np.arange(20) % 2  # class 1 only among rows 0-19
    folds = np.repeat([0, 1], 20)

    fits = probe_layer(X, truth, folds, ProbeSettings("multilabel", "fmax", logistic_cs=(1.0,), inner_folds=2))

    # Fold 0 trains on rows 20-39: class 0 always present, class 1 never.
    assert fits[0].predictions.tolist() == [[1.0, 0.0]] * 20
    # Fold 1 trains on rows 0-19, where class 1 varies: a real probe.
    assert np.all(fits[1].predictions[:, 0] == 1.0) and 0.0 < fits[1].predictions[:, 1].min() < fits[1].predictions[:, 1].max() < 1.0


def test_multilabel_predictions_round_trip():
    classes = ["1", "2", "7"]
    labels = np.array(["1;7", "2"], dtype=object)
    scores = np.array([[0.25, 0.5, 0.125], [1.0, 0.0, 0.75]])
    table = pd.DataFrame({"label": labels, "prediction": tables.encode_scores(scores, classes)})
    decoded = tables.decode_multilabel(table)

    assert table["prediction"].tolist() == ["1=0.25;2=0.5;7=0.125", "1=1;2=0;7=0.75"]
    assert np.array_equal(np.stack(decoded["prediction"]), scores)
    assert np.array_equal(np.stack(decoded["label"]), tables.indicator(labels, classes)) and tables.indicator(labels, classes).tolist() == [[1, 0, 1], [0, 1, 0]]
