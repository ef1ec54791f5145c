"""End to end: the real Snakefile on config/test.yaml, offline, in a temporary working directory."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from plmexit.data import proteingym
from plmexit.probing.choice import ACROSS_TASK_COLUMNS, SUMMARY_COLUMNS
from plmexit.probing.tables import BASELINE_COLUMNS, PROBE_COLUMNS

from workflow_runs import FILTER_CHOSEN, REPO, file_stamps, snakemake, snakemake_command, snakemake_env, write_config, write_filter_config

pytestmark = pytest.mark.workflow

BLAT = [f"BLAT_ECOLX_Stiffler_2015.{s}" for s in ("fold_random_5", "fold_modulo_5", "fold_contiguous_5")]
NUD15 = "NUD15_HUMAN_Suiter_2020.fold_contiguous_5"
# task -> (embedding set, metric, folds, split)
TASKS = {
    BLAT[0]: ("BLAT_ECOLX_Stiffler_2015", "spearman", 5, "fold_random_5 from BLAT_ECOLX_Stiffler_2015.csv"),
    BLAT[1]: ("BLAT_ECOLX_Stiffler_2015", "spearman", 5, "fold_modulo_5 from BLAT_ECOLX_Stiffler_2015.csv"),
    BLAT[2]: ("BLAT_ECOLX_Stiffler_2015", "spearman", 5, "fold_contiguous_5 from BLAT_ECOLX_Stiffler_2015.csv"),
    NUD15: ("NUD15_HUMAN_Suiter_2020", "spearman", 5, "fold_contiguous_5_built: fold_contiguous_5 made by plmexit, not ProteinGym's published column"),
    "deeploc_10class": ("deeploc_10class", "accuracy", 1, "train deeploc_our_val_set.fasta / test deeploc_test_set.fasta"),
    "deeploc_membrane": ("deeploc_membrane", "accuracy", 5, "5-fold cross-validation (stratified), seed 0"),
    "ec": ("ec", "fmax", 5, "5-fold cross-validation by MMseqs2 clusters at 0.3 identity (stratified), seed 0"),
    "deepsol": ("deepsol", "accuracy", 5, "5-fold cross-validation (stratified), seed 0"),
    "gb1_three_vs_rest": ("gb1_three_vs_rest", "spearman", 1, "FLIP three_vs_rest train/test"),
}
METRICS = {
    "spearman": {"spearman", "mse", "inner_spearman"},
    "accuracy": {"accuracy", "macro_f1", "mcc", "inner_accuracy"},
    "fmax": {"fmax", "micro_f1", "macro_f1", "inner_fmax"},
}
CHOICE = {"hyperparameter", "hyperparameter_edge"}
# config/test.yaml's transformers models, one per family: id -> family; those with a masked-LM head run NUD15 (probes,
# lens and zero-shot), T5 deepsol.
FAMILIES = {"tiny_esm_hf": "esm", "tiny_bert": "bert", "tiny_albert": "albert", "tiny_t5": "t5", "tiny_esmc": "esmc"}
HEADS = [m for m, family in FAMILIES.items() if family != "t5"]
FAMILY_TASK = {m: NUD15 if m in HEADS else "deepsol" for m in FAMILIES}
PNG = b"\x89PNG\r\n\x1a\n"


def test_pipeline_writes_every_output(finished_run):
    workdir, _ = finished_run
    results = workdir / "results"
    everything = pd.read_csv(results / "summary" / "best_layers.tsv", sep="\t")
    assert list(everything.columns) == SUMMARY_COLUMNS
    assert sorted(zip(everything["model"], everything["task"])) == sorted([("tiny_random", t) for t in TASKS] + list(FAMILY_TASK.items()))
    summary = everything[everything["model"] == "tiny_random"]
    assert sorted(summary["task"]) == sorted(TASKS)
    assert set(summary["n_layers"]) == {4}
    assert set(summary["status"]) == {"ok"}
    assert summary["deployed_layer"].between(0, 4).all()
    # A task no layer lifts above chance keeps its deployed layer but claims no saving.
    above = summary[summary["verdict"] != "not_above_chance"]
    below = summary[summary["verdict"] == "not_above_chance"]
    assert (above["deployed_compute_saved"] == (4 - above["deployed_layer"]) / 4).all()
    assert below[["deployed_compute_saved", "deployed_time_saved", "folds_compute_saved", "folds_time_saved"]].isna().all().all()
    assert ((below["nested_gain_over_chance_ci_low"] <= 0) & (below["final_gain_over_chance_ci_low"] <= 0)).all()
    assert ((above["nested_gain_over_chance_ci_low"] > 0) | (above["final_gain_over_chance_ci_low"] > 0)).all()
    # The baselines: chance and the task kind's feature baseline, scored on the same folds.
    features = {task: "onehot" if task in [*BLAT, NUD15] else "composition" for task in TASKS}
    assert dict(zip(summary["task"], summary["baseline_features"])) == features
    assert summary[["chance_score", "baseline_score"]].notna().all().all()
    assert (summary["final_gain_over_chance"] - (summary["final_score"] - summary["chance_score"])).abs().max() < 1e-5
    assert (summary["final_gain_over_baseline_ci_low"] <= summary["final_gain_over_baseline_ci_high"]).all()
    assert (summary["gain"] - (summary["nested_score"] - summary["final_score"])).abs().max() < 1e-5
    assert dict(zip(summary["task"], summary["metric"])) == {task: spec[1] for task, spec in TASKS.items()}
    assert dict(zip(summary["task"], summary["split"])) == {task: spec[3] for task, spec in TASKS.items()}
    assert (summary["gain_ci_low"] <= summary["gain_ci_high"]).all()
    # Measured: a tiny model's forward takes milliseconds, so on a loaded machine a shallow depth can time
    # slower than the full one; the fraction is finite and at most 1, not necessarily positive.
    assert np.isfinite(above["deployed_time_saved"]).all() and (above["deployed_time_saved"] <= 1.0).all()
    assert set(summary["layer_norm"]) == {"raw"}
    truncated = dict(zip(summary["task"], summary["n_truncated"]))
    assert truncated["deeploc_10class"] > 0 and truncated[BLAT[0]] == 0  # DeepLoc has proteins beyond the 1022-residue window
    across = pd.read_csv(results / "summary" / "across_tasks.tsv", sep="\t")
    assert list(across.columns) == ACROSS_TASK_COLUMNS
    assert set(across.loc[across["model"] != "tiny_random", "n_tasks"]) == {1}  # each family model: one task
    across = across[across["model"] == "tiny_random"]
    # One row per metric and fold scheme, each assay once; `all` holds the assays run under every scheme (BLAT, not
    # NUD15, which runs under one), each averaged over its schemes first.
    assert dict(zip(zip(across["metric"], across["scheme"]), across["n_tasks"])) == {
        ("accuracy", "-"): 3, ("fmax", "-"): 1, ("spearman", "-"): 1, ("spearman", "all"): 1, ("spearman", "fold_contiguous_5"): 1,
        ("spearman", "fold_contiguous_5_built"): 1, ("spearman", "fold_modulo_5"): 1, ("spearman", "fold_random_5"): 1,
    }
    assert set(summary["verdict"]) <= {"better_than_final", "worse_than_final", "not_distinguishable", "too_little_data", "not_above_chance"}
    assert across.loc[across.scheme != "all", "n_not_above_chance"].sum() == len(below)  # each task in one row besides `all`
    assert (results / "figures" / "gain_vs_compute.png").read_bytes()[:8] == PNG

    merge = pd.read_csv(results / "summary" / "proteingym_supervised.csv")
    assert list(merge.columns) == ["DMS_id", "model_name", "fold_variable_name", "Spearman", "MSE"]
    # NUD15's file has no fold columns, so its folds are built and its scheme says so.
    schemes = {**{task: task.split(".")[1] for task in BLAT}, NUD15: "fold_contiguous_5_built"}
    assert sorted(zip(merge["DMS_id"], merge["fold_variable_name"], merge["model_name"])) == sorted(
        [(task.split(".")[0], scheme, f"esm2_t4_64d_4h_seed0_random@{which}") for task, scheme in schemes.items() for which in ("final", "selected")]
        + [(NUD15.split(".")[0], schemes[NUD15], f"{FAMILIES[m]}_t2_32d_4h_seed0_random@{which}") for m in HEADS for which in ("final", "selected")]
    )
    for task, scheme in schemes.items():
        # ProteinGym's numbers: pooled over the final layer's out-of-fold predictions, standardised per fold.
        table = pd.read_csv(results / "tasks" / f"{task}.tsv", sep="\t")
        predictions = pd.read_csv(results / "probes" / "tiny_random" / f"{task}.predictions.tsv.gz", sep="\t")
        last = predictions[predictions.layer == predictions.layer.max()]
        expected = proteingym.merge_scores(last["label"], last["prediction"], last["fold"], table["label"], table["fold"])
        final = merge[(merge.DMS_id == task.split(".")[0]) & (merge.fold_variable_name == scheme) & (merge.model_name == "esm2_t4_64d_4h_seed0_random@final")]
        assert (float(final["Spearman"].iloc[0]), float(final["MSE"].iloc[0])) == pytest.approx(expected, rel=1e-5)
        # The per-variant file that number pools, where ProteinGym's merge_supervised.py reads it.
        variants = pd.read_csv(results / "summary" / "proteingym_predictions" / scheme / "esm2_t4_64d_4h_seed0_random@final" / f"{task.split('.')[0]}.csv")
        assert variants["mutant"].tolist() == table.loc[table.fold >= 0, "id"].tolist()
        pooled = variants["labels_fitness"].corr(variants["predictions_fitness"], method="spearman")
        assert pooled == pytest.approx(expected[0], rel=1e-9)

    for task, (embedding_set, metric, n_folds, _) in TASKS.items():
        probes = pd.read_csv(results / "probes" / "tiny_random" / f"{task}.tsv", sep="\t")
        assert list(probes.columns) == PROBE_COLUMNS
        assert sorted(probes["layer"].unique()) == [0, 1, 2, 3, 4]
        assert probes.loc[probes.fold >= 0, "fold"].nunique() == n_folds
        assert set(probes["metric"]) == METRICS[metric] | CHOICE
        assert set(probes.loc[probes.fold == -1, "metric"]) == {f"inner_{metric}"} | CHOICE  # the deploy fold: no test metrics
        selection = json.loads((results / "selection" / "tiny_random" / f"{task}.json").read_text())
        assert selection["n_folds"] == n_folds
        table = pd.read_csv(results / "tasks" / f"{task}.tsv", sep="\t")
        predictions = pd.read_csv(results / "probes" / "tiny_random" / f"{task}.predictions.tsv.gz", sep="\t")
        assert len(predictions) == 5 * (table["fold"] >= 0).sum()  # every test item once per layer
        cost = json.loads((results / "cost" / "tiny_random" / f"{embedding_set}.json").read_text())
        assert len(cost["flops"]) == len(cost["seconds"]) == 5 and cost["flops"][0] == 0.0
        assert (results / "figures" / "tiny_random" / f"{task}.png").read_bytes()[:8] == PNG
        baselines = pd.read_csv(results / "probes" / "tiny_random" / f"{task}.baselines.tsv", sep="\t")
        assert list(baselines.columns) == BASELINE_COLUMNS and set(baselines["baseline"]) == {"chance", features[task]}
        assert set(baselines.loc[baselines.fold >= 0, "fold"]) == set(probes.loc[probes.fold >= 0, "fold"])
        baseline_predictions = pd.read_csv(results / "probes" / "tiny_random" / f"{task}.baselines.predictions.tsv.gz", sep="\t")
        assert len(baseline_predictions) == 2 * (table["fold"] >= 0).sum()  # every test item once per baseline
        with h5py.File(results / "embeddings" / "tiny_random" / f"{embedding_set}.h5") as store:
            embeddings = store["embeddings"]
            assert embeddings.shape == (5, len(table), 64)
            # ProteinGym assays are stored float32 whatever embed.dtype says (a substitution's signal is near float16's resolution).
            assert embeddings.dtype == ("float32" if task in [*BLAT, NUD15] else "float16") and embeddings.chunks[0] == 1
            assert store.attrs["complete"] and store.attrs["layer_norm"] == "raw"
            assert (store.attrs["model"], store.attrs["model_name"]) == ("tiny_random", "esm2_t4_64d_4h_seed0_random")
            assert store.attrs["shards"] == 2 and store.attrs["long_sequences"] == "truncate"  # config/test.yaml shards every task
    shards = results / "embeddings" / "tiny_random" / "BLAT_ECOLX_Stiffler_2015.shards"
    assert not shards.exists() or all(p.suffix == ".json" for p in shards.iterdir())  # shard stores are temporary; their records stay
    # One embedding set per assay, shared by its fold schemes; the pinned files were staged from the local copies.
    assert sorted(p.stem for p in (results / "embeddings" / "tiny_random").glob("*.h5")) == sorted({spec[0] for spec in TASKS.values()})
    assert (results / "data" / "deepfri_ec" / "nrPDB-EC_2020.04_annot.tsv").is_file()
    multilabel = pd.read_csv(results / "probes" / "tiny_random" / "ec.predictions.tsv.gz", sep="\t")
    assert multilabel["prediction"].iloc[0].startswith("1=")


def test_every_transformers_family_runs_through_the_pipeline(finished_run):
    """Each family's tiny model is written in its published format, fetched (every file hashed),
    embedded with the family's own tokenisation, costed, probed and selected like an ESM2."""
    results = finished_run[0] / "results"
    summary = pd.read_csv(results / "summary" / "best_layers.tsv", sep="\t").set_index("model")
    for model, family in FAMILIES.items():
        task = FAMILY_TASK[model]
        embedding_set = TASKS[task][0]
        table = pd.read_csv(results / "tasks" / f"{task}.tsv", sep="\t")
        manifest = json.loads((results / "models" / f"{model}.json").read_text())
        assert (manifest["id"], manifest["format"], manifest["family"]) == (model, "transformers", family)
        assert (results / "models" / model / f"{family}_t2_32d_4h_seed0_random" / "model.safetensors").is_file()
        with h5py.File(results / "embeddings" / model / f"{embedding_set}.h5") as store:
            assert store["embeddings"].shape == (3, len(table), 32) and store.attrs["complete"]
            assert (store.attrs["model"], store.attrs["model_family"]) == (model, family)
        cost = json.loads((results / "cost" / model / f"{embedding_set}.json").read_text())
        assert cost["n_layers"] == 2 and cost["flops"][0] == 0.0 and len(cost["seconds"]) == 3
        row = summary.loc[model]
        assert row["task"] == task and row["n_layers"] == 2 and row["status"] in {"ok", "no_signal"}
        assert (results / "figures" / model / f"{task}.png").read_bytes()[:8] == PNG
    assert not (results / "embeddings" / "tiny_t5" / "ec.h5").exists()  # models[].tasks: one task each


