"""Linear probes: planted signal is found, inner scores see training rows only, the fast ridge equals
scikit-learn's, the logistic C choice breaks ties towards regularisation, settings are checked."""

from __future__ import annotations

import numpy as np
import pytest

from plmexit.errors import InputError
from plmexit.probing.classifiers import logistic_probe
from plmexit.probing.folds import DEPLOY_FOLD, FoldFit, evaluation_folds, grid_edge, inner_groups
from plmexit.probing.metrics import spearman
from plmexit.probing.options import DEFAULT_RIDGE_ALPHAS
from plmexit.probing.probes import HYPERPARAMETER, HYPERPARAMETER_EDGE, ProbeSettings, fold_metrics, probe_layer
from plmexit.probing.reference import reference_ridge, reference_ridge_grouped
from plmexit.probing.ridge import ridge_folds

# A short grid keeps the suite fast; the defaults are exercised by the CLI test.
FAST_CS = (0.01, 1.0)


def expected_rows(folds, test_metrics, inner) -> set[tuple[int, str]]:
    """Every evaluation fold's test metrics, inner score and hyperparameter rows, and the deploy fold's (no test metrics)."""
    choice = (inner, HYPERPARAMETER, HYPERPARAMETER_EDGE)
    return {(f, m) for f in folds for m in (*test_metrics, *choice)} | {(DEPLOY_FOLD, m) for m in choice}


def deploy_mask(folds) -> np.ndarray:
    """The rows the deploy fold fits, by its definition: the train-only rows (fold -1) if there are any, else every row."""
    return folds == -1 if (folds == -1).any() else np.full(len(folds), True)


def as_dict(rows) -> dict[tuple[int, str], float]:
    return {(fold, metric): value for fold, metric, value in rows}


def metric_rows(X, y, folds, settings) -> dict[tuple[int, str], float]:
    """``(fold, metric) -> value`` for every row ``fold_metrics`` writes for one layer."""
    return as_dict(fold_metrics(probe_layer(X, y, folds, settings), y, settings))


