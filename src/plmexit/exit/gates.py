"""How confident a probe is at each layer (a gate's score), and when two predictions disagree.

Invariant: every gate turns per-layer probe outputs into a score per (layer, row) where a higher
score means more confident, so a larger threshold always exits fewer rows (the order
``calibration`` tests thresholds in). Outputs are ``(L + 1, n, K)`` class or label probabilities
(classification, multi-label) or ``(L + 1, n)`` values (regression). The same ``disagrees`` defines
the risk the controller is calibrated to and the disagreement reported on test rows. Only numpy.
"""

from __future__ import annotations

import numpy as np

from plmexit.errors import InputError

# Gates by task type. Regression has no probabilities, only patience (the prediction moving less
# than a tolerance for k consecutive layers).
GATES = {
    "classification": ("probability", "margin", "entropy", "patience"),
    "multilabel": ("probability", "margin", "entropy", "patience"),
    "regression": ("patience",),
}
# A multi-label prediction calls a label when its probability reaches this (as the probes' F1 does).
LABEL_THRESHOLD = 0.5
# Probabilities are clipped away from 0 before taking logs in the entropy.
_TINY = 1e-12


def check_gate(gate: str, task_type: str) -> None:
    if task_type not in GATES:
        raise InputError(f"task type {task_type!r} is not one of {', '.join(GATES)}")
    if gate not in GATES[task_type]:
        raise InputError(f"gate {gate!r} does not apply to a {task_type} task; use one of {', '.join(GATES[task_type])} (exit.gates)")


def decisions(outputs: np.ndarray, task_type: str) -> np.ndarray:
    """What each output predicts: the class index ``(..., )``, the called labels ``(..., K)`` or the value."""
    if task_type == "classification":
        return np.argmax(outputs, axis=-1)
    if task_type == "multilabel":
        return outputs >= LABEL_THRESHOLD
    return outputs


def disagrees(a: np.ndarray, b: np.ndarray, task_type: str, tolerance: float = 0.0) -> np.ndarray:
    """Per row, whether outputs ``a`` and ``b`` (same shape) predict differently.

    Classification: another class; multi-label: any label called differently; regression: the
    values differ by more than ``tolerance`` (in the target's units).
    """
    da, db = decisions(a, task_type), decisions(b, task_type)
    if task_type == "classification":
        return da != db
    if task_type == "multilabel":
        return (da != db).any(axis=-1)
    return np.abs(da - db) > tolerance


def _entropy_score(p: np.ndarray, task_type: str) -> np.ndarray:
    """1 minus normalised entropy: 1 for a one-hot output, 0 for a uniform one."""
    p = np.clip(p, _TINY, 1.0)
    if task_type == "multilabel":
        q = np.clip(1.0 - p, _TINY, 1.0)
        bits = -(p * np.log2(p) + q * np.log2(q))
        return 1.0 - bits.mean(axis=-1)
    k = p.shape[-1]
    return 1.0 - (-(p * np.log(p)).sum(axis=-1)) / np.log(max(k, 2))


def patience_run(outputs: np.ndarray, task_type: str, tolerance: float = 0.0) -> np.ndarray:
    """``(L + 1, n)``: for how many layers before layer ``k`` the prediction has stayed as at layer ``k``.

    ``0`` when the prediction at ``k`` differs from ``k - 1`` (and at layer 0); regression counts
    consecutive moves of at most ``tolerance``.
    """
    run = np.zeros(outputs.shape[:2])
    for k in range(1, len(outputs)):
        same = ~disagrees(outputs[k], outputs[k - 1], task_type, tolerance)
        run[k] = np.where(same, run[k - 1] + 1, 0)
    return run


def gate_scores(outputs: np.ndarray, gate: str, task_type: str, tolerance: float = 0.0) -> np.ndarray:
    """``(L + 1, n)`` confidence of each row at each layer under ``gate`` (higher: more confident).

    probability: the top class's probability (multi-label: the least decided label's
    ``max(p, 1 - p)``); margin: top minus second class probability (multi-label: the least decided
    label's ``|2p - 1|``); entropy: ``1 - H / log K`` (multi-label: ``1 -`` mean binary entropy in
    bits); patience: ``patience_run``.
    """
    check_gate(gate, task_type)
    outputs = np.asarray(outputs, dtype=np.float64)
    if gate == "patience":
        return patience_run(outputs, task_type, tolerance)
    if gate == "entropy":
        return _entropy_score(outputs, task_type)
    if task_type == "multilabel":
        decided = np.abs(2.0 * outputs - 1.0)
        return decided.min(axis=-1) if gate == "margin" else (1.0 + decided.min(axis=-1)) / 2.0
    top = np.sort(outputs, axis=-1)
    if gate == "probability":
        return top[..., -1]
    return top[..., -1] - (top[..., -2] if top.shape[-1] > 1 else 0.0)


def threshold_grid(gate: str, n_thresholds: int, max_patience: int) -> np.ndarray:
    """Candidate thresholds, most conservative (largest) first.

    Probability, margin and entropy scores lie in [0, 1]; the grid is ``1 - g`` for ``g``
    log-spaced from 1e-4 to 1, dense near 1 where exits are rare and disagreement is low.
    Patience: ``max_patience, ..., 1`` layers.
    """
    if gate == "patience":
        if max_patience < 1:
            raise InputError(f"exit.max_patience is {max_patience}; it must be at least 1")
        return np.arange(max_patience, 0, -1, dtype=np.float64)
    if n_thresholds < 2:
        raise InputError(f"exit.n_thresholds is {n_thresholds}; it must be at least 2")
    return 1.0 - np.geomspace(1e-4, 1.0, n_thresholds)