def test_depth_diagnostics_read_the_models_own_head(finished_run):
    """config/test.yaml's depth section: the lens on deeploc_membrane and NUD15 and zero-shot scores of both
    assays, for the fair-esm model and each transformers family with a head (on NUD15), summarised
    beside the probes' deployed layers and drawn against relative depth."""
    results = finished_run[0] / "results"
    depth = results / "depth" / "tiny_random"
    lens = pd.read_csv(depth / "lens" / "deeploc_membrane.tsv", sep="\t")
    assert set(lens["lens"]) == {"final_norm", "raw"} and sorted(lens["layer"].unique()) == [0, 1, 2, 3, 4]
    final = lens[(lens.lens == "final_norm") & (lens.layer == 4)].set_index("metric")["value"]
    assert final["kl_to_final"] == pytest.approx(0.0, abs=1e-6) and final["top1_agreement"] == 1.0  # the lens at L is the model's output
    for dms_id in ("BLAT_ECOLX_Stiffler_2015", "NUD15_HUMAN_Suiter_2020"):
        scores = pd.read_csv(depth / "zero_shot" / f"{dms_id}.csv")
        assert "esm2_t4_64d_4h_seed0_random@L4:masked_marginal" in scores.columns and scores["mutant"].is_unique
        long = pd.read_csv(depth / "zero_shot" / f"{dms_id}.tsv", sep="\t")
        assert set(long["model"]) == {"tiny_random"} and {"masked_marginal", "wt_marginal"} <= set(long["method"])
    everything = pd.read_csv(results / "summary" / "depth.tsv", sep="\t")
    assert sorted(zip(everything["model"], everything["task"])) == sorted([("tiny_random", t) for t in [*BLAT, NUD15, "deeploc_membrane"]] + [(m, NUD15) for m in HEADS])
    for model in HEADS:
        family, dms_id = FAMILIES[model], NUD15.split(".")[0]
        lens = pd.read_csv(results / "depth" / model / "lens" / f"{dms_id}.tsv", sep="\t")
        final = lens[(lens.lens == "final_norm") & (lens.layer == 2)].set_index("metric")["value"]
        assert final["kl_to_final"] == pytest.approx(0.0, abs=1e-6) and final["top1_agreement"] == 1.0
        assert json.loads((results / "depth" / model / "lens" / f"{dms_id}.json").read_text())["model_family"] == family
        assert f"{family}_t2_32d_4h_seed0_random@L2:masked_marginal" in pd.read_csv(results / "depth" / model / "zero_shot" / f"{dms_id}.csv").columns
        row = everything.set_index(["model", "task"]).loc[(model, NUD15)]
        assert row["lens_agreeing_layer"] in range(3) and row["zero_shot_oracle_layer"] in range(3) and row["zero_shot_chosen_layer"] in range(3)
    summary = everything[everything["model"] == "tiny_random"]
    membrane = summary.set_index("task").loc["deeploc_membrane"]
    assert 0 <= membrane["lens_agreeing_layer"] <= 4 and np.isnan(membrane["zero_shot_oracle_layer"]) and np.isnan(membrane["zero_shot_chosen_layer"])
    assert summary.set_index("task").loc[BLAT[0], "zero_shot_chosen_layer"] in range(5)
    assert (results / "figures" / "depth.png").read_bytes()[:8] == PNG
    # Each (model, task) with a depth diagnostic: its figure draws its probe beside its lens and zero-shot
    # curves, a second column the others lack (the PNG's width, in its header).
    assert not list((results / "figures").glob("*/depth"))
    width = {(m, t): int.from_bytes((results / "figures" / m / f"{t}.png").read_bytes()[16:20], "big") for m, t in [
        *(("tiny_random", t) for t in [*BLAT, NUD15, "deeploc_membrane", "deeploc_10class"]), *((m, NUD15) for m in HEADS), ("tiny_t5", FAMILY_TASK["tiny_t5"])]}
    plain = max(width[("tiny_random", "deeploc_10class")], width[("tiny_t5", FAMILY_TASK["tiny_t5"])])
    assert all(w > 1.5 * plain for key, w in width.items() if key not in {("tiny_random", "deeploc_10class"), ("tiny_t5", FAMILY_TASK["tiny_t5"])}), width
    assert not (results / "depth" / "tiny_t5").exists()  # a T5 encoder has no head


