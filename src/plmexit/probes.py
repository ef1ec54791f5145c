"""Linear probes on one layer's embeddings, per evaluation fold.

Invariant: for test fold ``f`` everything that is fitted or chosen — the scaler, the
regularisation strength, and the ``inner_<metric>`` score that layer selection later uses — sees
only the training rows (``fold != f``). The test rows are touched once, to score the refitted
probe. Probes are stock scikit-learn pipelines and do no file I/O.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import accuracy_score, f1_score, make_scorer, matthews_corrcoef, mean_squared_error
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from plmexit.errors import InputError

# Regularisation grids wide enough for standardised features of any ESM2 width (320 to 5120).
DEFAULT_RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-1, 5, 13))
DEFAULT_LOGISTIC_CS = tuple(float(c) for c in np.logspace(-4, 1, 6))
INNER_PREFIX = "inner_"


def spearman(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Spearman's rho; 0.0 when either side is constant (no rank information, no correlation)."""
    if np.ptp(y_true) == 0 or np.ptp(y_pred) == 0:
        return 0.0
    return float(spearmanr(y_true, y_pred).statistic)


METRICS = {
    "regression": {"spearman": spearman, "mse": mean_squared_error},
    "classification": {
        "accuracy": accuracy_score,
        "macro_f1": lambda t, p: f1_score(t, p, average="macro", zero_division=0.0),
        "mcc": matthews_corrcoef,
    },
}
# Orientation of every metric written to a probe table; selection only ever maximises.
HIGHER_IS_BETTER = {"spearman": True, "mse": False, "accuracy": True, "macro_f1": True, "mcc": True}


@dataclass(frozen=True)
class ProbeSettings:
    task_type: str
    selection_metric: str
    ridge_alphas: tuple[float, ...] = DEFAULT_RIDGE_ALPHAS
    logistic_cs: tuple[float, ...] = DEFAULT_LOGISTIC_CS
    inner_folds: int = 3
    seed: int = 0
    max_iter: int = 2000

    def __post_init__(self):
        if self.task_type not in METRICS:
            raise InputError(f"task type {self.task_type!r} is not one of {', '.join(METRICS)}")
        if self.selection_metric not in METRICS[self.task_type] or not HIGHER_IS_BETTER[self.selection_metric]:
            allowed = [m for m in METRICS[self.task_type] if HIGHER_IS_BETTER[m]]
            raise InputError(
                f"selection metric {self.selection_metric!r} is not one of {', '.join(allowed)} for a {self.task_type} task; "
                "fix the task's metric in the config (--metric)"
            )


def evaluation_folds(folds: np.ndarray) -> list[int]:
    """Fold ids that serve as a test part (``-1`` marks train-only rows)."""
    return sorted(int(f) for f in np.unique(folds) if f >= 0)


def probe_layer(X: np.ndarray, y: np.ndarray, folds: np.ndarray, settings: ProbeSettings) -> list[tuple[int, str, float]]:
    """Fit and score one probe per evaluation fold on features ``X``; rows of ``(fold, metric, value)``."""
    rows = []
    metrics = METRICS[settings.task_type]
    for fold in evaluation_folds(folds):
        train, test = folds != fold, folds == fold
        predict, inner_score = _fit(X[train], y[train], settings)
        predicted = predict(X[test])
        rows.extend((fold, name, float(fn(y[test], predicted))) for name, fn in metrics.items())
        rows.append((fold, INNER_PREFIX + settings.selection_metric, float(inner_score)))
    return rows


def _fit(X: np.ndarray, y: np.ndarray, settings: ProbeSettings):
    """Fit on training rows only; return (predict function, inner cross-validated score)."""
    score = METRICS[settings.task_type][settings.selection_metric]
    if settings.task_type == "regression":
        # RidgeCV's efficient leave-one-out picks alpha and gives the held-out score of that
        # alpha on the training rows, for all alphas at the cost of one decomposition.
        ridge = RidgeCV(alphas=settings.ridge_alphas, scoring=make_scorer(score))
        pipeline = make_pipeline(StandardScaler(), ridge).fit(X, y)
        return pipeline.predict, ridge.best_score_
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise InputError(f"a training part holds only class {classes[0]!r}; a classifier needs at least two classes")
    inner = StratifiedKFold(n_splits=min(settings.inner_folds, int(counts.max())), shuffle=True, random_state=settings.seed)
    search = GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=settings.max_iter)),
        param_grid={"logisticregression__C": list(settings.logistic_cs)},
        scoring=make_scorer(score),
        cv=inner,
    )
    with warnings.catch_warnings():
        # Rare classes make some inner folds lack a class; scores there are still valid.
        warnings.filterwarnings("ignore", message="The least populated class")
        search.fit(X, y)
    return search.predict, search.best_score_
