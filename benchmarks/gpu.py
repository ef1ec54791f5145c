"""One GPU run of every measurement the GPU claims rest on: ``bash benchmarks/gpu.sh`` runs this (issue 28).

Each measurement writes ``<name>.json`` under ``--out``, headed by the device, the torch, CUDA and library
versions, the matmul settings and the bfloat16 and float32 matmul peaks measured at the start
(``roofline``: measured and datasheet), then ``status`` (ok, failed or skipped; a failure's traceback
is kept and the next measurement runs), ``seconds``, its ``budget_s`` and its ``result``; ``summary.json``
gathers the statuses and every target. The measurements, in order:

- ``equality``: the fused encoder (``engine.embed_pooled``) in float32, bfloat16 and float16 against
  fair-esm's forward (``reference_pooled``, what ``scripts/extract.py`` computes) on the same weights,
  per layer; float32 must be within 1e-5 relative.
- ``throughput``: ProteinGym-like and DeepLoc-like length mixes, every layer pooled: plmexit bfloat16 and
  float32, fair-esm's ``extract.py`` path (float32), transformers ``EsmModel`` with SDPA in bfloat16
  (hand-written batches, ``embed_hub.hand_written``), chunk by chunk in rotating order; tokens/s, ratios,
  and FLOP/s as a fraction of the measured matmul peak (more than 100% fails the measurement).
- ``cost_depth``: time per depth from timestamps in one forward against a forward per depth
  (``cost_depth.compare``), float32 and bfloat16.
- ``zero_shot``: batched masked marginals against ProteinGym's one-position loop (``zero_shot_speed.time_paths``).
- ``exit``: the calibrated adaptive exit against full depth and the static layer on GPU-sized batches
  (``exit_wallclock.measure``; random labels, so the probes are at chance: it times the machinery).
- ``memory``: the largest token budget per batch that fits ESM2-3B's architecture in bfloat16 (doubling,
  then bisection on whole rows, forwards stopped after two blocks, the answer confirmed at full depth),
  and that ``embed_pooled``'s split-on-out-of-memory finishes a batch over that budget.

Weights are random, never downloaded: fair-esm's ``ESM2`` class at ESM2-650M's shape (33 layers, width
1280, 20 heads) and ESM2-3B's (36, 2560, 40), initialised on the device from a fixed seed. Sequences are
synthetic, so the run needs nothing outside the repository: ProteinGym-like are single substitutions of
one random 286-residue target (BLAT_ECOLX's length); DeepLoc-like have log-normal lengths with
DeepLoc's log-mean and spread (``DEEPLOC_LOG_LENGTH``), cut to 1,022 residues.

``--smoke`` runs every path on the CPU at tiny shapes in about a minute (tests/test_benchmarks.py), so
the script cannot rot; on a CPU nothing runs out of memory, so the memory search runs against a
simulated device that does above ``SMOKE_MEMORY_TOKENS`` tokens (``TokenLimit``).

    bash benchmarks/gpu.sh                                   # on a GPU: sized for under 8 minutes on an H100
    python benchmarks/gpu.py --smoke --out /tmp/gpu_smoke    # every path on the CPU, tiny shapes
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import cost_depth
import numpy as np
import roofline
import torch
import zero_shot_speed
from embed_hub import hand_written
from embed_peers import deviation, fixed_batches, padded
from embed_throughput import flops

import plmexit
from plmexit.embedding import engine, pieces
from plmexit.embedding.reference import REFERENCE_EXTRA_TOKS_PER_SEQ, REFERENCE_TOKS_PER_BATCH, reference_pooled
from plmexit.models import fair_esm, hub
from plmexit.models.families import ESM2_MAX_RESIDUES
from plmexit.settings import EmbedSettings

log = logging.getLogger("gpu")

RESIDUES = "ACDEFGHIKLMNPQRSTVWY"
# log(length) of DeepLoc's test set (deeploc_test_set.fasta, 2,768 proteins): mean 6.01, sd 0.77 (median 429
# residues, 11% longer than 1,022); its validation set gives 5.96 and 0.79.
DEEPLOC_LOG_LENGTH = (6.01, 0.77)
PROTEINGYM_TARGET_RESIDUES = 286  # BLAT_ECOLX, the assay the CPU benchmarks use
FP32_EQUALITY = 1e-5  # fastest path's float32 invariant (fast_esm2's module docstring)
TARGETS = {"bfloat16_over_extract": 8.0, "bfloat16_fraction_of_bfloat16_peak": 0.45, "bfloat16_over_hf_sdpa_bfloat16": 1.0, "zero_shot_batched_over_loop": 3.0}
# A CPU has no out-of-memory to find: --smoke's memory search runs against a device of this many tokens.
SMOKE_MEMORY_TOKENS = 1000
WEIGHTS = ("random, never downloaded: fair-esm's ESM2 class at the named architecture, initialised on the device with torch.manual_seed "
           "(no real ESM2 weights exist on the machines this project runs on)")
SEQUENCES = (f"synthetic: ProteinGym-like = single substitutions of one random {PROTEINGYM_TARGET_RESIDUES}-residue target; DeepLoc-like = "
             f"log-normal lengths (log-mean {DEEPLOC_LOG_LENGTH[0]}, log-sd {DEEPLOC_LOG_LENGTH[1]}, as DeepLoc's test set), cut to {ESM2_MAX_RESIDUES}, "
             "uniformly random residues")


@dataclasses.dataclass(frozen=True)
class Plan:
    """Shapes, sizes and time budgets of one run (``FULL`` on a GPU, ``SMOKE`` on a CPU)."""

    model: tuple[int, int, int]  # layers, width, heads
    big_model: tuple[int, int, int]
    peak_sizes: tuple[int, ...]
    fp32_peak_sizes: tuple[int, ...]
    equality_sequences: int
    throughput_tokens: int  # per workload
    chunks: int
    max_tokens: int  # plmexit's (and the hand-written transformers loop's) padded tokens per batch
    cost_sample: int
    cost_repeats: int
    cost_rounds: int
    zero_shot_residues: int
    zero_shot_positions: int
    zero_shot_batches: tuple[int, ...]
    exit_sequences: int
    exit_truncate: int
    exit_max_tokens: int
    exit_repeats: int
    memory_residues: int  # residues per row of the memory search (the longest ESM2 window)
    memory_start_rows: int
    memory_max_rows: int
    memory_bisections: int
    budgets: dict  # seconds per measurement
    time_limit_s: float  # no measurement starts after this


FULL = Plan(
    model=(33, 1280, 20), big_model=(36, 2560, 40), peak_sizes=roofline.GPU_SIZES, fp32_peak_sizes=(4096, 8192),
    equality_sequences=32, throughput_tokens=240_000, chunks=4, max_tokens=16384,
    cost_sample=8, cost_repeats=3, cost_rounds=3, zero_shot_residues=PROTEINGYM_TARGET_RESIDUES, zero_shot_positions=48, zero_shot_batches=(1, 8, 32),
    exit_sequences=200, exit_truncate=1022, exit_max_tokens=16384, exit_repeats=3,
    memory_residues=ESM2_MAX_RESIDUES, memory_start_rows=16, memory_max_rows=2048, memory_bisections=4,
    budgets={"equality": 40, "throughput": 150, "cost_depth": 30, "zero_shot": 45, "exit": 50, "memory": 80}, time_limit_s=420,
)
SMOKE = Plan(
    model=(2, 32, 4), big_model=(2, 64, 4), peak_sizes=(256, 512), fp32_peak_sizes=(256, 512),
    equality_sequences=6, throughput_tokens=800, chunks=2, max_tokens=512,
    cost_sample=3, cost_repeats=1, cost_rounds=1, zero_shot_residues=30, zero_shot_positions=4, zero_shot_batches=(1, 4),
    exit_sequences=40, exit_truncate=60, exit_max_tokens=512, exit_repeats=1,
    memory_residues=30, memory_start_rows=4, memory_max_rows=256, memory_bisections=3,
    budgets={"equality": 60, "throughput": 60, "cost_depth": 60, "zero_shot": 60, "exit": 60, "memory": 60}, time_limit_s=600,
)


class Context:
    """What the measurements share: device, plan, random generator, the 650M-shaped model (built once), peaks."""

    def __init__(self, device: str, plan: Plan, seed: int):
        self.device, self.plan, self.seed = device, plan, seed
        self.rng = np.random.default_rng(seed)
        self.deadline = float("inf")
        self.peaks: dict = {}
        self._loaded = None

    def loaded(self) -> fair_esm.LoadedModel:
        if self._loaded is None:
            self._loaded = random_esm2(self.plan.model, self.seed, self.device)
        return self._loaded

    def drop_model(self) -> None:
        """Free the model's device memory (the memory search wants all of it); ``loaded`` rebuilds the same weights."""
        self._loaded = None
        release(self.device)

    def time_left(self) -> float:
        return self.deadline - time.perf_counter()

    def sync(self) -> None:
        roofline.synchronize(self.device)


