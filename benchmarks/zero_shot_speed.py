"""Zero-shot masked marginals: plmexit's batched path against ProteinGym's one-position-per-forward loop.

Both score the same variants of a ProteinGym assay (BLAT_ECOLX_Stiffler_2015 by default) in the
same run with the same randomly initialised ESM2 (the 35M architecture by default: 12 layers x 480,
20 heads; no real weights are needed for timing or equality):

- ``loop``: ``plmexit.depth.reference.proteingym_scores``, ProteinGym's ``compute_fitness.py``
  masked-marginals branch as written (fair-esm's ``model(tokens)["logits"]``, one masked position
  per forward), looping over the mutated positions only (ProteinGym also masks the positions no
  variant reads, BOS and EOS included: ``len(target) + 2`` forwards, so its own run is longer);
- ``batched``: ``plmexit.depth.zero_shot.masked_marginal_log_probs``, each of ``--batch-sizes``
  masked copies per forward, every layer's lens read in that forward, through the exact engine
  (fair-esm's own blocks) and, at the largest batch, the fused one.

The JSON holds every time, its ratio to the loop, the largest score difference at the last layer,
and the machine. ``--positions N`` keeps the variants at the first N distinct mutated positions.

    python benchmarks/zero_shot_speed.py --positions 32 --out zero_shot_speed.json   # about two minutes on one CPU thread
    python benchmarks/zero_shot_speed.py --layers 2 --dim 32 --heads 4 --positions 8 --out quick.json
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

import plmexit
from plmexit.depth import reference, zero_shot
from plmexit.depth.heads import FairEsmMaskedLM
from plmexit.models import fair_esm

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "proteingym"
DMS_ID = "BLAT_ECOLX_Stiffler_2015"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_paths(loaded, target: str, mutants: list[str], mutations: list[list[tuple[str, int, str]]], batch_sizes: list[int], device: str) -> dict:
    """ProteinGym's loop, then the batched path at each batch size (exact engine) and the largest (fused), on the
    same variants: each one's seconds, its ratio to the loop and its largest score difference at the last layer."""
    token_positions = reference.mutated_token_positions(mutants)
    reference.proteingym_scores(loaded, target, mutants[:1], "masked-marginals", token_positions[:1])  # warm-up
    _sync(device)
    start = time.perf_counter()
    expected = np.array(reference.proteingym_scores(loaded, target, mutants, "masked-marginals", token_positions))
    _sync(device)
    loop_s = time.perf_counter() - start
    result = {"mutated_positions": len(token_positions), "loop_s": loop_s, "loop_forwards": len(token_positions), "runs": []}
    runs = [("exact", b) for b in batch_sizes] + [("fused", max(batch_sizes))]
    for engine, batch_size in runs:
        lm = FairEsmMaskedLM(loaded, device=device, engine=engine)
        plan = zero_shot.plan_scoring(target, mutations, lm.max_residues)
        index = zero_shot.index_mutations(mutations, plan, lm.residue_ids)
        zero_shot.masked_marginal_log_probs(lm, target, zero_shot.ScoringPlan(plan.length, plan.window, plan.positions[:1], plan.masked_windows[:1], plan.wt_windows), 1)  # warm-up
        _sync(device)
        start = time.perf_counter()
        log_probs = zero_shot.masked_marginal_log_probs(lm, target, plan, batch_size)
        _sync(device)
        seconds = time.perf_counter() - start
        scores = zero_shot.variant_scores(log_probs, index)
        result["runs"].append({
            "engine": engine, "batch_size": batch_size, "batched_s": seconds, "ratio": loop_s / seconds,
            "max_abs_score_diff_last_layer": float(np.abs(scores[-1] - expected).max()), "layers_read": int(scores.shape[0]),
        })
    result["best_exact"] = max((r for r in result["runs"] if r["engine"] == "exact"), key=lambda r: r["ratio"])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assay", default=str(DATA / "cv_folds_singles_substitutions" / f"{DMS_ID}.csv"))
    parser.add_argument("--reference", default=str(DATA / "reference_files" / "DMS_substitutions.csv"))
    parser.add_argument("--dms-id", default=DMS_ID)
    parser.add_argument("--positions", type=int, default=48, help="keep variants at the first N distinct mutated positions (default 48; 0: all)")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--dim", type=int, default=480)
    parser.add_argument("--heads", type=int, default=20)
    parser.add_argument("--batch-sizes", default=f"1,8,{zero_shot.DEFAULT_BATCH}", help="masked copies per forward to time, comma-separated (exact engine; fused runs the largest)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for both paths (default 1: stable on a shared machine)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both paths run there)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from plmexit.data import proteingym  # here only: the data readers need Biopython, which gpu.py's GPU image may lack

    table, target, mutations = proteingym.read_zero_shot_assay(args.assay, args.reference, args.dms_id)
    if args.positions:
        kept = set(sorted({p for m in mutations for _, p, _ in m})[: args.positions])
        rows = [i for i, m in enumerate(mutations) if all(p in kept for _, p, _ in m)]
        table, mutations = table.iloc[rows].reset_index(drop=True), [mutations[i] for i in rows]
    mutants = list(table["mutant"])
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = fair_esm.make_test_model(out_dir=Path(tmp), layers=args.layers, dim=args.dim, heads=args.heads, seed=args.seed)
        loaded = fair_esm.load_model(checkpoint, device=args.device)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    result = {
        "benchmark": "zero_shot_speed", "date": datetime.date.today().isoformat(), "command": " ".join(["python", *sys.argv]),
        "dms_id": args.dms_id, "target_residues": len(target), "variants": len(mutants),
        "model": {"layers": args.layers, "dim": args.dim, "heads": args.heads, "random_init_seed": args.seed},
        "device": args.device,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "versions": {"python": platform.python_version(), "torch": str(torch.__version__), "fair_esm": fair_esm.fair_esm_version(), "plmexit": plmexit.__version__},
        **time_paths(loaded, target, mutants, mutations, batch_sizes, args.device),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("variants", "mutated_positions", "loop_s", "runs")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
