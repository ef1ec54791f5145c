"""Zero-shot scores on targets longer than the model: the old one-crop scoring against ProteinGym's windows.

Until commit 2266859, ``plmexit zero-shot`` read a target longer than the model's window through
one crop per assay (``plmexit.embedding.crops.variant_crop``: ``max_residues`` residues centred on
the span of mutated positions, or, for a wider span, overlapping windows of ``max_residues`` with
``embed.overlap`` 256, each position in its most central window), each crop with its own BOS and
EOS. It now reads ProteinGym's windows (``plmexit.depth.zero_shot``): per masked position the
``get_optimal_window`` slice of BOS + target + EOS, and for wild-type marginals the weighted mean
of the ``overlapping`` windows. This script scores the same variants both ways on seeded synthetic
targets with a randomly initialised ESM2 (the 8M architecture by default: 6 layers x 320; no real
weights are needed to measure how far the windows move a score) and writes, per target, variant
placement and method, the score differences at the last layer and over every layer, the scale of
the scores, and the Spearman correlation between the two scorings (there is no assay to correlate
with: the targets are synthetic). ``crop_log_probs`` re-implements the old path from the functions
it used; it was checked equal (to 1e-5) to the code at commit 2266859 when this script was written.

Placements: ``whole`` (mutated positions drawn over the whole target, so the span is wider than
the window and the old path used overlapping crops) and ``region`` (positions in the 200 residues
at the middle of the target: the old path used one crop centred there, with a BOS and an EOS in
mid-protein; ProteinGym centres a window on each position, with neither). Each has ``--positions`` single mutants and ``--positions // 4``
double mutants. With ``--check-reference`` the new last-layer scores are also compared with
``plmexit.depth.reference.proteingym_scores``, ProteinGym's loop as written.

    python benchmarks/zero_shot_windows.py --out zero_shot_windows.json      # about 20 minutes on one loaded CPU thread
    python benchmarks/zero_shot_windows.py --lengths 1300 --layers 2 --dim 16 --heads 2 --positions 8 --out quick.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

import plmexit
from plmexit.depth import reference, zero_shot
from plmexit.depth.heads import AMINO_ACIDS, FairEsmMaskedLM
from plmexit.embedding.crops import variant_crop
from plmexit.embedding.options import EmbedSettings
from plmexit.embedding.pieces import window_starts
from plmexit.models import fair_esm

OLD_OVERLAP = 256  # the old zero-shot --overlap default (as embed.overlap)
REGION = 200  # residues of the "region" placement


def crop_log_probs(lm, target: str, mutations, batch_size: int):
    """The old scoring: ``(masked, wild, positions)``, each ``(L + 1, P, V)``, every position read in
    its crop (or most central crop window) as a target of its own, with BOS and EOS."""
    sequences = [target] + [zero_shot_apply(target, m) for m in mutations]
    crop = variant_crop(sequences, EmbedSettings(truncate=lm.max_residues, overlap=OLD_OVERLAP), "synthetic")
    positions = np.unique([p - 1 for m in mutations for _, p, _ in m]).astype(np.int64)
    if crop.windowed:
        starts = [crop.start + s for s in window_starts(crop.stop - crop.start, crop.window, crop.overlap)]
        contexts = [(s, s + crop.window) for s in starts]
        margin = np.array([[min(p - s, s + crop.window - 1 - p) for s in starts] for p in positions])
        context_of = margin.argmax(axis=1)
    else:
        contexts, context_of = [(crop.start, crop.stop)], np.zeros(len(positions), dtype=int)
    masked = wild = None
    for c, (start, stop) in enumerate(contexts):
        chosen = np.flatnonzero(context_of == c)
        if chosen.size == 0:
            continue
        part = target[start:stop]
        local = [[(part[p - start], p - start + 1, "A")] for p in positions[chosen]]  # positions only; residues unused
        plan = zero_shot.plan_scoring(part, local, lm.max_residues)
        assert not plan.windowed
        m = zero_shot.masked_marginal_log_probs(lm, part, plan, batch_size)
        w = zero_shot.wt_marginal_log_probs(lm, part, plan, batch_size)
        if masked is None:
            masked = np.empty((m.shape[0], len(positions), m.shape[-1]), dtype=np.float32)
            wild = np.empty_like(masked)
        masked[:, chosen], wild[:, chosen] = m, w
    return masked, wild, crop


def zero_shot_apply(target: str, mutations) -> str:
    residues = list(target)
    for _, position, new in mutations:
        residues[position - 1] = new
    return "".join(residues)


def make_variants(target: str, placement: str, n: int, rng: np.random.Generator) -> list[str]:
    length = len(target)
    lo, hi = (1, length) if placement == "whole" else (length // 2 - REGION // 2, length // 2 + REGION // 2)
    chosen = np.sort(rng.choice(np.arange(lo, hi + 1), size=n, replace=False))

    def one(p):
        return f"{target[p - 1]}{p}{rng.choice([a for a in AMINO_ACIDS if a != target[p - 1]])}"

    singles = [one(int(p)) for p in chosen]
    doubles = []
    for _ in range(n // 4):
        a, b = sorted(rng.choice(chosen, size=2, replace=False))
        doubles.append(f"{one(int(a))}:{one(int(b))}")
    return singles + doubles


def parse(mutants: list[str]):
    return [[(m[0], int(m[1:-1]), m[-1]) for m in mutant.split(":")] for mutant in mutants]


def compare(old: np.ndarray, new: np.ndarray) -> dict:
    """Differences of (K, N) scores: at the last layer and the largest over layers."""
    diff = np.abs(old - new)
    rho = [float(spearmanr(old[k], new[k]).statistic) for k in range(old.shape[0])]
    return {
        "max_abs_diff_last_layer": float(diff[-1].max()), "mean_abs_diff_last_layer": float(diff[-1].mean()),
        "max_abs_diff_any_layer": float(diff.max()), "mean_abs_score_last_layer": float(np.abs(new[-1]).mean()),
        "max_abs_score_last_layer": float(np.abs(new[-1]).max()),
        "spearman_old_vs_new_last_layer": rho[-1], "min_spearman_old_vs_new_any_layer": float(min(rho)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="1300,2000", help="synthetic target lengths, comma-separated (default 1300,2000)")
    parser.add_argument("--placements", default="whole,region", help="where the variants lie: whole, region (default both)")
    parser.add_argument("--positions", type=int, default=48, help="single mutants per target and placement, at distinct positions (default 48); a quarter as many doubles")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--dim", type=int, default=320)
    parser.add_argument("--heads", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=1, help="masked copies per forward (default 1, the CPU default)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--check-reference", action=argparse.BooleanOptionalAction, default=True,
                        help="also score the last layer with ProteinGym's loop as written (reference.proteingym_scores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = fair_esm.make_test_model(out_dir=Path(tmp), layers=args.layers, dim=args.dim, heads=args.heads, seed=args.seed)
        loaded = fair_esm.load_model(checkpoint)
    lm = FairEsmMaskedLM(loaded)
    result = {
        "benchmark": "zero_shot_windows", "date": datetime.date.today().isoformat(), "command": " ".join(["python", *sys.argv]),
        "model": {"layers": args.layers, "dim": args.dim, "heads": args.heads, "random_init_seed": args.seed, "max_residues": lm.max_residues},
        "units": "log-probability (nats): a variant's score is the sum over its mutations of log p(mutant) - log p(wild type)",
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "versions": {"python": platform.python_version(), "torch": str(torch.__version__), "fair_esm": fair_esm.fair_esm_version(), "plmexit": plmexit.__version__},
        "cases": [],
    }
    for length in [int(x) for x in args.lengths.split(",")]:
        rng = np.random.default_rng([args.seed, length])
        target = "".join(rng.choice(list(AMINO_ACIDS), length))
        for placement in args.placements.split(","):
            mutants = make_variants(target, placement, args.positions, np.random.default_rng([args.seed, length, len(placement)]))
            mutations = parse(mutants)
            start = time.perf_counter()
            plan = zero_shot.plan_scoring(target, mutations, lm.max_residues, source=f"synthetic {length}")
            index = zero_shot.index_mutations(mutations, plan, lm.residue_ids)
            new = {"masked_marginal": zero_shot.variant_scores(zero_shot.masked_marginal_log_probs(lm, target, plan, args.batch_size), index),
                   "wt_marginal": zero_shot.variant_scores(zero_shot.wt_marginal_log_probs(lm, target, plan, args.batch_size), index)}
            new_s = time.perf_counter() - start
            start = time.perf_counter()
            masked, wild, crop = crop_log_probs(lm, target, mutations, args.batch_size)
            old = {"masked_marginal": zero_shot.variant_scores(masked, index), "wt_marginal": zero_shot.variant_scores(wild, index)}
            old_s = time.perf_counter() - start
            case = {
                "target_residues": length, "placement": placement, "variants": len(mutants), "mutated_positions": len(plan.positions),
                "old_crop": crop.describe(), "new_windows": plan.describe(), "old_s": old_s, "new_s": new_s,
                "methods": {method: compare(old[method], new[method]) for method in new},
            }
            if args.check_reference:
                token_positions = reference.mutated_token_positions(mutants)
                for method, strategy in (("masked_marginal", "masked-marginals"), ("wt_marginal", "wt-marginals")):
                    expected = np.array(reference.proteingym_scores(loaded, target, mutants, strategy, token_positions if strategy == "masked-marginals" else None,
                                                                    model_window=lm.max_residues + 2))
                    case["methods"][method]["new_max_abs_diff_to_proteingym_loop_last_layer"] = float(np.abs(new[method][-1] - expected).max())
                    case["methods"][method]["old_max_abs_diff_to_proteingym_loop_last_layer"] = float(np.abs(old[method][-1] - expected).max())
            result["cases"].append(case)
            print(json.dumps({k: case[k] for k in ("target_residues", "placement", "variants", "methods")}, indent=1), flush=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
