"""The whole chain end to end on a DeepLoc task: where the time goes beyond the model's forward.

A 300-protein DeepLoc CSV (seeded sample of both DeepLoc 1.0 files in ``../shared/data/deeploc``,
10-class location; classes too rare to have ten members in the sample are left out before
sampling, so every fold sees every class) is built in a temporary directory, never in the
repository. One random ESM2 of the ESM2-35M architecture (12 layers, width 480, 20 heads) is
written by ``plmexit make-test-model`` and converted to the transformers layout
(``plmexit convert-model``), so every tool runs the same weights.

plmexit runs the steps a Snakemake run of this task runs, each as its own ``plmexit`` process with
the rule's threads (``prepare``, ``fetch-model``, ``embed``, ``cost``, ``probe``, ``select``);
each step's wall-clock seconds are recorded, and beside them the bare cost of starting a
``plmexit`` process and of importing torch, so start-up can be told from work. With
``--sommelier-python`` (an interpreter that has PLMSommelier installed, in its own venv), the same
CSV and weights go through ``plmsommelier suggest`` (its embedding and probing, end to end).

    python benchmarks/chain_deeploc.py --out benchmarks/results/chain_deeploc.json
    python benchmarks/chain_deeploc.py --n 60 --layers 4 --dim 64 --heads 4 --out chain.json   # a quick check
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "deeploc"
FILES = ("deeploc_our_val_set.fasta", "deeploc_test_set.fasta")
HEADER = re.compile(r"^>(?P<id>\S+)\s+(?P<location>\S+)-(?P<membrane>[MSU])")  # DeepLoc 1.0: ">ACCESSION Location-M|S|U [test]"
MIN_CLASS = 10  # members a class needs in the sample to be kept (as config/test.yaml's DeepLoc task)
STEPS = ("prepare", "fetch_model", "embed", "cost", "probe", "select")


def read_deeploc(path: Path) -> list[tuple[str, str, str]]:
    records, name, label, chunks = [], None, None, []
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            if name is not None:
                records.append((name, "".join(chunks), label))
            match = HEADER.match(line)
            name, label, chunks = match["id"], match["location"], []
        else:
            chunks.append(line.strip())
    if name is not None:
        records.append((name, "".join(chunks), label))
    return records


def write_task_csv(path: Path, n: int, seed: int) -> dict:
    """Seeded sample of ``n`` DeepLoc proteins, from classes common enough to give ``MIN_CLASS`` members."""
    records = [r for f in FILES for r in read_deeploc(DATA / f)]
    labels = np.array([r[2] for r in records])
    classes, counts = np.unique(labels, return_counts=True)
    kept = set(classes[counts / len(records) * n >= MIN_CLASS]) | set(classes[np.argsort(-counts)[:2]])  # two at least, for small --n
    pool = [r for r in records if r[2] in kept]
    rows = np.sort(np.random.default_rng(seed).choice(len(pool), size=min(n, len(pool)), replace=False))
    lines = ["id,sequence,label"] + [f"{pool[i][0]},{pool[i][1]},{pool[i][2]}" for i in rows]
    path.write_text("\n".join(lines) + "\n")
    lengths = np.array([len(pool[i][1]) for i in rows])
    return {"rows": len(rows), "classes": sorted(kept), "residues": int(lengths.sum()), "median_length": float(np.median(lengths)),
            "max_length": int(lengths.max()), "longer_than_1022": int((lengths > 1022).sum()), "source": [str(DATA / f) for f in FILES]}


def timed(command: list[str], env: dict, log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as handle:
        done = subprocess.run(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{shlex.join(command)} failed ({done.returncode}); see {log}")
    return seconds


def run_snakemake(work: Path, checkpoint: str, args, env: dict) -> dict:
    """The chain as the pipeline runs it: one Snakemake run up to the task's selection JSON."""
    repo = Path(__file__).resolve().parents[1]
    config = work / "snakemake.yaml"
    config.write_text(json.dumps({
        "seed": args.seed,
        "pathvars": {"results": "results"},
        "models": [{"id": "esm2_35m_random", "checkpoint": checkpoint}],
        "tasks": [{"id": "deeploc", "kind": "csv", "type": "classification", "metric": "accuracy", "path": str(work / "deeploc.csv"), "id_column": "id"}],
    }))
    target = "results/selection/esm2_35m_random/deeploc.json"
    command = [str(Path(sys.executable).parent / "snakemake"), target, "--snakefile", str(repo / "Snakefile"), "--directory", str(work / "snakemake"),
               "--configfile", str(config), "--cores", str(args.threads)]
    (work / "snakemake").mkdir(exist_ok=True)
    s_env = {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}
    total = timed(command, s_env, work / "snakemake.out")
    # Each job's start ("[date]" then "rule X:") and end ("[date]" then "Finished jobid: N (Rule: X)"), to the second.
    lines = (work / "snakemake.out").read_text().splitlines()
    started, rules = {}, {}
    for stamp, line in zip(lines, lines[1:]):
        if not re.fullmatch(r"\[\w{3} \w{3} +\d+ [\d:]{8} \d{4}\]", stamp.strip()):
            continue
        when = datetime.datetime.strptime(stamp.strip(), "[%a %b %d %H:%M:%S %Y]")
        if (match := re.match(r"\s*(?:local)?rule (\w+):", line)):
            started[match[1]] = when
        elif (match := re.search(r"Finished jobid: \d+ \(Rule: (\w+)\)", line)):
            rules[match[1]] = (when - started.pop(match[1])).total_seconds()
    return {"command": shlex.join(command), "total_s": total, "rules_s": rules, "rules_sum_s": sum(rules.values()),
            "note": "rule times from Snakemake's own log, to the second; total minus their sum is Snakemake's start-up, DAG and scheduling"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="DeepLoc proteins (default 300)")
    parser.add_argument("--layers", type=int, default=12, help="model layers (default 12, ESM2-35M)")
    parser.add_argument("--dim", type=int, default=480, help="model width (default 480)")
    parser.add_argument("--heads", type=int, default=20, help="attention heads (default 20)")
    parser.add_argument("--threads", type=int, default=2, help="threads of the embed, cost and probe steps (the rules' default, 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--src", help="plmexit source directory to run (default: this checkout's src), e.g. an older commit's for a before/after")
    parser.add_argument("--sommelier-python", help="python of a venv with PLMSommelier installed: also time `plmsommelier suggest` on the same CSV and weights")
    parser.add_argument("--sommelier-probe", default="knn", choices=["knn", "lr"], help="PLMSommelier's probe (default knn, its default)")
    parser.add_argument("--snakemake", action="store_true",
                        help="also run the same chain as one Snakemake run of this repository's Snakefile (a csv task, the same checkpoint) "
                        "up to the selection, and record its wall time (Snakemake's own overhead: the difference from the steps' sum)")
    parser.add_argument("--keep", help="directory to work in and keep (default: a temporary one)")
    parser.add_argument("--out", required=True, help="JSON to write")
    args = parser.parse_args(argv)

    src = Path(args.src or Path(__file__).resolve().parents[1] / "src").resolve()
    env = {**os.environ, "PYTHONPATH": str(src)}
    plmexit = [sys.executable, "-c", "import sys; from plmexit.cli import main; sys.exit(main())"]
    version = subprocess.run([*plmexit, "--version"], env=env, capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = write_task_csv(work / "deeploc.csv", args.n, args.seed)
        checkpoint = subprocess.run([*plmexit, "make-test-model", "--layers", str(args.layers), "--dim", str(args.dim), "--heads", str(args.heads),
                                     "--out", str(work)], env=env, capture_output=True, text=True, check=True).stdout.strip()
        hf_dir = work / "hf_model"
        subprocess.run([*plmexit, "convert-model", "--checkpoint", checkpoint, "--out", str(hf_dir)], env=env, capture_output=True, text=True, check=True)

        # Start-up alone: a plmexit process that parses its arguments and exits; importing torch.
        startup = {
            "plmexit_version_s": timed([*plmexit, "--version"], env, work / "version.log"),
            "import_torch_s": timed([sys.executable, "-c", "import torch"], env, work / "torch.log"),
            "import_engine_s": timed([sys.executable, "-c", "import plmexit.pipeline.model_steps"], env, work / "engine.log"),
        }
        threads = str(args.threads)
        w = str(work)
        commands = {
            "prepare": ["prepare", "--name", "deeploc", "--format", "csv", "--path", f"{w}/deeploc.csv", "--id-column", "id", "--type", "classification",
                        "--seed", str(args.seed), "--out", f"{w}/task.tsv", "--info-out", f"{w}/task.json"],
            "fetch_model": ["fetch-model", "--checkpoint", checkpoint, "--id", "esm2_35m_random", "--out", f"{w}/model.json"],
            "embed": ["embed", "--model", f"{w}/model.json", "--task", f"{w}/task.tsv", "--device", "cpu", "--threads", threads, "--no-progress",
                      "--out", f"{w}/embeddings.h5"],
            "cost": ["cost", "--model", f"{w}/model.json", "--task", f"{w}/task.tsv", "--device", "cpu", "--threads", threads, "--seed", str(args.seed),
                     "--out", f"{w}/cost.json"],
            "probe": ["probe", "--embeddings", f"{w}/embeddings.h5", "--task", f"{w}/task.tsv", "--type", "classification", "--metric", "accuracy",
                      "--model-id", "esm2_35m_random", "--task-name", "deeploc", "--threads", threads, "--seed", str(args.seed),
                      "--out", f"{w}/probes.tsv", "--predictions", f"{w}/predictions.tsv.gz"],
            "select": ["select", "--probes", f"{w}/probes.tsv", "--predictions", f"{w}/predictions.tsv.gz", "--cost", f"{w}/cost.json",
                       "--task-info", f"{w}/task.json", "--type", "classification", "--metric", "accuracy", "--seed", str(args.seed),
                       "--out", f"{w}/selection.json"],
        }
        seconds = {step: timed([*plmexit, "--log", f"{w}/{step}.log", *commands[step]], env, work / f"{step}.out") for step in STEPS}
        cost = json.loads((work / "cost.json").read_text())
        selection = json.loads((work / "selection.json").read_text())
        result = {
            "benchmark": "chain_deeploc",
            "command": shlex.join([sys.executable, *sys.argv] if argv is None else [sys.executable, __file__, *argv]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                        "load_average_at_start": os.getloadavg()},
            "threads": args.threads,
            "plmexit": {"version": version, "src": str(src)},
            "model": {"architecture": "ESM2", "layers": args.layers, "dim": args.dim, "heads": args.heads, "weights": "random (plmexit make-test-model)"},
            "data": data,
            "startup": startup,
            "steps_s": seconds,
            "total_s": sum(seconds.values()),
            "steps": {step: shlex.join(["plmexit", *commands[step]]) for step in STEPS},
            "cost": {key: cost.get(key) for key in ("timed", "sample_sequences", "sample_tokens", "repeats", "seconds")},
            "selection": {key: selection.get(key) for key in ("deployed_layer", "deployed_time_saved")},
        }
        if args.snakemake:
            result["snakemake"] = run_snakemake(work, checkpoint, args, env)
        if args.sommelier_python:
            # its launcher's flags (--json) come before the command
            sommelier = [args.sommelier_python, "-m", "plmsommelier.cli", "--json", f"{w}/sommelier.json", "suggest", f"{w}/deeploc.csv", str(hf_dir),
                         "--label-col", "label", "--task", "classification", "--probe", args.sommelier_probe, "--device", "cpu", "--no-progress"]
            s_env = {**os.environ, "OMP_NUM_THREADS": threads}
            s_env.pop("PYTHONPATH", None)
            total = timed(sommelier, s_env, work / "sommelier.out")
            chosen = json.loads((work / "sommelier.json").read_text())
            result["plmsommelier"] = {"command": shlex.join(sommelier), "total_s": total, "threads": args.threads,
                                      "best_layer": chosen.get("best_layer"), "n_train": chosen.get("n_train"), "n_val": chosen.get("n_val")}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"steps_s": seconds, "total_s": result["total_s"], **({"plmsommelier_s": result["plmsommelier"]["total_s"]} if args.sommelier_python else {})}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