def test_rerun_does_nothing_and_changed_setting_reruns_only_what_it_affects(finished_run):
    workdir, config = finished_run
    nothing = snakemake(workdir, "--cores", "1", "--configfile", str(config), "--dry-run")
    assert nothing.returncode == 0 and "Nothing to be done" in nothing.stdout + nothing.stderr

    tolerance = workdir / "tolerance.yaml"
    tolerance.write_text(config.read_text() + "select:\n  tolerance: 0.05\n")
    rerun = snakemake(workdir, "--cores", "1", "--configfile", str(tolerance), "--dry-run", "--quiet", "rules")
    assert rerun.returncode == 0, rerun.stderr
    jobs = rerun.stdout + rerun.stderr
    for rule in ("select_layer", "summarize_layers", "plot_summary"):
        assert rule in jobs
    for rule in ("embed_shard", "gather_embeddings", "probe_layers", "prepare_task", "fetch_model", "measure_cost"):
        assert rule not in jobs


NEW_MODEL = {"id": "tiny_narrow", "random": {"layers": 2, "dim": 32, "heads": 4, "seed": 1}}
NEW_HF_MODEL = {"id": "tiny_bert_2", "random": {"family": "bert", "layers": 2, "dim": 32, "heads": 4, "seed": 2}, "tasks": ["deepsol"]}
NEW_DATA = "proteingym/cv_folds_singles_substitutions/DNJA1_HUMAN_Rocklin_2023_2LO1.csv"
NEW_TASK = {
    "id": "dnja1", "kind": "csv", "type": "regression", "path": NEW_DATA, "sequence_column": "mutated_sequence",
    "label_column": "DMS_score", "id_column": "mutant", "fold_column": "fold_random_5", "max_sequences": 60,
}


