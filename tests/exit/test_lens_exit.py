"""The gates and calibration on the model's own head: logit-lens distributions at masked positions, per position and per sequence."""

from __future__ import annotations

import numpy as np
import pytest

from plmexit.depth import lens
from plmexit.depth.heads import FairEsmMaskedLM
from plmexit.errors import InputError
from plmexit.exit import calibration, gates, lens_exit
from plmexit.exit.controller import Controller

SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", "GGSGGSAAKLLVVWYTRE", "ACDEFGHIKLMNPQRSTVWYACDEFGHIK", "MKVLAAGIVALLLAAGCSSQ",
             "PEPTIDEKRKRKLLLSSS", "WWYYHHKKRRDDEEQQNN"]


def test_sequence_exits_when_all_its_positions_pass():
    scores = np.array([[0.9, 0.2, 0.95], [0.95, 0.9, 0.1], [1.0, 1.0, 1.0]])  # (3 layers, 3 positions)
    per_sequence = lens_exit.sequence_scores(scores, np.array([0, 0, 1]), 3)
    assert per_sequence[:, 0].tolist() == [0.2, 0.9, 1.0] and per_sequence[:, 1].tolist() == [0.95, 0.1, 1.0]
    assert np.all(np.isneginf(per_sequence[:, 2]))  # no masked position: never passes


def test_lens_exit_on_a_tiny_esm2(tiny_loaded):
    lm = FairEsmMaskedLM(tiny_loaded)
    sample = lens.mask_sample([f"s{i}" for i in range(len(SEQUENCES))], SEQUENCES, 6, 0.3, 0, 1022)
    probs, truth, sequence = lens_exit.lens_outputs(lm, sample, max_tokens=150)
    L = lm.num_layers
    n = sum(len(m) for m in sample.masked)
    assert probs.shape[:2] == (L + 1, n) and truth.shape == sequence.shape == (n,)
    assert np.allclose(probs.sum(axis=-1), 1.0, atol=1e-4)
    result = lens.analyse(lm, sample, max_tokens=150, skip_blocks=False)
    agreement = result.lens.set_index(["lens", "layer", "metric"])["value"]
    for k in range(L + 1):  # the same lens as the depth diagnostics read
        assert (probs[k].argmax(-1) == probs[L].argmax(-1)).mean() == pytest.approx(agreement[("final_norm", k, "top1_agreement")])

    report = lens_exit.calibrate_lens_exit(probs, truth, sequence, "probability", 0.3, 0.2, 0.5, seed=0, n_thresholds=10)
    for unit in ("position", "sequence"):
        numbers = report[unit]
        assert 1 <= numbers["mean_layer"] <= L and 0 <= numbers["disagreement"] <= 1 and numbers["n_test"] > 0
    assert report["n_calibration_sequences"] + report["n_test_sequences"] == len(SEQUENCES)
    # at one threshold a sequence leaves no earlier than any of its positions would alone
    scores = gates.gate_scores(probs, "probability", "classification")
    controller = Controller("probability", float(np.median(scores[1:L])), 1, L)
    alone = controller.exit_layers(scores)
    together = controller.exit_layers(lens_exit.sequence_scores(scores, sequence, len(SEQUENCES)))
    assert np.all(together[sequence] >= alone)


