"""The study config (config/study.yaml) plans the whole paper: its DAG, job counts per rule.

It cannot run here (five ESM2 sizes, 217 assays, GPUs); its plan can, with the SLURM profile's job
groups too: the submissions a cluster would get are read from Snakemake's own DAG by
tests/submissions.py (its dry-run executor, group resources as a remote executor computes them).
The files a user stages by
hand (ProteinGym's unpacked assay zip, DeepLoc's and DeepSol's training files) are empty
placeholders, and the official files come from the shared data instead of a download: nothing
else of the shipped config changes. The checkpoint that chooses the assays runs for real.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter

import pandas as pd
import yaml

from plmexit.pipeline.slurm_profile import install_profile

from workflow_runs import REPO, snakemake, snakemake_env

STUDY = REPO / "config" / "study.yaml"


def job_counts(log: str) -> dict[str, int]:
    """Snakemake's "Job stats" table of a dry run as {rule: count}."""
    table = log[log.index("Job stats:") :].split("\n\n")[0]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE) if rule != "total"}


def test_the_study_plans_every_model_task_and_assay(tmp_path, shared_data, monkeypatch):
    config = yaml.safe_load(STUDY.read_text())
    config["data"] = {"local_dir": str(shared_data)}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    proteingym = next(t for t in config["tasks"] if t["kind"] == "proteingym")
    assays = pd.read_csv(shared_data / "proteingym" / "reference_files" / "DMS_substitutions.csv")["DMS_id"].tolist()
    staged = tmp_path / proteingym["assay_dir"]
    staged.mkdir(parents=True)
    for dms_id in assays:
        (staged / f"{dms_id}.csv").touch()
    for task in config["tasks"]:
        for key in ("path", "labels_path", "test_path", "test_labels_path"):
            if task.get(key, "").startswith("staged/"):
                (tmp_path / task[key]).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / task[key]).touch()

    results = config["pathvars"]["results"]
    chosen = snakemake(tmp_path, "--configfile", str(tmp_path / "config.yaml"), "--cores", "1", f"{results}/assays/proteingym.txt")
    assert chosen.returncode == 0, chosen.stderr[-3000:]
    assert (tmp_path / results / "assays" / "proteingym.txt").read_text().split() == assays
    started = time.monotonic()
    dry = snakemake(tmp_path, "--configfile", str(tmp_path / "config.yaml"), "--dry-run", "--quiet", "rules")
    plain_seconds = time.monotonic() - started
    assert dry.returncode == 0, dry.stderr[-3000:]

    models, schemes, others = len(config["models"]), 3, len(config["tasks"]) - 1
    tasks = len(assays) * schemes + others  # a ProteinGym task is an assay under one fold scheme
    stores = len(assays) + others  # an assay's three schemes share one embedding
    assert len(assays) == 217
    assert job_counts(dry.stdout + dry.stderr) == {
        "fetch_model": models,
        "fetch_data": 5,  # DeepLoc's test set, DeepFRI's three EC files, FLIP's GB1 splits (the reference table is in place)
        "prepare_task": tasks,
        "embed_shard": models * stores * config["embed"]["shards"],
        "gather_embeddings": models * stores,
        "measure_cost": models * stores,
        "probe_layers": models * tasks,
        "select_layer": models * tasks,
        "plot_layers": models * tasks,
        "logit_lens": models * len(config["depth"]["lens_tasks"]),
        "zero_shot": models * len(assays),
        "summarize_layers": 1,
        "summarize_proteingym": 1,
        "summarize_depth": 1,
        "plot_summary": 1,
        "plot_depth": 1,
        "plot_study": 1,
        # Every task with a depth diagnostic: the lens task, and every assay's schemes (zero-shot).
        "plot_task_depth": models * (len(config["depth"]["lens_tasks"]) + len(assays) * schemes),
        # Early exit on every task but ProteinGym's, and per model its depth diagnostics and exit in one figure.
        "exit_task": models * len(config["exit"]["tasks"]),
        "summarize_exit": 1,
        "plot_exit": models * len(config["exit"]["tasks"]),
        "time_exit": models * len(config["exit"]["tasks"]),  # measured wall clock (exit.timing_sequences)
        "plot_depth_exit": models,
        "all": 1,
    }

    # On SLURM (the profile as installed, by name): a task's probe, selection and figures are one group
    # of jobs, one submission; everything else one submission a job, but the local rules.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    install_profile(REPO / "profiles" / "slurm" / "config.yaml", "lab", "gpu", "a100")
    out = tmp_path / "submissions.jsonl"
    started = time.monotonic()
    grouped = subprocess.run(
        [sys.executable, str(REPO / "tests" / "submissions.py"), str(out), "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
         "--profile", "slurm", "--configfile", str(tmp_path / "config.yaml"), "--dry-run", "--quiet", "rules"],
        cwd=tmp_path, capture_output=True, text=True, env=snakemake_env(), timeout=1200,
    )
    grouped_seconds = time.monotonic() - started
    assert grouped.returncode == 0, grouped.stderr[-3000:]
    submissions = [json.loads(line) for line in out.read_text().splitlines()]
    submissions = [s for s in submissions if not s["local"]]
    groups = [s for s in submissions if s["group"]]
    depth_tasks = len(config["depth"]["lens_tasks"]) + len(assays) * schemes
    assert Counter(s["group"] for s in groups) == {"task": models * tasks}
    assert Counter(tuple(sorted(s["rules"])) for s in groups) == {
        ("plot_layers", "plot_task_depth", "probe_layers", "select_layer"): models * depth_tasks,
        ("plot_layers", "probe_layers", "select_layer"): models * (tasks - depth_tasks),
    }
    assert all(set(s["rules"].values()) == {1} for s in groups)  # one probe a group: its run time is one probe's
    # Each group asks for the probe's CPUs and memory (its selection and figures run after it):
    # the jobs are layered within the profile's 8 cores, not summed.
    assert {(s["cpus"], s["mem_mb"]) for s in groups} == {(8, 16000)}
    ungrouped = Counter(rule for s in submissions if not s["group"] for rule in s["rules"])
    assert ungrouped == {
        rule: count for rule, count in job_counts(dry.stdout + dry.stderr).items()
        if rule not in ("fetch_model", "fetch_data", "all", "probe_layers", "select_layer", "plot_layers", "plot_task_depth")
    }
    jobs = sum(job_counts(dry.stdout + dry.stderr).values())
    assert (jobs, len(submissions)) == (21665, 21665 - 11 - 2 * models * tasks - models * depth_tasks)
    # Grouping costs the planning little (both timed here; on a 2-core machine under a load of 10,
    # 195 s and 408 s; quiet, 40 s and 60 s: the recording of 11,824 submissions included).
    assert grouped_seconds < 3 * plain_seconds + 60, (plain_seconds, grouped_seconds)
    print(f"planned in {plain_seconds:.0f} s, with the profile's groups in {grouped_seconds:.0f} s; {len(submissions)} submissions")
