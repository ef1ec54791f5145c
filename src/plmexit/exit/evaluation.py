"""What a controller does on rows it was not calibrated on: disagreement, the task metric, exit layers, compute saved.

Invariant: these numbers are computed on an outer fold's test rows only, which neither the probes
nor the calibration saw. FLOPs saved weigh each row by its own per-block FLOPs (its token count and
the model width, ``embedding.cost.block_flops_per_token``), against every row run to full depth
``L``; time saved is estimated from the cost file's measured seconds per static depth (the
adaptive forward's own wall clock is measured by ``exit.adaptive``). Only numpy.
"""

from __future__ import annotations

import numpy as np

from plmexit.embedding.cost import block_flops_per_token
from plmexit.exit import gates
from plmexit.exit.controller import at_layers
from plmexit.probing.metrics import METRICS


def task_metric(task_type: str, metric: str, truth: np.ndarray, outputs: np.ndarray, classes: list[str] | None = None) -> float:
    """The probes' metric (``probing.metrics.METRICS``) of per-row outputs: class probabilities become
    the top class's name, multi-label probabilities are scored as they are, regression values as values."""
    if task_type == "classification":
        predicted = np.asarray(classes, dtype=object)[np.argmax(outputs, axis=-1)]
        return float(METRICS[task_type][metric](truth, predicted))
    return float(METRICS[task_type][metric](truth, outputs))


def row_flops(token_lengths: np.ndarray, dim: int, matmul_weights: float | None = None) -> np.ndarray:
    """``(n,)`` FLOPs of one block for each row (``token_lengths`` include special tokens)."""
    lengths = np.asarray(token_lengths, dtype=np.float64)
    return lengths * block_flops_per_token(dim, lengths, matmul_weights)


def summarize_exits(
    outputs: np.ndarray, layers: np.ndarray, reference: int, task_type: str, tolerance: float,
    truth: np.ndarray, metric: str, classes: list[str] | None, flops: np.ndarray | None, seconds: np.ndarray | None,
) -> dict:
    """One controller's numbers on test ``outputs`` ``(L + 1, n, ...)`` with exit ``layers`` ``(n,)``."""
    n_layers = outputs.shape[0] - 1
    exited = at_layers(outputs, layers)
    weights = np.ones(len(layers)) if flops is None else np.asarray(flops, dtype=np.float64)
    histogram = np.bincount(layers, minlength=n_layers + 1)
    result = {
        "n_rows": int(len(layers)),
        "disagreement": float(gates.disagrees(exited, outputs[reference], task_type, tolerance).mean()) if len(layers) else float("nan"),
        "metric": metric,
        "score": task_metric(task_type, metric, truth, exited, classes),
        "mean_layer": float(layers.mean()),
        "median_layer": float(np.median(layers)),
        "exit_histogram": [int(c) for c in histogram],
        "fraction_early": float((layers < reference).mean()),
        "layers_saved": float(1.0 - layers.mean() / n_layers),
        "flops_saved": float(1.0 - (weights * layers).sum() / (weights.sum() * n_layers)),
    }
    if seconds is not None:
        seconds = np.asarray(seconds, dtype=np.float64)
        # Static per-depth timings of the whole timed set, spread evenly over rows: an estimate that
        # ignores batching (the adaptive forward's measured wall clock is the real number).
        result["time_saved_estimate"] = float(1.0 - seconds[layers].mean() / seconds[n_layers])
    return result
