"""What each compute precision costs in science: per-layer deviation from fp32, and whether probe
scores, the deployed layer and the gain move beyond fold-to-fold noise, on real tasks.

One random-weight ESM2 (no real ESM2 weights exist on this machine: an ESM2-35M architecture by
default, written in fair-esm's format) embeds, in every precision, the same rows of two real tasks
from ``../shared/data``:

- ProteinGym ``BLAT_ECOLX_Stiffler_2015`` (regression, Spearman) under its three fold schemes,
  ``fold_random_5`` (ridge inner split leave-one-out), ``fold_modulo_5`` and ``fold_contiguous_5``
  (inner folds grouped by position), as the pipeline probes them;
- DeepLoc (``deeploc_our_val_set.fasta``, a seeded random subset, mixed lengths truncated to 1022
  residues): 10-class location and membrane-bound vs soluble (its ``U`` rows left out), accuracy,
  5 folds stratified by each label (logistic probes, as ``plmexit probe``).

Each precision runs ``fast_esm2.FastEncoder`` at exactly that precision (so the arithmetic is measured
even where ``plmexit embed`` would fall back to float32; ``runs_natively_here`` says which would).
Per layer: the deviation from fp32 relative to each pooled vector's scale (max and median over
vectors). Per task: the probe table (``probes.probe_layer``, as ``plmexit probe``), the selection
(``choice.select_layer``) and ``agreement.compare`` against fp32 (per-layer score change vs one
standard error over outer folds; deployed layer among fp32's tied layers; gain change vs its
standard error), with the verdict ``unchanged``.

    python benchmarks/precision_science.py --out benchmarks/results/precision_science.json          # ESM2-35M arch, all 4,996 variants, 600 DeepLoc
    python benchmarks/precision_science.py --quick --out precision_science_quick.json               # ESM2-8M arch, 600 variants, 200 DeepLoc
    python benchmarks/precision_science.py --quick --variants 0 --out deeploc.json                  # DeepLoc only
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
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

import plmexit
from plmexit.data import proteingym
from plmexit.data.datasets import DEEPLOC_HEADER, DEEPLOC_MEMBRANE
from plmexit.data.loading import assign_folds
from plmexit.embedding import engine, fast_esm2, options
from plmexit.embedding import precision as precisions
from plmexit.embedding.options import PRECISION_DESCRIPTIONS
from plmexit.models import fair_esm
from plmexit.probing import agreement, choice, probes, tables

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BLAT = DATA / "proteingym" / "cv_folds_singles_substitutions" / "BLAT_ECOLX_Stiffler_2015.csv"
DEEPLOC = DATA / "deeploc" / "deeploc_our_val_set.fasta"
SCHEMES = {"fold_random_5": "loo", "fold_modulo_5": "modulo", "fold_contiguous_5": "contiguous"}
ARCHITECTURES = {"ESM2-35M": (12, 480, 20), "ESM2-8M": (6, 320, 20)}


def read_deeploc(path: Path) -> pd.DataFrame:
    rows = []
    for block in path.read_text().split(">")[1:]:
        header, *lines = block.strip().splitlines()
        match = DEEPLOC_HEADER.match(header)
        rows.append((match["id"], match["location"], DEEPLOC_MEMBRANE.get(match["membrane"]), "".join(lines)))
    return pd.DataFrame(rows, columns=["id", "label", "membrane", "sequence"])


def embed(encoder, sequences: list[str], settings: options.EmbedSettings) -> tuple[np.ndarray, float]:
    out = np.empty((encoder.num_layers + 1, len(sequences), encoder.embed_dim), dtype=np.float32)
    start = time.perf_counter()
    for index, block in engine.embed_pooled(None, sequences, settings, encoder=encoder):
        out[:, index] = block
    return out, time.perf_counter() - start


def deviation(X: np.ndarray, reference: np.ndarray) -> dict:
    """Per layer, |X - ref| relative to each reference vector's largest component: max and median over vectors."""
    rel = np.abs(X - reference).max(axis=-1) / np.abs(reference).max(axis=-1)  # (L + 1, N)
    return {"max": [float(v) for v in rel.max(axis=1)], "median": [float(v) for v in np.median(rel, axis=1)]}


