"""Zero-shot scoring of substitution variants at every layer, from the model's own LM head.

Invariant: a variant's score at layer ``k`` is ProteinGym's ESM score (``label_row`` in
``proteingym/baselines/esm/compute_fitness.py``, ProteinGym commit
bb685245f8f4bb95a5b54b470396c23826cd6284) with the logit lens of layer ``k`` in place of the
model's logits: the sum over the variant's mutations of ``log p_k(mutant) - log p_k(wild type)``
at the mutated position, where ``p_k`` is the softmax of ``head(final_norm(state k))`` (at
``k = L`` the model's own output). *Masked marginal*: the position is masked in the wild type
(one masked copy per distinct mutated position; copies are batched and one forward gives every
layer). *Wild-type marginal*: the unmasked wild type, one forward when it fits. Tested equal to a
re-implementation of ProteinGym's one-position-per-forward loop (``plmexit.depth.reference``).

What the model reads (``plan_scoring``): the whole target, BOS + residues + EOS, when it fits the
model's window (``max_residues + 2`` tokens, 1024 for ESM2; ProteinGym's input exactly). A longer
target is read through ProteinGym's own windows (``compute_fitness.py`` and
``proteingym/utils/scoring_utils.py`` at the same commit), with the model's window in place of
ProteinGym's 1024 tokens (the same for ESM2): a masked marginal masks one position of BOS + target +
EOS and reads the ``get_optimal_window`` slice around it (``optimal_window``: the first window for a
position within half a window of the start, the last near the end, else a window centred on the
position, so BOS and EOS are read only by windows touching the ends; ESM2's and ESM-1v's
``--scoring-window optimal``); a wild-type marginal is, per token, the sigmoid-weighted mean of the
log-probabilities of ProteinGym's overlapping windows (``overlapping_windows``, ``overlap_weights``;
ESM-1b's ``--scoring-window overlapping``, the only windowing ProteinGym has for wild-type marginals).
Per layer, the lens of layer ``k`` takes the place of the logits in each window. Tested equal to
``plmexit.depth.reference``'s transcription of ProteinGym's loops on a 2,000-residue target. The
plan is logged and written to the run's info.

Calibrated methods, whose one choice is made on a seeded calibration subset of variants
(``calibration_split``) and scored only on the others (``held_out``; a held-out variant may share
its position with a calibration variant, but only one layer index or one temperature is chosen):

- ``dola``: DoLa's contrast (Chuang et al. 2023) of the final (mature) layer with a premature layer
  ``j``, ``log p_L(a) - log p_j(a)`` in place of ``log p(a)``, so a variant scores
  ``masked_marginal@L - masked_marginal@j``; ``j`` is the layer whose contrast has the highest
  Spearman on the calibration subset. DoLa's plausibility cut (tokens far less likely than the
  final top-1 get -inf) is left out here and below: it would give a whole class of mutants the same
  score of -inf.
- ``dola_jsd``: DoLa's own choice, per position: the premature layer is the one of a bucket of
  layers whose lens distribution is furthest from the final one by Jensen-Shannon divergence;
  DoLa chooses the bucket on validation data, here the lower or the upper half of the layers
  below ``L`` by calibration Spearman.
- ``sled``: a SLED-style mixture over layers (after Zhang et al. 2024, not its gradient-based
  logit evolution): ``p = sum_k w_k p_k`` over masked-marginal lens distributions, with
  ``w = softmax(rho_k / tau)`` of each layer's calibration Spearman ``rho_k``, and ``tau`` from
  ``SLED_TEMPERATURES`` chosen by the mixture's calibration Spearman.

The same calibration subset picks, per layer-wise method, the layer a user would deploy
(``best_layer`` in the choices), whose Spearman is then reported on the held-out variants.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from plmexit.depth import metrics
from plmexit.depth.heads import MaskedLM, lens_logits, log_probs
from plmexit.errors import EmbedError, InputError

log = logging.getLogger(__name__)

PER_LAYER_METHODS = ("masked_marginal", "wt_marginal")
# Masked copies of the wild type per forward on a GPU, where a forward of one ~300-residue sequence
# leaves most of the device idle: 32 copies are about 10k tokens, a few GB of fair-esm's attention
# maps for a 650M model. On a CPU a forward is compute-bound already and large batches only add
# cache misses (benchmarks/README.md, "Zero-shot speed"), so the CPU default is one copy.
DEFAULT_BATCH = 32
CPU_BATCH = 1


def default_batch_size(device: str) -> int:
    return DEFAULT_BATCH if device.startswith("cuda") else CPU_BATCH
# A calibration subset smaller than this cannot rank layers by Spearman with any reliability.
MIN_CALIBRATION = 20
# Temperatures for the SLED-style weights softmax(rho / tau): from nearly all weight on the best
# calibration layer (0.01 on Spearman differences of a few hundredths) to nearly uniform (1.0).
SLED_TEMPERATURES = (0.01, 0.03, 0.1, 0.3, 1.0)


@dataclass(frozen=True)
class ScoringPlan:
    """Where each mutated position is read, in ProteinGym's windows (see the module docstring).

    Coordinates are token positions of the whole target as the model encodes it, BOS + residues +
    EOS (token ``i`` is residue ``i - 1``, ``tokens = length + 2``), 0-based half-open, as
    ProteinGym slices ``batch_tokens``. ``positions`` are the distinct 0-based mutated residue
    positions (sorted); ``masked_windows[i]`` is the ``(start, stop)`` the masked copy of position
    ``i`` is read through; ``wt_windows`` are the windows whose log-probabilities the wild-type
    marginals average (one, the whole target, when it fits the model's ``window`` tokens).
    """

    length: int
    window: int
    positions: np.ndarray
    masked_windows: np.ndarray
    wt_windows: list[tuple[int, int]]

    @property
    def tokens(self) -> int:
        return self.length + 2

    @property
    def windowed(self) -> bool:
        return self.tokens > self.window

    def describe(self) -> str:
        if not self.windowed:
            return f"the whole {self.length}-residue target in one context (BOS + target + EOS, {self.tokens} tokens, the model's window is {self.window})"
        first, last = (self.masked_windows[:, 0] == 0).sum(), (self.masked_windows[:, 1] == self.tokens).sum()
        return (
            f"ProteinGym's windows over BOS + target + EOS ({self.tokens} tokens, longer than the model's {self.window}): "
            f"masked marginals read each position through get_optimal_window, the first {self.window} tokens (with BOS) for "
            f"{first} positions, the last {self.window} (with EOS) for {last}, and a {self.window}-token window centred on the "
            f"position (no BOS or EOS) for {len(self.positions) - first - last}; wild-type marginals are the sigmoid-weighted "
            f"mean of the log-probabilities of {len(self.wt_windows)} overlapping {self.window}-token windows "
            "(ProteinGym's --scoring-window overlapping)"
        )

    def info(self) -> dict:
        return {
            "target_residues": self.length, "target_tokens": self.tokens, "model_window_tokens": self.window, "windowed": self.windowed,
            "convention": "token positions of BOS + target + EOS, 0-based half-open (token i is residue i - 1)",
            "masked_marginal_windows": {
                "rule": "whole target" if not self.windowed else "ProteinGym get_optimal_window (scoring_utils.py), per masked position",
                "n_positions": len(self.positions),
                "n_first_window": int((self.masked_windows[:, 0] == 0).sum()),
                "n_last_window": int((self.masked_windows[:, 1] == self.tokens).sum()) if self.windowed else 0,
            },
            "wt_marginal_windows": [list(w) for w in self.wt_windows],
            "wt_marginal_rule": "whole target" if not self.windowed else "ProteinGym --scoring-window overlapping: sigmoid-weighted mean of log-probabilities",
            "description": self.describe(),
        }


def optimal_window(position: int, tokens: int, window: int) -> tuple[int, int]:
    """ProteinGym's ``get_optimal_window(mutation_position_relative, seq_len_wo_special,
    model_window)`` as ``compute_fitness.py`` calls it: ``position`` is a token index of BOS +
    target + EOS and ``tokens`` its length (special tokens included, despite the name)."""
    half = window // 2
    if tokens <= window:
        return 0, tokens
    if position < half:
        return 0, window
    if position >= tokens - half:
        return tokens - window, tokens
    return max(0, position - half), min(tokens, position + half)


def overlap_constants(window: int) -> dict:
    """ProteinGym's ``overlapping`` wild-type loop is written for ``window = 1024`` tokens; its
    numbers as fractions of the window (at 1024 exactly its literals: ramp 256, midpoint 128, scale
    16, step 511, half 512), so a model with another window gets the same shape."""
    return {"ramp": window // 4, "midpoint": window // 8, "scale": window / 64, "step": window // 2 - 1, "half": window // 2}


def overlap_weights(window: int) -> np.ndarray:
    """(window,) float64: the weight of each token of an ``overlapping`` window (1 in the middle,
    sigmoid ramps over the first and last quarter; token 0 and the last token keep 1, as written)."""
    c = overlap_constants(window)
    weights = np.ones(window)
    for i in range(1, c["ramp"] + 1):
        weights[i] = 1 / (1 + math.exp(-(i - c["midpoint"]) / c["scale"]))
    for i in range(window - 2 - c["ramp"], window - 1):
        weights[i] = 1 / (1 + math.exp((i - (window - 2) + c["midpoint"]) / c["scale"]))
    return weights


def overlapping_windows(tokens: int, window: int) -> list[tuple[int, int]]:
    """The half-open windows of ProteinGym's ``overlapping`` loop, in its order: pairs moving in
    from both ends by ``step`` until they meet, then a central one if the last pair overlaps by
    less than ``step``."""
    c = overlap_constants(window)
    start_left, end_left = 0, window - 1  # inclusive ends, as ProteinGym writes them
    start_right, end_right = tokens - window, tokens - 1
    windows = []
    while True:
        windows += [(start_left, end_left + 1), (start_right, end_right + 1)]
        if end_left > start_right:
            break
        start_left, end_left = start_left + c["step"], end_left + c["step"]
        start_right, end_right = start_right - c["step"], end_right - c["step"]
    if end_left - start_right + 1 < c["step"]:
        start = int(tokens / 2) - c["half"]
        windows.append((start, start + window))
    return windows


def plan_scoring(target: str, mutations: list[list[tuple[str, int, str]]], max_residues: int, source: str = "assay") -> ScoringPlan:
    """Where each mutated position of ``target`` is read by a model of ``max_residues`` residues
    (``max_residues + 2`` tokens, ProteinGym's ``model_window``; see the module docstring)."""
    window = max_residues + 2
    tokens = len(target) + 2
    positions = np.unique([p - 1 for m in mutations for _, p, _ in m]).astype(np.int64)
    masked = np.array([optimal_window(int(p) + 1, tokens, window) for p in positions], dtype=np.int64).reshape(-1, 2)
    wt = [(0, tokens)] if tokens <= window else overlapping_windows(tokens, window)
    plan = ScoringPlan(len(target), window, positions, masked, wt)
    if plan.windowed:
        log.warning("%s: target of %d residues is longer than the model's %d: %s", source, len(target), max_residues, plan.describe())
    return plan


def _whole_tokens(lm: MaskedLM, target: str) -> torch.Tensor:
    """(1, length + 2) tokens of the whole target, BOS + residues + EOS, the array ProteinGym slices."""
    tokens = lm.encode([target])
    if lm.offset != 1 or tokens.shape[1] != len(target) + 2:
        raise EmbedError(f"{lm.name}: the target became {tokens.shape[1]} tokens with residue 0 at token {lm.offset}; ProteinGym's windows need BOS + one token per residue + EOS")
    return tokens


@torch.inference_mode()
def masked_marginal_log_probs(lm: MaskedLM, target: str, plan: ScoringPlan, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """``(L + 1, P, V)`` float32: each layer's lens log-probabilities at each mutated position with
    that position masked, read through its window (``plan.masked_windows``), ``batch_size`` masked
    copies per forward (copies of one length share a forward: no padding, so batching changes
    nothing but rounding)."""
    whole = _whole_tokens(lm, target)
    token_index = plan.positions + 1
    widths = plan.masked_windows[:, 1] - plan.masked_windows[:, 0]
    out = None
    first = 0
    while first < len(plan.positions):
        stop = min(first + batch_size, len(plan.positions))
        stop = first + int(np.argmax(np.append(widths[first:stop] != widths[first], True)))  # one width per forward
        index = np.arange(first, stop)
        try:
            found = _masked_batch(lm, whole, token_index[index], plan.masked_windows[index])
        except torch.OutOfMemoryError:
            if batch_size == 1:
                raise EmbedError(
                    f"one masked copy of {int(widths[first])} tokens does not fit in device memory; use a device with more memory"
                ) from None
            batch_size //= 2
            log.warning("out of device memory with %d masked copies per forward; retrying with %d", len(index), batch_size)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        if out is None:
            out = np.empty((found.shape[0], len(plan.positions), found.shape[-1]), dtype=np.float32)
        out[:, index] = found
        first = stop
    return out


def _masked_batch(lm: MaskedLM, whole: torch.Tensor, token_index: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """(L + 1, b, V): per token index, the window ``whole[0, start:stop]`` with that token masked, one forward."""
    tokens = torch.stack([whole[0, start:stop] for start, stop in windows]).clone()  # (b, W)
    rows = torch.arange(len(token_index), device=whole.device)
    columns = torch.as_tensor(token_index - windows[:, 0], device=whole.device)
    tokens[rows, columns] = lm.mask_id
    # The head runs on every position, as in the model's forward: on one gathered row it would be a
    # matrix-vector product, whose rounding differs from the forward's by up to ~5e-5.
    return np.stack([log_probs(lens_logits(lm, state)[rows, columns]).cpu().numpy() for state in lm.layer_states(tokens)])


@torch.inference_mode()
def wt_marginal_log_probs(lm: MaskedLM, target: str, plan: ScoringPlan, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """``(L + 1, P, V)`` float32: each layer's lens log-probabilities at each mutated position of the
    unmasked wild type: one forward of the whole target when it fits, else, per layer, the
    ``overlap_weights``-weighted mean over ``plan.wt_windows`` of each window's log-probabilities
    (ProteinGym's ``overlapping`` loop), ``batch_size`` windows per forward."""
    whole = _whole_tokens(lm, target)
    token_index = plan.positions + 1
    weights = overlap_weights(plan.window) if plan.windowed else np.ones(plan.tokens)
    total = weight = None
    for first in range(0, len(plan.wt_windows), batch_size):
        windows = plan.wt_windows[first : first + batch_size]
        tokens = torch.stack([whole[0, start:stop] for start, stop in windows])
        for k, state in enumerate(lm.layer_states(tokens)):
            lp = log_probs(lens_logits(lm, state)).cpu().numpy().astype(np.float64)  # (b, W, V)
            if total is None:
                total = np.zeros((lm.num_layers + 1, len(plan.positions), lp.shape[-1]))
                weight = np.zeros(len(plan.positions))
            for b, (start, stop) in enumerate(windows):
                inside = np.flatnonzero((token_index >= start) & (token_index < stop))
                w = weights[token_index[inside] - start]
                total[k, inside] += lp[b, token_index[inside] - start] * w[:, None]
                if k == 0:
                    weight[inside] += w
    return (total / weight[None, :, None]).astype(np.float32)


@dataclass(frozen=True)
class MutationIndex:
    """Every mutation of every variant, flat: its variant, its position's index in the plan, and
    the token ids of its wild-type and mutant residues."""

    variant: np.ndarray
    position: np.ndarray
    wild: np.ndarray
    new: np.ndarray
    n_variants: int


def index_mutations(mutations: list[list[tuple[str, int, str]]], plan: ScoringPlan, residue_ids: dict[str, int]) -> MutationIndex:
    variant, position, wild, new = [], [], [], []
    for i, variant_mutations in enumerate(mutations):
        for w, p, m in variant_mutations:
            if w not in residue_ids or m not in residue_ids:
                raise InputError(f"mutant {w}{p}{m} (variant {i + 1}): residues must be among the 20 amino acids the model's head scores")
            variant.append(i)
            position.append(p - 1)
            wild.append(residue_ids[w])
            new.append(residue_ids[m])
    position_index = np.searchsorted(plan.positions, np.asarray(position, dtype=np.int64))
    return MutationIndex(np.asarray(variant), position_index, np.asarray(wild), np.asarray(new), len(mutations))


def variant_scores(log_probs: np.ndarray, index: MutationIndex) -> np.ndarray:
    """``(K, N)`` float64 scores: per layer, the sum over a variant's mutations of
    ``log p(mutant) - log p(wild type)`` (``label_row``)."""
    lp = log_probs.astype(np.float64)
    differences = lp[:, index.position, index.new] - lp[:, index.position, index.wild]  # (K, M)
    scores = np.zeros((lp.shape[0], index.n_variants))
    for k in range(lp.shape[0]):
        np.add.at(scores[k], index.variant, differences[k])
    return scores


def calibration_split(n: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean (n,): a seeded ``round(fraction * n)`` variants that calibrate DoLa and SLED."""
    if not 0 <= fraction < 1:
        raise InputError(f"--calibration-fraction {fraction} must be in [0, 1)")
    size = int(round(fraction * n))
    if fraction > 0 and (size < MIN_CALIBRATION or n - size < MIN_CALIBRATION):
        raise InputError(
            f"--calibration-fraction {fraction} of {n} variants leaves {size} to calibrate and {n - size} to score; "
            f"both need at least {MIN_CALIBRATION}: change the fraction, or set it to 0 to skip DoLa and SLED"
        )
    chosen = np.zeros(n, dtype=bool)
    chosen[np.random.default_rng(seed).choice(n, size=size, replace=False)] = True
    return chosen


def dola_buckets(num_layers: int) -> dict[str, range]:
    """DoLa's candidate premature layers: the lower and the upper half of layers ``0..L-1``."""
    half = max(num_layers // 2, 1)
    buckets = {"lower": range(0, half), "upper": range(half, num_layers)}
    return {name: layers for name, layers in buckets.items() if len(layers)}


def jsd_premature_layers(masked: np.ndarray, candidates: range) -> np.ndarray:
    """(P,) per position, the candidate layer whose lens distribution has the largest
    Jensen-Shannon divergence from the final layer's (``masked`` is (K, P, V) log-probabilities)."""
    final = np.exp(masked[-1].astype(np.float64))  # (P, V)
    divergence = []
    for j in candidates:
        early = np.exp(masked[j].astype(np.float64))
        middle = np.log(np.maximum((final + early) / 2, 1e-300))
        divergence.append(0.5 * (final * (masked[-1] - middle)).sum(-1) + 0.5 * (early * (masked[j] - middle)).sum(-1))
    return np.asarray(candidates)[np.argmax(np.stack(divergence), axis=0)]


def dola_jsd_scores(masked: np.ndarray, premature: np.ndarray, index: MutationIndex) -> np.ndarray:
    """(N,) scores with ``log p_L - log p_j`` in place of ``log p``, ``j = premature[position]``."""
    lp = masked.astype(np.float64)
    j = premature[index.position]
    contrast_new = lp[-1, index.position, index.new] - lp[j, index.position, index.new]
    contrast_wild = lp[-1, index.position, index.wild] - lp[j, index.position, index.wild]
    scores = np.zeros(index.n_variants)
    np.add.at(scores, index.variant, contrast_new - contrast_wild)
    return scores


def sled_log_probs(masked: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """log of the mixture ``sum_k w_k p_k`` of per-layer lens distributions ``masked`` (K, P, V)."""
    weighted = masked.astype(np.float64) + np.log(np.maximum(weights, 1e-300))[:, None, None]
    top = weighted.max(axis=0)
    return top + np.log(np.exp(weighted - top).sum(axis=0))


@dataclass
class ZeroShotScores:
    """Every score column of one assay, and the choices the calibrated methods made."""

    columns: dict[tuple[str, int], np.ndarray]  # (method, layer) -> (N,) scores; layer = the premature one for dola
    calibration: np.ndarray  # (N,) bool
    choices: dict


def score_variants(
    lm: MaskedLM,
    target: str,
    mutations: list[list[tuple[str, int, str]]],
    truth: np.ndarray,
    calibration_fraction: float = 0.2,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH,
    source: str = "assay",
) -> tuple[ZeroShotScores, ScoringPlan]:
    """Score every variant at every layer by masked and wild-type marginals, and by DoLa and SLED
    calibrated on a seeded subset (``truth``, the assay's ``DMS_score``, is read only on it)."""
    plan = plan_scoring(target, mutations, lm.max_residues, source)
    index = index_mutations(mutations, plan, lm.residue_ids)
    L = lm.num_layers
    masked = masked_marginal_log_probs(lm, target, plan, batch_size)
    wild = wt_marginal_log_probs(lm, target, plan, batch_size)
    columns: dict[tuple[str, int], np.ndarray] = {}
    masked_scores = variant_scores(masked, index)
    for method, scores in (("masked_marginal", masked_scores), ("wt_marginal", variant_scores(wild, index))):
        for k in range(L + 1):
            columns[(method, k)] = scores[k]
    for j in range(L):
        columns[("dola", j)] = masked_scores[L] - masked_scores[j]
    calibration = calibration_split(len(mutations), calibration_fraction, seed)
    choices: dict = {"calibration_fraction": calibration_fraction, "seed": seed, "n_calibration": int(calibration.sum())}
    if calibration.any():
        truth = np.asarray(truth, dtype=float)
        dola_rho = [metrics.spearman(truth[calibration], columns[("dola", j)][calibration]) for j in range(L)]
        premature = int(np.nanargmax(dola_rho)) if not np.all(np.isnan(dola_rho)) else 0
        columns[("dola_calibrated", premature)] = columns[("dola", premature)]
        layer_rho = np.array([metrics.spearman(truth[calibration], masked_scores[k][calibration]) for k in range(L + 1)])
        layer_rho = np.nan_to_num(layer_rho, nan=-1.0)
        best = None
        for tau in SLED_TEMPERATURES:
            weights = np.exp((layer_rho - layer_rho.max()) / tau)
            weights /= weights.sum()
            scores = variant_scores(sled_log_probs(masked, weights)[None], index)[0]
            rho = metrics.spearman(truth[calibration], scores[calibration])
            if best is None or rho > best[0]:
                best = (rho, tau, weights, scores)
        columns[("sled_calibrated", L)] = best[3]
        bucket_rho, bucket_scores, bucket_layers = {}, {}, {}
        for name, layers in dola_buckets(L).items():
            bucket_layers[name] = jsd_premature_layers(masked, layers)
            bucket_scores[name] = dola_jsd_scores(masked, bucket_layers[name], index)
            bucket_rho[name] = metrics.spearman(truth[calibration], bucket_scores[name][calibration])
        bucket = max(bucket_rho, key=lambda name: -np.inf if np.isnan(bucket_rho[name]) else bucket_rho[name])
        columns[("dola_jsd_calibrated", L)] = bucket_scores[bucket]
        # The layer a user would deploy, chosen without peeking: best on calibration, scored held out.
        held_out = ~calibration
        best_layers = {}
        for method in PER_LAYER_METHODS:
            rho = np.nan_to_num([metrics.spearman(truth[calibration], columns[(method, k)][calibration]) for k in range(L + 1)], nan=-np.inf)
            layer = int(np.argmax(rho))
            best_layers[method] = {
                "layer": layer, "calibration_spearman": float(rho[layer]),
                "held_out_spearman": metrics.spearman(truth[held_out], columns[(method, layer)][held_out]),
                "final_layer_held_out_spearman": metrics.spearman(truth[held_out], columns[(method, L)][held_out]),
            }
        choices.update(
            best_layer=best_layers,
            dola_jsd_bucket=bucket,
            dola_jsd_bucket_layers=list(dola_buckets(L)[bucket]),
            dola_jsd_calibration_spearman={name: float(r) for name, r in bucket_rho.items()},
            dola_jsd_premature_layer_counts={str(int(j)): int(n) for j, n in zip(*np.unique(bucket_layers[bucket], return_counts=True))},
            dola_premature_layer=premature,
            dola_calibration_spearman=[float(r) for r in dola_rho],
            sled_temperature=best[1],
            sled_weights=[float(w) for w in best[2]],
            sled_calibration_spearman=float(best[0]),
            layer_calibration_spearman=[float(r) for r in layer_rho],
        )
    return ZeroShotScores(columns, calibration, choices), plan


def metrics_table(scores: ZeroShotScores, truth: np.ndarray, binary: np.ndarray | None) -> pd.DataFrame:
    """Long table ``layer, method, subset, metric, value``: every column's ProteinGym metrics on
    ``all`` variants, the ``calibration`` subset and the ``held_out`` rest; calibrated methods on
    ``held_out`` only (their calibration score would be chosen on itself)."""
    truth = np.asarray(truth, dtype=float)
    subsets = {"all": np.ones(len(truth), dtype=bool)}
    if scores.calibration.any():
        subsets.update(calibration=scores.calibration, held_out=~scores.calibration)
    rows = []
    for (method, layer), values in scores.columns.items():
        for subset, rows_in in subsets.items():
            if method.endswith("_calibrated") and subset != "held_out":
                continue
            found = metrics.zero_shot_metrics(truth[rows_in], values[rows_in], None if binary is None else np.asarray(binary)[rows_in])
            found["n_variants"] = float(rows_in.sum())
            rows += [{"layer": layer, "method": method, "subset": subset, "metric": m, "value": v} for m, v in found.items()]
    return pd.DataFrame(rows, columns=["layer", "method", "subset", "metric", "value"])


def column_name(model: str, method: str, layer: int, num_layers: int) -> str:
    """A score column's ``model_name`` in ProteinGym's per-assay layout: model, layer(s), method."""
    if method == "dola_calibrated":
        return f"{model}@L{num_layers}-L{layer}:dola"
    if method == "sled_calibrated":
        return f"{model}@L0-L{num_layers}:sled"
    if method == "dola_jsd_calibrated":
        return f"{model}@L{num_layers}-jsd:dola"
    return f"{model}@L{layer}:{method}"


def proteingym_table(assay: pd.DataFrame, scores: ZeroShotScores, model: str, num_layers: int) -> pd.DataFrame:
    """ProteinGym's zero-shot per-assay CSV: the assay's ``mutant, mutated_sequence, DMS_score[,
    DMS_score_bin]``, ``plmexit_calibration`` (1 on the rows DoLa and SLED were calibrated on), then
    one score column per layer and per-layer method, and the calibrated DoLa and SLED columns."""
    table = assay[[c for c in ("mutant", "mutated_sequence", "DMS_score", "DMS_score_bin") if c in assay.columns]].copy()
    table["plmexit_calibration"] = scores.calibration.astype(int)
    for (method, layer), values in scores.columns.items():
        if method == "dola":
            continue  # every premature layer is in the long table; the CSV holds the calibrated choice
        table[column_name(model, method, layer, num_layers)] = values
    return table
