"""Random against homology folds on DeepFRI EC: how the scores and the chosen layer move.

The EC task as ``config/test.yaml``'s ``ec`` entry reads it (DeepFRI's nrPDB-EC test chains from
``../shared/data/deepfri_ec``, top-level EC classes, multi-label, Fmax; a seeded subsample of
``--max-sequences`` chains, 150 as in the test config, several sizes allowed; 0 for all 1,919) is
prepared with ``plmexit prepare`` under ``--folds random`` (seeded stratified 5-fold, the default
before) and ``--folds homology`` (whole MMseqs2 clusters per fold, the default now), each with
every fold seed of ``--fold-seeds``. The chains are the same throughout (the seed-``--seed``
subsample, then listed as the ids to read), so one embedding store serves every split. A tiny
*random* ESM2 (``plmexit make-test-model``, 4 layers, width 64, as ``config/test.yaml``'s
``tiny_random``; never real weights) is embedded once; each split is probed and selected as the
pipeline does (``probe``, ``select``). Reported per size, split and fold seed: the nested and final
scores, the gain with its interval (resampling test items under random folds, whole clusters under
homology folds), the deployed and per-fold layers, the mean test Fmax of every layer over folds,
and how many test chains share an MMseqs2 cluster with a chain trained on in that fold (the leak
homology folds close); per split, the spread of those numbers over fold seeds, which is what a
reshuffle of folds alone moves them by; and the moves from random to homology folds (the first
fold seed, and the means over fold seeds).

A random model's features carry no learned biology, so the numbers say how the split moves the
scores of the same features, not how a real model's layers rank.

    python benchmarks/homology_folds_ec.py --out benchmarks/results/homology_folds_ec.json
    python benchmarks/homology_folds_ec.py --max-sequences 150 1919 --out benchmarks/results/homology_folds_ec.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from plmexit.cli import main as plmexit
from plmexit.data.tasks import read_task_table

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "deepfri_ec"
FILES = {
    "--path": "nrPDB-EC_2020.04_test_sequences.fasta",
    "--annotations": "nrPDB-EC_2020.04_annot.tsv",
    "--ids-path": "nrPDB-EC_2020.04_test.txt",
}
SPLITS = ("random", "homology")


def step(*argv) -> None:
    code = plmexit([str(a) for a in argv])
    if code:
        sys.exit(f"plmexit {shlex.join(map(str, argv))} failed ({code})")


def leaked(table: pd.DataFrame, clusters: dict[str, int]) -> dict:
    """Test chains whose MMseqs2 cluster also holds a chain trained on in the same fold."""
    cluster = table["id"].map(clusters)
    n = 0
    for fold in sorted(table["fold"].unique()):
        trained = set(cluster[table["fold"] != fold])
        n += int(cluster[table["fold"] == fold].isin(trained).sum())
    return {"test_chains_with_a_homolog_trained_on": n, "of": len(table), "fraction": n / len(table)}


def outcome(work: Path, name: str, store: Path, cost: Path, clusters: dict[str, int], args) -> dict:
    """Probe and select one prepared split (``{name}.tsv``, ``{name}.json``); what moved."""
    t = work / name
    start = time.perf_counter()
    step("probe", "--embeddings", store, "--task", f"{t}.tsv", "--type", "multilabel", "--metric", "fmax", "--model-id", "tiny_random",
         "--task-name", "ec", "--seed", args.seed, "--out", f"{t}_probes.tsv", "--predictions", f"{t}_predictions.tsv.gz")
    step("select", "--probes", f"{t}_probes.tsv", "--predictions", f"{t}_predictions.tsv.gz", "--cost", cost, "--task-info", f"{t}.json",
         "--type", "multilabel", "--metric", "fmax", "--bootstrap", args.bootstrap, "--seed", args.seed, "--out", f"{t}_selection.json")
    seconds = time.perf_counter() - start
    selection = json.loads(Path(f"{t}_selection.json").read_text())
    probes = pd.read_csv(f"{t}_probes.tsv", sep="\t")
    per_layer = probes[(probes.metric == "fmax") & (probes.fold >= 0)].groupby("layer")["value"].mean()
    inner = probes[(probes.metric == "inner_fmax") & (probes.fold >= 0)].groupby("layer")["value"].mean()
    table = read_task_table(f"{t}.tsv")
    return {
        "split": selection["split"],
        "nested_fmax": selection["nested_score"], "final_fmax": selection["final_score"], "gain": selection["gain"],
        "gain_ci": [selection["gain_ci_low"], selection["gain_ci_high"]], "bootstrap_unit": selection["bootstrap"]["unit"],
        "deployed_layer": selection["deployed_layer"], "fold_layers": selection["fold_layers"], "verdict": selection["verdict"],
        "oracle_layer": selection.get("oracle_layer"), "min_test_fold_size": selection["min_test_fold_size"],
        "test_fmax_per_layer": {int(k): float(v) for k, v in per_layer.items()},
        "inner_fmax_per_layer": {int(k): float(v) for k, v in inner.items()},
        "fold_sizes": table.groupby("fold").size().astype(int).tolist(),
        "leak": leaked(table, clusters),
        "probe_select_s": seconds,
    }


def spread(runs: list[dict]) -> dict:
    """Mean, standard deviation and range over fold seeds of the numbers that move, and the deployed layers."""
    out = {}
    for key in ("nested_fmax", "final_fmax", "gain"):
        values = np.array([r[key] for r in runs])
        out[key] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else None,
                    "min": float(values.min()), "max": float(values.max())}
    out["deployed_layers"] = [r["deployed_layer"] for r in runs]
    out["leaked_fraction_mean"] = float(np.mean([r["leak"]["fraction"] for r in runs]))
    return out


def run_size(work: Path, data: Path, n: int | None, model: Path, args) -> dict:
    files = {flag: data / name for flag, name in FILES.items()}
    # The chains: the seeded subsample prepare makes (seed --seed); every split and fold seed then reads exactly these.
    first = work / f"ec_{n}_sample"
    step("prepare", "--name", "ec", "--format", "deepfri_ec", "--type", "multilabel", *[a for kv in files.items() for a in kv],
         *(["--max-sequences", n] if n else []), "--seed", args.seed, "--folds", "random", "--out", f"{first}.tsv", "--info-out", f"{first}.json")
    chains = read_task_table(f"{first}.tsv")
    (work / f"ec_{n}_ids.txt").write_text("".join(f"{i}\n" for i in chains["id"]))
    files["--ids-path"] = work / f"ec_{n}_ids.txt"
    store, cost = work / f"ec_{n}.h5", work / f"ec_{n}_cost.json"
    start = time.perf_counter()
    step("embed", "--model", model, "--task", f"{first}.tsv", "--out", store, "--device", "cpu", "--dtype", "float32", "--no-progress")
    step("cost", "--model", model, "--task", f"{first}.tsv", "--out", cost, "--device", "cpu", "--sample-sequences", 8, "--repeats", 1)
    embed_s = time.perf_counter() - start
    size = {"chains": len(chains), "embed_and_cost_s": embed_s}
    for split in SPLITS:
        runs = []
        for seed in args.fold_seeds:
            name = f"ec_{n}_{split}_seed{seed}"
            step("prepare", "--name", "ec", "--format", "deepfri_ec", "--type", "multilabel", *[a for kv in files.items() for a in kv],
                 "--cv-folds", args.cv_folds, "--seed", seed, "--folds", split, "--out", work / f"{name}.tsv", "--info-out", work / f"{name}.json")
            table = read_task_table(work / f"{name}.tsv")
            assert table[["id", "sequence"]].equals(chains[["id", "sequence"]]), "every split must hold the embedded chains, in order"
            runs.append({"fold_seed": seed, "name": name})
        size[split] = runs
    # The clusters (the first homology prepare's info) measure every split's leak: test chains with a cluster-mate trained on.
    info = json.loads((work / f"ec_{n}_homology_seed{args.fold_seeds[0]}.json").read_text())
    size["clustering"] = info["clustering"]
    for split in SPLITS:
        size[split] = [{"fold_seed": r["fold_seed"], **outcome(work, r["name"], store, cost, info["clusters"], args)} for r in size[split]]
        size[f"{split}_over_fold_seeds"] = spread(size[split])
    main_random, main_homology = size["random"][0], size["homology"][0]
    size["moves"] = {
        "fold_seed": args.fold_seeds[0],
        "nested_fmax": main_homology["nested_fmax"] - main_random["nested_fmax"],
        "final_fmax": main_homology["final_fmax"] - main_random["final_fmax"],
        "gain": main_homology["gain"] - main_random["gain"],
        "deployed_layer": [main_random["deployed_layer"], main_homology["deployed_layer"]],
        "mean_over_fold_seeds": {
            key: size["homology_over_fold_seeds"][key]["mean"] - size["random_over_fold_seeds"][key]["mean"] for key in ("nested_fmax", "final_fmax", "gain")
        },
    }
    return size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA), help=f"directory of DeepFRI's EC files (default {DATA})")
    parser.add_argument("--max-sequences", type=int, nargs="+", default=[150], help="subsample sizes (default 150; 0: all 1,919 test chains)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--cv-folds", type=int, default=5)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsample, the probes and the bootstrap (default 0)")
    parser.add_argument("--fold-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="fold seeds of both splits (default 0-4): the first gives the headline move, all of them the spread a reshuffle alone makes")
    parser.add_argument("--out", required=True, help="JSON to write")
    args = parser.parse_args(argv)

    load = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        from plmexit.models.fair_esm import make_test_model

        model = work / "model.json"
        checkpoint = make_test_model(args.layers, args.dim, args.heads, args.seed, work)
        from plmexit.download import sha256_file

        step("fetch-model", "--id", "tiny_random", "--checkpoint", checkpoint, "--sha256", sha256_file(checkpoint), "--out", model)
        sizes = {str(n or "all"): run_size(work, Path(args.data), n or None, model, args) for n in args.max_sequences}
    result = {
        "benchmark": "homology_folds_ec",
        "command": shlex.join([sys.executable, *sys.argv] if argv is None else [sys.executable, __file__, *argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_at_start": load},
        "model": {"architecture": "ESM2", "layers": args.layers, "dim": args.dim, "heads": args.heads, "seed": args.seed,
                  "weights": "random (plmexit make-test-model): never a real model"},
        "task": {"data": str(args.data), "files": FILES, "type": "multilabel", "metric": "fmax", "cv_folds": args.cv_folds, "seed": args.seed,
                 "fold_seeds": args.fold_seeds},
        "bootstrap": args.bootstrap,
        "sizes": sizes,
        "total_s": time.perf_counter() - started,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    json.dump({n: {"moves": s["moves"], "clustering": {k: s["clustering"][k] for k in ("n_clusters", "largest_cluster")},
                   "random": s["random_over_fold_seeds"], "homology": s["homology_over_fold_seeds"]} for n, s in sizes.items()}, sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
