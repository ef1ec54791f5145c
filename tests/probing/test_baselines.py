"""Baselines: chance equals scikit-learn's dummies, the feature baselines equal stock pipelines on their features,
and the one-hot equals ProteinGym's (ProteinNPT's) one-hot encoding once constant columns are dropped."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier, DummyRegressor

from plmexit.errors import InputError
from plmexit.probing import baselines, metrics, probes
from plmexit.probing.folds import DEPLOY_FOLD, inner_groups
from plmexit.probing.reference import reference_logistic, reference_ridge, reference_ridge_grouped

AA = "ACDEFGHIKLMNPQRSTVWY"

# The ESM-1b alphabet ProteinNPT's one-hot baseline tokenises with (OATML-Markslab/ProteinNPT@ba50f15,
# scripts/train.py: Alphabet.from_architecture("ESM-1b"); proteinnpt/utils/esm/data.py and constants.py):
# prepend_toks, the standard toks, <null_1> padding the count to a multiple of 8, then <mask>; prepend_bos and append_eos.
ESM1B_TOKENS = ["<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWCXBUZO.-", "<null_1>", "<mask>"]


def proteinnpt_one_hot(sequences: list[str]) -> np.ndarray:
    """ProteinNPT's one-hot features, transcribed (proteinnpt/baselines/model.py, AugmentedPropertyPredictor.forward):

        x = nn.functional.one_hot(tokens, num_classes=self.alphabet_size).view(batch_size,-1).float()

    with ``tokens`` the ESM-1b batch converter's: <cls>, the residues, <eos>, right-padded with <pad>.
    """
    index = {t: i for i, t in enumerate(ESM1B_TOKENS)}
    width = max(map(len, sequences)) + 2
    tokens = np.full((len(sequences), width), index["<pad>"])
    for i, s in enumerate(sequences):
        tokens[i, : len(s) + 2] = [index["<cls>"], *(index[c] for c in s), index["<eos>"]]
    return np.eye(len(ESM1B_TOKENS))[tokens].reshape(len(sequences), -1)


def varying_columns(X: np.ndarray) -> np.ndarray:
    return X[:, (X != X[0]).any(axis=0)]


def single_mutants(rng, wild_type: str, n: int) -> list[str]:
    out = []
    for _ in range(n):
        p = int(rng.integers(len(wild_type)))
        out.append(wild_type[:p] + rng.choice([a for a in AA if a != wild_type[p]]) + wild_type[p + 1:])
    return out


def test_onehot_equals_proteinnpt_one_hot_without_its_constant_columns():
    rng = np.random.default_rng(0)
    wild_type = "".join(rng.choice(list(AA), 30))
    # Substitutions, and a few shorter and longer variants (ProteinNPT's <eos> and <pad> columns then vary too).
    sequences = single_mutants(rng, wild_type, 40) + [wild_type[:-2], wild_type + "A", wild_type[:10] + "X" + wild_type[11:]]
    ours, theirs = baselines.onehot_features(sequences), varying_columns(proteinnpt_one_hot(sequences))
    assert ours.shape == theirs.shape
    # The same columns in the same order: position first, then symbol (ours by letter, theirs by token index).
    assert sorted(map(tuple, ours.T)) == sorted(map(tuple, theirs.T))
    assert (ours == 0).sum() + (ours == 1).sum() == ours.size


def test_dropping_constant_columns_changes_no_probe():
    """Columns constant over all rows are 0 after standardisation: the full one-hot and ours give the same probes."""
    rng = np.random.default_rng(1)
    wild_type = "".join(rng.choice(list(AA), 25))
    sequences = single_mutants(rng, wild_type, 60)
    positions = np.array([next(i for i, (a, b) in enumerate(zip(s, wild_type)) if a != b) for s in sequences])
    y = rng.normal(size=60) + (positions % 3)
    folds = np.arange(60) % 5
    full, ours = proteinnpt_one_hot(sequences), baselines.onehot_features(sequences)
    assert ours.shape[1] < full.shape[1] / 10
    for settings in (probes.ProbeSettings("regression", "spearman"), probes.ProbeSettings("regression", "spearman", inner_split="contiguous")):
        a = probes.probe_layer(full, y, folds, settings, positions)
        b = probes.probe_layer(ours, y, folds, settings, positions)
        for fa, fb in zip(a, b):
            np.testing.assert_allclose(fa.predictions, fb.predictions, rtol=1e-8, atol=1e-10)
            assert fa.hyperparameter == fb.hyperparameter and fa.inner_score == pytest.approx(fb.inner_score, abs=1e-10)
    labels = np.where(y > np.median(y), "high", "low")
    settings = probes.ProbeSettings("classification", "accuracy")
    for fa, fb in zip(probes.probe_layer(full, labels, folds, settings), probes.probe_layer(ours, labels, folds, settings)):
        assert list(fa.predictions) == list(fb.predictions) and fa.hyperparameter == fb.hyperparameter


def test_composition_is_fractions_of_the_standard_amino_acids_and_length():
    X = baselines.composition_features(["AAC", "WXYZ"])
    expected = np.zeros((2, 21))
    expected[0, AA.index("A")], expected[0, AA.index("C")], expected[0, 20] = 2 / 3, 1 / 3, 3
    expected[1, AA.index("W")], expected[1, AA.index("Y")], expected[1, 20] = 1 / 4, 1 / 4, 4
    np.testing.assert_array_equal(X, expected)
    with pytest.raises(InputError, match="empty sequence"):
        baselines.composition_features(["AC", ""])


def test_chance_equals_scikit_learn_dummies():
    rng = np.random.default_rng(2)
    folds = np.array([0, 1, 2] * 6 + [-1, -1])
    settings = probes.ProbeSettings("regression", "spearman")
    y = rng.normal(size=len(folds))
    for fit in baselines.chance_fits(y, folds, settings):
        train = folds != fit.fold if fit.fold != DEPLOY_FOLD else np.ones(len(folds), bool)
        dummy = DummyRegressor(strategy="mean").fit(np.zeros((train.sum(), 1)), y[train])
        np.testing.assert_allclose(fit.predictions, dummy.predict(np.zeros((len(fit.test), 1))))
        assert np.isnan(fit.inner_score) and np.isnan(fit.hyperparameter)
    # A tie between the two most frequent classes goes to the smaller label, as DummyClassifier breaks it.
    labels = np.array(["b", "a", "c", "b", "a", "c", "b", "a", "a", "b", "c", "c", "a", "b", "c", "b", "a", "c", "a", "b"])
    for fit in baselines.chance_fits(labels, folds, probes.ProbeSettings("classification", "accuracy")):
        train = folds != fit.fold if fit.fold != DEPLOY_FOLD else np.ones(len(folds), bool)
        dummy = DummyClassifier(strategy="most_frequent").fit(np.zeros((train.sum(), 1)), labels[train])
        assert list(fit.predictions) == list(dummy.predict(np.zeros((len(fit.test), 1))))
    Y = (rng.random((len(folds), 4)) < [0.1, 0.5, 0.8, 0.3]).astype(int)
    for fit in baselines.chance_fits(Y, folds, probes.ProbeSettings("multilabel", "fmax")):
        train = folds != fit.fold if fit.fold != DEPLOY_FOLD else np.ones(len(folds), bool)
        dummy = DummyClassifier(strategy="prior").fit(np.zeros((train.sum(), 1)), Y[train])
        expected = np.stack([p[:, 1] for p in dummy.predict_proba(np.zeros((len(fit.test), 1)))], axis=1) if len(fit.test) else np.zeros((0, 4))
        np.testing.assert_allclose(fit.predictions, expected)


def test_feature_baselines_equal_stock_pipelines():
    rng = np.random.default_rng(3)
    sequences = ["".join(rng.choice(list(AA), int(rng.integers(20, 60)))) for _ in range(45)]
    counts = np.array([[Counter(s)[a] / len(s) for a in AA] + [len(s)] for s in sequences])
    y = counts[:, 0] * 5 + counts[:, 20] / 30 + rng.normal(scale=0.2, size=45)
    folds = np.arange(45) % 3
    settings = probes.ProbeSettings("regression", "spearman", ridge_alphas=(0.1, 1.0, 10.0, 100.0))
    fits = baselines.probe_baselines(sequences, y, folds, settings, "composition")
    assert set(fits) == {"chance", "composition"}
    for fit in fits["composition"][:-1]:
        train = folds != fit.fold
        predictions, inner, alpha = reference_ridge(counts[train], y[train], counts[~train], settings.ridge_alphas, metrics.spearman)
        np.testing.assert_allclose(fit.predictions, predictions, rtol=1e-7, atol=1e-9)
        assert fit.hyperparameter == alpha and fit.inner_score == pytest.approx(inner, abs=1e-9)
    labels = np.where(y > np.median(y), "soluble", "insoluble")
    settings = probes.ProbeSettings("classification", "accuracy")
    for fit in baselines.probe_baselines(sequences, labels, folds, settings, "composition")["composition"][:-1]:
        train = folds != fit.fold
        predictions, inner, c = reference_logistic(counts[train], labels[train], counts[~train], settings)
        assert fit.hyperparameter == c and fit.inner_score == pytest.approx(inner, abs=1e-9)
        assert np.mean(fit.predictions == predictions) >= 0.95  # lbfgs and our solver agree up to its tolerance


def test_onehot_baseline_equals_a_grouped_stock_pipeline():
    rng = np.random.default_rng(4)
    wild_type = "".join(rng.choice(list(AA), 20))
    sequences = single_mutants(rng, wild_type, 50)
    positions = np.array([next(i for i, (a, b) in enumerate(zip(s, wild_type)) if a != b) for s in sequences])
    y = rng.normal(size=50) + positions / 10
    folds = positions % 5
    settings = probes.ProbeSettings("regression", "spearman", inner_split="contiguous")
    features = varying_columns(proteinnpt_one_hot(sequences))
    for fit in baselines.probe_baselines(sequences, y, folds, settings, "onehot", positions)["onehot"][:-1]:
        train = folds != fit.fold
        groups = inner_groups(positions[train], "contiguous", settings.inner_folds)
        predictions, inner, alpha = reference_ridge_grouped(features[train], y[train], features[~train], settings.ridge_alphas, metrics.spearman, groups)
        np.testing.assert_allclose(fit.predictions, predictions, rtol=1e-6, atol=1e-8)
        assert fit.hyperparameter == alpha and fit.inner_score == pytest.approx(inner, abs=1e-8)


def test_unknown_features_are_an_error():
    with pytest.raises(InputError, match="baseline features 'kmers'"):
        baselines.probe_baselines(["AC"], np.array([1.0]), np.array([0]), probes.ProbeSettings("regression", "spearman"), "kmers")


def test_spearman_ties_predictions_equal_up_to_rounding():
    """A one-hot probe predicts every variant at an unseen position as the intercept, with rounding noise: that is a tie, not a rank."""
    truth = np.arange(8.0)
    noise = np.array([0, 1, -1, 2, -2, 3, -3, 1]) * 2.0**-55
    assert metrics.spearman(truth, 0.4 + noise) == 0.0
    partial = np.array([1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 0.5]) + noise
    assert metrics.spearman(truth, partial) == pytest.approx(metrics.spearman(truth, np.array([1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 0.5])), abs=1e-15)
    assert metrics.spearman(truth, truth * 1e-3) == 1.0  # a real spread, however small in absolute terms, is ranked
