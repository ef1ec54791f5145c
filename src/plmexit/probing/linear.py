"""A fitted probe as plain arrays: apply it, and turn it into (and back from) the plain dict of ``probe.json``.

Invariant: a probe is ``scores = ((x - mean) / scale) @ weights + intercept`` on one layer's pooled
embedding ``x`` (``mean``/``scale``: StandardScaler fitted on the training rows; ``weights`` on the
standardised features), then its ``link``: ``identity`` (regression: the score is the prediction),
``sigmoid`` (a two-class task's one column, positive means ``classes[1]``; or a multi-label task's
one independent column per label) or ``softmax`` (one column per class, the largest wins). Nothing
here fits, reads or writes files, and nothing is pickled: ``to_dict`` holds lists of numbers that
``json`` writes exactly (Python floats round-trip through their ``repr``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, softmax

from plmexit.errors import InputError

FORMAT = "plmexit-linear-probe"
FORMAT_VERSION = 1
LINKS = {"regression": ("identity",), "classification": ("sigmoid", "softmax"), "multilabel": ("sigmoid",)}
HYPERPARAMETER_NAMES = {"regression": "alpha", "classification": "C", "multilabel": "C"}
FORMULA = (
    "scores = ((x - mean) / scale) @ weights + intercept, x the layer's pooled embedding (dim,); "
    "regression: the score is the prediction; classification, link sigmoid (two classes): p(classes[1]) = sigmoid(score), "
    "classes[1] when score > 0; link softmax: p = softmax(scores) over classes, the largest wins; "
    "multilabel: p(label j) = sigmoid(scores[j]), or constant_probability[j] where that is not null "
    "(a label present in all or none of the training rows)"
)


@dataclass(frozen=True)
class LinearProbe:
    """One fitted probe (see the module docstring for the formula)."""

    task_type: str
    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    weights: np.ndarray  # (D, K)
    intercept: np.ndarray  # (K,)
    link: str
    classes: list[str]  # classification: the classes; multilabel: the labels, one per column; regression: []
    hyperparameter: float  # ridge alpha or logistic C of the fit
    n_training_rows: int
    constant_probability: list[float | None] | None = None  # multilabel only

    def scores(self, X: np.ndarray) -> np.ndarray:
        """``(m, K)`` scores (logits) of rows ``X`` ``(m, D)``."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.mean):
            raise InputError(f"the probe takes {len(self.mean)}-wide embeddings, got shape {X.shape}; embed with the exported model")
        return ((X - self.mean) / self.scale) @ self.weights + self.intercept

    def probabilities(self, X: np.ndarray) -> np.ndarray:
        """Class (or per-label) probabilities ``(m, len(classes))``; not for regression."""
        Z = self.scores(X)
        if self.task_type == "multilabel":
            P = expit(Z)
            for j, p in enumerate(self.constant_probability or []):
                if p is not None:
                    P[:, j] = p
            return P
        if self.link == "sigmoid":
            p = expit(Z[:, 0])
            return np.column_stack([1.0 - p, p])
        return softmax(Z, axis=1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """What the probe step writes as a prediction: a value, a class, or per-label probabilities ``(m, K)``."""
        if self.task_type == "regression":
            return self.scores(X)[:, 0]
        if self.task_type == "multilabel":
            return self.probabilities(X)
        Z = self.scores(X)
        classes = np.asarray(self.classes, dtype=object)
        if self.link == "sigmoid":
            return np.where(Z[:, 0] > 0, classes[1], classes[0])
        return classes[np.argmax(Z, axis=1)]

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "formula": FORMULA,
            "task_type": self.task_type,
            "link": self.link,
            "classes": list(self.classes),
            "constant_probability": self.constant_probability,
            "hyperparameter": {"name": HYPERPARAMETER_NAMES[self.task_type], "value": float(self.hyperparameter)},
            "n_training_rows": int(self.n_training_rows),
            "dim": len(self.mean),
            "n_outputs": int(self.weights.shape[1]),
            "mean": [float(v) for v in self.mean],
            "scale": [float(v) for v in self.scale],
            "weights": [[float(v) for v in row] for row in self.weights],
            "intercept": [float(v) for v in self.intercept],
        }

    def to_json(self) -> str:
        """``to_dict`` as JSON text a person can read: one key per line, each row of ``weights`` on its own line."""
        data = self.to_dict()
        lines = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in data.items() if key != "weights"]
        rows = ",\n".join(f"    {json.dumps(row)}" for row in data["weights"])
        lines.insert(list(data).index("weights"), f'  "weights": [\n{rows}\n  ]')
        return "{\n" + ",\n".join(lines) + "\n}\n"

    @classmethod
    def from_dict(cls, data: dict, source: str = "probe") -> LinearProbe:
        """The probe a ``to_dict`` dict describes; an ``InputError`` naming ``source`` when it is not one."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError(f"{source}: not a plmexit probe (no 'format': '{FORMAT}'); pass the probe.json written by `plmexit export`")
        if data.get("format_version") != FORMAT_VERSION:
            raise InputError(f"{source}: probe format version {data.get('format_version')!r}, this plmexit reads {FORMAT_VERSION}; export again")
        try:
            task_type, link = data["task_type"], data["link"]
            probe = cls(
                task_type=task_type,
                mean=np.asarray(data["mean"], dtype=np.float64),
                scale=np.asarray(data["scale"], dtype=np.float64),
                weights=np.asarray(data["weights"], dtype=np.float64).reshape(len(data["mean"]), -1),
                intercept=np.asarray(data["intercept"], dtype=np.float64),
                link=link,
                classes=[str(c) for c in data["classes"]],
                hyperparameter=float(data["hyperparameter"]["value"]),
                n_training_rows=int(data["n_training_rows"]),
                constant_probability=data.get("constant_probability"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{source}: malformed probe ({type(exc).__name__}: {exc}); export again") from None
        if link not in LINKS.get(task_type, ()):
            raise InputError(f"{source}: link {link!r} does not fit task type {task_type!r}; export again")
        if len(probe.scale) != len(probe.mean) or len(probe.intercept) != probe.weights.shape[1]:
            raise InputError(f"{source}: mean, scale, weights and intercept do not agree in shape; export again")
        return probe
