"""The tidy tables the probe step writes and later steps read: their columns, and how multi-label rows are written.

Invariant: a probe table is long (``PROBE_COLUMNS``: one value per model, task, layer, fold and
metric) and a predictions table has one row per test item, layer and fold
(``PREDICTION_COLUMNS``). A multi-label task's label is its classes joined by
``plmexit.data.tasks.LABEL_SEPARATOR``; its prediction is ``class=probability;...``, which
``decode_multilabel`` turns back into the 0/1 truth and score vectors metrics take.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from plmexit.data.tasks import split_labels
from plmexit.errors import InputError

PROBE_COLUMNS = ["model", "task", "layer", "fold", "metric", "value"]
PREDICTION_COLUMNS = ["model", "task", "layer", "fold", "id", "label", "prediction"]
# The baselines' tables (``plmexit.probing.baselines``): as the probe and predictions tables, with the
# baseline's name (``chance``, ``onehot``, ``composition``) where those have the layer.
BASELINE_COLUMNS = ["model", "task", "baseline", "fold", "metric", "value"]
BASELINE_PREDICTION_COLUMNS = ["model", "task", "baseline", "fold", "id", "label", "prediction"]


def classes_of(labels) -> list[str]:
    """The sorted classes of a multi-label task's labels."""
    return sorted({c for label in labels for c in split_labels(label)})


def indicator(labels: np.ndarray, classes: list[str]) -> np.ndarray:
    """Multi-label rows (``2;3``) as a 0/1 matrix over ``classes``."""
    index = {c: k for k, c in enumerate(classes)}
    matrix = np.zeros((len(labels), len(classes)), dtype=int)
    for i, label in enumerate(labels):
        matrix[i, [index[c] for c in split_labels(label)]] = 1
    return matrix


def encode_scores(scores: np.ndarray, classes: list[str]) -> list[str]:
    """Per-class probabilities of a multi-label prediction as ``class=p;class=p``, self-describing in a TSV."""
    return [";".join(f"{c}={p:.6g}" for c, p in zip(classes, row)) for row in scores]


def decode_multilabel(table: pd.DataFrame) -> pd.DataFrame:
    """Predictions of a multi-label task back to vectors: truth 0/1 and scores, in the encoded class order."""
    try:
        pairs = [dict(item.split("=") for item in text.split(";")) for text in table["prediction"]]
        classes = list(pairs[0]) if pairs else []
        scores = [np.array([float(p[c]) for c in classes]) for p in pairs]
    except (ValueError, KeyError) as exc:
        raise InputError(f"multi-label predictions are not 'class=probability;...' ({exc}); rerun `plmexit probe`") from None
    truth = list(indicator(table["label"].to_numpy(), classes)) if classes else []
    return table.assign(label=truth, prediction=scores)


def task_targets(table: pd.DataFrame, task_type: str) -> tuple[np.ndarray, list[str] | None]:
    """``(y, classes)`` of a task table as the probes take them: class names, a multi-label 0/1 matrix (columns ``classes``) or values."""
    labels = table["label"].to_numpy()
    classes = classes_of(labels) if task_type == "multilabel" else sorted(set(labels)) if task_type == "classification" else None
    y = indicator(labels, classes) if task_type == "multilabel" else labels.astype(float) if task_type == "regression" else labels
    return y, classes
