"""Gates, the controller and its calibration on planted per-layer probe outputs (numpy only, no models)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from plmexit.errors import InputError
from plmexit.exit import calibration, gates
from plmexit.exit.controller import Controller, at_layers, reference_layer
from plmexit.exit.evaluation import summarize_exits


def test_gate_scores_exact_values():
    p = np.array([[[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]]])  # (1 layer, 2 rows, 3 classes)
    assert gates.gate_scores(p, "probability", "classification")[0] == pytest.approx([0.7, 0.4])
    assert gates.gate_scores(p, "margin", "classification")[0] == pytest.approx([0.5, 0.0])
    entropy = -(p * np.log(p)).sum(axis=-1)[0] / np.log(3)
    assert gates.gate_scores(p, "entropy", "classification")[0] == pytest.approx(1 - entropy)
    labels = np.array([[[0.9, 0.2]]])
    assert gates.gate_scores(labels, "probability", "multilabel")[0] == pytest.approx([0.8])
    assert gates.gate_scores(labels, "margin", "multilabel")[0] == pytest.approx([0.6])


def test_patience_counts_unchanged_layers_and_regression_tolerance():
    classes = np.eye(2)[[0, 1, 1, 1, 0]][:, None, :]  # (5 layers, 1 row, 2 classes)
    assert gates.patience_run(classes, "classification")[:, 0].tolist() == [0, 0, 1, 2, 0]
    values = np.array([0.0, 1.0, 1.05, 1.08, 2.0])[:, None]
    assert gates.patience_run(values, "regression", tolerance=0.1)[:, 0].tolist() == [0, 0, 1, 2, 0]
    with pytest.raises(InputError, match="gate 'entropy' does not apply to a regression task"):
        gates.gate_scores(values, "entropy", "regression")


def test_controller_exits_at_first_passing_layer_else_falls_back():
    scores = np.array([[0.9, 0.1, 0.1], [0.95, 0.8, 0.1], [0.99, 0.9, 0.2], [1.0, 1.0, 1.0]])  # (4 layers, 3 rows)
    assert Controller("probability", 0.85, 1, 3).exit_layers(scores).tolist() == [1, 2, 3]
    assert Controller("probability", 0.85, 0, 3).exit_layers(scores).tolist() == [0, 2, 3]
    assert Controller("probability", float("inf"), 1, 3).exit_layers(scores).tolist() == [3, 3, 3]
    assert Controller("probability", 0.85, 1, 2).exit_layers(scores).tolist() == [1, 2, 2]  # the deployed layer ends the walk
    assert reference_layer("deployed", 6, 4) == 4 and reference_layer("full", 6, 4) == 6
    with pytest.raises(InputError, match="exit.fallback 'last' is not one of full, deployed"):
        reference_layer("last", 6, 4)
    with pytest.raises(InputError, match="exit.first_layer 5 is past the reference layer 4"):
        Controller("probability", 0.5, 5, 4)


def test_binomial_p_value_is_the_exact_lower_tail():
    assert calibration.binomial_p_value(3, 100, 0.1) == pytest.approx(binom.cdf(3, 100, 0.1))
    assert calibration.binomial_p_value(3, 100, 0.1) == pytest.approx(sum(binom.pmf(k, 100, 0.1) for k in range(4)))
    with pytest.raises(InputError, match="exit.epsilon is 0.0"):
        calibration.check_budget(0.0, 0.1)


def test_hoeffding_bentkus_p_value_against_a_direct_computation():
    import math

    for mean, n, epsilon in [(0.03, 60, 0.1), (0.07, 200, 0.1), (0.0, 30, 0.2), (0.15, 100, 0.2), (0.25, 40, 0.2), (0.02, 500, 0.05)]:
        a = min(mean, epsilon)
        h = (a * math.log(a / epsilon) if a > 0 else 0.0) + (1 - a) * math.log((1 - a) / (1 - epsilon))
        k = math.ceil(round(n * mean, 9))
        bentkus = math.e * sum(math.comb(n, i) * epsilon**i * (1 - epsilon) ** (n - i) for i in range(k + 1))
        assert calibration.hoeffding_bentkus_p_value(mean, n, epsilon) == pytest.approx(min(1.0, math.exp(-n * h), bentkus), rel=1e-9)
    assert calibration.hoeffding_bentkus_p_value(0.0, 30, 0.2) == pytest.approx(0.8**30)  # zero loss: as the binomial
    assert calibration.hoeffding_bentkus_p_value(0.2, 30, 0.2) == 1.0 and calibration.hoeffding_bentkus_p_value(0.5, 0, 0.2) == 1.0
    for wrong in range(0, 20):  # on 0/1 losses it is never below the exact binomial
        assert calibration.hoeffding_bentkus_p_value(wrong / 100, 100, 0.1) >= calibration.binomial_p_value(wrong, 100, 0.1) * (1 - 1e-12)


def test_hoeffding_bentkus_p_value_is_valid_for_bounded_losses_at_the_null():
    """Losses in [0, 1] with mean exactly epsilon (a Beta, and a two-point law): p <= delta in at most delta of the draws."""
    rng = np.random.default_rng(0)
    epsilon, delta, n, draws = 0.1, 0.1, 50, 4000
    for losses in (rng.beta(0.5, 4.5, (draws, n)), 0.5 * (rng.random((draws, n)) < 2 * epsilon)):
        p = np.array([calibration.hoeffding_bentkus_p_value(row.mean(), n, epsilon) for row in losses])
        assert np.mean(p <= delta) <= delta


def test_fixed_sequence_stops_at_the_first_threshold_not_rejected():
    # Layer 1 is right on rows 0..89 and wrong on 90..99; confidence 0.99 on the right ones and on
    # 5 wrong ones, 0.6 on the other 5 wrong ones.
    n = 100
    right = np.zeros((n, 2))
    right[:, 0] = 1.0
    early = right.copy()
    early[90:] = [0.01, 0.99]
    early[95:] = [0.4, 0.6]
    outputs = np.stack([right, early, right])
    grid = np.array([0.999, 0.98, 0.5])
    result = calibration.learn_then_test(outputs, "probability", "classification", grid, 0.1, 0.1, 1, 2)
    assert [t["threshold"] for t in result.tested] == [0.999, 0.98, 0.5]
    assert [t["disagreements"] for t in result.tested] == [0, 5, 10]
    assert [t["rejected"] for t in result.tested] == [True, True, False]
    assert result.controller.threshold == 0.98 and result.certified
    strict = calibration.learn_then_test(outputs, "probability", "classification", grid, 0.001, 0.1, 1, 2)
    assert not strict.certified and np.isinf(strict.controller.threshold)
    with pytest.raises(InputError, match="most conservative"):
        calibration.learn_then_test(outputs, "probability", "classification", grid[::-1], 0.1, 0.1, 1, 2)


def planted(n: int, n_layers: int, easy_layer: int, hard_layer: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(L + 1, n, 3) probabilities, truth, and which rows are easy.

    Easy rows are confidently right from ``easy_layer`` on (1% of them confidently wrong there,
    corrected at ``hard_layer``); hard rows are unsure (top probability below 0.6, class at random)
    until ``hard_layer``, then confidently right. The final layer is right on every row.
    """
    K = 3
    truth = rng.integers(0, K, n)
    easy = rng.random(n) < 0.6
    slip = easy & (rng.random(n) < 0.01)
    logits = rng.normal(0, 0.3, (n_layers + 1, n, K))  # unsure: softmax of small logits
    strong = 6.0 + rng.normal(0, 0.5, (n_layers + 1, n))
    for k in range(n_layers + 1):
        sure = (easy & (k >= easy_layer)) | (k >= hard_layer)
        target = np.where(slip & (k < hard_layer), (truth + 1) % K, truth)
        logits[k, sure, target[sure]] += strong[k, sure]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    return probabilities, truth, easy