def test_lens_exit_reports_every_static_layer_and_calibrates_on_other_sequences(tiny_loaded):
    lm = FairEsmMaskedLM(tiny_loaded)
    sample = lens.mask_sample([f"s{i}" for i in range(len(SEQUENCES))], SEQUENCES, 6, 0.3, 0, 1022)
    probs, truth, sequence = lens_exit.lens_outputs(lm, sample, max_tokens=150)
    L = lm.num_layers
    is_cal = lens_exit.calibration_split(len(SEQUENCES), 0.5, 0)
    assert is_cal.sum() == 3 and np.array_equal(is_cal, lens_exit.calibration_split(len(SEQUENCES), 0.5, 0))
    static = lens_exit.static_lens_layers(probs, truth, sequence, is_cal)
    assert [s["layer"] for s in static] == list(range(L + 1))
    assert static[L]["disagreement"] == static[L]["sequence_disagreement"] == 0 and static[L]["accuracy"] == static[L]["final_accuracy"]
    report = lens_exit.calibrate_lens_exit(probs, truth, sequence, "margin", 0.3, 0.2, 0.5, seed=0, n_thresholds=10)
    assert report["calibration_sequences"] == np.flatnonzero(is_cal).tolist()
    assert report["sequence"]["n_calibration"] == report["position"]["n_calibration"] == 3  # both calibrate on sequences
    assert report["position"]["n_test"] == len(np.unique(sequence[~is_cal[sequence]]))
    for unit in ("position", "sequence"):
        tested = report[unit]["tested"]
        assert all(step["rejected"] for step in tested[:-1]) and report[unit]["certified"] == tested[0]["rejected"]
    # a threshold no score reaches: every unit runs to the final layer, and nothing disagrees
    never = lens_exit.calibrate_lens_exit(probs, truth, sequence, "probability", 0.01, 0.01, 0.5, seed=0, n_thresholds=10)
    assert not never["sequence"]["certified"] and never["sequence"]["mean_layer"] == L and never["sequence"]["sequence_disagreement"] == 0


def test_a_calibration_split_needs_a_sequence_on_each_side():
    with pytest.raises(InputError, match=r"at least 2 sampled sequences .* raise exit\.lens_sample"):
        lens_exit.calibration_split(1, 0.5, 0)
    with pytest.raises(InputError, match=r"strictly between 0 and 1 \(exit\.lens_calibration_fraction\)"):
        lens_exit.calibration_split(10, 1.0, 0)


def dependent_positions(n_sequences: int, per_sequence: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(probs (3, N, 2), truth, sequence)``: a sequence's masked positions settle together. Each sequence has one
    margin ``s`` (uniform) at layer 1 shared by all its positions, and all of them are wrong there with probability
    ``1 - s``; layers 0 and 2 are right. The exact per-position risk of margin threshold ``t`` is ``(1 - t)^2 / 2``
    (per sequence mean of the fraction of disagreeing positions, and position-weighted alike)."""
    s = np.repeat(rng.random(n_sequences), per_sequence)
    wrong = np.repeat(rng.random(n_sequences), per_sequence) < 1 - s
    early = np.where(wrong[:, None], np.column_stack([(1 - s) / 2, (1 + s) / 2]), np.column_stack([(1 + s) / 2, (1 - s) / 2]))
    final = np.tile([1.0, 0.0], (len(s), 1))
    return np.stack([final, early, final]), np.zeros(len(s), dtype=int), np.repeat(np.arange(n_sequences), per_sequence)


def test_per_position_guarantee_holds_when_positions_of_a_sequence_are_dependent():
    """Over 200 seeded splits, the per-position controller's true risk exceeds epsilon in at most about delta of them;
    the old bound (exact binomial over positions, as if independent) exceeds it far more often on the same data."""
    epsilon, delta, draws = 0.1, 0.1, 200

    def true_risk(t):
        return (1 - min(t, 1.0)) ** 2 / 2

    new_over, old_over, new_thresholds = 0, 0, []
    for seed in range(draws):
        probs, truth, sequence = dependent_positions(200, 30, np.random.default_rng(seed))
        report = lens_exit.calibrate_lens_exit(probs, truth, sequence, "margin", epsilon, delta, 0.5, seed=seed, n_thresholds=60)
        new_over += true_risk(report["position"]["threshold"]) > epsilon
        new_thresholds.append(report["position"]["threshold"])
        cal = np.isin(sequence, report["calibration_sequences"])
        old = calibration.learn_then_test(probs[:, cal], "margin", "classification", gates.threshold_grid("margin", 60, 4), epsilon, delta, 1, 2)
        old_over += true_risk(old.controller.threshold) > epsilon
    assert new_over / draws <= delta
    assert old_over / draws > 3 * delta  # counting 3000 dependent positions as independent over-certifies
    # valid without never exiting: most splits certify a threshold, near the risk-epsilon one (1 - sqrt(2 epsilon) = 0.553)
    assert np.mean(np.isfinite(new_thresholds)) > 0.9 and np.median(new_thresholds) < 0.8
