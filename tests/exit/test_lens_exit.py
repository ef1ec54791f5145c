"""The gates and calibration on the model's own head: logit-lens distributions at masked positions, per position and per sequence."""

from __future__ import annotations

import numpy as np
import pytest

from plmexit.depth import lens
from plmexit.depth.heads import FairEsmMaskedLM
from plmexit.errors import InputError
from plmexit.exit import gates, lens_exit
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
    assert report["sequence"]["n_calibration"] == 3 and report["position"]["n_test"] == int((~is_cal[sequence]).sum())
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
