"""Planning speed: how long Snakemake takes to plan the study (config/study.yaml), plain and with the SLURM profile's groups.

The set-up is tests/pipeline/test_study.py's: the study config with the pinned files read from the
shared data, the hand-staged files as empty placeholders, the ``choose_assays`` checkpoint run for real
(not timed), ESM2-3B's shards present (sparse) so that the probes' run times are known. Then, timed:

- plain: ``snakemake --dry-run --quiet rules`` on the study config;
- grouped: the same with ``--profile slurm`` (the shipped profile installed under a private
  ``XDG_CONFIG_HOME``), run through ``tests/submissions.py`` as the test does, so each submission's
  group resources are computed as a cluster executor computes them.

Each is timed by wall clock and by the CPU time (user + sys) of the Snakemake process, so a loaded
machine shows as wall time above CPU time. With ``--collections`` the plain plan runs twice more, counting
Python's cycle collections and the time they take (``gc.callbacks``): at the interpreter's own thresholds
(``snakemake_speed.collect_cycles_less_often`` turned off) and as the Snakefile sets them. ``--repo`` names the checkout whose Snakefile, tests and
``src`` (first on PYTHONPATH) are timed, so one script times two checkouts back to back:

    python benchmarks/planning_speed.py --out planning_speed.json
    python benchmarks/planning_speed.py --repo ../main --label before --out before.json
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def stage(repo: Path, workdir: Path, shared_data: Path) -> Path:
    """The study config and its placeholders in ``workdir`` (as test_study does); returns the config's path."""
    config = yaml.safe_load((repo / "config" / "study.yaml").read_text())
    config["data"] = {"local_dir": str(shared_data)}
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    # ProteinGym's assays come from its released archive, planned (fetch_archive, stage_assay), not fetched.
    with open(shared_data / "proteingym" / "reference_files" / "DMS_substitutions.csv", newline="") as handle:
        reference = list(csv.DictReader(handle))
    for task in config["tasks"]:
        for key in ("path", "labels_path", "test_path", "test_labels_path"):
            if task.get(key, "").startswith("staged/"):
                (workdir / task[key]).parent.mkdir(parents=True, exist_ok=True)
                (workdir / task[key]).touch()
    # ESM2-3B's shards at the size its embeddings will have (sparse), as the test writes them.
    e, results = config["embed"], config["pathvars"]["results"]
    for row in reference:
        rows, length = int(row["DMS_number_single_mutants"]), int(row["seq_len"])
        shards = max(1, min(e["shards"], -(-rows * (length + 2) // e["shard_tokens"])))
        for k in range(shards):
            shard = workdir / results / "embeddings" / "esm2_3B" / f"{row['DMS_id']}.shards" / f"{k}-of-{shards}.h5"
            shard.parent.mkdir(parents=True, exist_ok=True)
            with open(shard, "wb") as handle:
                handle.truncate(rows * 37 * 2560 * 4 // shards)
    return path


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> dict:
    """Run ``command``; its wall time and its CPU time (user + sys of the process and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    run = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if run.returncode != 0:
        raise SystemExit(f"planning_speed: {' '.join(command)} failed:\n{run.stderr[-3000:]}")
    jobs = next((line.split()[-1] for line in (run.stdout + run.stderr).splitlines() if line.startswith("total")), None)
    return {
        "wall_s": round(wall, 2),
        "user_s": round(after.ru_utime - before.ru_utime, 2),
        "sys_s": round(after.ru_stime - before.ru_stime, 2),
        "cpu_s": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 2),
        "jobs": int(jobs) if jobs else None,
    }


# Snakemake's entry point with Python's cycle collections counted; argv: out.json, mode (interpreter | plmexit), snakemake args.
COUNTING = """
import gc, json, sys, time, runpy
from plmexit.pipeline import snakemake_speed
out, mode = sys.argv[1], sys.argv[2]
if mode == "interpreter":
    snakemake_speed.collect_cycles_less_often = lambda: None  # plan_faster finds it in its module when the Snakefile loads
spent, started = [0.0, 0], [0.0]
def count(phase, info):
    if phase == "start":
        started[0] = time.perf_counter()
    else:
        spent[0] += time.perf_counter() - started[0]
        spent[1] += 1
gc.callbacks.append(count)
sys.argv = ["snakemake", *sys.argv[3:]]
began = time.perf_counter()
try:
    runpy.run_module("snakemake", run_name="__main__")
finally:
    with open(out, "w") as handle:
        json.dump({"collections": spent[1], "collector_s": round(spent[0], 2), "snakemake_s": round(time.perf_counter() - began, 2),
                   "thresholds": list(gc.get_threshold())}, handle)
"""


def collections(snakemake_args: list[str], workdir: Path, env: dict[str, str]) -> dict:
    """The plain plan at the interpreter's collection thresholds and at the Snakefile's: collections, their seconds, the run's."""
    result = {}
    for mode in ("interpreter", "plmexit"):
        out = workdir / f"collections_{mode}.json"
        run = subprocess.run([sys.executable, "-c", COUNTING, str(out), mode, *snakemake_args], cwd=workdir, env=env, capture_output=True, text=True, timeout=3600)
        if run.returncode != 0:
            raise SystemExit(f"planning_speed: the counted plan ({mode}) failed:\n{run.stderr[-3000:]}")
        result[mode] = json.loads(out.read_text())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=HERE, help="checkout whose Snakefile and src are timed (default: this one)")
    parser.add_argument("--shared-data", type=Path, default=HERE.parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each (the checkpoint runs once)")
    parser.add_argument("--skip-grouped", action="store_true", help="time the plain plan only")
    parser.add_argument("--collections", action="store_true", help="also count Python's cycle collections in the plain plan, with and without the Snakefile's thresholds")
    parser.add_argument("--label", default="", help="a name for this checkout in the output (before, after, a commit)")
    parser.add_argument("--keep", type=Path, help="stage in this directory and keep it (default: a temporary one, removed)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    load_before = list(os.getloadavg())
    repo = args.repo.resolve()
    workdir = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="planning_speed_"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(repo / "src"),
        "XDG_CONFIG_HOME": str(workdir / "xdg"),
    }
    snakemake = [sys.executable, "-m", "snakemake", "--snakefile", str(repo / "Snakefile"), "--directory", str(workdir)]
    try:
        config = stage(repo, workdir, args.shared_data.resolve())
        results = yaml.safe_load(config.read_text())["pathvars"]["results"]
        subprocess.run(
            [sys.executable, "-c", "import sys; from plmexit.pipeline.slurm_profile import install_profile; install_profile(*sys.argv[1:], 'lab', 'cpu', 'gpu')",
             str(repo / "profiles" / "slurm" / "config.yaml")],
            env=env, check=True,
        )
        checkpoint = timed([*snakemake, "--configfile", str(config), "--cores", "1", f"{results}/assays/proteingym.tsv"], workdir, env)
        runs: dict[str, list[dict]] = {"plain": [], "grouped": []}
        counted = None
        for _ in range(args.repeats):
            runs["plain"].append(timed([*snakemake, "--configfile", str(config), "--dry-run", "--quiet", "rules"], workdir, env))
            if not args.skip_grouped:
                runs["grouped"].append(timed(
                    [sys.executable, str(repo / "tests" / "submissions.py"), str(workdir / "submissions.jsonl"), "--snakefile", str(repo / "Snakefile"),
                     "--directory", str(workdir), "--profile", "slurm", "--configfile", str(config), "--dry-run", "--quiet", "rules"],
                    workdir, env,
                ))
        if args.collections:
            counted = collections(["--snakefile", str(repo / "Snakefile"), "--directory", str(workdir), "--configfile", str(config), "--dry-run", "--quiet", "rules"],
                                  workdir, env)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "src", "workflow", "Snakefile"], capture_output=True, text=True).stdout.strip())
    result = {
        "benchmark": "planning_speed",
        "label": args.label,
        "repo": str(repo),
        "commit": commit + ("+changes" if dirty else ""),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "python": platform.python_version(),
        "checkpoint_run": checkpoint,
        **{name: {"runs": r, "best_wall_s": min(x["wall_s"] for x in r), "best_cpu_s": min(x["cpu_s"] for x in r)} for name, r in runs.items() if r},
        **({"collections": counted} if counted else {}),
        "load_average_after": list(os.getloadavg()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
