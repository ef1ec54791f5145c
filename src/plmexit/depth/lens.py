"""What each layer already predicts at masked positions: logit lens, block skipping, exit consistency.

Invariant: the reference distribution is always the model's own output at a masked position,
``head(final_norm(state L))``, which is the standard lens at ``k = L`` (so its KL there is 0 and
its top-1 agreement 1, exactly). A layer's lens is the model's own head on its state, with the
final norm first (``final_norm``, the standard logit lens) or without (``raw``). Sequences are
masked as at evaluation, not as in training: a seeded ``fraction`` of each sequence's residue
positions (at least one) is replaced by the mask token, all of them (plain masking, no 80/10/10
random or kept tokens, so every scored position is one the model cannot see); fair-esm's token
dropout then rescales the embeddings by the observed mask ratio, as it does for any input.

- Lens (per layer and lens variant, mean over masked positions): ``kl_to_final`` KL(final || layer)
  in nats, ``top1_agreement`` with the final top-1, ``top1_accuracy`` against the true residue,
  ``entropy`` (nats) and ``top1_probability``.
- Skipping (per block ``i``): the model run with block ``i`` left out (the residual stream passes
  through): ``final_kl_mean`` / ``final_kl_max`` of KL(final || final without block i) over masked
  positions, and ``hidden_relative_change`` ``||h'_k - h_k|| / ||h_k||`` at every later state
  ``k >= i``, averaged over residue positions that were not masked.
- Under ESM's token dropout a masked position's state 0 is the zero vector, so layer 0's lens is
  the same at every masked position: ``head(0)`` raw, and ``head(b)`` through the final norm, which
  maps the zero vector to its bias ``b`` (a LayerNorm's ``(x - mean) / std * w + b``). The two lenses
  differ whenever the norm has a nonzero bias, as trained ESM2 models' ``emb_layer_norm_after`` has;
  only a zero bias (a freshly initialised model) makes them equal.
- Exit consistency (arXiv:2412.01455; standard lens): a masked position's exit layer is the
  earliest ``k`` from which the lens top-1 equals the final top-1 at every later layer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from plmexit.depth.heads import MaskedLM, lens_logits, log_probs
from plmexit.embedding.pieces import token_batches
from plmexit.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_MASK_FRACTION = 0.15  # ESM2's (and BERT's) training mask rate
LENS_VARIANTS = {"final_norm": True, "raw": False}
LENS_METRICS = ("kl_to_final", "top1_agreement", "top1_accuracy", "entropy", "top1_probability")
# "The shallowest layer whose lens agrees with the final top-1 on at least 90% of positions" (the summary row).
AGREEMENT_THRESHOLD = 0.9
MASKING = "plain: each chosen position replaced by the mask token (no 80/10/10 random or kept tokens)"


@dataclass(frozen=True)
class MaskedSample:
    """The sequences the lens runs on: ``residues`` (the stretch the model reads, from
    ``crop_start`` of the full sequence when it is longer than the model) and the 0-based
    ``masked`` positions within each."""

    ids: list[str]
    residues: list[str]
    crop_start: np.ndarray
    masked: list[np.ndarray]
    seed: int
    fraction: float
    n_cropped: int

    def info(self) -> dict:
        return {
            "n_sequences": len(self.ids), "n_masked_positions": int(sum(len(m) for m in self.masked)),
            "n_residues": int(sum(len(r) for r in self.residues)), "mask_fraction": self.fraction, "seed": self.seed,
            "masking": MASKING, "n_cropped": self.n_cropped,
        }


def check_sampling(size: int, fraction: float) -> None:
    """A ``PlmexitError`` for a sample size or mask fraction ``mask_sample`` cannot use."""
    if not 0 < fraction < 1:
        raise InputError(f"--mask-fraction {fraction} must be between 0 and 1 (0.15 is how ESM2 was trained)")
    if size < 1:
        raise InputError(f"--sample {size} must be at least 1")


def mask_sample(ids: list[str], sequences: list[str], size: int, fraction: float, seed: int, max_residues: int) -> MaskedSample:
    """A seeded sample of ``size`` distinct sequences with a seeded ``fraction`` of each one's
    positions masked (``max(1, round(fraction * n))``). A sequence longer than ``max_residues`` is
    read through a seeded window of that many residues (logged and counted in ``info``)."""
    check_sampling(size, fraction)
    _, first = np.unique(np.asarray(sequences, dtype=object), return_index=True)
    first = np.sort(first)
    if len(first) == 0:
        raise InputError("the task has no sequences to sample")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(first, size=min(size, len(first)), replace=False))
    residues, starts, masked, cropped = [], [], [], 0
    for i in chosen:
        sequence = sequences[i]
        start = 0
        if len(sequence) > max_residues:
            start = int(rng.integers(0, len(sequence) - max_residues + 1))
            cropped += 1
        part = sequence[start : start + max_residues]
        residues.append(part)
        starts.append(start)
        masked.append(np.sort(rng.choice(len(part), size=max(1, int(round(fraction * len(part)))), replace=False)))
    if cropped:
        log.warning("%d of %d sampled sequences are longer than the model's %d residues; each is read through a seeded window of that length", cropped, len(chosen), max_residues)
    return MaskedSample([ids[i] for i in chosen], residues, np.asarray(starts), masked, seed, fraction, cropped)


@dataclass
class LensResult:
    lens: pd.DataFrame  # lens, layer, metric, value
    skip: pd.DataFrame  # block, layer, metric, value
    exit: pd.DataFrame  # layer, n_positions, fraction, cumulative_fraction
    summary: dict = field(default_factory=dict)


def exit_layers(top1: np.ndarray) -> np.ndarray:
    """(N,) earliest layer from which each column of ``top1`` (K, N) equals its last row at every later layer."""
    agree = top1 == top1[-1]
    stays = np.flip(np.logical_and.accumulate(np.flip(agree, axis=0), axis=0), axis=0)  # stays[k]: agrees at k..K-1
    return stays.argmax(axis=0)


@torch.inference_mode()
def analyse(lm: MaskedLM, sample: MaskedSample, max_tokens: int = 4096, skip_blocks: bool = True) -> LensResult:
    """Lens, skipping and exit tables over every masked position of ``sample``."""
    L = lm.num_layers
    sums = {v: {m: np.zeros(L + 1) for m in LENS_METRICS} for v in LENS_VARIANTS}
    exits = []
    skip_kl_sum, skip_kl_max = np.zeros(L + 1), np.zeros(L + 1)
    change_sum = np.zeros((L + 1, L + 1))  # [block, state]
    n_masked = n_unmasked = 0
    lengths = np.array([len(r) for r in sample.residues])
    for batch in token_batches(lengths, max_tokens):
        tokens = lm.encode([sample.residues[i] for i in batch])
        rows = np.concatenate([np.full(len(sample.masked[i]), r) for r, i in enumerate(batch)])
        columns = np.concatenate([sample.masked[i] for i in batch]) + lm.offset
        truth = torch.as_tensor([lm.residue_ids.get(sample.residues[i][p], -1) for i in batch for p in sample.masked[i]], device=tokens.device)
        residue = torch.zeros(tokens.shape, dtype=torch.bool, device=tokens.device)
        for r, i in enumerate(batch):
            residue[r, lm.offset : lm.offset + lengths[i]] = True
        rows_t, columns_t = torch.as_tensor(rows, device=tokens.device), torch.as_tensor(columns, device=tokens.device)
        tokens[rows_t, columns_t] = lm.mask_id
        residue[rows_t, columns_t] = False
        unmasked = residue.nonzero(as_tuple=True)
        n_masked += len(rows)
        n_unmasked += int(unmasked[0].numel())

        states = list(lm.layer_states(tokens))
        final = log_probs(lens_logits(lm, states[L][rows_t, columns_t]))  # the model's own output
        final_p, final_top = final.exp(), final.argmax(-1)
        top1 = []
        for variant, norm in LENS_VARIANTS.items():
            for k, state in enumerate(states):
                lp = log_probs(lens_logits(lm, state[rows_t, columns_t], norm))
                p, top = lp.exp(), lp.argmax(-1)
                s = sums[variant]
                s["kl_to_final"][k] += float((final_p * (final - lp)).sum(-1).sum())
                s["top1_agreement"][k] += float((top == final_top).sum())
                s["top1_accuracy"][k] += float((top == truth).sum())
                s["entropy"][k] += float(-(p * lp).sum(-1).sum())
                s["top1_probability"][k] += float(p.max(-1).values.sum())
                if norm:
                    top1.append(top.cpu().numpy())
        exits.append(exit_layers(np.stack(top1)))
        if not skip_blocks:
            continue
        for block in range(1, L + 1):
            for k, state in enumerate(lm.layer_states(tokens, skip=block)):
                if k >= block:
                    reference = states[k][unmasked]
                    change_sum[block, k] += float(((state[unmasked] - reference).norm(dim=-1) / reference.norm(dim=-1)).sum())
                if k == L:
                    kl = (final_p * (final - log_probs(lens_logits(lm, state[rows_t, columns_t])))).sum(-1)
                    skip_kl_sum[block] += float(kl.sum())
                    skip_kl_max[block] = max(skip_kl_max[block], float(kl.max()))

    lens_rows = []
    for variant in LENS_VARIANTS:
        for k in range(L + 1):
            lens_rows += [{"lens": variant, "layer": k, "metric": m, "value": sums[variant][m][k] / n_masked} for m in LENS_METRICS]
            lens_rows.append({"lens": variant, "layer": k, "metric": "n_positions", "value": float(n_masked)})
    lens_table = pd.DataFrame(lens_rows, columns=["lens", "layer", "metric", "value"])

    skip_rows = []
    if skip_blocks:
        for block in range(1, L + 1):
            skip_rows += [
                {"block": block, "layer": L, "metric": "final_kl_mean", "value": skip_kl_sum[block] / n_masked},
                {"block": block, "layer": L, "metric": "final_kl_max", "value": skip_kl_max[block]},
            ]
            skip_rows += [
                {"block": block, "layer": k, "metric": "hidden_relative_change", "value": change_sum[block, k] / n_unmasked if n_unmasked else float("nan")}
                for k in range(block, L + 1)
            ]
    skip_table = pd.DataFrame(skip_rows, columns=["block", "layer", "metric", "value"])

    exit_all = np.concatenate(exits)
    counts = np.bincount(exit_all, minlength=L + 1)
    exit_table = pd.DataFrame({"layer": np.arange(L + 1), "n_positions": counts, "fraction": counts / counts.sum()})
    exit_table["cumulative_fraction"] = np.cumsum(exit_table["fraction"])

    summary = {**sample.info(), "n_unmasked_positions": n_unmasked, "num_layers": L, "agreement_threshold": AGREEMENT_THRESHOLD}
    for variant in LENS_VARIANTS:
        agreement = sums[variant]["top1_agreement"] / n_masked
        reached = np.flatnonzero(agreement >= AGREEMENT_THRESHOLD)
        summary[f"shallowest_agreeing_layer_{variant}"] = int(reached[0]) if reached.size else None
    settled = np.flatnonzero(exit_table["cumulative_fraction"].to_numpy() >= AGREEMENT_THRESHOLD - 1e-12)
    summary["shallowest_exit_layer_for_threshold"] = int(settled[0])
    summary["mean_exit_layer"] = float(exit_all.mean())
    summary["median_exit_layer"] = float(np.median(exit_all))
    return LensResult(lens_table, skip_table, exit_table, summary)
