"""Choose an exit threshold from training rows with a distribution-free guarantee, and Hart's test-swept one.

Invariant: ``learn_then_test`` sees calibration rows only (inner-fold out-of-fold probe outputs of
an outer fold's training rows). Its risk is the rate at which the exited prediction disagrees with
the reference layer's. Each threshold ``t`` of the grid is a null hypothesis "risk(t) > epsilon",
tested with the exact binomial tail p-value ``P(Binom(n, epsilon) <= disagreements)``; thresholds are
tested in fixed sequence from the most conservative, and the walk stops at the first not rejected
at level ``delta``. Fixed-sequence testing controls the family-wise error at ``delta`` without any
monotonicity assumption (Angelopoulos et al., Learn then Test, 2021), so with probability at least
``1 - delta`` over the calibration rows, the chosen threshold's risk on new rows exchangeable with
them is at most ``epsilon``. That needs the units to be exchangeable (independent draws): when the loss
is a mean over dependent parts of one unit (the masked positions of one sequence), the unit is the
sequence and its loss its fraction of disagreeing parts, a bounded mean in [0, 1] that the exact
binomial does not cover; ``hoeffding_bentkus_p_value`` (Bates et al. 2021, RCPS; the p-value of
Learn then Test) is valid for it, and ``learn_then_test_scores(..., bounded=True)`` uses it. ``hart_swept`` is Hart et al.'s protocol (the threshold read off the
test rows) and is optimistic by construction: it is reported beside, never used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import xlogy
from scipy.stats import binom

from plmexit.errors import InputError
from plmexit.exit import gates
from plmexit.exit.controller import Controller, at_layers


@dataclass
class Calibration:
    """What ``learn_then_test`` chose and the evidence for it."""

    controller: Controller
    certified: bool  # False: no threshold passed, every row falls back (risk 0)
    n_calibration: int
    epsilon: float
    delta: float
    tested: list[dict] = field(default_factory=list)  # one row per threshold tested: threshold, disagreements, risk, p_value, rejected


def binomial_p_value(disagreements: int, n: int, epsilon: float) -> float:
    """Exact p-value of "risk > epsilon" given ``disagreements`` in ``n`` rows: ``P(Binom(n, epsilon) <= disagreements)``."""
    if n == 0:
        return 1.0
    return float(binom.cdf(disagreements, n, epsilon))


def hoeffding_bentkus_p_value(mean: float, n: int, epsilon: float) -> float:
    """Valid p-value of "risk > epsilon" given the ``mean`` loss of ``n`` independent units with losses in [0, 1]:
    ``min(exp(-n h(min(mean, epsilon), epsilon)), e P(Binom(n, epsilon) <= ceil(n mean)))``, ``h(a, b)`` the Bernoulli
    relative entropy ``a log(a/b) + (1-a) log((1-a)/(1-b))`` (Hoeffding's bound in its relative-entropy form, and
    Bentkus's). For 0/1 losses it is never smaller than ``binomial_p_value``; at ``mean`` 0 both are ``(1 - epsilon)^n``,
    so ``smallest_certifiable`` holds for it too."""
    if n == 0:
        return 1.0
    a = min(float(mean), epsilon)
    relative_entropy = xlogy(a, a / epsilon) + xlogy(1 - a, (1 - a) / (1 - epsilon))
    hoeffding = float(np.exp(-n * relative_entropy))
    bentkus = float(np.e * binom.cdf(np.ceil(n * float(mean) - 1e-9), n, epsilon))
    return min(1.0, hoeffding, bentkus)


def smallest_certifiable(epsilon: float, delta: float) -> int:
    """The fewest calibration units with which any threshold can be certified: ``(1 - epsilon)^n <= delta``, the
    p-value of zero disagreements, binomial or Hoeffding-Bentkus (fewer units and every controller falls back, whatever the model)."""
    return int(np.ceil(np.log(delta) / np.log1p(-epsilon) - 1e-9))


def check_budget(epsilon: float, delta: float) -> None:
    if not 0.0 < epsilon < 1.0:
        raise InputError(f"exit.epsilon is {epsilon}; the risk budget must lie strictly between 0 and 1")
    if not 0.0 < delta < 1.0:
        raise InputError(f"exit.delta is {delta}; the confidence parameter must lie strictly between 0 and 1")


def learn_then_test(
    outputs: np.ndarray, gate: str, task_type: str, grid: np.ndarray, epsilon: float, delta: float,
    first_layer: int, reference: int, tolerance: float = 0.0,
) -> Calibration:
    """The least conservative threshold of ``grid`` (ordered most conservative first) that fixed-sequence
    testing certifies at risk ``epsilon`` with confidence ``1 - delta``, on calibration ``outputs`` ``(L + 1, n, ...)``."""
    scores = gates.gate_scores(outputs, gate, task_type, tolerance)

    def disagreeing(layers: np.ndarray) -> np.ndarray:
        return gates.disagrees(at_layers(outputs, layers), outputs[reference], task_type, tolerance)

    return learn_then_test_scores(scores, disagreeing, gate, grid, epsilon, delta, first_layer, reference)


def learn_then_test_scores(
    scores: np.ndarray, disagreeing, gate: str, grid: np.ndarray, epsilon: float, delta: float, first_layer: int, reference: int,
    bounded: bool = False,
) -> Calibration:
    """``learn_then_test`` on gate ``scores`` ``(L + 1, m)`` of what the controller decides for (a row, a sequence, a masked
    position), with ``disagreeing(exit layers (m,)) -> (n,)`` the loss of each of ``n`` exchangeable units: bool and the exact
    binomial p-value; or with ``bounded``, losses in [0, 1] (e.g. the fraction of a sequence's positions that disagree when
    each position exits on its own) and ``hoeffding_bentkus_p_value`` over the ``n`` units."""
    check_budget(epsilon, delta)
    grid = np.asarray(grid, dtype=np.float64)
    if len(grid) > 1 and np.any(np.diff(grid) > 0):
        raise InputError("the threshold grid must run from the most conservative (largest) threshold down")
    chosen = Controller(gate, float("inf"), first_layer, reference)
    n = len(disagreeing(chosen.exit_layers(scores)))
    tested = []
    for threshold in grid:
        controller = Controller(gate, float(threshold), first_layer, reference)
        layers = controller.exit_layers(scores)
        losses = np.asarray(disagreeing(layers), dtype=np.float64)
        if bounded:
            wrong = float(losses.sum())
            p = hoeffding_bentkus_p_value(wrong / max(n, 1), n, epsilon)
        else:
            wrong = int(losses.sum())
            p = binomial_p_value(wrong, n, epsilon)
        rejected = p <= delta
        tested.append({"threshold": float(threshold), "disagreements": wrong, "risk": wrong / max(n, 1), "p_value": p,
                       "rejected": bool(rejected), "mean_layer": float(layers.mean()) if n else float("nan")})
        if not rejected:
            break
        chosen = controller
    return Calibration(chosen, bool(np.isfinite(chosen.threshold)), n, epsilon, delta, tested)


def hart_swept(outputs: np.ndarray, gate: str, task_type: str, grid: np.ndarray, first_layer: int, reference: int, score,
               tolerance: float = 0.0) -> tuple[Controller, list[dict]]:
    """Hart et al.'s protocol: every threshold tried on the test rows, the one with the best test ``score`` kept
    (ties to fewer layers). ``score(exited_outputs) -> float``, higher is better. Optimistic by construction."""
    scores = gates.gate_scores(outputs, gate, task_type, tolerance)
    sweep = []
    for threshold in [float("inf"), *np.asarray(grid, dtype=np.float64)]:
        controller = Controller(gate, threshold, first_layer, reference)
        layers = controller.exit_layers(scores)
        sweep.append((controller, float(score(at_layers(outputs, layers))), float(layers.mean())))
    best = max(sweep, key=lambda item: (item[1], -item[2]))
    return best[0], [{"threshold": c.threshold, "score": s, "mean_layer": m} for c, s, m in sweep]