def regression_data(n: int = 90, d: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + 0.1 * rng.normal(size=n)
    return X, y, np.arange(n) % 3


def classification_data(n_per_class: int = 20, d: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = {"cyto": -3.0, "nuc": 0.0, "mito": 3.0}
    X = np.vstack([rng.normal(loc=c, size=(n_per_class, d)) for c in centres.values()])
    y = np.repeat(np.array(list(centres), dtype=object), n_per_class)
    folds = np.tile(np.arange(3), len(y) // 3)
    return X, y, folds


def test_regression_probe_recovers_planted_signal():
    X, y, folds = regression_data()

    rows = metric_rows(X, y, folds, ProbeSettings("regression", "spearman"))

    assert set(rows) == expected_rows(range(3), ("spearman", "mse"), "inner_spearman")
    assert rows[DEPLOY_FOLD, "inner_spearman"] > 0.95
    for fold in range(3):
        assert rows[fold, "spearman"] > 0.95
        assert rows[fold, "inner_spearman"] > 0.95
        assert rows[fold, "mse"] < 0.1 * np.var(y)


def test_regression_probe_on_noise_finds_nothing():
    X, _, folds = regression_data()
    y = np.random.default_rng(1).normal(size=len(X))

    rows = metric_rows(X, y, folds, ProbeSettings("regression", "spearman"))

    assert all(abs(rows[f, "spearman"]) < 0.5 for f in range(3))


def test_classification_probe_separates_separable_classes():
    X, y, folds = classification_data()

    rows = metric_rows(X, y, folds, ProbeSettings("classification", "macro_f1", logistic_cs=FAST_CS))

    assert set(rows) == expected_rows(range(3), ("accuracy", "macro_f1", "mcc"), "inner_macro_f1")
    assert rows[DEPLOY_FOLD, "inner_macro_f1"] >= 0.95 and rows[DEPLOY_FOLD, HYPERPARAMETER] in FAST_CS
    for fold in range(3):
        assert rows[fold, "accuracy"] >= 0.95
        assert rows[fold, "inner_macro_f1"] >= 0.95


@pytest.mark.parametrize("task_type", ["regression", "classification"])
def test_test_rows_never_influence_the_inner_score(task_type):
    if task_type == "regression":
        X, y, folds = regression_data()
        settings = ProbeSettings("regression", "spearman")
        changed_y = y.copy()
        changed_y[folds == 0] = np.random.default_rng(5).normal(scale=1e6, size=(folds == 0).sum())
    else:
        X, y, folds = classification_data()
        settings = ProbeSettings("classification", "accuracy", logistic_cs=FAST_CS)
        changed_y = y.copy()
        changed_y[folds == 0] = np.roll(y[folds == 0], 7)  # every test label wrong
    changed_X = X.copy()
    changed_X[folds == 0] *= -5.0

    before = metric_rows(X, y, folds, settings)
    after = metric_rows(changed_X, changed_y, folds, settings)

    inner = f"inner_{settings.selection_metric}"
    assert after[0, inner] == before[0, inner]  # fold 0's inner score saw no fold-0 row
    assert after[0, settings.selection_metric] != before[0, settings.selection_metric]
    assert after[1, inner] != before[1, inner]  # ...while fold 1 trains on them


def test_train_only_rows_are_never_tested():
    X, y, folds = regression_data()
    folds = folds.copy()
    folds[:30] = -1

    fits = probe_layer(X, y, folds, ProbeSettings("regression", "spearman"))

    assert [fit.fold for fit in fits] == [0, 1, 2, DEPLOY_FOLD]
    assert len(fits[-1].test) == 0 and len(fits[-1].predictions) == 0  # the deploy probe is fitted on the train-only rows, tested on none
    for fit in fits[:-1]:
        assert isinstance(fit, FoldFit)
        np.testing.assert_array_equal(fit.test, np.flatnonzero(folds == fit.fold))  # never a train-only row
        assert fit.predictions.shape == fit.test.shape
    assert evaluation_folds(np.array([-1, 2, 0, 2, -1])) == [0, 2]
    assert evaluation_folds(np.array([-1, -1])) == []


def test_train_only_rows_are_trained_on():
    X, y, folds = regression_data()
    extra = folds.copy()
    extra[folds == 2] = -1  # fold 2 stops being tested but still trains folds 0 and 1

    rows = metric_rows(X, y, extra, ProbeSettings("regression", "spearman"))
    without = metric_rows(X[folds != 2], y[folds != 2], folds[folds != 2], ProbeSettings("regression", "spearman"))

    assert set(rows) == expected_rows((0, 1), ("spearman", "mse"), "inner_spearman")
    assert rows[0, "inner_spearman"] != without[0, "inner_spearman"]


def test_a_training_part_with_one_class_is_an_error():
    X, _, _ = classification_data()
    y = np.array(["a"] * 30 + ["b"] * 30, dtype=object)
    folds = np.repeat([0, 1], 30)

    with pytest.raises(InputError, match=r"a training part holds only class 'b'"):
        probe_layer(X, y, folds, ProbeSettings("classification", "accuracy", logistic_cs=FAST_CS))


@pytest.mark.parametrize(
    ("task_type", "metric", "message"),
    [
        ("regression", "mse", r"selection metric 'mse' is not one of spearman for a regression task"),
        ("regression", "accuracy", r"selection metric 'accuracy' is not one of spearman"),
        ("classification", "spearman", r"selection metric 'spearman' is not one of accuracy, macro_f1, mcc for a classification task"),
        ("ranking", "spearman", r"task type 'ranking' is not one of regression, classification"),
    ],
)
def test_probe_settings_reject_bad_metrics(task_type, metric, message):
    with pytest.raises(InputError, match=message):
        ProbeSettings(task_type, metric)


def test_spearman_exact_values():
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0])) == 1.0
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == -1.0
    assert spearman(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0])) == pytest.approx(0.8)


def test_spearman_of_constant_input_is_zero():
    assert spearman(np.array([1.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0])) == 0.0
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([5.0, 5.0, 5.0])) == 0.0


# --- the shared-decomposition ridge equals scikit-learn's pipeline ---------------------------------


def _scaled_features(rng, n: int, p: int) -> np.ndarray:
    """Features with unequal scales and non-zero means, so standardisation matters."""
    return rng.normal(size=(n, p)) * rng.uniform(0.5, 3.0, size=p) + rng.normal(scale=2.0, size=p)