def random_esm2(shape: tuple[int, int, int], seed: int, device: str) -> fair_esm.LoadedModel:
    """fair-esm's ESM2 at ``shape`` (layers, width, heads), randomly initialised on ``device`` (as ``fair_esm.make_test_model``
    builds it, without the round trip through a checkpoint file: 2.6 GB at 650M, 11 GB at 3B)."""
    import esm

    layers, dim, heads = shape
    torch.manual_seed(seed)
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    with torch.device(device):
        model = esm.model.esm2.ESM2(num_layers=layers, embed_dim=dim, attention_heads=heads, alphabet=alphabet, token_dropout=True)
    return fair_esm.LoadedModel(model=model.eval(), alphabet=alphabet, name=f"esm2_t{layers}_{dim}w_{heads}h_random_seed{seed}", sha256="random-weights")


def random_residues(rng: np.random.Generator, n: int) -> str:
    return "".join(rng.choice(list(RESIDUES), size=n))


def deeploc_like(rng: np.random.Generator, tokens: int = 0, count: int = 0, cap: int = ESM2_MAX_RESIDUES) -> list[str]:
    """Random proteins with DeepLoc's log-normal lengths, cut to ``cap``, until their tokens (residues + 2) reach
    ``tokens`` and there are ``count`` of them."""
    sequences, total = [], 0
    while total < tokens or len(sequences) < count:
        n = int(min(cap, max(20, round(float(np.exp(rng.normal(*DEEPLOC_LOG_LENGTH)))))))
        sequences.append(random_residues(rng, n))
        total += n + 2
    return sequences


