"""The study config (config/study.yaml) plans the whole paper: its DAG, job counts per rule.

It cannot run here (five ESM2 sizes, 217 assays, GPUs); its plan can, with the SLURM profile's job
groups too: the submissions a cluster would get are read from Snakemake's own DAG by
tests/submissions.py (its dry-run executor, group resources as a remote executor computes them).
The files a user stages by
hand (DeepLoc's and DeepSol's training files) are empty placeholders, and the pinned files come
from the shared data instead of a download (ProteinGym's archive is planned, not fetched): nothing
else of the shipped config changes. The checkpoint that chooses the assays runs for real.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from collections import Counter

import pandas as pd
import pytest
import yaml

from plmexit.pipeline.slurm_profile import install_profile

from workflow_runs import REPO, snakemake, snakemake_env

pytestmark = pytest.mark.workflow

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
    reference = pd.read_csv(shared_data / "proteingym" / "reference_files" / "DMS_substitutions.csv")
    assays = reference["DMS_id"].tolist()
    assert proteingym["archive"] == "cv_folds_singles_substitutions"
    for task in config["tasks"]:
        for key in ("path", "labels_path", "test_path", "test_labels_path"):
            if task.get(key, "").startswith("staged/"):
                (tmp_path / task[key]).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / task[key]).touch()

    results = config["pathvars"]["results"]
    choice = snakemake(tmp_path, "--configfile", str(tmp_path / "config.yaml"), "--cores", "1", f"{results}/assays/proteingym.tsv")
    assert choice.returncode == 0, choice.stderr[-3000:]
    listed = pd.read_csv(tmp_path / results / "assays" / "proteingym.tsv", sep="\t")
    assert listed["DMS_id"].tolist() == assays
    assert listed["single_mutants"].tolist() == reference["DMS_number_single_mutants"].tolist()
    assert listed["seq_len"].tolist() == reference["seq_len"].tolist()
    started = time.monotonic()
    dry = snakemake(tmp_path, "--configfile", str(tmp_path / "config.yaml"), "--dry-run", "--quiet", "rules")
    plain_seconds = time.monotonic() - started
    assert dry.returncode == 0, dry.stderr[-3000:]

    models, schemes, others = len(config["models"]), 3, len(config["tasks"]) - 1
    assay_batches = batches_of(reference["DMS_number_single_mutants"].tolist(), schemes, config["schedule"]["batch_rows"], config["schedule"]["batch_sets"])
    # An assay's shards: a shard per embed.shard_tokens of its tokens (single mutants times length plus two), 1 to embed.shards.
    e = config["embed"]
    tokens = reference["DMS_number_single_mutants"] * (reference["seq_len"] + 2)
    assay_shards = dict(zip(assays, (-(-tokens // e["shard_tokens"])).clip(1, e["shards"])))
    tasks = len(assays) * schemes + others  # a ProteinGym task is an assay under one fold scheme
    stores = len(assays) + others  # an assay's three schemes share one embedding
    assert len(assays) == 217
    # A model's GPU batches (schedule.gpu_batch_minutes): each assay with all its GPU jobs, timed from their tokens.
    gpu = {m["id"]: gpu_batches_of(reference, list(assay_shards.values()), m["name"], config) for m in config["models"]}
    assert job_counts(dry.stdout + dry.stderr) == {
        "fetch_model": models,
        "fetch_data": 5,  # DeepLoc's test set, DeepFRI's three EC files, FLIP's GB1 splits (the reference table is in place)
        "fetch_archive": 1,  # ProteinGym's cv_folds_singles_substitutions.zip
        "stage_assay": len(assays),  # each assay out of it, checked against the reference table
        "prepare_task": tasks,
        "embed_shard": models * (sum(assay_shards.values()) + others * e["shards"]),
        "gather_embeddings": models * stores,
        "measure_cost": models * stores,
        "probe_layers": models * tasks,
        "select_layer": models * tasks,  # each with its task's figure (beside its lens or zero-shot curves where it has them)
        "logit_lens": models * len(config["depth"]["lens_tasks"]),
        "zero_shot": models * len(assays),
        "summarize_layers": 1,
        "summarize_proteingym": 1,
        "summarize_resources": 1,
        "summarize_depth": 1,
        "plot_summary": 1,
        "plot_depth": 1,
        "plot_study": 1,
        # Early exit on every task but ProteinGym's, and per model its depth diagnostics and exit in one figure.
        "exit_task": models * len(config["exit"]["tasks"]),
        "summarize_exit": 1,
        "plot_exit": models * len(config["exit"]["tasks"]),
        "time_exit": models * len(config["exit"]["tasks"]),  # measured wall clock (exit.timing_sequences)
        "plot_depth_exit": models,
        # A cluster batch of several assays (schedule) has a best-layer table; every other set is a batch of its own.
        "summarize_batch": models * sum(len(b) > 1 for b in assay_batches),
        "summarize_gpu_batch": sum(len(batches) for batches, _ in gpu.values()),  # a table per GPU batch
        "all": 1,
    }

    # On SLURM (the profile as installed, by name): a model's CPU steps run in batches (schedule), one
    # group of jobs each: the gathering of each set's shards, and its tasks' probes, selections and figures.
    # ESM2-3B's shards are there, sparse, at the size its embeddings will have, so that the batches' run
    # times are the ones a real run asks for.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    install_profile(REPO / "profiles" / "slurm" / "config.yaml", account="lab", cpu_partition="cpu", gpu_partition="gpu")
    for dms_id, rows in zip(assays, reference["DMS_number_single_mutants"]):
        shards = assay_shards[dms_id]
        for k in range(shards):  # 37 layers (the embeddings and 36 blocks), 2,560 wide, float32
            shard = tmp_path / results / "embeddings" / "esm2_3B" / f"{dms_id}.shards" / f"{k}-of-{shards}.h5"
            shard.parent.mkdir(parents=True, exist_ok=True)
            with open(shard, "wb") as handle:
                handle.truncate(rows * 37 * 2560 * 4 // shards)
    out = tmp_path / "submissions.jsonl"
    started = time.monotonic()
    grouped = subprocess.run(
        [sys.executable, str(REPO / "tests" / "submissions.py"), str(out), "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
         "--profile", "slurm", "--configfile", str(tmp_path / "config.yaml"), "--dry-run", "--quiet", "rules"],
        cwd=tmp_path, capture_output=True, text=True, env=snakemake_env(),
    )
    grouped_seconds = time.monotonic() - started
    assert grouped.returncode == 0, grouped.stderr[-3000:]
    submissions = [json.loads(line) for line in out.read_text().splitlines()]
    submissions = [s for s in submissions if not s["local"]]
    groups = [s for s in submissions if s["group"] and s["group"].startswith("batch.")]
    gpu_groups = [s for s in submissions if s["group"] and s["group"].startswith("gpu.")]
    assert len(groups) + len(gpu_groups) == sum(1 for s in submissions if s["group"])
    # An assay over the row budget is a batch of its own, gathered on its own, each of its tasks a group:
    # no submission grows past what one task needs.
    alone = [b for b in assay_batches if schemes * sum(b) > config["schedule"]["batch_rows"]]
    batches = len(assay_batches) + others  # per model; the other tasks' sets are batches of their own
    assert Counter(s["group"].rsplit(".", 1)[0] for s in groups) == {f"batch.{m['id']}": batches + (schemes - 1) * len(alone) for m in config["models"]}
    assert sorted(s["rules"].get("gather_embeddings", 0) for s in groups) == sorted(
        [len(b) for b in assay_batches if b not in alone] * models + [1] * others * models + [0] * schemes * len(alone) * models
    )
    in_groups = Counter()
    for s in groups:
        in_groups.update(s["rules"])
    assert in_groups == {
        "gather_embeddings": models * (stores - len(alone)), "probe_layers": models * tasks, "select_layer": models * tasks,
        "summarize_batch": models * sum(len(b) > 1 for b in assay_batches),
    }
    # Each group asks for the probe's CPUs (8, layered within the profile's 8 cores) and the memory of its
    # widest layer; for as long as its jobs take one after another.
    assert {s["cpus"] for s in groups} == {8}
    hours = {s["group"]: s["runtime"] / 60 for s in groups if s["group"].startswith("batch.esm2_3B.")}
    longest = max(hours.values())
    # Within a day, the time limit of many clusters' CPU partitions (a lower limit: lower schedule.batch_rows).
    assert longest < 24, hours

    # A model's GPU steps run in GPU batches, one submission and one GPU each: every shard, the cost timing and the
    # zero-shot job of each of its assays, then its table. They run one after another: each asks for the group's
    # 8 cores, so the submission asks for one GPU and the sum of its jobs' run times, within the limit.
    limit = config["schedule"]["gpu_batch_minutes"]
    for model, (batches, alone_gpu) in gpu.items():
        mine = [s for s in gpu_groups if s["group"].rsplit(".", 1)[0] == f"gpu.{model}"]
        assert sorted((json.dumps(s["rules"], sort_keys=True), s["runtime"]) for s in mine) == sorted(
            (json.dumps({"embed_shard": sum(n for _, n in b), "measure_cost": len(b), "zero_shot": len(b), "summarize_gpu_batch": 1}, sort_keys=True), sum(m for m, _ in b) + 1)
            for b in batches
        )
    assert {(s["cpus"], s["gpu"], s["mem_mb"]) for s in gpu_groups} == {(8, 1, 32000)}
    longest_gpu = max(s["runtime"] for s in gpu_groups)
    assert longest_gpu <= limit, longest_gpu

    ungrouped = Counter(rule for s in submissions if not s["group"] for rule in s["rules"])
    local = ("fetch_model", "fetch_data", "fetch_archive", "stage_assay", "prepare_task", "all")
    in_gpu_groups = Counter()
    for s in gpu_groups:
        in_gpu_groups.update(s["rules"])
    alone_shards = sum(sum(assay_shards[a] for a in alone_gpu) for _, alone_gpu in gpu.values())
    alone_assays = sum(len(alone_gpu) for _, alone_gpu in gpu.values())
    in_groups_only = (*local, *in_groups, "summarize_gpu_batch")
    assert ungrouped == {rule: count for rule, count in job_counts(dry.stdout + dry.stderr).items() if rule not in in_groups_only} | {
        "gather_embeddings": models * len(alone),
        # The sets whose size is not known while planning, and the assays whose jobs alone take longer than the limit.
        "embed_shard": models * others * e["shards"] + alone_shards,
        "measure_cost": models * others + alone_assays,
        "zero_shot": alone_assays,
    }
    assert in_gpu_groups["summarize_gpu_batch"] == len(gpu_groups)
    gpu_rules = ("embed_shard", "measure_cost", "logit_lens", "zero_shot", "time_exit", "exit_lens")
    cpu = len(groups) + sum(count for rule, count in ungrouped.items() if rule not in gpu_rules)
    assert cpu < 500, cpu  # a few hundred CPU submissions
    on_gpus = len(gpu_groups) + sum(count for rule, count in ungrouped.items() if rule in gpu_rules)
    assert cpu + on_gpus == len(submissions)
    assert on_gpus < 400, on_gpus  # a few hundred GPU submissions
    jobs = sum(job_counts(dry.stdout + dry.stderr).values())
    # Grouping costs the planning little (both timed here: 56 s and 90 s on 2 cores beside a CI run, the
    # recording of every submission included).
    assert grouped_seconds < 3 * plain_seconds + 60, (plain_seconds, grouped_seconds)
    # The numbers docs/slurm.md quotes (`pytest -s tests/pipeline/test_study.py`).
    print(
        f"planned {jobs} jobs in {plain_seconds:.0f} s, with the profile's groups in {grouped_seconds:.0f} s; {len(submissions)} submissions: "
        f"{cpu} on CPU nodes ({len(groups)} groups, ungrouped {dict(sorted((r, n) for r, n in ungrouped.items() if r not in gpu_rules))}), "
        f"{on_gpus} on GPU nodes ({len(gpu_groups)} GPU batches {dict(Counter(s['group'].rsplit('.', 1)[0] for s in gpu_groups))}, "
        f"ungrouped {dict(sorted((r, n) for r, n in ungrouped.items() if r in gpu_rules))}); "
        f"{in_groups['summarize_batch']} batch tables; ESM2-3B's longest submission asks for {longest:.1f} h, the longest GPU batch {longest_gpu / 60:.1f} h"
    )


def gpu_batches_of(reference: pd.DataFrame, shards: list[int], name: str, config: dict) -> tuple[list[list[tuple[int, int]]], list[str]]:
    """One model's GPU batches as config schedule describes them, each a list of (minutes of all its GPU jobs, shards)
    per assay, and the assays whose jobs alone take longer than the limit. A job takes 3 minutes and its tokens at
    schedule.gpu_tflops, two FLOPs per weight per token (the size in fair-esm's name): a shard an assay's single
    mutants times its length plus two over its shards; the cost timing 8 x 4 sequences, zero-shot a masked copy per
    position (at most the single mutants and the length) and the wild type, each at most 1,024 tokens."""
    size = re.search(r"_(\d+)([MB])_", name)
    weights = int(size.group(1)) * (10**6 if size.group(2) == "M" else 10**9)
    rate = config["schedule"]["gpu_tflops"] * 1e12

    def minutes(tokens: float) -> int:
        return 3 + math.ceil(2 * weights * tokens / rate / 60)

    work = []
    for (_, assay), n in zip(reference.iterrows(), shards):
        rows, length = assay["DMS_number_single_mutants"], assay["seq_len"]
        window = min(length, 1022) + 2
        total = n * minutes(rows * (length + 2) / n) + minutes(8 * 4 * window) + minutes(min(rows, length) * window + length + 2)
        work.append((total, n, assay["DMS_id"]))
    budget = config["schedule"]["gpu_batch_minutes"] - 1  # and the batch's table, a minute
    batches: list[list[tuple[int, int]]] = []
    alone = []
    for total, n, dms_id in sorted(work, key=lambda w: w[0], reverse=True):
        if total > budget:
            alone.append(dms_id)
            continue
        fits = [b for b in batches if sum(m for m, _ in b) + total <= budget]
        if fits:
            fits[0].append((total, n))
        else:
            batches.append([(total, n)])
    return batches, alone


def batches_of(rows: list[int], tasks_per_set: int, batch_rows: int, batch_sets: int) -> list[list[int]]:
    """The assays' batches (their rows) as config schedule describes them: first fit, largest first."""
    batches = []
    for n in sorted(rows, reverse=True):
        fits = [b for b in batches if tasks_per_set * (sum(b) + n) <= batch_rows and len(b) < batch_sets]
        if fits:
            fits[0].append(n)
        else:
            batches.append([n])
    return batches