def _ridge_case(case: str):
    rng = np.random.default_rng(7)
    if case == "n>p":
        X = _scaled_features(rng, 60, 8)
    elif case == "p>n":
        X = _scaled_features(rng, 30, 50)
    elif case == "constant-column":
        X = _scaled_features(rng, 45, 6)
        X[:, 2] = 0.1  # StandardScaler leaves it unscaled; it must carry no weight
    elif case == "constant-in-training-only":
        X = _scaled_features(rng, 45, 6)
        X[:, 4] = 2.0
        X[np.arange(45) % 3 == 0, 4] = rng.normal(size=15)  # varies only in fold 0's test rows
    elif case == "zero-in-training-only":
        # A one-hot column (a residue only fold 0 has): 0 on every training row of folds 1 and 2.
        X = _scaled_features(rng, 45, 6)
        X[:, 3] = 0.0
        X[[0, 3], 3] = 1.0
    elif case == "float16":
        # As embeddings come out of a float16 store: a few ulps of spread around per-feature means.
        X = (rng.normal(scale=2.0, size=10) + 0.01 * rng.normal(size=(60, 10))).astype(np.float16).astype(np.float32)
    elif case == "train-only-rows":
        X = _scaled_features(rng, 60, 8)
    signal = np.asarray(X, dtype=np.float64)[:, [0, 1, 5]]  # never the constant columns
    y = (signal - signal.mean(axis=0)) / signal.std(axis=0) @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=len(X))
    folds = np.arange(len(X)) % 3
    if case == "train-only-rows":
        folds[:15] = -1
    return X, y, folds


@pytest.mark.parametrize("case", ["n>p", "p>n", "constant-column", "constant-in-training-only", "zero-in-training-only", "float16", "train-only-rows"])
def test_ridge_folds_equals_the_scikit_learn_reference(case):
    X, y, folds = _ridge_case(case)

    fits = ridge_folds(X, y, folds, DEFAULT_RIDGE_ALPHAS, spearman)

    assert [fit.fold for fit in fits] == [*evaluation_folds(folds), DEPLOY_FOLD]
    for fit in fits:
        # The deploy probe trains on the deploy rows and has no test rows (scikit-learn needs one to predict).
        train, test = (folds != fit.fold, folds == fit.fold) if fit.fold != DEPLOY_FOLD else (deploy_mask(folds), np.full(len(y), False))
        predictions, inner_score, alpha = reference_ridge(X[train], y[train], X[test] if test.any() else X[:1], DEFAULT_RIDGE_ALPHAS, spearman)
        np.testing.assert_array_equal(fit.test, np.flatnonzero(test))
        assert fit.hyperparameter == alpha
        assert fit.inner_score == pytest.approx(inner_score, rel=0, abs=1e-6)
        np.testing.assert_allclose(fit.predictions, predictions[: len(fit.test)], rtol=0, atol=1e-6)


def test_ridge_folds_choices_differ_between_cases():
    """Guards the comparison above against a degenerate grid where every case picks the same alpha."""
    alphas = {fit.hyperparameter for case in ("n>p", "p>n", "float16") for fit in ridge_folds(*_ridge_case(case), DEFAULT_RIDGE_ALPHAS, spearman)}

    assert len(alphas) > 1


@pytest.mark.parametrize("offset, spread", [(1e3, 1e-2), (1e5, 1.0)])
@pytest.mark.parametrize("width", [6, 120], ids=["feature-gram", "row-gram"])
def test_ridge_folds_equals_the_reference_with_a_large_feature_offset(offset, spread, width):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, width))
    X[:, 0] = offset + spread * X[:, 0]  # an outlier dimension: large mean, small spread
    X = X.astype(np.float32)
    y = (X[:, 0] - offset) / spread + X[:, 1] + 0.1 * rng.normal(size=90)
    folds = np.arange(90) % 3

    for fit in ridge_folds(X, y, folds, DEFAULT_RIDGE_ALPHAS, spearman)[:-1]:
        train, test = folds != fit.fold, folds == fit.fold
        predictions, _, _ = reference_ridge(X[train], y[train], X[test], DEFAULT_RIDGE_ALPHAS, spearman)
        np.testing.assert_allclose(fit.predictions, predictions, rtol=0, atol=1e-6)


# --- grouped inner split: folds of whole mutated positions ------------------------------------------


def test_inner_groups_apply_the_outer_schemes_rule_to_training_positions():
    positions = np.array([12, 3, 3, 7, 30, 12, 9, 5, 21])  # distinct, sorted: 3 5 7 9 12 21 30

    modulo = inner_groups(positions, "modulo", 3)
    contiguous = inner_groups(positions, "contiguous", 3)

    # modulo: rank of the position among the distinct ones, mod k
    assert modulo.tolist() == [1, 0, 0, 2, 0, 1, 0, 1, 2]
    # contiguous: 7 positions in 3 consecutive blocks of 3, 2, 2 (the first n mod k one longer)
    assert contiguous.tolist() == [1, 0, 0, 0, 2, 1, 1, 0, 2]