def substitutions(rng: np.random.Generator, target: str, positions: int) -> tuple[list[str], list[list[tuple[str, int, str]]]]:
    """Every single substitution at ``positions`` random positions of ``target``: ProteinGym mutant strings (1-based) and triples."""
    chosen = np.sort(rng.choice(len(target), size=min(positions, len(target)), replace=False)) + 1
    triples = [[(target[p - 1], int(p), new)] for p in chosen for new in RESIDUES if new != target[p - 1]]
    return [f"{w}{p}{m}" for ((w, p, m),) in triples], triples


def proteingym_like(rng: np.random.Generator, tokens: int) -> list[str]:
    """Distinct single-substitution variants of one random target, until their tokens reach ``tokens``."""
    target = random_residues(rng, PROTEINGYM_TARGET_RESIDUES)
    _, triples = substitutions(rng, target, len(target))
    order = rng.permutation(len(triples))[: -(-tokens // (len(target) + 2))]
    return [target[: p - 1] + m + target[p:] for ((_, p, m),) in (triples[i] for i in order)]


def pooled_of(embed, sequences: list[str]) -> np.ndarray:
    """``(L + 1, N, E)`` of an ``engine.embed_pooled``-style iterator factory ``embed(sequences)``."""
    blocks = list(embed(sequences))
    out = np.zeros((blocks[0][1].shape[0], len(sequences), blocks[0][1].shape[2]), dtype=np.float32)
    for index, block in blocks:
        out[:, index] = block
    return out


def plmexit_path(loaded, device: str, precision: str, max_tokens: int):
    encoder = engine.make_encoder(loaded, device, precision)
    settings = EmbedSettings(max_tokens=max_tokens, device=device, precision=encoder.precision)
    return encoder, lambda chunk: pooled_of(lambda s: engine.embed_pooled(loaded, s, settings, encoder=encoder), chunk)


# --- measurements -------------------------------------------------------------------------------------


def measure_equality(ctx: Context) -> dict:
    loaded = ctx.loaded()
    sequences = deeploc_like(ctx.rng, count=ctx.plan.equality_sequences)
    reference = reference_pooled(loaded, sequences, device=ctx.device)
    result = {"sequences": len(sequences), "residues": int(sum(map(len, sequences))), "reference": "fair-esm forward (reference_pooled: extract.py), float32",
              "max_tokens": ctx.plan.max_tokens, "precisions": {}, "failures": []}
    for precision in ("float32", "bfloat16", "float16"):
        encoder, embed = plmexit_path(loaded, ctx.device, precision, ctx.plan.max_tokens)
        ours = embed(sequences)
        per_layer = deviation(ours, reference)
        result["precisions"][precision] = {**encoder.resolved.attrs(), "max_rel_deviation": max(per_layer), "max_rel_deviation_per_layer": per_layer,
                                           "non_finite_values": int((~np.isfinite(ours)).sum())}
        del encoder, embed
    worst = result["precisions"]["float32"]["max_rel_deviation"]
    result["float32_within"] = FP32_EQUALITY
    if not worst <= FP32_EQUALITY:
        result["failures"].append(f"float32 deviates {worst:.2g} relative from fair-esm's forward, above {FP32_EQUALITY:g}")
    return result


def throughput_paths(ctx: Context, directory: Path) -> dict:
    """name -> (embed(chunk) -> (L + 1, N, E), precision, batching), every path on the same weights."""
    loaded, device, budget = ctx.loaded(), ctx.device, ctx.plan.max_tokens
    paths = {}
    for precision in ("bfloat16", "float32"):
        encoder, embed = plmexit_path(loaded, device, precision, budget)
        paths[f"plmexit_{precision}"] = (embed, encoder.precision, "plmexit")
    default = EmbedSettings().max_tokens
    if budget != default:  # what embed.max_tokens gives unless raised: how much a GPU user gains by raising it
        encoder, embed = plmexit_path(loaded, device, "bfloat16", default)
        paths[f"plmexit_bfloat16_max_tokens_{default}"] = (embed, encoder.precision, "plmexit")
    paths["fair_esm_extract"] = (lambda chunk: reference_pooled(loaded, chunk, device=device), "float32", "fair_esm_extract")
    hf = hand_written(hub.convert_fair_esm(loaded.model, loaded.alphabet, directory), "sdpa", device, torch.bfloat16)

    def hf_embed(chunk):
        return np.concatenate([hf([chunk[i] for i in b]) for b in fixed_batches([len(s) for s in chunk], budget)], axis=1)

    paths["hf_sdpa_bfloat16"] = (hf_embed, "bfloat16", "hf_hand_written")
    return paths


def run_workload(ctx: Context, paths: dict, sequences: list[str], deadline: float) -> dict:
    """Chunks of ``sequences`` through every path, the order rotating; stops between chunks at ``deadline``."""
    names = list(paths)
    size = -(-len(sequences) // ctx.plan.chunks)
    chunks = [sequences[i : i + size] for i in range(0, len(sequences), size)]
    for name in names:  # warm-up: kernels, allocator, rotary tables
        paths[name][0](chunks[0][: max(1, len(chunks[0]) // 4)])
    seconds = {name: 0.0 for name in names}
    outputs = {name: [] for name in names}
    done = []
    for i, chunk in enumerate(chunks):
        if done and time.perf_counter() > deadline:
            break
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order[::-1] if i % 2 else order:
            ctx.sync()
            start = time.perf_counter()
            outputs[name].append(paths[name][0](chunk))
            ctx.sync()
            seconds[name] += time.perf_counter() - start
        done.append(chunk)
    ran = [s for c in done for s in c]
    tokens = sum(len(s) + 2 for s in ran)
    lengths = [len(s) for s in ran]
    pooled = {name: np.concatenate(v, axis=1) for name, v in outputs.items()}
    rate = {name: tokens / s for name, s in seconds.items()}
    n_layers, dim = ctx.plan.model[0], ctx.plan.model[1]
    work = flops(ran, n_layers, dim)
    peaks = {k: v["measured"]["flops_per_s"] for k, v in ctx.peaks.items()}
    waste = {"plmexit": padded(pieces.token_batches(np.array(lengths), ctx.plan.max_tokens), lengths) / tokens - 1,
             "fair_esm_extract": padded(fair_esm.fair_esm_batch_indices(ran, REFERENCE_TOKS_PER_BATCH, REFERENCE_EXTRA_TOKS_PER_SEQ), lengths) / tokens - 1,
             "hf_hand_written": padded(fixed_batches(lengths, ctx.plan.max_tokens), lengths) / tokens - 1}
    return {
        "sequences": len(ran), "tokens": tokens, "chunks_run": len(done), "chunks_planned": len(chunks),
        "length_min_median_max": [int(min(lengths)), int(np.median(lengths)), int(max(lengths))],
        "tokens_per_s": rate, "seconds": seconds, "precision": {n: p[1] for n, p in paths.items()}, "padding_waste": waste,
        "flops_per_s": {n: work / s for n, s in seconds.items()},
        "fraction_of_own_precision_peak": {n: work / s / peaks[paths[n][1]] for n, s in seconds.items() if paths[n][1] in peaks},
        "fraction_of_bfloat16_peak": {n: work / s / peaks["bfloat16"] for n, s in seconds.items()},
        "max_rel_deviation_from_fair_esm_extract": {n: max(deviation(v, pooled["fair_esm_extract"])) for n, v in pooled.items() if n != "fair_esm_extract"},
        "ratios": {"bfloat16_over_extract": rate["plmexit_bfloat16"] / rate["fair_esm_extract"],
                   "float32_over_extract": rate["plmexit_float32"] / rate["fair_esm_extract"],
                   "bfloat16_over_hf_sdpa_bfloat16": rate["plmexit_bfloat16"] / rate["hf_sdpa_bfloat16"]},
    }


def measure_throughput(ctx: Context) -> dict:
    workloads = {"proteingym_like": proteingym_like(ctx.rng, ctx.plan.throughput_tokens), "deeploc_like": deeploc_like(ctx.rng, ctx.plan.throughput_tokens)}
    result = {"max_tokens": ctx.plan.max_tokens, "flops": "2 x weight entries per token plus 4 T d attention per layer (cost.block_flops_per_token), real tokens",
              "workloads": {}, "targets": {}, "failures": []}
    with tempfile.TemporaryDirectory() as tmp:
        paths = throughput_paths(ctx, Path(tmp) / "hub")
        start, left = time.perf_counter(), ctx.time_left()  # what the paths' set-up left, shared by the workloads
        for i, (name, sequences) in enumerate(workloads.items()):
            deadline = start + left * (i + 1) / len(workloads)
            result["workloads"][name] = run_workload(ctx, paths, sequences, deadline)
    for name, w in result["workloads"].items():
        for key in ("bfloat16_over_extract", "bfloat16_over_hf_sdpa_bfloat16"):
            result["targets"][f"{name}.{key}"] = target(w["ratios"][key], TARGETS[key])
        fraction = w["fraction_of_own_precision_peak"].get("plmexit_bfloat16", float("nan"))
        result["targets"][f"{name}.bfloat16_fraction_of_bfloat16_peak"] = target(fraction, TARGETS["bfloat16_fraction_of_bfloat16_peak"])
        for path, f in w["fraction_of_own_precision_peak"].items():
            try:
                roofline.check_fraction(f, f"{path} on {name}")
            except roofline.RooflineError as error:
                result["failures"].append(str(error))
    return result


def target(value: float, goal: float) -> dict:
    return {"value": value, "target": goal, "met": bool(value >= goal)}


def measure_cost_depth(ctx: Context) -> dict:
    loaded = ctx.loaded()
    out = {}
    for precision in ("float32", "bfloat16"):
        settings = EmbedSettings(device=ctx.device, precision=precision)
        sample, _ = pieces.prepare_sequences(deeploc_like(ctx.rng, count=ctx.plan.cost_sample), settings)
        encoder = engine.make_encoder(loaded, ctx.device, precision)
        out[precision] = cost_depth.compare(encoder, sample, dataclasses.replace(settings, precision=encoder.precision), ctx.plan.cost_repeats, ctx.plan.cost_rounds)
    return out


def measure_zero_shot(ctx: Context) -> dict:
    target_seq = random_residues(ctx.rng, ctx.plan.zero_shot_residues)
    mutants, mutations = substitutions(ctx.rng, target_seq, ctx.plan.zero_shot_positions)
    result = {"target_residues": len(target_seq), "variants": len(mutants),
              **zero_shot_speed.time_paths(ctx.loaded(), target_seq, mutants, mutations, list(ctx.plan.zero_shot_batches), ctx.device)}
    best = result["best_exact"]
    result["targets"] = {"zero_shot_batched_over_loop": target(best["ratio"], TARGETS["zero_shot_batched_over_loop"])}
    result["identical_scores_max_abs_diff"] = best["max_abs_score_diff_last_layer"]
    return result


def measure_exit(ctx: Context) -> dict:
    import exit_wallclock  # here only: the probes import plmexit.data, which needs Biopython (gpu.sh installs it from .whl/)

    plan = ctx.plan
    sequences = deeploc_like(ctx.rng, count=plan.exit_sequences, cap=plan.exit_truncate)
    labels = ctx.rng.choice(np.array(["membrane", "soluble"]), size=len(sequences))
    args = SimpleNamespace(device=ctx.device, precision="bfloat16", max_tokens=plan.exit_max_tokens, c=0.1, gate="probability",
                           epsilon=0.1, delta=0.1, repeats=plan.exit_repeats, seed=ctx.seed)
    result = exit_wallclock.measure(ctx.loaded(), sequences, labels, args)
    result["labels"] = "random (membrane or soluble, seeded): the probes are at chance, so this times the machinery, not what a trained model allows"
    return result


class TokenLimit:
    """An encoder that runs out of memory above ``limit`` tokens per batch, as a device of that size would:
    ``--smoke``'s memory search and the engine's split on out-of-memory then run the same code on a CPU."""

    def __init__(self, encoder, limit: int):
        self.encoder, self.limit = encoder, limit

    def __getattr__(self, name):
        return getattr(self.encoder, name)

    def pooled(self, tokens, weights, layer_norm, depth=None, on_layer=None):
        if tokens.numel() > self.limit:
            raise torch.OutOfMemoryError(f"simulated: a batch of {tokens.numel()} tokens on a device that holds {self.limit}")
        return self.encoder.pooled(tokens, weights, layer_norm, depth, on_layer)


def release(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def peak_bytes(device: str) -> int | None:
    return int(torch.cuda.max_memory_allocated()) if device.startswith("cuda") else None


class Warnings(logging.Handler):
    """Counts the warnings of one logger while installed (the engine's 'retrying as two halves')."""

    def __init__(self, name: str):
        super().__init__(logging.WARNING)
        self.logger, self.messages = logging.getLogger(name), []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)


def measure_memory(ctx: Context) -> dict:
    plan, device = ctx.plan, ctx.device
    cuda = device.startswith("cuda")
    ctx.drop_model()
    big = random_esm2(plan.big_model, ctx.seed, device)
    encoder = engine.make_encoder(big, device, "bfloat16")
    del big  # the encoder holds its own bfloat16 copy of the weights
    release(device)
    weights_bytes = torch.cuda.memory_allocated() if cuda else None
    if not cuda:
        encoder = TokenLimit(encoder, SMOKE_MEMORY_TOKENS)
    T = plan.memory_residues + 2
    letters = np.array(list(RESIDUES))
    pool = ["".join(row) for row in letters[ctx.rng.integers(0, len(letters), size=(plan.memory_max_rows, plan.memory_residues))]]
    probe_depth = min(2, encoder.num_layers)
    tries = []

    def fits(rows: int, depth: int | None) -> bool:
        # One row a residue short: padding, and so the attention mask every mixed-length batch carries.
        settings = EmbedSettings(max_tokens=rows * T, device=device, precision=encoder.precision)
        ((tokens, weights),) = engine.device_batches(encoder, pool[: rows - 1] + [pool[rows - 1][:-1]], settings)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        error, start = None, time.perf_counter()
        try:
            encoder.pooled(tokens, weights, "raw", depth)
            ctx.sync()
        except RuntimeError as exc:  # out of memory, or a kernel's own size limit (recorded: which one ended the search)
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        del tokens, weights
        tries.append({"rows": rows, "tokens": rows * T, "depth": depth if depth is not None else encoder.num_layers, "fits": error is None,
                      "seconds": time.perf_counter() - start, "peak_allocated_bytes": peak_bytes(device), "error": error})
        release(device)
        return error is None

    lo, hi, rows = 0, None, plan.memory_start_rows
    while rows <= plan.memory_max_rows and ctx.time_left() > 0:  # double until a batch does not fit
        if not fits(rows, probe_depth):
            hi = rows
            break
        lo, rows = rows, rows * 2
    for _ in range(plan.memory_bisections):  # then halve the gap, whole rows
        if hi is None or hi - lo <= 1 or ctx.time_left() <= 0:
            break
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid, probe_depth) else (lo, mid)
    confirmed = bool(lo) and fits(lo, None)
    if lo > 1 and not confirmed:  # the pooled outputs of every layer, or the allocator's fragments, took the margin: one step down
        lo = lo * 15 // 16
        confirmed = fits(lo, None)
    result = {"model": f"ESM2-3B architecture ({plan.big_model[0]} layers, width {plan.big_model[1]}, {plan.big_model[2]} heads), bfloat16",
              "simulated_device_tokens": None if cuda else SMOKE_MEMORY_TOKENS, "weights_bytes_on_device": weights_bytes,
              "device_total_memory_bytes": torch.cuda.get_device_properties(device).total_memory if cuda else None,
              "residues_per_row": plan.memory_residues, "tokens_per_row": T, "probe_depth": probe_depth,
              "largest_fitting_tokens": lo * T, "largest_fitting_rows": lo, "confirmed_at_full_depth": confirmed,
              "peak_allocated_bytes_at_largest": tries[-1]["peak_allocated_bytes"] if confirmed else None,
              "smallest_failing_tokens": hi * T if hi else None, "search_capped_at_rows": plan.memory_max_rows if hi is None else None,
              "tries": tries, "failures": [] if confirmed else [f"{lo} rows of {T} tokens fit two blocks but not the whole forward" if lo else "no batch fits"]}
    result["oom_split"] = oom_split(ctx, encoder, pool[:hi], T) if hi else {"ran": False, "why": "no budget ran out of memory up to the search's cap"}
    if result["oom_split"].get("ran") and not result["oom_split"]["recovered"]:
        result["failures"].append(f"embed_pooled did not recover from a batch of {hi * T} tokens: {result['oom_split'].get('error')}")
    return result


def oom_split(ctx: Context, encoder, sequences: list[str], tokens_per_row: int) -> dict:
    """``embed_pooled`` with ``max_tokens`` at a budget known not to fit: it must split the batch and finish."""
    settings = EmbedSettings(max_tokens=len(sequences) * tokens_per_row, device=ctx.device, precision=encoder.precision)
    if ctx.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with Warnings("plmexit.embedding.engine") as warnings:
        try:
            blocks = list(engine.embed_pooled(None, sequences, settings, encoder=encoder))
            error = None
        except Exception as exc:  # recorded: this is what the measurement is for
            blocks, error = [], f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    covered = sorted(int(i) for index, _ in blocks for i in index) == list(range(len(sequences)))
    finite = all(bool(np.isfinite(block).all()) for _, block in blocks)
    return {"ran": True, "max_tokens": settings.max_tokens, "rows": len(sequences), "recovered": error is None and covered and finite,
            "every_row_pooled": covered, "finite": finite, "splits": sum("two halves" in m for m in warnings.messages),
            "seconds": time.perf_counter() - start, "peak_allocated_bytes": peak_bytes(ctx.device), "error": error}


MEASUREMENTS = {"equality": measure_equality, "throughput": measure_throughput, "memory": measure_memory,
                "cost_depth": measure_cost_depth, "zero_shot": measure_zero_shot, "exit": measure_exit}


# --- the run ------------------------------------------------------------------------------------------


def versions() -> dict:
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None, "transformers": transformers.__version__,
            "fair_esm": fair_esm.fair_esm_version(), "numpy": np.__version__, "plmexit": plmexit.__version__}


def git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def environment(device: str, smoke: bool, argv: list[str]) -> dict:
    cuda = device.startswith("cuda")
    props = torch.cuda.get_device_properties(device) if cuda else None
    return {
        "benchmark": "gpu", "mode": "smoke (CPU, tiny shapes: checks the paths run, its numbers mean nothing)" if smoke else "full",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/gpu.py", *argv]), "git_commit": git_commit(),
        "device": device, "device_name": props.name if cuda else roofline.cpu_theoretical("float32")["model_name"] or platform.processor(),
        "device_properties": {"total_memory_bytes": props.total_memory, "compute_capability": f"{props.major}.{props.minor}",
                              "multiprocessors": props.multi_processor_count} if cuda else None,
        "versions": versions(),
        "matmul_settings": {"float32_matmul_precision": torch.get_float32_matmul_precision(), "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "load_average_at_start": os.getloadavg()},
        "weights": WEIGHTS, "sequences": SEQUENCES,
    }


def plain(value):
    """JSON for numpy scalars and arrays."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON: {type(value).__name__}")


def run_one(ctx: Context, name: str, header: dict, out: Path) -> dict:
    budget = ctx.plan.budgets[name]
    start = time.perf_counter()
    ctx.deadline = start + budget
    if ctx.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    try:
        result = MEASUREMENTS[name](ctx)
        status = "failed" if result.get("failures") else "ok"
    except Exception as error:  # recorded in its JSON; the next measurement runs
        result, status = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}, "failed"
    record = {**header, "measurement": name, "status": status, "seconds": time.perf_counter() - start, "budget_s": budget,
              "peak_allocated_bytes": peak_bytes(ctx.device), "result": result}
    (out / f"{name}.json").write_text(json.dumps(record, indent=2, default=plain) + "\n")
    release(ctx.device)
    log.info("%s: %s in %.1f s (budget %d s)%s", name, status, record["seconds"], budget, f": {result.get('error') or result.get('failures')}" if status != "ok" else "")
    return record


def default_out() -> str:
    return os.environ.get("OUT") or f"benchmarks/results/gpu_{datetime.date.today().isoformat()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="every path on the CPU at tiny shapes (about a minute; CI)")
    parser.add_argument("--out", default=None, help="directory for the JSONs (default $OUT, else benchmarks/results/gpu_<date>)")
    parser.add_argument("--device", default=None, help="default cuda; cpu with --smoke")
    parser.add_argument("--only", default=",".join(MEASUREMENTS), help=f"measurements to run, comma-separated (default all: {','.join(MEASUREMENTS)})")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    names = args.only.split(",")
    unknown = sorted(set(names) - set(MEASUREMENTS))
    if unknown:
        parser.error(f"--only: unknown measurement {', '.join(unknown)}; choose from {', '.join(MEASUREMENTS)}")
    device = args.device or ("cpu" if args.smoke else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here: this script measures a GPU (bash benchmarks/gpu.sh on a GPU machine); --smoke checks every path on the CPU")
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_float32_matmul_precision("highest")  # float32 means float32 (no TF32): the equality check needs it
    plan = SMOKE if args.smoke else FULL
    out = Path(args.out or default_out())
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "gpu.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)
    started = time.perf_counter()
    ctx = Context(device, plan, args.seed)
    header = environment(device, args.smoke, argv)
    for name, dtype in (("bfloat16", torch.bfloat16), ("float32", torch.float32)):
        ctx.peaks[name] = roofline.roofline(device, dtype, plan.peak_sizes if name == "bfloat16" else plan.fp32_peak_sizes)
    header["peaks"] = ctx.peaks
    header["plan"] = dataclasses.asdict(plan)
    log.info("peaks: %s", {k: f"{v['measured']['flops_per_s'] / 1e12:.1f} TFLOP/s measured" for k, v in ctx.peaks.items()})
    records = {}
    for name in names:
        if time.perf_counter() - started > plan.time_limit_s:
            records[name] = {"status": "skipped", "seconds": 0.0, "result": {"error": f"skipped: the run passed its {plan.time_limit_s:.0f} s limit"}}
            (out / f"{name}.json").write_text(json.dumps({**header, "measurement": name, **records[name]}, indent=2, default=plain) + "\n")
            continue
        records[name] = run_one(ctx, name, header, out)
    summary = {**header, "measurement": "summary", "total_seconds": time.perf_counter() - started,
               "measurements": {name: {"status": r["status"], "seconds": r["seconds"], "targets": r["result"].get("targets"),
                                       "failures": r["result"].get("failures"), "error": r["result"].get("error")} for name, r in records.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=plain) + "\n")
    log.info("wrote %s (%.0f s)", out, summary["total_seconds"])
    return 0 if all(r["status"] == "ok" for r in records.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
