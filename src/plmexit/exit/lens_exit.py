"""Early exit for the model's own head: the gates and calibration on logit-lens distributions at masked positions.

Invariant: the reference is the model's own output at a masked position (the standard lens at
layer ``L``, ``depth.lens``); a layer's output is the standard logit lens there (final norm, then
the head). Two controllers: per masked position (each exits at the first layer whose gate passes),
and per sequence (exits at the first layer where the gate passes at every one of its masked
positions; it disagrees when any of them predicts another residue than the final layer). Calibration
and test sequences are disjoint (a seeded split by sequence), so no sequence's positions sit on both
sides. The exchangeable unit is the sequence for both: positions of one sequence are dependent (they
tend to settle together), so the per-position risk is the mean over sequences of each sequence's
fraction of disagreeing masked positions (``position_risk``; every sequence weighs the same, however
many positions it has), certified with the Hoeffding-Bentkus p-value over calibration sequences; the
per-sequence risk (0/1 per sequence) keeps the exact binomial.
"""

from __future__ import annotations

import numpy as np
import torch

from plmexit.depth.heads import MaskedLM, lens_logits, log_probs
from plmexit.depth.lens import MaskedSample
from plmexit.embedding.pieces import token_batches
from plmexit.errors import InputError
from plmexit.exit import calibration, gates


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


def calibration_split(n_sequences: int, calibration_fraction: float, seed: int) -> np.ndarray:
    """``(S,)`` bool: the seeded ``calibration_fraction`` of the sequences that calibrates (at least one on each side)."""
    if not 0 < calibration_fraction < 1:
        raise InputError(f"calibration fraction {calibration_fraction} must lie strictly between 0 and 1 (exit.lens_calibration_fraction)")
    if n_sequences < 2:
        raise InputError(f"head exit needs at least 2 sampled sequences (one to calibrate, one to test), found {n_sequences}; raise exit.lens_sample")
    order = np.random.default_rng(seed).permutation(n_sequences)
    is_cal = np.zeros(n_sequences, dtype=bool)
    is_cal[order[: max(1, min(n_sequences - 1, round(calibration_fraction * n_sequences)))]] = True
    return is_cal


def _sequence_loss(top: np.ndarray, sequence: np.ndarray, units: np.ndarray):
    """``disagreeing(exit layers of units (n,)) -> (n,) bool``: a sequence of ``units`` (sorted ids) disagrees when any of
    its positions, read at the sequence's exit layer, predicts another residue than the final layer."""
    L = top.shape[0] - 1
    positions = np.flatnonzero(np.isin(sequence, units))
    unit_of = np.searchsorted(units, sequence[positions])

    def disagreeing(unit_layers: np.ndarray) -> np.ndarray:
        wrong = top[np.asarray(unit_layers)[unit_of], positions] != top[L, positions]
        return np.bincount(unit_of, weights=wrong, minlength=len(units)) > 0

    return disagreeing


def _position_loss(top: np.ndarray, sequence: np.ndarray, positions: np.ndarray):
    """``(units (S,), fractions(exit layers of positions (n,)) -> (S,) floats)``: the sequences of ``positions`` and, per
    sequence, the fraction of its ``positions`` whose top-1 at their own exit layer differs from the final layer's."""
    L = top.shape[0] - 1
    units, unit_of = np.unique(sequence[positions], return_inverse=True)
    counts = np.bincount(unit_of, minlength=len(units))

    def fractions(position_layers: np.ndarray) -> np.ndarray:
        wrong = top[np.asarray(position_layers), positions] != top[L, positions]
        return np.bincount(unit_of, weights=wrong, minlength=len(units)) / counts

    return units, fractions