def test_inner_groups_need_as_many_positions_as_folds():
    with pytest.raises(InputError, match=r"2 mutated positions, fewer than 3 inner folds.*--inner-folds"):
        inner_groups(np.array([4, 4, 9]), "contiguous", 3)


@pytest.mark.parametrize("split", ["modulo", "contiguous"])
@pytest.mark.parametrize("case", ["n>p", "p>n", "constant-column", "constant-in-training-only", "zero-in-training-only", "float16", "train-only-rows"])
def test_grouped_ridge_equals_grid_search_on_the_same_splits(case, split):
    X, y, folds = _ridge_case(case)
    positions = np.arange(len(y)) // 2 + 1  # two variants a position

    fits = ridge_folds(X, y, folds, DEFAULT_RIDGE_ALPHAS, spearman, split, 3, positions)

    assert [fit.fold for fit in fits] == [*evaluation_folds(folds), DEPLOY_FOLD]
    for fit in fits:
        train = folds != fit.fold if fit.fold != DEPLOY_FOLD else deploy_mask(folds)
        X_test = X[fit.test] if len(fit.test) else X[:1]  # the deploy probe has no test rows; scikit-learn needs one to predict
        groups = inner_groups(positions[train], split, 3)
        predictions, inner_score, alpha = reference_ridge_grouped(X[train], y[train], X_test, DEFAULT_RIDGE_ALPHAS, spearman, groups)
        assert fit.hyperparameter == alpha
        assert fit.inner_score == pytest.approx(inner_score, rel=0, abs=1e-6)
        np.testing.assert_allclose(fit.predictions, predictions[: len(fit.test)], rtol=0, atol=1e-6)


def test_grouped_ridge_chooses_other_alphas_than_leave_one_out():
    """Guards the comparison above: the grouped split changes choices, it is not leave-one-out by another name."""
    X, y, folds = _ridge_case("p>n")
    positions = np.arange(len(y)) // 2 + 1
    fits = {split: ridge_folds(X, y, folds, DEFAULT_RIDGE_ALPHAS, spearman, split, 3, positions) for split in ("loo", "modulo", "contiguous")}

    assert len({fit.hyperparameter for split in fits.values() for fit in split}) > 1
    assert all(a.inner_score != b.inner_score for a, b in zip(fits["loo"], fits["contiguous"]))
    for a, b in zip(fits["loo"], fits["contiguous"]):  # same refit on the training rows when the same alpha is chosen
        if a.hyperparameter == b.hyperparameter:
            np.testing.assert_allclose(a.predictions, b.predictions, rtol=0, atol=1e-9)


def test_grouped_split_needs_positions():
    X, y, folds = regression_data()

    with pytest.raises(InputError, match=r"needs one mutated position per row"):
        ridge_folds(X, y, folds, DEFAULT_RIDGE_ALPHAS, spearman, "modulo", 3, None)


# --- a layer with no signal is never selectable -------------------------------------------------------


@pytest.mark.parametrize("split", ["loo", "contiguous"])
def test_constant_training_features_give_a_nan_inner_score(split):
    X, y, folds = regression_data()
    X = X.copy()
    X[:] = X[0]  # every row one vector, as long proteins truncated before all their mutations
    X[5] += 1.0  # but row 5 (fold 2): folds 0 and 1 train on it, fold 2 trains on constant rows only
    positions = np.arange(len(y)) // 3 + 1

    fits = probe_layer(X, y, folds, ProbeSettings("regression", "spearman", inner_split=split), positions)
    rows = as_dict(fold_metrics(fits, y, ProbeSettings("regression", "spearman")))

    assert folds[5] == 2
    assert np.isnan(rows[2, "inner_spearman"]) and np.isnan(rows[2, HYPERPARAMETER]) and np.isnan(rows[2, HYPERPARAMETER_EDGE])
    assert not np.isnan(rows[0, "inner_spearman"]) and not np.isnan(rows[DEPLOY_FOLD, "inner_spearman"])
    # The probe still predicts, the training mean as StandardScaler + Ridge would, so test metrics exist.
    np.testing.assert_allclose(fits[2].predictions, y[folds != 2].mean(), rtol=0, atol=1e-9)