@pytest.mark.parametrize("seed", range(5))
def test_planted_easy_rows_exit_early_within_budget(seed):
    rng = np.random.default_rng(seed)
    L, epsilon, delta = 8, 0.05, 0.1
    cal, _, _ = planted(1500, L, easy_layer=2, hard_layer=7, rng=rng)
    test, truth, easy = planted(1500, L, easy_layer=2, hard_layer=7, rng=rng)
    for gate in ("probability", "margin", "entropy"):
        grid = gates.threshold_grid(gate, 50, L)
        chosen = calibration.learn_then_test(cal, gate, "classification", grid, epsilon, delta, 1, L)
        assert chosen.certified
        layers = chosen.controller.exit_layers(gates.gate_scores(test, gate, "classification"))
        assert np.all(layers[easy] <= 2) and np.mean(layers[~easy] >= 7) > 0.8, gate  # the budget lets a few hard rows out early
        report = summarize_exits(test, layers, L, "classification", 0.0, np.array(list("abc"))[truth], "accuracy", list("abc"), None, None)
        assert report["disagreement"] <= epsilon
        assert report["flops_saved"] > 0.4
        assert report["score"] == pytest.approx(1 - report["disagreement"])  # the final layer is right on every row
    grid = gates.threshold_grid("patience", 0, L)
    chosen = calibration.learn_then_test(cal, "patience", "classification", grid, epsilon, delta, 1, L)
    layers = chosen.controller.exit_layers(gates.gate_scores(test, "patience", "classification"))
    assert np.mean(layers[easy]) < np.mean(layers[~easy])
    assert gates.disagrees(at_layers(test, layers), test[L], "classification").mean() <= epsilon


