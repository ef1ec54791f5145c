"""Early exit for the model's own head: the gates and calibration on logit-lens distributions at masked positions.

Invariant: the reference is the model's own output at a masked position (the standard lens at
layer ``L``, ``depth.lens``); a layer's output is the standard logit lens there (final norm, then
the head). Two units: a masked position (exits at the first layer whose gate passes), and a
sequence (exits at the first layer where the gate passes at every one of its masked positions;
it disagrees when any of them predicts another residue than the final layer). Calibration and test
sequences are disjoint (a seeded split by sequence), so no sequence's positions sit on both sides.
"""

from __future__ import annotations

import numpy as np
import torch

from plmexit.depth.heads import MaskedLM, lens_logits, log_probs
from plmexit.depth.lens import MaskedSample
from plmexit.embedding.engine import token_batches
from plmexit.errors import InputError
from plmexit.exit import calibration, gates
from plmexit.exit.controller import at_layers


@torch.inference_mode()
def lens_outputs(lm: MaskedLM, sample: MaskedSample, max_tokens: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(probabilities (L + 1, N, V), true residue ids (N,), sequence index (N,))`` over every masked position of ``sample``."""
    lengths = np.array([len(r) for r in sample.residues])
    probs, truth, sequence = [], [], []
    for batch in token_batches(lengths, max_tokens):
        tokens = lm.encode([sample.residues[i] for i in batch])
        rows = np.concatenate([np.full(len(sample.masked[i]), r) for r, i in enumerate(batch)])
        columns = np.concatenate([sample.masked[i] for i in batch]) + lm.offset
        rows_t, columns_t = torch.as_tensor(rows, device=tokens.device), torch.as_tensor(columns, device=tokens.device)
        tokens[rows_t, columns_t] = lm.mask_id
        layers = [log_probs(lens_logits(lm, state[rows_t, columns_t])).exp().float().cpu().numpy() for state in lm.layer_states(tokens)]
        probs.append(np.stack(layers))
        truth += [lm.residue_ids.get(sample.residues[i][p], -1) for i in batch for p in sample.masked[i]]
        sequence.append(np.asarray(batch)[rows])
    return np.concatenate(probs, axis=1), np.asarray(truth), np.concatenate(sequence)


def sequence_scores(scores: np.ndarray, sequence: np.ndarray, n_sequences: int) -> np.ndarray:
    """``(L + 1, S)``: per sequence the smallest gate score over its positions (a sequence passes when all of them do);
    ``-inf`` for a sequence with no position (never passes)."""
    out = np.full((scores.shape[0], n_sequences), -np.inf)
    for s in range(n_sequences):
        mine = sequence == s
        if mine.any():
            out[:, s] = scores[:, mine].min(axis=1)
    return out


def _report(exited_top: np.ndarray, final_top: np.ndarray, truth: np.ndarray, layers: np.ndarray, L: int) -> dict:
    return {
        "disagreement": float((exited_top != final_top).mean()), "accuracy": float((exited_top == truth).mean()),
        "final_accuracy": float((final_top == truth).mean()), "mean_layer": float(layers.mean()), "layers_saved": float(1 - layers.mean() / L),
    }


def calibrate_lens_exit(
    probs: np.ndarray, truth: np.ndarray, sequence: np.ndarray, gate: str, epsilon: float, delta: float,
    calibration_fraction: float = 0.5, seed: int = 0, n_thresholds: int = 50, max_patience: int = 4, first_layer: int = 1,
) -> dict:
    """Per-position and per-sequence controllers calibrated on a seeded ``calibration_fraction`` of the sequences,
    reported on the others: disagreement with the final layer, accuracy against the true residue, layers saved."""
    if not 0 < calibration_fraction < 1:
        raise InputError(f"calibration fraction {calibration_fraction} must lie strictly between 0 and 1")
    L = probs.shape[0] - 1
    n_sequences = int(sequence.max()) + 1
    order = np.random.default_rng(seed).permutation(n_sequences)
    n_cal = max(1, min(n_sequences - 1, round(calibration_fraction * n_sequences)))
    is_cal = np.zeros(n_sequences, dtype=bool)
    is_cal[order[:n_cal]] = True
    grid = gates.threshold_grid(gate, n_thresholds, max_patience)
    top = probs.argmax(axis=-1)  # (L + 1, N)
    result = {"gate": gate, "epsilon": epsilon, "delta": delta, "n_layers": L, "n_calibration_sequences": n_cal,
              "n_test_sequences": n_sequences - n_cal}

    cal, test = is_cal[sequence], ~is_cal[sequence]
    chosen = calibration.learn_then_test(probs[:, cal], gate, "classification", grid, epsilon, delta, first_layer, L)
    layers = chosen.controller.exit_layers(gates.gate_scores(probs[:, test], gate, "classification"))
    result["position"] = {"threshold": chosen.controller.threshold, "certified": chosen.certified, "n_calibration": int(cal.sum()),
                          "n_test": int(test.sum()), **_report(at_layers(top[:, test], layers), top[L, test], truth[test], layers, L)}

    scores = sequence_scores(gates.gate_scores(probs, gate, "classification"), sequence, n_sequences)

    def per_sequence(sequences: np.ndarray):
        """Each of ``sequences``' positions' exit layer is its sequence's; a sequence disagrees when any position does."""
        def disagreeing(seq_layers: np.ndarray) -> np.ndarray:
            layer_of = dict(zip(sequences.tolist(), seq_layers.tolist()))
            wrong = np.zeros(len(sequences), dtype=bool)
            index = {s: j for j, s in enumerate(sequences.tolist())}
            for p in np.flatnonzero(np.isin(sequence, sequences)):
                s = int(sequence[p])
                wrong[index[s]] |= top[layer_of[s], p] != top[L, p]
            return wrong
        return disagreeing

    cal_seq, test_seq = np.flatnonzero(is_cal), np.flatnonzero(~is_cal)
    chosen = calibration.learn_then_test_scores(scores[:, cal_seq], per_sequence(cal_seq), gate, grid, epsilon, delta, first_layer, L)
    seq_layers = chosen.controller.exit_layers(scores[:, test_seq])
    layer_of = np.zeros(n_sequences, dtype=int)
    layer_of[test_seq] = seq_layers
    position_layers = layer_of[sequence[test]]
    exited = at_layers(top[:, test], position_layers)
    result["sequence"] = {
        "threshold": chosen.controller.threshold, "certified": chosen.certified, "n_calibration": len(cal_seq), "n_test": len(test_seq),
        "sequence_disagreement": float(per_sequence(test_seq)(seq_layers).mean()),
        **_report(exited, top[L, test], truth[test], position_layers, L),
        "mean_sequence_layer": float(seq_layers.mean()),
    }
    return result