def test_constant_training_features_give_a_nan_inner_score_for_classifiers():
    X, y, folds = classification_data()

    rows = metric_rows(np.ones_like(X), y, folds, ProbeSettings("classification", "accuracy", logistic_cs=FAST_CS))

    assert all(np.isnan(rows[f, "inner_accuracy"]) for f in (0, 1, 2, DEPLOY_FOLD))


def test_a_grouped_split_is_for_regression_only():
    with pytest.raises(InputError, match=r"inner split 'contiguous' groups variants by mutated position, for regression tasks only"):
        ProbeSettings("classification", "accuracy", inner_split="contiguous")
    with pytest.raises(InputError, match=r"inner split 'groups' is not one of loo, modulo, contiguous"):
        ProbeSettings("regression", "spearman", inner_split="groups")


def test_fold_metrics_rows_are_the_metrics_of_the_predictions():
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    fits = [
        FoldFit(0, np.array([0, 2, 4]), np.array([1.0, 3.0, 5.0]), 0.5, 1.0),
        FoldFit(1, np.array([1, 3, 5]), np.array([6.0, 4.0, 2.0]), 0.25, 10.0, 1.0),
        FoldFit(DEPLOY_FOLD, np.array([], dtype=int), np.array([]), 0.75, 0.1, -1.0),
    ]

    rows = fold_metrics(fits, y, ProbeSettings("regression", "spearman"))

    assert rows == [
        (0, "spearman", 1.0), (0, "mse", 0.0), (0, "inner_spearman", 0.5), (0, HYPERPARAMETER, 1.0), (0, HYPERPARAMETER_EDGE, 0.0),
        (1, "spearman", -1.0), (1, "mse", pytest.approx(32 / 3)), (1, "inner_spearman", 0.25), (1, HYPERPARAMETER, 10.0),
        (1, HYPERPARAMETER_EDGE, 1.0),
        (DEPLOY_FOLD, "inner_spearman", 0.75), (DEPLOY_FOLD, HYPERPARAMETER, 0.1), (DEPLOY_FOLD, HYPERPARAMETER_EDGE, -1.0),
    ]


def test_grid_edge_says_where_the_chosen_value_sits():
    grid = (10.0, 0.1, 1.0)  # unsorted on purpose

    assert [grid_edge(v, grid) for v in (0.1, 1.0, 10.0)] == [-1.0, 0.0, 1.0]
    assert grid_edge(1.0, (1.0,)) == 0.0  # a one-value grid chooses nothing, so has no edge
    assert np.isnan(grid_edge(float("nan"), grid))


# --- logistic probe: C chosen on training rows -------------------------------------------------------


def test_logistic_ties_go_to_the_strongest_regularisation():
    # No feature carries information, so every C predicts the majority class: all inner scores tie.
    X = np.zeros((45, 3))
    y = np.array(["a", "a", "b"] * 15, dtype=object)
    settings = ProbeSettings("classification", "accuracy", logistic_cs=(1.0, 0.01, 0.1))  # unsorted on purpose

    predict, inner_score, c = logistic_probe(X, y, settings)

    assert c == 0.01
    assert inner_score == pytest.approx(2 / 3)  # every stratified inner fold holds 10 'a' and 5 'b'
    assert set(predict(X)) == {"a"}


def test_logistic_with_a_single_class_is_an_error():
    X = np.random.default_rng(0).normal(size=(12, 3))

    with pytest.raises(InputError, match=r"a training part holds only class 'a'; a classifier needs at least two classes"):
        logistic_probe(X, np.array(["a"] * 12, dtype=object), ProbeSettings("classification", "accuracy", logistic_cs=FAST_CS))


def test_logistic_with_a_class_of_one_training_member_is_handled():
    # The lone 'b' lands in one inner scoring part, leaving that inner fit part with only 'a':
    # that fold scores the constant classifier, the others fit normally.
    X = np.random.default_rng(0).normal(size=(21, 3))
    y = np.array(["a"] * 20 + ["b"], dtype=object)

    predict, inner_score, c = logistic_probe(X, y, ProbeSettings("classification", "accuracy", logistic_cs=FAST_CS))

    assert c in FAST_CS and 0.0 <= inner_score <= 1.0
    assert len(predict(X)) == 21 and set(predict(X)) <= {"a", "b"}