def planned_outputs(workdir, config) -> set[str]:
    """Every output a dry run of the whole workflow would write (a job of a group is printed indented further)."""
    plan = snakemake(workdir, "--cores", "2", "--configfile", str(config), "--dry-run")
    assert plan.returncode == 0, plan.stderr
    return {path for line in re.findall(r"^\s+output: (.+)$", plan.stdout, re.M) for path in line.split(", ")}


def embedding_outputs(model: str, embedding_set: str) -> set[str]:
    shards = f"results/embeddings/{model}/{embedding_set}.shards"
    return {f"results/embeddings/{model}/{embedding_set}.h5", *(f"{shards}/{k}-of-2.{suffix}" for k in range(2) for suffix in ("h5", "json"))}


def test_adding_a_model_and_a_task_runs_only_what_is_new(finished_run, shared_data, tmp_path):
    """Config-driven reruns: Snakemake plans the new fair-esm model on every task, the new
    transformers model on its task, and every model that runs every task on the new task, then the
    summaries, and nothing else; making new embeddings leaves every existing output, the embeddings
    first, with its bytes and its mtime. (Past a few new embeddings only the plan is checked:
    running every new pair would add minutes and prove nothing more.)"""
    original, _ = finished_run
    workdir = tmp_path / "grown"
    shutil.copytree(original, workdir)  # copies keep mtimes, and .snakemake keeps the run's records
    before = file_stamps(workdir / "results")

    def grow(config):
        config["models"] += [NEW_MODEL, NEW_HF_MODEL]
        config["tasks"].append(NEW_TASK)

    config = write_config(workdir, shared_data, edit=grow)
    sets = {task: spec[0] for task, spec in TASKS.items()} | {"dnja1": "dnja1"}
    new_pairs = {(m, t) for m in ("tiny_random", "tiny_narrow") for t in sets if m == "tiny_narrow" or t == "dnja1"} | {("tiny_bert_2", "deepsol")}
    new_sets = {(m, sets[t]) for m, t in new_pairs}
    made = {
        "results/models/tiny_narrow/esm2_t2_32d_4h_seed1_random.pt", "results/models/tiny_narrow.json",
        "results/models/tiny_bert_2/bert_t2_32d_4h_seed2_random", "results/models/tiny_bert_2.json",
        f"results/data/{NEW_DATA}", "results/tasks/dnja1.tsv", "results/tasks/dnja1.json",
    }
    new_inputs = made | {p for m, s in new_sets for p in embedding_outputs(m, s)}
    depth = [f"results/depth/tiny_narrow/lens/{s}{suffix}" for s in ("deeploc_membrane", "NUD15_HUMAN_Suiter_2020")
             for suffix in (".tsv", ".skip.tsv", ".exit.tsv", ".json")]
    depth += [f"results/depth/tiny_narrow/zero_shot/{dms_id}{suffix}" for dms_id in ("BLAT_ECOLX_Stiffler_2015", "NUD15_HUMAN_Suiter_2020")
              for suffix in (".tsv", ".csv", ".json")]
    downstream = {
        "results/summary/best_layers.tsv", "results/summary/across_tasks.tsv", "results/figures/gain_vs_compute.png",
        "results/figures/study", "results/summary/tables",  # the study figures and tables redraw every model
        "results/summary/proteingym_supervised.csv", "results/summary/proteingym_predictions",  # ProteinGym's merge and per-variant files
        *(f"results/cost/{m}/{s}.json" for m, s in new_sets),
        "results/summary/resources.tsv",  # what every model's jobs spent, after the summaries
        "results/summary/depth.tsv", "results/summary/depth_curves.tsv", "results/figures/depth.png", *depth,  # the new fair-esm model's head
        "results/summary/exit.tsv", "results/exit/tiny_narrow/deeploc_membrane.tsv", "results/exit/tiny_narrow/deeploc_membrane.json",
        "results/figures/exit/tiny_narrow/deeploc_membrane.png",  # its early exit (exit.tasks), timed (exit.timing_sequences)
        "results/exit/tiny_narrow/timing/deeploc_membrane.tsv", "results/exit/tiny_narrow/timing/deeploc_membrane.json",
        "results/summary/exit_lens.tsv", *(f"results/exit/tiny_narrow/lens/{s}{suffix}" for s in ("deeploc_membrane", "NUD15_HUMAN_Suiter_2020")
                                           for suffix in (".tsv", ".json")),  # its head's exit on its lens sets (exit.lens)
        # Each model's depth and exit figure: the new model's, and the old one's, whose summaries changed.
        *(f"results/figures/{m}.depth_exit.{fmt}" for m in ("tiny_random", "tiny_narrow") for fmt in ("png", "pdf")),
    }
    for m, t in new_pairs:
        downstream |= {f"results/probes/{m}/{t}.tsv", f"results/probes/{m}/{t}.predictions.tsv.gz", f"results/selection/{m}/{t}.json", f"results/figures/{m}/{t}.png",
                       f"results/probes/{m}/{t}.baselines.tsv", f"results/probes/{m}/{t}.baselines.predictions.tsv.gz"}
    assert planned_outputs(workdir, config) == new_inputs | downstream

    built = [("tiny_narrow", "deepsol"), ("tiny_bert_2", "deepsol"), ("tiny_random", "dnja1"), ("tiny_narrow", "dnja1")]
    targets = [f"results/embeddings/{m}/{s}.h5" for m, s in built]
    run = snakemake(workdir, *targets, "--cores", "2", "--configfile", str(config))  # targets first: --configfile takes a list
    assert run.returncode == 0, run.stderr[-5000:]
    after = file_stamps(workdir / "results")
    assert {path: after[path] for path in before} == before
    assert "embeddings/tiny_random/BLAT_ECOLX_Stiffler_2015.h5" in before and "embeddings/tiny_bert/NUD15_HUMAN_Suiter_2020.h5" in before
    assert all((workdir / path).is_file() for path in targets)
    remaining = new_inputs - {p for m, s in built for p in embedding_outputs(m, s)} - made
    assert planned_outputs(workdir, config) == remaining | downstream