def test_guarantee_holds_over_many_seeded_splits():
    """Over 300 seeded draws of calibration rows, the chosen threshold's true risk exceeds epsilon in at
    most about delta of them, and so does its disagreement on a large test draw.

    One early layer whose margin ``s`` is uniform and whose prediction is wrong with probability
    ``1 - s``: the exact risk of threshold ``t`` is ``(1 - t)^2 / 2``.
    """
    epsilon, delta, n_cal, n_test, draws = 0.1, 0.1, 400, 2000, 300
    grid = gates.threshold_grid("margin", 60, 1)

    def draw(n, rng):
        s = rng.random(n)
        wrong = rng.random(n) < 1 - s
        early = np.where(wrong[:, None], np.column_stack([(1 - s) / 2, (1 + s) / 2]), np.column_stack([(1 + s) / 2, (1 - s) / 2]))
        final = np.tile([1.0, 0.0], (n, 1))
        return np.stack([final, early, final])

    true_over, test_over, chosen = 0, 0, []
    for seed in range(draws):
        rng = np.random.default_rng(seed)
        result = calibration.learn_then_test(draw(n_cal, rng), "margin", "classification", grid, epsilon, delta, 1, 2)
        t = result.controller.threshold
        chosen.append(t)
        true_over += (1 - min(t, 1.0)) ** 2 / 2 > epsilon
        test = draw(n_test, rng)
        layers = result.controller.exit_layers(gates.gate_scores(test, "margin", "classification"))
        test_over += gates.disagrees(at_layers(test, layers), test[2], "classification").mean() > epsilon
    assert true_over / draws <= delta
    assert test_over / draws <= delta + 0.05
    # The guarantee is not bought by never exiting: the chosen threshold sits near the risk-epsilon one.
    assert np.median(chosen) < 1 - np.sqrt(2 * epsilon) + 0.1


def test_hart_sweep_reads_the_threshold_off_the_test_rows():
    rng = np.random.default_rng(0)
    test, truth, _ = planted(600, 8, 2, 7, rng)
    names = np.array(list("abc"))
    from plmexit.exit.evaluation import task_metric

    controller, sweep = calibration.hart_swept(
        test, "probability", "classification", gates.threshold_grid("probability", 30, 8), 1, 8,
        lambda out: task_metric("classification", "accuracy", names[truth], out, list("abc")),
    )
    assert max(s["score"] for s in sweep) == pytest.approx(
        task_metric("classification", "accuracy", names[truth], at_layers(test, controller.exit_layers(gates.gate_scores(test, "probability", "classification"))), list("abc"))
    )
    assert len(sweep) == 31


def test_the_fewest_calibration_units_that_can_certify():
    n = calibration.smallest_certifiable(0.1, 0.1)
    assert n == 22 and calibration.binomial_p_value(0, n, 0.1) <= 0.1 < calibration.binomial_p_value(0, n - 1, 0.1)
    assert calibration.smallest_certifiable(0.5, 0.25) == 2  # 0.5^2 = 0.25 exactly
    assert calibration.hoeffding_bentkus_p_value(0.0, n, 0.1) <= 0.1 < calibration.hoeffding_bentkus_p_value(0.0, n - 1, 0.1)