def probe_table(X: np.ndarray, y, folds, settings: probes.ProbeSettings, task: str, positions=None) -> pd.DataFrame:
    """The task's probe table, each layer's probes on one BLAS thread as ``plmexit probe`` runs them
    (a multi-threaded BLAS made the small logistic fits about 20x slower on this 2-core machine)."""
    rows = []
    with threadpool_limits(1, user_api="blas"):
        for layer in range(X.shape[0]):
            fits = probes.probe_layer(X[layer], y, folds, settings, positions)
            rows.extend(("model", task, layer, fold, metric, value) for fold, metric, value in probes.fold_metrics(fits, y, settings))
    return pd.DataFrame(rows, columns=tables.PROBE_COLUMNS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=list(ARCHITECTURES), default="ESM2-35M")
    parser.add_argument("--variants", type=int, default=-1, help="BLAT_ECOLX variants, a seeded random subset (default -1: all 4,996; 0 skips BLAT_ECOLX)")
    parser.add_argument("--deeploc", type=int, default=600, help="DeepLoc proteins, a seeded random subset (default 600; 0 skips DeepLoc)")
    parser.add_argument("--precisions", default=",".join(options.PRECISION_NAMES[1:]), help="compared with float32 (default: all)")
    parser.add_argument("--quick", action="store_true", help="ESM2-8M arch, 600 variants, 200 DeepLoc proteins")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.quick:
        args.arch, args.variants, args.deeploc = "ESM2-8M", 600 if args.variants < 0 else args.variants, min(args.deeploc, 200)
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    compared = [p for p in args.precisions.split(",") if p]

    datasets = {}
    blat = None
    if args.variants:
        blat = pd.read_csv(BLAT)
        if args.variants > 0:
            blat = blat.iloc[np.sort(rng.choice(len(blat), size=min(args.variants, len(blat)), replace=False))].reset_index(drop=True)
        positions = np.array([proteingym.mutated_positions(m)[0] for m in blat["mutant"]])
        datasets["BLAT_ECOLX_Stiffler_2015"] = blat["mutated_sequence"].tolist()
    deeploc = None
    if args.deeploc:
        deeploc = read_deeploc(DEEPLOC)
        deeploc = deeploc.iloc[np.sort(rng.choice(len(deeploc), size=min(args.deeploc, len(deeploc)), replace=False))].reset_index(drop=True)
        deeploc["sequence"] = [s[: options.ESM2_MAX_RESIDUES] for s in deeploc["sequence"]]
        deeploc["fold"] = assign_folds(deeploc["label"].to_numpy(), "classification", 5, args.seed)
        membrane = deeploc["membrane"].notna().to_numpy()
        membrane_folds = assign_folds(deeploc.loc[membrane, "membrane"].to_numpy(), "classification", 5, args.seed)
        datasets["deeploc"] = deeploc["sequence"].tolist()

    layers, dim, heads = ARCHITECTURES[args.arch]
    settings = options.EmbedSettings()
    embeddings: dict[str, dict[str, np.ndarray]] = {}
    seconds: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        loaded = fair_esm.load_model(fair_esm.make_test_model(layers, dim, heads, args.seed, tmp))
    for name in ["float32", *compared]:
        encoder = fast_esm2.FastEncoder(loaded, "cpu", name)
        embeddings[name], seconds[name] = {}, {}
        for dataset, sequences in datasets.items():
            embeddings[name][dataset], seconds[name][dataset] = embed(encoder, sequences, settings)
            print(f"{name} {dataset}: {seconds[name][dataset]:.1f} s", file=sys.stderr)

    regression = {scheme: probes.ProbeSettings("regression", "spearman", inner_split=split) for scheme, split in SCHEMES.items()}
    tasks = {}  # task: (dataset, rows of it (None: all), y, folds, probe settings, positions)
    if blat is not None:
        tasks.update({
            f"BLAT_ECOLX_Stiffler_2015/{scheme}": ("BLAT_ECOLX_Stiffler_2015", None, blat["DMS_score"].to_numpy(), blat[scheme].to_numpy(),
                                                   regression[scheme], None if split == "loo" else positions)
            for scheme, split in SCHEMES.items()
        })
    if deeploc is not None:
        classification = probes.ProbeSettings("classification", "accuracy")
        tasks["deeploc_membrane"] = ("deeploc", membrane, deeploc.loc[membrane, "membrane"].to_numpy(), membrane_folds, classification, None)
        tasks["deeploc_location"] = ("deeploc", None, deeploc["label"].to_numpy(), deeploc["fold"].to_numpy(), classification, None)
    results = {}
    for task, (dataset, rows, y, folds, probe_settings, pos) in tasks.items():
        def X(name: str, dataset=dataset, rows=rows) -> np.ndarray:
            return embeddings[name][dataset] if rows is None else embeddings[name][dataset][:, rows]

        reference = probe_table(X("float32"), y, folds, probe_settings, task, pos)
        ref_sel = choice.select_layer(reference, probe_settings.selection_metric)
        entry = {"float32": {"deployed_layer": ref_sel["deployed_layer"], "gain": ref_sel["gain"], "nested_score": ref_sel["nested_score"],
                             "final_score": ref_sel["final_score"], "scores_by_layer": ref_sel["mean_test_score_by_layer"]}}
        for name in compared:
            table = probe_table(X(name), y, folds, probe_settings, task, pos)
            entry[name] = agreement.compare(reference, table, probe_settings.selection_metric)
            print(f"{task} {name}: unchanged={entry[name]['unchanged']} max change/noise {entry[name]['max_change_over_noise']:.2f} "
                  f"deployed {entry[name]['deployed_layer']} (fp32 {ref_sel['deployed_layer']})", file=sys.stderr)
        results[task] = entry
        write(args, argv, layers, dim, heads, datasets, compared, seconds, embeddings, results, tasks)  # after every task: a long run keeps what it finished
    return 0


def write(args, argv, layers, dim, heads, datasets, compared, seconds, embeddings, results, tasks) -> None:
    out = {
        "benchmark": "precision_science",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/precision_science.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg()},
        "versions": {"plmexit": plmexit.__version__, "torch": str(torch.__version__), "python": platform.python_version()},
        "model": f"{args.arch} architecture, random weights ({layers} layers, width {dim}, {heads} heads): no real ESM2 weights exist on this machine",
        "rows": {dataset: len(sequences) for dataset, sequences in datasets.items()},
        "task_rows": {task: len(y) for task, (_, _, y, *_) in tasks.items()},
        "precisions": {
            name: {
                "description": PRECISION_DESCRIPTIONS[name],
                "runs_natively_here": precisions.resolve(name, "cpu").ran == name,
                "fallback_reason_here": precisions.resolve(name, "cpu").reason,
                "embed_seconds": seconds[name],
                "deviation_from_float32": {d: deviation(embeddings[name][d], embeddings["float32"][d]) for d in datasets} if name != "float32" else None,
            }
            for name in ["float32", *compared]
        },
        "rule": agreement.__doc__,
        "tasks": results,
        "unchanged": {name: all(results[t][name]["unchanged"] for t in results) for name in compared},
        "unchanged_by_task": {name: {t: results[t][name]["unchanged"] for t in results} for name in compared},
        "tasks_done": list(results),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