def test_no_two_jobs_write_the_same_file(tmp_path, shared_data):
    """On a cluster jobs run at once on many nodes: every output and every log belongs to one job."""

    def two_models(config):
        config["models"].append(NEW_MODEL)

    config = write_config(tmp_path, shared_data, edit=two_models)
    plan = snakemake(tmp_path, "--cores", "1", "--configfile", str(config), "--dry-run")
    assert plan.returncode == 0, plan.stderr
    jobs = re.split(r"^\s*(?:local)?rule \w+:$", plan.stdout, flags=re.M)[1:]  # a job of a group is indented
    written = []
    for job in jobs:
        for key in ("output", "log"):
            written += [path for line in re.findall(rf"^\s+{key}: (.+)$", job, re.M) for path in line.split(", ")]
    # Per fair-esm model: test checkpoint, manifest, and per embedding set 2 shards, a gather and a
    # cost; per model and task a probe, and a selection with its figure; its lens (two sets) and zero-shot
    # (two assays); an exit table, its timing and
    # figure (one exit task), a head exit per lens set (two) and its depth and exit figure. Each family's model the same on its one task, and
    # with a head its lens, zero-shot and head exit. Per task a preparation; the 11
    # pinned files; the two summaries, the summary figure, the study figures and `all`; the depth
    # summary and figure; the exit summary and the head exit summary; the resources table.
    n_sets, n_tasks = len({spec[0] for spec in TASKS.values()}), len(TASKS)
    fair_esm = 2 * (2 + 4 * n_sets + 2 * n_tasks + 2 + 2 + 3 + 2 + 1)
    families = len(FAMILIES) * (2 + 4 + 2) + len(HEADS) * 3
    assert len(jobs) == fair_esm + families + n_tasks + 11 + 4 + 1 + 2 + 2 + 1
    assert written and len(written) == len(set(written))


def test_unknown_config_key_fails_before_any_job(tmp_path, shared_data):
    config = write_config(tmp_path, shared_data, edit=lambda c: c.__setitem__("probe", {"ridge_alpha": [1.0]}))
    run = snakemake(tmp_path, "--cores", "1", "--configfile", str(config))
    assert run.returncode != 0
    # One line naming the key and the nearest valid one, not the schema (it used to print ~250 lines).
    assert run.stderr.strip().splitlines()[-1] == "config: probe.ridge_alpha: unknown key; did you mean 'ridge_alphas'?"
    assert "Additional properties" not in run.stderr and len(run.stderr.strip().splitlines()) <= 2
    assert not (tmp_path / "results").exists()


def test_misspelled_top_level_key_fails_before_any_job(tmp_path, shared_data):
    config = write_config(tmp_path, shared_data, edit=lambda c: c.__setitem__("modles", c["models"]))
    run = snakemake(tmp_path, "--cores", "1", "--configfile", str(config))
    assert run.returncode != 0 and "modles" in run.stderr
    assert run.stderr.strip().splitlines()[-1] == "config: modles: unknown key; did you mean 'models'?"
    assert not (tmp_path / "results").exists()


def dry_run_commands(workdir, config) -> dict[str, list[str]]:
    """Every job's shell command of a dry run, by rule, as ``snakemake -n -p`` prints them."""
    run = snakemake(workdir, "--dry-run", "--printshellcmds", "--configfile", str(config))
    assert run.returncode == 0, run.stderr[-3000:]
    commands: dict[str, list[str]] = {}
    rule = None
    for line in (run.stdout + run.stderr).splitlines():
        line = line.strip()  # a job of a group is printed indented
        if line.startswith("rule ") and line.endswith(":"):
            rule = line[5:-1]
        elif line.startswith("Shell command: ") and rule:
            commands.setdefault(rule, []).append(line[len("Shell command: "):])
    return commands


