"""The row-span logistic solver reaches scikit-learn's optimum, whatever the shape of the problem."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from plmexit.probing import logistic
from plmexit.probing.classifiers import logistic_probe, one_vs_rest_probe
from plmexit.probing.probes import ProbeSettings
from plmexit.probing.reference import reference_logistic, reference_one_vs_rest

TIGHT = 1e-10  # both solvers run to the optimum, so they must agree far beyond their default stopping rule


def _data(n, d, classes, seed=0):
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 3))
    X = latent @ rng.normal(size=(3, d)) + rng.normal(scale=0.5, size=(n, d)) + rng.normal(scale=4.0, size=d)
    y = np.array([f"c{k}" for k in np.digitize(latent[:, 0] + 0.5 * rng.normal(size=n), np.linspace(-1, 1, classes - 1))], dtype=object)
    return X.astype(np.float32), y


def _sklearn(X, y, C):
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, tol=TIGHT, max_iter=10000)).fit(X.astype(np.float64), y)


@pytest.mark.parametrize("n, d, classes", [(40, 60, 3), (60, 8, 4), (40, 60, 2), (60, 8, 2)], ids=["rows<features", "rows>features", "binary-rows<features", "binary-rows>features"])
@pytest.mark.parametrize("C", [0.01, 1.0])
def test_fit_reaches_scikit_learns_optimum(n, d, classes, C):
    X, y = _data(n, d, classes)
    X[:, 0] = 3.0  # a constant feature: scale 1, as StandardScaler
    X_new, _ = _data(15, d, classes, seed=1)
    classes_ = np.unique(y)
    Y = (y == classes_[1]).astype(float)[:, None] if classes == 2 else (y[:, None] == classes_[None, :]).astype(float)
    span, F = logistic.row_span(X)
    assert (span.basis is None) == (n >= d)

    model = logistic.fit(F, Y, C, "sigmoid" if classes == 2 else "softmax", tol=TIGHT, max_iter=10000)

    ours = model.probabilities(span.transform(X_new))
    theirs = _sklearn(X, y, C).predict_proba(X_new.astype(np.float64))
    np.testing.assert_allclose(ours[:, 0] if classes == 2 else ours, theirs[:, 1] if classes == 2 else theirs, atol=1e-6)


def test_span_coordinates_keep_distances_and_the_penalty():
    X, _ = _data(20, 50, 3)
    span, F = logistic.row_span(X)
    S = StandardScaler().fit(X.astype(np.float64)).transform(X.astype(np.float64))
    np.testing.assert_allclose(F @ F.T, S @ S.T, atol=1e-8)  # the rows' geometry is unchanged
    np.testing.assert_allclose(span.basis.T @ span.basis, np.eye(span.basis.shape[1]), atol=1e-8)  # orthonormal: ||B|| = ||V B||
    np.testing.assert_allclose(span.transform(X), F, atol=1e-8)


def test_sigmoid_link_fits_each_column_as_its_own_binary_problem():
    X, y = _data(50, 30, 3)
    Y = np.column_stack([(y == "c0"), (y != "c2")]).astype(float)
    span, F = logistic.row_span(X)

    model = logistic.fit(F, Y, 0.1, "sigmoid", tol=TIGHT, max_iter=10000)

    ours = model.probabilities(span.transform(X))
    for k in range(2):
        theirs = _sklearn(X, Y[:, k].astype(int), 0.1).predict_proba(X.astype(np.float64))[:, 1]
        np.testing.assert_allclose(ours[:, k], theirs, atol=1e-6)


def test_fit_warns_when_it_runs_out_of_iterations():
    X, y = _data(40, 60, 3)
    span, F = logistic.row_span(X)
    with pytest.warns(UserWarning, match=r"logistic probe at C=1 stopped after 2 iterations"):
        logistic.fit(F, (y[:, None] == np.unique(y)[None, :]).astype(float), 1.0, "softmax", max_iter=2)


@pytest.mark.parametrize("n, d", [(90, 120), (120, 10)])
def test_logistic_probe_agrees_with_scikit_learns_grid_search(n, d):
    X, y = _data(n, d, 3)
    train, test = np.arange(n) < 0.8 * n, np.arange(n) >= 0.8 * n
    settings = ProbeSettings("classification", "accuracy", logistic_cs=(0.001, 0.01, 0.1, 1.0))

    predict, inner_score, c = logistic_probe(X[train], y[train], settings)

    predictions, reference_score, reference_c = reference_logistic(X[train], y[train], X[test], settings)
    assert (c, inner_score) == (reference_c, pytest.approx(reference_score))
    assert list(predict(X[test])) == list(predictions)


def test_one_vs_rest_probe_gives_constant_probability_to_a_constant_class():
    X, y = _data(60, 20, 3)
    Y = np.column_stack([y == "c0", y == "c1", np.ones(60, dtype=bool)]).astype(int)  # the third class is on every row

    predict, _, c = one_vs_rest_probe(X, Y, ProbeSettings("multilabel", "fmax", logistic_cs=(0.01, 1.0)))

    probabilities = predict(X[:5])
    assert probabilities.shape == (5, 3) and np.all(probabilities[:, 2] == 1.0)
    theirs = _sklearn(X, Y[:, 0], c).predict_proba(X[:5].astype(np.float64))[:, 1]
    np.testing.assert_allclose(probabilities[:, 0], theirs, atol=1e-3)  # default stopping rule on both sides


def test_one_vs_rest_probe_agrees_with_scikit_learns_grid_search():
    X, y = _data(90, 120, 4)
    Y = np.column_stack([y == "c0", np.isin(y, ["c1", "c2"]), np.isin(y, ["c2", "c3"])]).astype(int)  # c2 rows carry two labels
    train, test = np.arange(90) < 72, np.arange(90) >= 72
    settings = ProbeSettings("multilabel", "fmax", logistic_cs=(0.001, 0.01, 0.1, 1.0))

    predict, inner_score, c = one_vs_rest_probe(X[train], Y[train], settings)

    probabilities, reference_score, reference_c = reference_one_vs_rest(X[train], Y[train], X[test], settings)
    assert (c, inner_score) == (reference_c, pytest.approx(reference_score, abs=1e-3))
    np.testing.assert_allclose(predict(X[test]), probabilities, atol=1e-3)  # default stopping rule on both sides
