"""The study config (config/study.yaml) plans the whole paper: its DAG, job counts per rule.

It cannot run here (five ESM2 sizes, 217 assays, GPUs); its plan can. The files a user stages by
hand (ProteinGym's unpacked assay zip, DeepLoc's and DeepSol's training files) are empty
placeholders, and the official files come from the shared data instead of a download: nothing
else of the shipped config changes. The checkpoint that chooses the assays runs for real.
"""

from __future__ import annotations

import re

import pandas as pd
import yaml

from workflow_runs import REPO, snakemake

STUDY = REPO / "config" / "study.yaml"


def job_counts(log: str) -> dict[str, int]:
    """Snakemake's "Job stats" table of a dry run as {rule: count}."""
    table = log[log.index("Job stats:") :].split("\n\n")[0]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE) if rule != "total"}


def test_the_study_plans_every_model_task_and_assay(tmp_path, shared_data):
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
    dry = snakemake(tmp_path, "--configfile", str(tmp_path / "config.yaml"), "--dry-run", "--quiet", "rules")
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
        "plot_depth_exit": models,
        "all": 1,
    }