def test_rules_show_every_setting_in_their_commands(tmp_path, shared_data):
    """`snakemake -p` prints commands a person can rerun by hand, every setting a flag; rules hold no lambdas or opaque args."""
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        assert "lambda" not in text and "params.args" not in text, smk.name
    commands = dry_run_commands(tmp_path, write_config(tmp_path, shared_data))

    def command(rule: str, needle: str) -> list[str]:
        (found,) = [c for c in commands[rule] if needle in c]
        return found.split()

    settings = ["--max-tokens", "4096", "--truncate", "1022", "--layer-norm", "raw", "--precision", "float32",
                "--long-sequences", "truncate", "--window", "1022", "--overlap", "256", "--engine", "fast"]
    embed = command("embed_shard", "deeploc_10class.shards/0-of-2")
    assert embed[embed.index("--dtype"):embed.index("--dtype") + 2] == ["--dtype", "float16"] and "--variant-crop" not in embed
    assert embed[embed.index("--max-tokens"):embed.index("--max-tokens") + len(settings)] == settings
    assert embed[embed.index("--shard"):embed.index("--shard") + 4] == ["--shard", "0", "--shards", "2"]
    cost = command("measure_cost", "cost/tiny_random/deeploc_10class.json")
    assert cost[cost.index("--max-tokens"):cost.index("--max-tokens") + len(settings)] == settings
    assert cost[cost.index("--sample-sequences"):cost.index("--sample-sequences") + 6] == ["--sample-sequences", "8", "--repeats", "3", "--seed", "0"]
    blat = command("embed_shard", "BLAT_ECOLX_Stiffler_2015.shards/0-of-2")
    assert "--variant-crop" in blat and blat[blat.index("--dtype") + 1] == "float32"
    assert "--variant-crop" in command("measure_cost", "cost/tiny_random/BLAT_ECOLX_Stiffler_2015.json")
    for scheme, split in (("fold_random_5", "loo"), ("fold_modulo_5", "modulo"), ("fold_contiguous_5", "contiguous")):
        probe = command("probe_layers", f"--task-name BLAT_ECOLX_Stiffler_2015.{scheme} ")
        assert probe[probe.index("--inner-split") + 1] == split and probe[probe.index("--type") + 1] == "regression"
    select = command("select_layer", "selection/tiny_random/ec.json")
    assert select[select.index("--type"):select.index("--type") + 4] == ["--type", "multilabel", "--metric", "fmax"]
    assert select[select.index("--tolerance"):select.index("--tolerance") + 6] == ["--tolerance", "0.0", "--bootstrap", "1000", "--seed", "0"]
    prepare = command("prepare_task", "--name deeploc_10class ")
    assert prepare[prepare.index("--format"):prepare.index("--format") + 4] == ["--format", "deeploc", "--type", "classification"]
    assert prepare[prepare.index("--cv-folds") + 1] == "5"
    timed = command("time_exit", "exit/tiny_random/timing/deeploc_membrane.tsv")
    assert timed[timed.index("--max-tokens"):timed.index("--max-tokens") + len(settings)] == settings
    assert timed[timed.index("--sample-sequences"):timed.index("--sample-sequences") + 6] == ["--sample-sequences", "16", "--repeats", "1", "--seed", "0"]
    head_exit = command("exit_lens", "exit/tiny_random/lens/deeploc_membrane.tsv")
    assert head_exit[head_exit.index("--sample"):head_exit.index("--sample") + 6] == ["--sample", "64", "--mask-fraction", "0.15", "--calibration-fraction", "0.5"]
    assert head_exit[head_exit.index("--n-thresholds") + 1] == "20" and head_exit[head_exit.index("--seed") + 1] == "0"


def test_the_workflow_is_lint_and_format_clean(tmp_path, shared_data):
    """Snakemake's own linter and snakefmt, as a maintainer runs them before a change lands."""
    config = write_config(tmp_path, shared_data)
    lint = snakemake(tmp_path, "--lint", "--configfile", str(config))
    assert lint.returncode == 0 and "Congratulations, your workflow is in a good condition!" in lint.stdout + lint.stderr, lint.stdout + lint.stderr
    files = [str(REPO / "Snakefile"), *map(str, sorted((REPO / "workflow" / "rules").glob("*.smk")))]
    formatted = subprocess.run([sys.executable, "-m", "snakefmt", "--check", *files], capture_output=True, text=True)
    assert formatted.returncode == 0, formatted.stderr


def test_a_config_without_models_is_an_error_not_the_default_model(tmp_path, shared_data):
    """Configs are not merged with config/config.yaml: leaving out models must not pull in (and download) the default model."""
    config = write_config(tmp_path, shared_data, edit=lambda c: c.pop("models"))
    run = snakemake(tmp_path, "--cores", "1", "--configfile", str(config), "--dry-run")
    assert run.returncode != 0
    assert run.stderr.strip().splitlines()[-1] == "config: top level: 'models' is a required property; add it"


def test_default_config_builds_its_dag(tmp_path, shared_data):
    """The default run (ESM2-8M by name) plans the download, then every step, for every task."""
    config = write_config(tmp_path, shared_data, name="config.yaml")
    run = snakemake(tmp_path, "--cores", "1", "--configfile", str(config), "--dry-run")
    assert run.returncode == 0, run.stderr
    for rule in ("fetch_model", "fetch_data", "fetch_archive", "stage_assay", "prepare_task", "embed_shard", "gather_embeddings", "measure_cost", "probe_layers", "select_layer",
                 "summarize_layers", "summarize_proteingym", "plot_summary"):
        assert f"rule {rule}:" in run.stdout, rule
    assert "No validator found" not in run.stdout + run.stderr


# Loaded by every Python process of a run that puts its directory on PYTHONPATH: `plmexit prepare --name crash` meets an
# error no check foresaw (a bug, a broken library), which prints a traceback instead of a one-line reason.
CRASH = """\
import sys

if sys.argv[1:4] == ["prepare", "--name", "crash"]:
    import plmexit.pipeline.task_steps

    def prepare_task(*args, **kwargs):
        raise RuntimeError("an error no check foresaw")

    plmexit.pipeline.task_steps.prepare_task = prepare_task
"""


def test_a_failed_job_leaves_its_one_line_reason_or_its_traceback_in_its_log_and_nothing_else(tmp_path, shared_data):
    bad = tmp_path / "bad.csv"
    bad.write_text("sequence,label\nMKTAYIAK,1.0\nMKT*YIAK,2.0\n")
    good = tmp_path / "good.csv"
    good.write_text("sequence,label\nMKTAYIAK,1.0\nMKTAYIAR,2.0\n")
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(CRASH)

    def edit(config):
        config["models"], config["depth"], config["exit"] = config["models"][:1], {}, {}
        config["tasks"] = [{"id": "bad", "kind": "csv", "path": str(bad), "type": "regression"}, {"id": "crash", "kind": "csv", "path": str(good), "type": "regression"}]

    config = write_config(tmp_path, shared_data, edit=edit)
    env = snakemake_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path / "inject"), env.get("PYTHONPATH")]))
    command = snakemake_command(tmp_path, "results/tasks/bad.tsv", "results/tasks/crash.tsv", "--cores", "1", "--keep-going", "--show-failed-logs", "--configfile", str(config))
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    assert run.returncode != 0
    line = (
        f"plmexit prepare: error: {bad}: row 3 (row3): sequence has characters '*' outside the ESM alphabet (upper-case amino-acid codes); "
        "remove or replace them (stop codons, gaps and J have no ESM token)"
    )
    logs = tmp_path / "results" / "logs" / "prepare_task"
    log = (logs / "bad.log").read_text().strip().splitlines()
    assert log[-1] == line and log.count(line) == 1  # the command's stderr is the log: the reason once
    assert line in run.stderr.splitlines()  # on the console too (--show-failed-logs), not only in the log
    # The unexpected error's traceback, which stderr carries: in the log, through the CLI to the step that failed.
    crash = (logs / "crash.log").read_text()
    assert "Traceback (most recent call last):" in crash and 'plmexit/cli/__init__.py", line' in crash, crash
    assert crash.strip().splitlines()[-1] == "RuntimeError: an error no check foresaw", crash
    assert not (tmp_path / "results" / "tasks").exists() or not any((tmp_path / "results" / "tasks").iterdir())