def _report(top: np.ndarray, truth: np.ndarray, sequence: np.ndarray, positions: np.ndarray, position_layers: np.ndarray,
            unit_layers: np.ndarray) -> dict:
    """Test numbers of exit ``position_layers`` at ``positions``; ``unit_layers`` are the exit layers of the unit the
    controller decides for (positions or sequences), whose mean is the layers executed."""
    L = top.shape[0] - 1
    exited = top[position_layers, positions]
    wrong = exited != top[L, positions]
    _, seq_index = np.unique(sequence[positions], return_inverse=True)
    per_sequence = np.bincount(seq_index, weights=wrong)
    return {
        "disagreement": float(wrong.mean()), "position_risk": float(np.mean(per_sequence / np.bincount(seq_index))),
        "sequence_disagreement": float((per_sequence > 0).mean()),
        "accuracy": float((exited == truth[positions]).mean()), "final_accuracy": float((top[L, positions] == truth[positions]).mean()),
        "mean_layer": float(np.mean(unit_layers)), "layers_saved": float(1 - np.mean(unit_layers) / L),
        "fraction_early": float(np.mean(np.asarray(unit_layers) < L)),
    }


def static_lens_layers(probs: np.ndarray, truth: np.ndarray, sequence: np.ndarray, is_calibration: np.ndarray) -> list[dict]:
    """Per layer ``k``: every test position read at ``k`` (the static exits the controllers are compared with)."""
    top = probs.argmax(axis=-1)
    positions = np.flatnonzero(~is_calibration[sequence])
    return [{"layer": k, **_report(top, truth, sequence, positions, np.full(len(positions), k), np.full(len(positions), k))}
            for k in range(probs.shape[0])]


def calibrate_lens_exit(
    probs: np.ndarray, truth: np.ndarray, sequence: np.ndarray, gate: str, epsilon: float, delta: float,
    calibration_fraction: float = 0.5, seed: int = 0, n_thresholds: int = 50, max_patience: int = 4, first_layer: int = 1,
) -> dict:
    """Per-position and per-sequence controllers calibrated on a seeded ``calibration_fraction`` of the sequences
    (``calibration_split``), reported on the others: disagreement with the final layer (over positions; ``position_risk``,
    the mean over sequences of each one's fraction of disagreeing positions, which the per-position controller is certified
    on; and per sequence: any of its positions), accuracy against the true residue, mean exit layer of the unit and layers saved.

    Only the per-sequence unit saves forward compute (a sequence leaves the network); a position's exit
    layer says when its prediction settled. ``tested`` lists each threshold tested in sequence (p-values).
    """
    L = probs.shape[0] - 1
    n_sequences = int(sequence.max()) + 1
    is_cal = calibration_split(n_sequences, calibration_fraction, seed)
    first_layer = min(first_layer, L)
    grid = gates.threshold_grid(gate, n_thresholds, max_patience)
    top = probs.argmax(axis=-1)  # (L + 1, N)
    result = {"gate": gate, "epsilon": epsilon, "delta": delta, "n_layers": L, "n_calibration_sequences": int(is_cal.sum()),
              "n_test_sequences": int((~is_cal).sum()), "calibration_sequences": np.flatnonzero(is_cal).tolist()}

    cal, test = np.flatnonzero(is_cal[sequence]), np.flatnonzero(~is_cal[sequence])
    scores = gates.gate_scores(probs, gate, "classification")
    units, fractions = _position_loss(top, sequence, cal)
    chosen = calibration.learn_then_test_scores(scores[:, cal], fractions, gate, grid, epsilon, delta, first_layer, L, bounded=True)
    layers = chosen.controller.exit_layers(scores[:, test])
    result["position"] = {"threshold": chosen.controller.threshold, "certified": chosen.certified, "n_calibration": len(units),
                          "n_test": len(np.unique(sequence[test])), **_report(top, truth, sequence, test, layers, layers), "tested": chosen.tested}

    per_sequence = sequence_scores(scores, sequence, n_sequences)
    cal_seq, test_seq = np.flatnonzero(is_cal), np.flatnonzero(~is_cal)
    chosen = calibration.learn_then_test_scores(
        per_sequence[:, cal_seq], _sequence_loss(top, sequence, cal_seq), gate, grid, epsilon, delta, first_layer, L,
    )
    seq_layers = chosen.controller.exit_layers(per_sequence[:, test_seq])
    layer_of = np.zeros(n_sequences, dtype=int)
    layer_of[test_seq] = seq_layers
    result["sequence"] = {
        "threshold": chosen.controller.threshold, "certified": chosen.certified, "n_calibration": len(cal_seq), "n_test": len(test_seq),
        **_report(top, truth, sequence, test, layer_of[sequence[test]], seq_layers), "tested": chosen.tested,
    }
    return result
