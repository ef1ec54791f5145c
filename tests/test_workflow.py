"""End to end: the real Snakefile on config/test.yaml, offline, in a temporary working directory."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import pandas as pd

from plmexit.select import ACROSS_TASK_COLUMNS, PROBE_COLUMNS, SUMMARY_COLUMNS
from workflow_runs import snakemake, write_config


def test_pipeline_writes_every_output(finished_run):
    workdir, _ = finished_run
    results = workdir / "results"
    summary = pd.read_csv(results / "summary" / "best_layers.tsv", sep="\t")
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert sorted(summary["task"]) == ["BLAT_ECOLX_Stiffler_2015", "deeploc_10class"]
    assert set(summary["n_layers"]) == {4}
    assert summary["best_layer"].between(0, 4).all()
    assert (summary["compute_saved"] == (4 - summary["best_layer"]) / 4).all()
    assert (summary["gain"] - (summary["best_score"] - summary["final_score"])).abs().max() < 1e-5
    assert dict(zip(summary["task"], summary["metric"])) == {"BLAT_ECOLX_Stiffler_2015": "spearman", "deeploc_10class": "accuracy"}
    assert (summary["gain_ci_low"] <= summary["gain_ci_high"]).all()
    assert ((summary["flops_saved"] - summary["compute_saved"]).abs() < 1e-9).all()  # FLOPs are linear in depth
    assert summary["time_saved"].between(-0.5, 1.0).all() and set(summary["layer_norm"]) == {"raw"}
    across = pd.read_csv(results / "summary" / "across_tasks.tsv", sep="\t")
    assert list(across.columns) == ACROSS_TASK_COLUMNS and across["n_tasks"].tolist() == [2]
    assert (results / "figures" / "gain_vs_compute.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    for task, n_sequences in [("BLAT_ECOLX_Stiffler_2015", 200), ("deeploc_10class", None)]:
        probes = pd.read_csv(results / "probes" / "tiny_random" / f"{task}.tsv", sep="\t")
        assert list(probes.columns) == PROBE_COLUMNS
        assert sorted(probes["layer"].unique()) == [0, 1, 2, 3, 4]
        assert sorted(probes["fold"].unique()) == [0, 1, 2, 3, 4]
        selection = json.loads((results / "selection" / "tiny_random" / f"{task}.json").read_text())
        assert selection["n_folds"] == 5
        predictions = pd.read_csv(results / "probes" / "tiny_random" / f"{task}.predictions.tsv.gz", sep="\t")
        assert len(predictions) == 5 * len(pd.read_csv(results / "tasks" / f"{task}.tsv", sep="\t"))  # every item once per layer
        cost = json.loads((results / "cost" / "tiny_random" / f"{task}.json").read_text())
        assert len(cost["flops"]) == len(cost["seconds"]) == 5 and cost["flops"][0] == 0.0
        assert (results / "figures" / "tiny_random" / f"{task}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with h5py.File(results / "embeddings" / "tiny_random" / f"{task}.h5") as store:
            embeddings = store["embeddings"]
            assert embeddings.shape[0] == 5 and embeddings.shape[2] == 64
            assert embeddings.dtype == "float16" and embeddings.chunks[0] == 1
            assert store.attrs["complete"] and store.attrs["layer_norm"] == "raw"
            assert store.attrs["model"] == "esm2_t4_64d_4h_seed0_random"
            if n_sequences:
                assert embeddings.shape[1] == n_sequences
    regression_metrics = set(pd.read_csv(results / "probes" / "tiny_random" / "BLAT_ECOLX_Stiffler_2015.tsv", sep="\t")["metric"])
    assert regression_metrics == {"spearman", "mse", "inner_spearman"}
    classification_metrics = set(pd.read_csv(results / "probes" / "tiny_random" / "deeploc_10class.tsv", sep="\t")["metric"])
    assert classification_metrics == {"accuracy", "macro_f1", "mcc", "inner_accuracy"}


def test_rerun_does_nothing_and_changed_setting_reruns_only_what_it_affects(finished_run):
    workdir, config = finished_run
    nothing = snakemake(workdir, "--cores", "1", "--configfile", str(config), "--dry-run")
    assert nothing.returncode == 0 and "Nothing to be done" in nothing.stdout + nothing.stderr

    tolerance = workdir / "tolerance.yaml"
    tolerance.write_text(config.read_text() + "select:\n  tolerance: 0.05\n")
    rerun = snakemake(workdir, "--cores", "1", "--configfile", str(tolerance), "--dry-run", "--quiet", "rules")
    assert rerun.returncode == 0, rerun.stderr
    jobs = rerun.stdout + rerun.stderr
    for rule in ("select_layer", "summarize_layers", "plot_layers", "plot_summary"):
        assert rule in jobs
    for rule in ("embed_task", "probe_layers", "prepare_task", "fetch_model", "measure_cost"):
        assert rule not in jobs


NEW_MODEL = {"id": "tiny_narrow", "random": {"layers": 2, "dim": 32, "heads": 4, "seed": 1}}
NEW_TASK = {
    "id": "DNJA1_HUMAN_Rocklin_2023_2LO1", "kind": "csv", "type": "regression",
    "path": "../shared/data/proteingym/cv_folds_singles_substitutions/DNJA1_HUMAN_Rocklin_2023_2LO1.csv",
    "sequence_column": "mutated_sequence", "label_column": "DMS_score", "id_column": "mutant",
    "fold_column": "fold_random_5", "max_sequences": 60,
}


def files_with_stamps(results) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(results)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(results.rglob("*")) if p.is_file()}


def planned_outputs(workdir, config) -> set[str]:
    """Every output a dry run of the whole workflow would write."""
    plan = snakemake(workdir, "--cores", "2", "--configfile", str(config), "--dry-run")
    assert plan.returncode == 0, plan.stderr
    return {path for line in re.findall(r"^    output: (.+)$", plan.stdout, re.M) for path in line.split(", ")}


def test_adding_a_model_and_a_task_runs_only_what_is_new(finished_run, shared_data, tmp_path):
    """Config-driven reruns: Snakemake plans the new model on every task and every model on the new
    task, then the summaries, and nothing else; making the new embeddings leaves every existing
    output, the embeddings first, with its bytes and its mtime. (Past the embeddings only the plan is
    checked: running the new pairs' probes and figures would add minutes and prove nothing more.)"""
    original, _ = finished_run
    workdir = tmp_path / "grown"
    shutil.copytree(original, workdir)  # copies keep mtimes, and .snakemake keeps the run's records
    before = files_with_stamps(workdir / "results")

    def grow(config):
        config["models"].append(NEW_MODEL)
        config["tasks"].append({**NEW_TASK, "path": str(shared_data / Path(NEW_TASK["path"]).relative_to("../shared/data"))})

    config = write_config(workdir, shared_data, edit=grow)
    models, tasks = ["tiny_random", "tiny_narrow"], ["BLAT_ECOLX_Stiffler_2015", "deeploc_10class", NEW_TASK["id"]]
    new_pairs = [(m, t) for m in models for t in tasks if m == "tiny_narrow" or t == NEW_TASK["id"]]
    new_inputs = {
        "results/models/tiny_narrow/esm2_t2_32d_4h_seed1_random.pt", "results/models/tiny_narrow.json", f"results/tasks/{NEW_TASK['id']}.tsv",
        *(f"results/embeddings/{m}/{t}.h5" for m, t in new_pairs),
    }
    downstream = {"results/summary/best_layers.tsv", "results/summary/across_tasks.tsv", "results/figures/gain_vs_compute.png"}
    for m, t in new_pairs:
        downstream |= {
            f"results/cost/{m}/{t}.json", f"results/probes/{m}/{t}.tsv", f"results/probes/{m}/{t}.predictions.tsv.gz",
            f"results/selection/{m}/{t}.json", f"results/figures/{m}/{t}.png",
        }
    assert planned_outputs(workdir, config) == new_inputs | downstream

    embeddings = [f"results/embeddings/{m}/{t}.h5" for m in models for t in tasks]
    run = snakemake(workdir, *embeddings, "--cores", "2", "--configfile", str(config))  # targets first: --configfile takes a list
    assert run.returncode == 0, run.stderr[-5000:]
    after = files_with_stamps(workdir / "results")
    assert {path: after[path] for path in before} == before
    assert {"embeddings/tiny_random/BLAT_ECOLX_Stiffler_2015.h5", "embeddings/tiny_random/deeploc_10class.h5"} <= set(before)
    assert all((workdir / path).is_file() for path in embeddings)
    assert planned_outputs(workdir, config) == downstream


def test_no_two_jobs_write_the_same_file(tmp_path, shared_data):
    """On a cluster jobs run at once on many nodes: every output and every log belongs to one job."""

    def two_models(config):
        config["models"].append(NEW_MODEL)

    config = write_config(tmp_path, shared_data, edit=two_models)
    plan = snakemake(tmp_path, "--cores", "1", "--configfile", str(config), "--dry-run")
    assert plan.returncode == 0, plan.stderr
    jobs = re.split(r"^(?:local)?rule \w+:$", plan.stdout, flags=re.M)[1:]
    written = []
    for job in jobs:
        for key in ("output", "log"):
            written += [path for line in re.findall(rf"^    {key}: (.+)$", job, re.M) for path in line.split(", ")]
    assert len(jobs) == 2 * 2 + 2 + 2 * 2 * 5 + 2 + 1  # test model and manifest per model, tasks, per pair, summaries, all
    assert written and len(written) == len(set(written))


def test_unknown_config_key_fails_before_any_job(tmp_path, shared_data):
    config = write_config(tmp_path, shared_data, edit=lambda c: c.__setitem__("probe", {"ridge_alpha": [1.0]}))
    run = snakemake(tmp_path, "--cores", "1", "--configfile", str(config))
    assert run.returncode != 0
    assert "ridge_alpha" in run.stderr and "Additional properties are not allowed" in run.stderr
    assert not (tmp_path / "results").exists()


def test_misspelled_top_level_key_fails_before_any_job(tmp_path, shared_data):
    config = write_config(tmp_path, shared_data, edit=lambda c: c.__setitem__("modles", c["models"]))
    run = snakemake(tmp_path, "--cores", "1", "--configfile", str(config))
    assert run.returncode != 0 and "modles" in run.stderr
    assert not (tmp_path / "results").exists()


def test_default_config_builds_its_dag(tmp_path, shared_data):
    """The default run (ESM2-8M by name) plans the download, then every step, for every task."""
    config = write_config(tmp_path, shared_data, name="config.yaml")
    run = snakemake(tmp_path, "--cores", "1", "--configfile", str(config), "--dry-run")
    assert run.returncode == 0, run.stderr
    for rule in ("fetch_model", "prepare_task", "embed_task", "measure_cost", "probe_layers", "select_layer", "plot_layers", "summarize_layers", "plot_summary"):
        assert f"rule {rule}:" in run.stdout, rule
    assert "No validator found" not in run.stdout + run.stderr


def test_bad_task_file_fails_with_one_line_and_leaves_nothing(tmp_path, shared_data):
    bad = tmp_path / "bad.csv"
    bad.write_text("sequence,label\nMKTAYIAK,1.0\nMKT*YIAK,2.0\n")

    def edit(config):
        config["tasks"] = [{"id": "bad", "kind": "csv", "path": str(bad), "type": "regression"}]

    config = write_config(tmp_path, shared_data, edit=edit)
    run = snakemake(tmp_path, "results/tasks/bad.tsv", "--cores", "1", "--configfile", str(config))
    assert run.returncode != 0
    log = (tmp_path / "results" / "logs" / "prepare_task" / "bad.log").read_text().strip().splitlines()
    assert log[-1] == f"plmexit prepare: error: {bad}: row 3 (row3): sequence has characters '*' outside the ESM alphabet (upper-case amino-acid codes); clean the sequence"
    assert not (tmp_path / "results" / "tasks").exists() or not any((tmp_path / "results" / "tasks").iterdir())