def test_a_changed_task_path_reruns_the_task_and_a_missing_one_stops_the_run_before_any_job(tmp_path):
    rows = ["name,sequence,charge"] + [f"p{i},{'MKTAYIAKQR'[: 4 + i % 6]}GG,{i / 10}" for i in range(20)]
    (tmp_path / "a.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "b.csv").write_text("\n".join(rows[:16]) + "\n")  # header and 15 rows

    def config(path: str) -> str:
        task = {"id": "own", "kind": "csv", "type": "regression", "path": path, "id_column": "name", "label_column": "charge"}
        (tmp_path / "config.yaml").write_text(yaml.safe_dump({"models": [{"id": "tiny", "random": {"layers": 2, "dim": 32, "heads": 4, "seed": 0}}], "tasks": [task]}))
        return str(tmp_path / "config.yaml")

    target = "results/tasks/own.tsv"
    assert snakemake(tmp_path, target, "--cores", "1", "--configfile", config("a.csv")).returncode == 0
    assert len(pd.read_csv(tmp_path / target, sep="\t")) == 20

    changed = snakemake(tmp_path, target, "--cores", "1", "--configfile", config("b.csv"))
    assert changed.returncode == 0, changed.stderr[-2000:]
    assert len(pd.read_csv(tmp_path / target, sep="\t")) == 15  # the task was prepared again from its new file

    missing = snakemake(tmp_path, target, "--cores", "1", "--configfile", config("moved/b.csv"))
    assert missing.returncode != 0
    assert missing.stderr.strip().splitlines()[-1] == (
        f"config: tasks[0] (own).path: file moved/b.csv does not exist (relative paths are read from the directory Snakemake runs in, {tmp_path}); fix the path"
    )
    assert len(pd.read_csv(tmp_path / target, sep="\t")) == 15  # nothing ran


def test_two_configs_with_their_own_results_directories_keep_their_summaries_apart(tmp_path):
    rows = ["name,sequence,charge"] + [f"p{i},M{'KTAYIAKQRDEG'[i % 7 : i % 7 + 5]}{'GS' * (i % 4)},{(i * 7) % 11 / 10}" for i in range(40)]
    (tmp_path / "mine.csv").write_text("\n".join(rows) + "\n")

    def config(name: str, task: str) -> str:
        entry = {"id": task, "kind": "csv", "type": "regression", "path": "mine.csv", "id_column": "name", "label_column": "charge"}
        data = {"pathvars": {"results": f"studies/{name}"}, "models": [{"id": "tiny", "random": {"layers": 2, "dim": 32, "heads": 4, "seed": 0}}],
                "tasks": [entry], "cost": {"sample_sequences": 2, "repeats": 1}, "select": {"bootstrap": 100}}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(data))
        return str(tmp_path / f"{name}.yaml")

    first = snakemake(tmp_path, "--cores", "2", "--configfile", config("first", "charge_a"), "--set-threads", "probe_layers=1")
    assert first.returncode == 0, first.stderr[-3000:]
    before = file_stamps(tmp_path / "studies" / "first")
    second = snakemake(tmp_path, "--cores", "2", "--configfile", config("second", "charge_b"), "--set-threads", "probe_layers=1")
    assert second.returncode == 0, second.stderr[-3000:]

    for name, task in (("first", "charge_a"), ("second", "charge_b")):
        summary = pd.read_csv(tmp_path / "studies" / name / "summary" / "best_layers.tsv", sep="\t")
        assert summary["task"].tolist() == [task]
        assert sorted(p.name for p in (tmp_path / "studies" / name / "selection" / "tiny").iterdir()) == [f"{task}.json"]
    assert file_stamps(tmp_path / "studies" / "first") == before  # the second config touched nothing of the first
    assert not (tmp_path / "results").exists()
    assert "studies/second/summary/best_layers.tsv" in second.stdout  # the run ends by naming its own summary


