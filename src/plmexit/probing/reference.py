"""The straightforward scikit-learn probes plmexit's probes are tested and benchmarked against.

Invariant: each function is the stock pipeline (``StandardScaler`` + scikit-learn's estimator and
search) whose problem a probe in ``plmexit.probing.probes`` solves faster; only tests and
benchmarks import this module.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge, RidgeCV
from sklearn.metrics import make_scorer
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from plmexit.probing.classifiers import multilabel_splits
from plmexit.probing.metrics import METRICS
from plmexit.probing.probes import ProbeSettings


def reference_ridge(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, alphas, score) -> tuple[np.ndarray, float, float]:
    """The straightforward scikit-learn probe ``ridge_folds`` must equal: (test predictions, inner score, alpha)."""
    ridge = RidgeCV(alphas=np.asarray(alphas, dtype=np.float64), scoring=make_scorer(score))
    pipeline = make_pipeline(StandardScaler(), ridge).fit(np.asarray(X_train, dtype=np.float64), y_train)
    return pipeline.predict(np.asarray(X_test, dtype=np.float64)), float(ridge.best_score_), float(ridge.alpha_)


def reference_ridge_grouped(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, alphas, score, groups: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The scikit-learn probe ``ridge_folds`` with a grouped inner split must equal: (test predictions, inner score, alpha).

    ``groups`` is each training row's inner fold (``inner_groups``); the inner score is
    ``GridSearchCV``'s, the mean over inner folds of ``score`` on each fold's held-out rows.
    """
    splits = [(np.flatnonzero(groups != g), np.flatnonzero(groups == g)) for g in np.unique(groups)]
    search = GridSearchCV(
        make_pipeline(StandardScaler(), Ridge()), {"ridge__alpha": [float(a) for a in alphas]}, scoring=make_scorer(score), cv=splits,
    ).fit(np.asarray(X_train, dtype=np.float64), y_train)
    return search.predict(np.asarray(X_test, dtype=np.float64)), float(search.best_score_), float(search.best_params_["ridge__alpha"])


def reference_logistic(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, settings: ProbeSettings) -> tuple[np.ndarray, float, float]:
    """The straightforward scikit-learn probe ``classifiers.logistic_probe`` must agree with: (test predictions, inner score, C)."""
    search = GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=settings.max_iter)),
        {"logisticregression__C": sorted(settings.logistic_cs)},
        scoring=make_scorer(METRICS["classification"][settings.selection_metric]),
        cv=StratifiedKFold(settings.inner_folds, shuffle=True, random_state=settings.seed),
    ).fit(np.asarray(X_train, dtype=np.float64), y_train)
    return search.predict(np.asarray(X_test, dtype=np.float64)), float(search.best_score_), float(search.best_params_["logisticregression__C"])


def reference_one_vs_rest(X_train: np.ndarray, Y_train: np.ndarray, X_test: np.ndarray, settings: ProbeSettings) -> tuple[np.ndarray, float, float]:
    """The straightforward scikit-learn probe ``classifiers.one_vs_rest_probe`` must agree with: (test probabilities, inner score, C)."""
    Y_train = np.asarray(Y_train, dtype=int)
    search = GridSearchCV(
        make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(max_iter=settings.max_iter))),
        {"onevsrestclassifier__estimator__C": sorted(settings.logistic_cs)},
        scoring=make_scorer(METRICS["multilabel"][settings.selection_metric], response_method="predict_proba"),
        cv=multilabel_splits(Y_train, settings),
    )
    with warnings.catch_warnings():
        # A class on every (or no) row of a fitting part gets a constant predictor, as ours does.
        warnings.filterwarnings("ignore", message="Label .* is present in all training examples")
        warnings.filterwarnings("ignore", message="Label not .* is present in all training examples")
        search.fit(np.asarray(X_train, dtype=np.float64), Y_train)
    return search.predict_proba(np.asarray(X_test, dtype=np.float64)), float(search.best_score_), float(search.best_params_["onevsrestclassifier__estimator__C"])