def test_assays_chosen_by_a_filter_run_in_one_invocation(tmp_path, shared_data):
    """A filter on the reference table is a checkpoint: the dry run stops at it (nothing is read
    while planning), and one real run chooses the assays, then prepares, embeds, probes and
    summarises exactly the chosen ones; the chosen assays are one batch and one GPU batch (config schedule), each with its table."""
    write_filter_config(tmp_path, shared_data)

    planned = snakemake(tmp_path, "--cores", "1", "--configfile", str(tmp_path / "config.yaml"), "--dry-run")
    assert planned.returncode == 0, planned.stderr[-3000:]
    assert "checkpoint choose_assays:" in planned.stdout and "results/assays/short.tsv" in planned.stdout
    assert not (tmp_path / "results").exists()

    run = snakemake(tmp_path, "--cores", "2", "--configfile", str(tmp_path / "config.yaml"))
    assert run.returncode == 0, run.stderr[-5000:]
    # The list carries each assay's single mutants and length: they size its shards and the batches a cluster runs.
    chosen = FILTER_CHOSEN
    assert (tmp_path / "results/assays/short.tsv").read_text() == f"DMS_id\tsingle_mutants\tseq_len\n{chosen[0]}\t922\t161\n{chosen[1]}\t1084\t238\n"
    for dms_id, shards in zip(chosen, (1, 2)):
        with h5py.File(tmp_path / f"results/embeddings/tiny/{dms_id}.h5", "r") as store:
            assert store.attrs["shards"] == shards
    tasks = [f"{dms_id}.fold_random_5" for dms_id in chosen]
    summary = pd.read_csv(tmp_path / "results/summary/best_layers.tsv", sep="\t")
    assert summary["task"].tolist() == tasks
    # Both fit one batch (1,084 and 922 rows): its table holds their rows of the summary.
    batch = pd.read_csv(tmp_path / "results/summary/batches/tiny/0.tsv", sep="\t")
    pd.testing.assert_frame_equal(batch.sort_values("task", ignore_index=True), summary.sort_values("task", ignore_index=True))
    # And one GPU batch (config schedule): its table has a row per shard (the run's tokens and seconds) and per cost timing.
    gpu = pd.read_csv(tmp_path / "results/summary/gpu_batches/tiny/0.tsv", sep="\t")
    assert sorted(zip(gpu["step"], gpu["set"])) == sorted([("embed", chosen[0]), ("embed", chosen[1]), ("embed", chosen[1]), ("cost", chosen[0]), ("cost", chosen[1])])
    assert (gpu["tokens"] > 0).all() and (gpu["tokens_per_second"] > 0).all() and set(gpu["model"]) == {"tiny"}
    assert (tmp_path / "results/summary/proteingym_supervised.csv").is_file()
    assert tasks[0] in run.stdout + run.stderr  # the closing lines name it
    again = snakemake(tmp_path, "--cores", "1", "--configfile", str(tmp_path / "config.yaml"), "--dry-run")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def test_an_export_directory_is_a_target_that_predict_runs(finished_run, tmp_path):
    """export.enabled is off in test.yaml, so the run has no exports; one is asked for by path, and
    `plmexit predict` on it reproduces the probe's features on the task's own sequences."""
    original, config = finished_run
    workdir = tmp_path / "shipped"
    shutil.copytree(original, workdir)
    assert not (workdir / "results" / "export").exists()
    target = "results/export/tiny_random/deeploc_membrane"

    run = snakemake(workdir, target, "--cores", "1", "--configfile", str(config))
    assert run.returncode == 0, run.stderr[-5000:]
    assert "rule export_model:" in run.stdout + run.stderr and "rule embed_shard:" not in run.stdout + run.stderr  # nothing upstream reruns
    card = json.loads((workdir / target / "card.json").read_text())
    selection = json.loads((workdir / "results/selection/tiny_random/deeploc_membrane.json").read_text())
    assert (card["deployed_layer"], card["source_model"]["id"]) == (selection["deployed_layer"], "tiny_random")

    table = pd.read_csv(workdir / "results/tasks/deeploc_membrane.tsv", sep="\t").head(5)
    table[["id", "sequence"]].to_csv(tmp_path / "new.csv", index=False)
    predict = subprocess.run([sys.executable, "-m", "plmexit.cli", "predict", "--export", str(workdir / target), "--input", str(tmp_path / "new.csv"),
                              "--out", str(tmp_path / "predictions.csv"), "--device", "cpu"], capture_output=True, text=True)
    assert predict.returncode == 0, predict.stderr
    assert pd.read_csv(tmp_path / "predictions.csv")["id"].tolist() == table["id"].tolist()


def test_early_exit_runs_in_the_pipeline(finished_run):
    """config/test.yaml's exit section: deeploc_membrane's controllers calibrated per fold on training rows, a summary and a figure."""
    workdir, _ = finished_run
    results = workdir / "results"
    table = pd.read_csv(results / "exit" / "tiny_random" / "deeploc_membrane.tsv", sep="\t")
    assert sorted(table["fold"].unique()) == list(range(5))
    assert set(table["kind"]) == {"static", "calibrated", "hart_test_swept"}
    assert sorted(table.loc[table.kind == "calibrated", "gate"].unique()) == ["entropy", "margin", "patience", "probability"]
    assert sorted(table.loc[table.kind == "static", "layer"].unique()) == [0, 1, 2, 3, 4]
    summary = pd.read_csv(results / "summary" / "exit.tsv", sep="\t")
    assert set(zip(summary["model"], summary["task"])) == {("tiny_random", "deeploc_membrane")}
    assert (results / "figures" / "exit" / "tiny_random" / "deeploc_membrane.png").read_bytes()[:8] == PNG
    # measured wall clock (exit.timing_sequences) beside the estimate: full depth, the deployed layer, each calibrated controller
    timing = pd.read_csv(results / "exit" / "tiny_random" / "timing" / "deeploc_membrane.tsv", sep="\t")
    assert set(timing["run"]) == {"full_depth", "static_layer", "adaptive", "adaptive_one_deep"} and (timing["seconds"] > 0).all()
    calibrated = summary[summary.kind == "calibrated"]
    assert calibrated["time_saved_measured"].notna().all() and calibrated["time_saved_estimate"].notna().all()
    assert calibrated["gate_overhead"].between(0, 1, inclusive="neither").all()

    # The one model with depth diagnostics and early exit: both laid out in one figure, PNG and PDF.
    assert sorted(p.name for p in (results / "figures").glob("*.depth_exit.*")) == ["tiny_random.depth_exit.pdf", "tiny_random.depth_exit.png"]
    assert (results / "figures" / "tiny_random.depth_exit.png").read_bytes()[:8] == PNG
    assert (results / "figures" / "tiny_random.depth_exit.pdf").read_bytes()[:4] == b"%PDF"


def test_the_heads_early_exit_runs_in_the_pipeline(finished_run):
    """config/test.yaml's exit.lens: every head model's own head exits on the logit lens of its lens sets, calibrated on
    half of the sampled sequences and reported on the other half, and one summary of the calibrated controllers."""
    workdir, _ = finished_run
    results = workdir / "results"
    table = pd.read_csv(results / "exit" / "tiny_random" / "lens" / "deeploc_membrane.tsv", sep="\t")
    assert sorted(table.loc[table.kind == "static", "layer"]) == [0, 1, 2, 3, 4]
    calibrated = table[table.kind == "calibrated"]
    assert set(zip(calibrated.gate, calibrated.unit)) == {(g, u) for g in ("probability", "margin", "entropy", "patience") for u in ("position", "sequence")}
    assert (calibrated.loc[calibrated.unit == "sequence", ["n_calibration", "n_test"]] == [32, 32]).all().all()
    info = json.loads((results / "exit" / "tiny_random" / "lens" / "deeploc_membrane.json").read_text())
    assert info["n_sequences"] == 64 and not set(info["calibration_ids"]) & set(info["test_ids"])
    summary = pd.read_csv(results / "summary" / "exit_lens.tsv", sep="\t")
    pairs = {("tiny_random", "deeploc_membrane"), ("tiny_random", "NUD15_HUMAN_Suiter_2020"), *((m, "NUD15_HUMAN_Suiter_2020") for m in HEADS)}
    assert set(zip(summary["model"], summary["set"])) == pairs and len(summary) == len(pairs) * 4 * 2
