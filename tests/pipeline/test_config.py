"""The config schema, the shipped configs and the config -> rule-arguments plan."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import re
import shlex
from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from plmexit.errors import ConfigError, InputError
from plmexit.pipeline import planning
from plmexit.pipeline.planning import Plan, check_config, load_schema

from workflow_runs import REPO

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
NUD15_TASK = "NUD15_HUMAN_Suiter_2020.fold_contiguous_5"


def load(name: str) -> dict:
    config = yaml.safe_load((REPO / "config" / name).read_text())
    validate(config, str(SCHEMA), set_default=True)
    return config


def schema_properties(node: dict, path: str = ""):
    """Yield (dotted path, schema) for every property in the schema, through arrays and objects."""
    for name, sub in node.get("properties", {}).items():
        yield f"{path}{name}", sub
        yield from schema_properties(sub, f"{path}{name}.")
    if "items" in node:
        yield from schema_properties(node["items"], path)


def test_every_key_has_a_description_and_is_documented():
    schema = yaml.safe_load(SCHEMA.read_text())
    readme = (REPO / "config" / "README.md").read_text()
    properties = list(schema_properties(schema))
    assert len(properties) > 30
    for path, sub in properties:
        assert sub.get("description"), f"{path} has no description"
        assert re.search(rf"\b{re.escape(path.split('.')[-1])}\b", readme), f"{path} is not in config/README.md"


def test_objects_reject_unknown_keys():
    schema = yaml.safe_load(SCHEMA.read_text())
    objects = [schema] + [sub for _, sub in schema_properties(schema) if sub.get("type") == "object"]
    objects += [sub["items"] for _, sub in schema_properties(schema) if sub.get("type") == "array" and sub["items"].get("type") == "object"]
    for node in objects:
        assert node.get("additionalProperties") is False, node.get("description")


@pytest.mark.parametrize("name", ["config.yaml", "test.yaml"])
def test_shipped_configs_validate_and_get_defaults(name):
    config = load(name)
    assert config["embed"]["truncate"] == 1022 and config["probe"]["inner_folds"] == 3
    assert config["select"]["tolerance"] == 0.0
    Plan(config)  # every task entry is one its kind accepts


def test_default_config_uses_esm2_8m_with_its_published_hash():
    (model,) = load("config.yaml")["models"]
    assert model["name"] == "esm2_t6_8M_UR50D"
    assert model["sha256"] == "c3c1145126ec08895c39c24a5df5e6f899441bf641eb09c72504ef9b7acd9e40"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["embed"].__setitem__("trunacte", 5), "trunacte"),
        (lambda c: c["tasks"][0].__setitem__("type", "regresion"), "regresion"),
        (lambda c: c["models"][0].__setitem__("checkpoint", "x.pt"), "is valid under each of|oneOf"),
        (lambda c: c["models"][0]["random"].__setitem__("layers", 0), "minimum|less than"),
        (lambda c: c.pop("tasks"), "tasks"),
    ],
)
def test_schema_errors_name_the_problem(edit, message):
    config = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    config.setdefault("embed", {})
    edit(config)
    with pytest.raises(WorkflowError, match=message):
        validate(config, str(SCHEMA), set_default=True)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["tasks"][0].__setitem__("lable_column", "y"), "config: tasks[0] (proteingym).lable_column: unknown key; did you mean 'label_column'?"),
        (lambda c: c["embed"].__setitem__("trunacte", 5), "config: embed.trunacte: unknown key; did you mean 'truncate'?"),
        (lambda c: c.__setitem__("modles", []), "config: modles: unknown key; did you mean 'models'?"),
        (lambda c: c["embed"].__setitem__("zzz", 5), "config: embed.zzz: unknown key; allowed keys: dtype, "),
        (lambda c: c["tasks"][0].__setitem__("kind", "cvs"), "config: tasks[0] (proteingym).kind: 'cvs' is not one of csv, fasta, proteingym"),
        (lambda c: c.pop("tasks"), "config: top level: 'tasks' is a required property; add it"),
        (lambda c: c["models"][0]["random"].__setitem__("layers", 0), "config: models[0] (tiny_random).random.layers: 0 is less than the minimum of 1"),
    ],
)
def test_config_mistakes_are_one_line_naming_the_key(edit, message):
    config = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    config.setdefault("embed", {})
    edit(config)
    with pytest.raises(ConfigError) as raised:
        check_config(config, load_schema(SCHEMA))
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_plan_targets_and_arguments():
    plan = Plan(load("test.yaml"))
    blat = [f"BLAT_ECOLX_Stiffler_2015.{s}" for s in ("fold_random_5", "fold_modulo_5", "fold_contiguous_5")]
    assert [p for p in plan.pairs() if p[0] == "tiny_random"] == [("tiny_random", t) for t in [*blat, "NUD15_HUMAN_Suiter_2020.fold_contiguous_5", "deeploc_10class",
                                                         "deeploc_membrane", "ec", "deepsol", "gb1_three_vs_rest"]]
    assert plan.final_targets()[:3] == [
        "results/summary/best_layers.tsv", "results/summary/across_tasks.tsv", "results/summary/proteingym_supervised.csv",
    ]
    # Every figure and table the `figures` target redraws from results/ is a final target too.
    assert plan.drawn()[:3] == ["results/figures/gain_vs_compute.png", "results/figures/study", "results/summary/tables"]
    assert set(plan.drawn()) <= set(plan.final_targets())
    assert plan.exports() == [] and not any("/export/" in t for t in plan.final_targets())  # opt-in
    config = load("test.yaml")
    config["export"]["enabled"] = True
    exports = Plan(config).exports()
    assert "results/export/tiny_random/gb1_three_vs_rest" in exports and "results/export/tiny_t5/deepsol" in exports and len(exports) == len(plan.pairs())
    assert plan.model_checkpoint("tiny_random") == ["results/models/tiny_random/esm2_t4_64d_4h_seed0_random.pt"]
    assert shlex.split(plan.model_source_flags("tiny_random")) == ["--checkpoint", "results/models/tiny_random/esm2_t4_64d_4h_seed0_random.pt"]
    # The three schemes of an assay share one embedding set and one cost file.
    assert {plan.embeddings("tiny_random", t) for t in blat} == {"results/embeddings/tiny_random/BLAT_ECOLX_Stiffler_2015.h5"}
    assert {plan.cost("tiny_random", t) for t in blat} == {"results/cost/tiny_random/BLAT_ECOLX_Stiffler_2015.json"}
    assert plan.embedding_table("BLAT_ECOLX_Stiffler_2015") == f"results/tasks/{blat[0]}.tsv"
    assert plan.embeddings("tiny_random", "ec") == "results/embeddings/tiny_random/ec.h5"
    prepare = shlex.split(plan.task_file_flags(blat[1]) + " " + plan.task_option_flags(blat[1]))
    assert (plan.task_kind(blat[1]), plan.task_type(blat[1])) == ("proteingym", "regression")
    assert prepare[prepare.index("--reference") + 1] == "results/data/proteingym/reference_files/DMS_substitutions.csv"
    assert prepare[prepare.index("--path") + 1] == "results/data/proteingym/cv_folds_singles_substitutions/BLAT_ECOLX_Stiffler_2015.csv"
    assert prepare[prepare.index("--dms-id") + 1] == "BLAT_ECOLX_Stiffler_2015" and prepare[prepare.index("--fold-scheme") + 1] == "fold_modulo_5"
    prepare = shlex.split(plan.task_file_flags("deeploc_10class") + " " + plan.task_option_flags("deeploc_10class"))
    assert prepare[prepare.index("--test-path") + 1] == "results/data/deeploc/deeploc_test_set.fasta"
    assert "--fold-column" not in prepare
    assert plan.task_inputs("deepsol") == ["results/data/deepsol/val_src", "results/data/deepsol/val_tgt"]
    assert shlex.split(plan.data_source_flags()) == ["--local-dir", "../shared/data"]
    assert plan.task_metric(blat[0]) == "spearman"
    assert plan.task_metric("deeploc_10class") == "accuracy"
    assert plan.task_metric("ec") == "fmax" and plan.task_type("ec") == "multilabel"
    assert (plan.task_type("deeploc_10class"), plan.task_metric("deeploc_10class"), plan.inner_split("deeploc_10class")) == ("classification", "accuracy", "loo")
    # A ridge probe's inner split follows the outer fold scheme (whole positions for modulo and contiguous).
    assert [plan.inner_split(t) for t in [*blat, "gb1_three_vs_rest"]] == ["loo", "modulo", "contiguous", "loo"]
    assert (plan.task_type("ec"), plan.task_metric("ec")) == ("multilabel", "fmax")


def test_plan_named_model_arguments():
    plan = Plan(load("config.yaml"))
    assert plan.model_checkpoint("esm2_8M") == []
    assert shlex.split(plan.model_source_flags("esm2_8M")) == [
        "--name", "esm2_t6_8M_UR50D", "--sha256", "c3c1145126ec08895c39c24a5df5e6f899441bf641eb09c72504ef9b7acd9e40",
    ]


def test_duplicate_ids_are_a_config_error():
    config = load("test.yaml")
    config["tasks"].append(copy.deepcopy(config["tasks"][0]))
    with pytest.raises(ConfigError, match=r"tasks\[7\] makes 'BLAT_ECOLX_Stiffler_2015.fold_random_5' a second time"):
        Plan(config)
    config = load("test.yaml")
    config["tasks"].append(copy.deepcopy(config["tasks"][2]))
    with pytest.raises(ConfigError, match=r"tasks\[7\] makes 'deeploc_10class' a second time"):
        Plan(config)
    config = load("test.yaml")  # a task named like an assay would share the assay's embeddings
    config["tasks"].append({**copy.deepcopy(config["tasks"][5]), "id": "BLAT_ECOLX_Stiffler_2015"})
    with pytest.raises(ConfigError, match=r"tasks\[7\] makes 'BLAT_ECOLX_Stiffler_2015' a second time"):
        Plan(config)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t[2].__setitem__("label_regex", "x"), r"tasks\[2\] \(deeploc_10class\): key 'label_regex' does not apply to a deeploc task"),
        (lambda t: t[0].__setitem__("path", "x.csv"), r"key 'path' does not apply to a proteingym task"),
        (lambda t: t[6].__setitem__("type", "classification"), r"a flip task is a regression task, not classification; remove type"),
        (lambda t: t.append({"id": "own", "kind": "csv", "path": "x.csv"}), r"tasks\[7\] \(own\): a csv task needs a type"),
        (lambda t: t.append({"id": "own", "kind": "deepsol", "labels_path": "y"}), r"a deepsol task needs path"),
        (lambda t: t[0].__setitem__("filter", {"max_length": 100}), r"either assays \(a DMS_id list\) or filter"),
        (lambda t: t[0].__setitem__("assays", ["NOT_AN_ASSAY"]), r"no pinned third-party copy holds assay 'NOT_AN_ASSAY'; set archive: cv_folds_singles_substitutions"),
        (lambda t: t[0].update(archive="cv_folds_singles_substitutions", assay_dir="x"), r"tasks\[0\] \(proteingym\): give a proteingym task's assays either an archive or an assay_dir"),
    ],
)
def test_task_entries_that_do_not_fit_their_kind(edit, message):
    config = load("test.yaml")
    edit(config["tasks"])
    with pytest.raises(ConfigError, match=message):
        Plan(config)


def test_assays_from_a_released_archive_are_staged_and_their_provenance_passed_to_prepare():
    config = load("test.yaml")
    config["tasks"][0]["archive"] = "cv_folds_singles_substitutions"
    plan = Plan(config)
    task = "BLAT_ECOLX_Stiffler_2015.fold_modulo_5"
    staged = "results/data/archives/cv_folds_singles_substitutions/BLAT_ECOLX_Stiffler_2015"

    assert plan.task(task).files["path"] == "archive:cv_folds_singles_substitutions/BLAT_ECOLX_Stiffler_2015.csv"
    assert plan.task_inputs(task) == ["results/data/proteingym/reference_files/DMS_substitutions.csv", f"{staged}.csv", f"{staged}.json"]
    prepare = shlex.split(plan.task_file_flags(task) + " " + plan.task_option_flags(task))
    assert prepare[prepare.index("--path") + 1] == f"{staged}.csv" and prepare[prepare.index("--provenance") + 1] == f"{staged}.json"
    assert plan.assay_file("BLAT_ECOLX_Stiffler_2015") == f"{staged}.csv"  # zero-shot scores the staged file too
    assert "--provenance" not in plan.task_option_flags("NUD15_HUMAN_Suiter_2020.fold_contiguous_5")  # a third-party copy
    assert shlex.split(plan.flags.archive) == [
        "--proteingym-cv-folds", "https://marks.hms.harvard.edu/proteingym/ProteinGym_v1.1/cv_folds_singles_substitutions.zip",
        "--proteingym-substitutions", "https://marks.hms.harvard.edu/proteingym/ProteinGym_v1.1/DMS_ProteinGym_substitutions.zip",
        "--archive-hashes", "config/archive_hashes.tsv",
    ]
    assert plan.archive_pattern() == "DMS_ProteinGym_substitutions|cv_folds_singles_substitutions"


def test_proteingym_filters_expand_from_the_checkpoints_assay_list(shared_data, tmp_path):
    from plmexit.pipeline.task_steps import choose_assays

    reference = shared_data / "proteingym/reference_files/DMS_substitutions.csv"
    config = load("test.yaml")
    config["models"], config["depth"]["lens_tasks"], config["exit"]["tasks"] = config["models"][:1], [], []
    config["tasks"] = [{"id": "pg", "kind": "proteingym", "filter": {"selection_type": ["Stability"], "max_length": 40}, "assay_dir": "assays"}]
    lists = []
    plan = Plan(config, chosen_assays=lambda entry: lists.append(entry) or str(tmp_path / f"{entry}.tsv"))
    assert plan.tasks == {} and lists == []  # nothing is read while planning
    assert plan.assay_reference("pg") == "results/data/proteingym/reference_files/DMS_substitutions.csv"
    assert plan.assay_filter_flags("pg") == "--selection-type Stability --max-length 40"

    chosen = choose_assays(reference, tmp_path / "pg.tsv", ["Stability"], 40)
    listed = pd.read_csv(tmp_path / "pg.tsv", sep="\t")
    assert "TCRG1_MOUSE_Tsuboyama_2023_1E0L" in chosen and listed["DMS_id"].tolist() == chosen
    singles = pd.read_csv(reference).set_index("DMS_id")["DMS_number_single_mutants"]
    assert listed["single_mutants"].tolist() == singles[chosen].tolist()
    assert listed["seq_len"].tolist() == pd.read_csv(reference).set_index("DMS_id")["seq_len"][chosen].tolist()
    assert plan.task_inputs("TCRG1_MOUSE_Tsuboyama_2023_1E0L.fold_random_5") == [
        "results/data/proteingym/reference_files/DMS_substitutions.csv", "assays/TCRG1_MOUSE_Tsuboyama_2023_1E0L.csv",
    ]
    assert lists == ["pg"] and sorted({t["dms_id"] for t in plan.tasks.values()}) == sorted(chosen)
    assert len(plan.pairs()) == 3 * len(chosen) and lists == ["pg"]  # expanded once

    with pytest.raises(InputError, match=r"DMS_substitutions.csv: no assay passes the filter \(max_length=5\); loosen the task's filter"):
        choose_assays(reference, tmp_path / "none.tsv", max_length=5)
    assert not (tmp_path / "none.tsv").exists()
    with pytest.raises(ConfigError, match=r"tasks\[0\] \(pg\): its assays are chosen by filter, which the workflow's choose_assays checkpoint does"):
        Plan(config).pairs()
    # Where the chosen assays will be read from is checked before any job runs.
    with pytest.raises(ConfigError, match=r"^config: tasks\[0\] \(pg\)\.assay_dir: assays does not exist \(relative paths"):
        Plan(config).check_local_files()
    config["tasks"][0]["assay_dir"] = str(shared_data / "proteingym/cv_folds_singles_substitutions")
    Plan(config).check_local_files()


def test_a_cluster_batches_assays_by_their_rows_and_times_probes_by_their_embeddings(tmp_path, monkeypatch):
    """schedule: the chosen assays (their single mutants from the checkpoint's list) are packed first fit,
    largest first, within batch_rows and batch_sets; sets of unknown size, and larger ones, run alone."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pg.tsv").write_text("DMS_id\tsingle_mutants\tseq_len\nA\t100\t98\nB\t500\t98\nC\t300\t98\nD\t2000\t98\nE\t100\t98\nF\t50\t98\n")
    (tmp_path / "own.csv").write_text("sequence,label\nMKT,1\n")
    config = load("test.yaml")
    config["models"], config["depth"]["lens_tasks"], config["exit"]["tasks"] = config["models"][:1], [], []
    config["tasks"] = [
        {"id": "pg", "kind": "proteingym", "filter": {"max_length": 40}, "assay_dir": "assays", "fold_schemes": ["fold_random_5", "fold_modulo_5"]},
        {"id": "own", "kind": "csv", "type": "regression", "path": "own.csv"},
    ]
    config["schedule"].update(batch_rows=1600, batch_sets=3)  # rows times 2 schemes
    config["embed"].update(shards=4, shard_tokens=60_000)
    plan = Plan(config, chosen_assays=lambda entry: str(tmp_path / f"{entry}.tsv"))
    model = config["models"][0]["id"]
    # D (4,000 rows read) is over the budget; B 1,000, C 600 (1,600); A 200, E 200, F 100 (500); own unknown.
    assert plan.batches(model) == [["D"], ["B", "C"], ["A", "E", "F"], ["own"]]
    assert plan.task_group(model, "C.fold_modulo_5") == plan.set_group(model, "B") == f"batch.{model}.1"
    # A set over the budget is gathered on its own: its tasks are then a group each.
    assert plan.set_group(model, "D") is None and plan.task_group(model, "D.fold_random_5") == f"batch.{model}.0"
    assert plan.set_group(model, "own") == f"batch.{model}.3"  # unknown size: its gathering joins its tasks
    assert plan.batch_selections(model, 2) == [f"results/selection/{model}/{t}.{s}.json" for t in "AEF" for s in ("fold_random_5", "fold_modulo_5")]
    # Only a batch of several sets needs its table to tie it together.
    assert plan.batch_tables() == [f"results/summary/batches/{model}/{k}.tsv" for k in (1, 2)]
    assert f"results/summary/batches/{model}/1.tsv" in plan.final_targets()
    # Shards by tokens (rows times 98 + 2): D 200,000 (4, the most), B 50,000 (1), C 30,000 (1); own embed.shards.
    assert [plan.shards(name) for name in ("D", "B", "C", "own")] == [4, 1, 1, 4]
    config["embed"]["shard_tokens"] = 20_000
    assert [plan.shards(name) for name in ("D", "B", "C", "F")] == [4, 3, 2, 1]
    # A cluster job plans afresh from its own wildcards: a chosen assay's shards come first, before anything
    # else read the checkpoint's list, and are still counted by its size.
    fresh = Plan(config, chosen_assays=lambda entry: str(tmp_path / f"{entry}.tsv"))
    assert [fresh.shards(name) for name in ("B", "own")] == [3, 4]

    # A probe's run time: 5 minutes and one per 15 MB of its embeddings, from its shards until they are gathered.
    with pytest.raises(FileNotFoundError) as missing:
        plan.probe_minutes(model, "B.fold_random_5")
    assert missing.value.filename == plan.embeddings(model, "B.fold_random_5")  # Snakemake: not known yet
    for shard in plan.embedding_shards(model, "B"):
        Path(shard).parent.mkdir(parents=True, exist_ok=True)
        with open(shard, "wb") as handle:
            handle.truncate(10_000_000)
    shards = len(plan.embedding_shards(model, "B"))
    assert plan.probe_minutes(model, "B.fold_random_5") == 5 + -(-10 * shards // 15)
    with open(plan.embeddings(model, "B.fold_random_5"), "wb") as handle:
        handle.truncate(150_000_000)
    assert plan.probe_minutes(model, "B.fold_random_5") == 5 + 10


def test_a_cluster_batches_gpu_jobs_by_their_tokens_within_the_time_limit(tmp_path, monkeypatch):
    """schedule: each GPU job's run time is 3 minutes plus its tokens at gpu_tflops (two FLOPs per weight per
    token); the chosen assays, each with all its GPU jobs, are packed first fit, largest first, within
    gpu_batch_minutes (its table's minute included); an assay over the limit, and every set of unknown size, is in no batch."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pg.tsv").write_text("DMS_id\tsingle_mutants\tseq_len\nA\t100\t98\nB\t500\t98\nC\t300\t98\nD\t2000\t98\nE\t100\t98\nF\t50\t98\n")
    (tmp_path / "own.csv").write_text("sequence,label\nMKT,1\n")
    config = load("test.yaml")
    config["models"], config["depth"]["lens_tasks"], config["exit"]["tasks"] = [{"id": "esm2_3B", "name": "esm2_t36_3B_UR50D"}], [], []
    config["tasks"] = [
        {"id": "pg", "kind": "proteingym", "filter": {"max_length": 40}, "assay_dir": "assays", "fold_schemes": ["fold_random_5"]},
        {"id": "own", "kind": "csv", "type": "regression", "path": "own.csv"},
    ]
    config["embed"].update(shards=4, shard_tokens=60_000)
    config["schedule"].update(gpu_batch_minutes=31, gpu_tflops=1)  # 30 minutes of jobs and the table's one
    config["cost"].update(sample_sequences=8, repeats=3)
    plan = Plan(config, chosen_assays=lambda entry: str(tmp_path / f"{entry}.tsv"))
    # 2 x 3e9 weights x tokens at 1e12 FLOP/s: a shard of 50,000 tokens (each of D's four of 200,000, or B's one) is
    # 300 s, 3 + 5 minutes; C's 30,000 3 + 3; A's and E's 10,000 and F's 5,000 3 + 1. The cost
    # timing, 8 x 4 forwards of 100 tokens, and zero-shot (98 or 50 masked copies of 100 tokens) 3 + 1 each.
    assert plan.gpu_job_minutes("esm2_3B", "D") == {"embed_shard": 8, "measure_cost": 4, "zero_shot": 4}
    assert [plan.gpu_minutes("embed_shard", "esm2_3B", s) for s in ("B", "C", "A", "F")] == [8, 6, 4, 4]
    assert plan.gpu_minutes("embed_shard", "esm2_3B", "own") == 240  # unknown size: the profile's former limit
    # Per set: D 4 x 8 + 4 + 4 = 40 (over 30: in no batch), B 16, C 14, A, E and F 12 each.
    layout = plan.gpu_layout("esm2_3B")
    assert layout.batches == [["B", "C"], ["A", "E"], ["F"]] and layout.minutes == [30, 24, 12]
    assert plan.gpu_group("esm2_3B", "C") == "gpu.esm2_3B.0" and plan.gpu_group("esm2_3B", "F") == "gpu.esm2_3B.2"
    assert plan.gpu_group("esm2_3B", "D") is None and plan.gpu_group("esm2_3B", "own") is None
    # A batch's table reads its shards' records and its cost timings, and waits for its zero-shot jobs: that ties the group.
    assert plan.gpu_batch_shard_records("esm2_3B", 0) == ["results/embeddings/esm2_3B/B.shards/0-of-1.json", "results/embeddings/esm2_3B/C.shards/0-of-1.json"]
    assert plan.gpu_batch_costs("esm2_3B", 1) == ["results/cost/esm2_3B/A.json", "results/cost/esm2_3B/E.json"]
    assert plan.gpu_batch_zero_shot("esm2_3B", 1) == ["results/depth/esm2_3B/zero_shot/A.json", "results/depth/esm2_3B/zero_shot/E.json"]
    assert [t for t in plan.final_targets() if "gpu_batches" in t] == [f"results/summary/gpu_batches/esm2_3B/{k}.tsv" for k in range(3)]
    # Without zero-shot scoring a set's jobs are its shards and cost timing only.
    config["depth"]["zero_shot"] = False
    plan = Plan(config, chosen_assays=lambda entry: str(tmp_path / f"{entry}.tsv"))
    layout = plan.gpu_layout("esm2_3B")  # D 36, B 12, C 10, A, E and F 8 each
    assert layout.batches == [["B", "C", "A"], ["E", "F"]] and layout.minutes == [30, 16] and plan.gpu_batch_zero_shot("esm2_3B", 0) == []


def test_a_models_size_comes_from_its_entry():
    from plmexit.pipeline.plan_batches import PARAMETERS_UNKNOWN, first_fit, model_parameters

    assert model_parameters({"name": "esm2_t6_8M_UR50D"}) == 8e6
    assert model_parameters({"name": "esm1v_t33_650M_UR90S_1"}) == 650e6
    assert model_parameters({"hub": "facebook/esm2_t36_3B_UR50D"}) == 3e9
    assert model_parameters({"random": {"layers": 4, "dim": 64, "heads": 4}}) == 12 * 4 * 64**2
    assert model_parameters({"checkpoint": "mine.pt"}) == model_parameters({"hub": "Rostlab/prot_bert"}) == PARAMETERS_UNKNOWN
    # First fit, largest first; ties keep their order; an item over the budget is a batch of its own.
    assert first_fit({"a": 3, "b": 5, "c": 3, "d": 9, "e": 2}, 8) == ([["d"], ["b", "a"], ["c", "e"]], [9, 8, 5])
    assert first_fit({"a": 1, "b": 1, "c": 1}, 8, most=2) == ([["a", "b"], ["c"]], [2, 1])


def test_the_chosen_list_needs_the_reference_tables_counts(shared_data, tmp_path):
    from plmexit.pipeline.task_steps import choose_assays

    reference = pd.read_csv(shared_data / "proteingym/reference_files/DMS_substitutions.csv")
    singles = reference["DMS_number_single_mutants"].astype("Int64")
    reference["DMS_number_single_mutants"] = singles.mask(reference["DMS_id"] == "TCRG1_MOUSE_Tsuboyama_2023_1E0L")
    reference.to_csv(tmp_path / "reference.csv", index=False)
    with pytest.raises(InputError, match=r"reference.csv: assay TCRG1_MOUSE_Tsuboyama_2023_1E0L: DMS_number_single_mutants is '', not a count; use ProteinGym's own"):
        choose_assays(tmp_path / "reference.csv", tmp_path / "pg.tsv", ["Stability"], 40)
    assert not (tmp_path / "pg.tsv").exists()


def test_a_task_file_that_does_not_exist_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.csv").write_text("sequence,label\nMKT,1\n")
    config = load("test.yaml")
    config["models"], config["depth"]["lens_tasks"], config["exit"]["tasks"] = config["models"][:1], [], []
    config["tasks"] = [{"id": "own", "kind": "csv", "type": "regression", "path": "mine.csv"}]
    Plan(config).check_local_files()

    config["tasks"][0]["path"] = "moved/mine.csv"
    with pytest.raises(ConfigError, match=rf"^config: tasks\[0\] \(own\)\.path: file moved/mine.csv does not exist \(relative paths are read from the directory Snakemake runs in, {tmp_path}\); fix the path$"):
        Plan(config).check_local_files()


def test_plan_embedding_shards_and_arguments():
    config = load("test.yaml")
    plan = Plan(config)
    assert plan.embedding_shards("tiny_random", "deeploc_10class") == [
        "results/embeddings/tiny_random/deeploc_10class.shards/0-of-2.h5", "results/embeddings/tiny_random/deeploc_10class.shards/1-of-2.h5",
    ]
    assert plan.store_dtype("deeploc_10class") == "float16" and plan.variant_crop_flag("deeploc_10class") == ""


def test_proteingym_sets_are_embedded_through_a_variant_crop_in_float32():
    plan = Plan(load("test.yaml"))
    dms_id = next(t["embedding_set"] for t in plan.tasks.values() if t["dms_id"])

    assert plan.variant_crop_flag(dms_id) == "--variant-crop"  # embed and cost (it times the cropped sequences) both take it
    assert plan.store_dtype(dms_id) == "float32"  # whatever embed.dtype (float16 here) says
    assert plan.variant_crop_flag("deeploc_10class") == ""


def test_window_overlap_not_below_the_window_is_a_config_error():
    config = load("test.yaml")
    config["embed"].update(long_sequences="window", window=100, overlap=100)
    with pytest.raises(ConfigError, match=r"^config: embed.overlap 100 must be at least 0 and less than embed.window 100; lower embed.overlap$"):
        Plan(config)


def test_planning_knows_proteingyms_fold_schemes():
    from plmexit.data import proteingym

    assert planning.FOLD_SCHEMES == proteingym.FOLD_SCHEMES


# Config keys that choose which jobs run (or how they are cut), not a value any command takes.
JOB_KEYS = {"embed.dtype", "embed.shards", "embed.shard_tokens", "depth.lens_tasks", "depth.zero_shot", "exit.tasks", "exit.lens"}
# Where pinned files come from: fetch-data's own flags (Plan.data_source_flags), no setting with a default.
SOURCE_KEYS = {"data.local_dir", "data.base_url"}


def test_the_schema_defaults_are_the_settings_defaults():
    """One declaration per setting: the schema's default of every setting a command takes is its settings field's
    default (the ridge grid once drifted: 0.316 against 10**-0.5), and the library's own defaults are the same."""
    from dataclasses import fields

    from plmexit.data.tasks import TaskSpec
    from plmexit.probing.probes import ProbeSettings
    from plmexit.settings import ALL_SETTINGS, PrepareSettings, ProbeGrid

    schema = yaml.safe_load(SCHEMA.read_text())["properties"]
    declared = set()
    for settings in ALL_SETTINGS:
        for f in settings.settings_fields():
            key = f.metadata["key"]
            node = schema
            for part in key.split("."):
                node = node[part]
                node = node.get("properties", node)
            default = list(f.default) if isinstance(f.default, tuple) else f.default
            assert default == node["default"], f"{settings.__name__}.{f.name}: {default!r}, but the schema's {key} defaults to {node['default']!r}"
            declared.add(key)
    sections = ("embed", "cost", "probe", "select", "depth", "exit", "data")
    in_schema = {f"{section}.{key}" for section in sections for key in schema[section]["properties"]} | {"seed"}
    assert in_schema - JOB_KEYS - SOURCE_KEYS == declared, "a setting of the schema has no settings field (or the other way round)"
    assert {f.name for f in fields(ProbeSettings)} >= {f.name for f in fields(ProbeGrid)}
    for f in fields(ProbeGrid):
        assert ProbeSettings.__dataclass_fields__[f.name].default == f.default, f.name
    for f in fields(PrepareSettings):
        assert TaskSpec.__dataclass_fields__[f.name].default == f.default, f.name


def _parse(command: str, *words: str):
    from plmexit.cli import build_parser

    return build_parser().parse_args([command, *words])


# Each rule's settings flags (``RuleFlags``), the command that takes them and its other required arguments.
RULE_COMMANDS = {
    "prepare": ("prepare", "--name n --format csv --path p --type regression --out o --info-out i"),
    "embed": ("embed", "--model m --task t --out o"),
    "cost": ("cost", "--model m --task t --out o"),
    "probe": ("probe", "--embeddings e --task t --type regression --metric spearman --model-id m --task-name n --out o --predictions p"),
    "select": ("select", "--probes p --predictions q --cost c --task-info i --type regression --metric spearman --out o"),
    "summarize": ("summarize", "s.json --out o"),
    "lens": ("lens", "--model m --task t --task-name n --out o --skip-out s --exit-out x --info-out i"),
    "zero_shot": ("zero-shot", "--model m --assay a --reference r --dms-id d --out-long o --out-proteingym g --info-out i"),
    "exit": ("exit", "--embeddings e --task t --probes p --selection s --cost c --model-id m --task-name n --type regression --metric spearman --out o --info-out i"),
    "exit_timing": ("exit-timing", "--model m --task t --out o --embeddings e --probes p --selection s --exit-info x --info-out i"),
    "lens_exit": ("lens-exit", "--model m --task t --task-name n --out o --info-out i"),
    "summarize_exit": ("summarize-exit", "t.tsv --out o"),
    "archive": ("fetch-archive", "--archive cv_folds_singles_substitutions --out o --info-out i"),
}


def test_every_flag_a_rule_emits_is_taken_by_its_command_and_reads_back_as_the_config():
    from plmexit import settings as S

    config = load("test.yaml")
    # Values off their defaults, so a flag that is dropped or misread shows.
    config["seed"] = 7
    config["embed"].update(long_sequences="window", window=500, overlap=50, precision="bfloat16")
    config["exit"].update(gates=["margin", "patience"], epsilon=0.05, timing_sequences=5, lens_sample=9)
    config["depth"].update(skip_blocks=False, mask_fraction=0.2, calibration_fraction=0.1)
    config["probe"].update(ridge_alphas=[1.0, 10.0], inner_folds=4, cv_folds=3)
    config["select"].update(bootstrap=200, tolerance=0.01)
    config["data"].update(proteingym_cv_folds="archives/cv folds.zip", archive_hashes="my_hashes.tsv")
    flags = Plan(config).flags
    assert set(vars(flags)) == set(RULE_COMMANDS)
    read = {}
    for name, (command, required) in RULE_COMMANDS.items():
        extra = shlex.split(flags.embed) if command in ("cost", "exit-timing") else []
        read[name] = _parse(command, *required.split(), *extra, *shlex.split(getattr(flags, name)))
    expected = {
        "prepare": S.PrepareSettings, "embed": S.EmbedSettings, "cost": S.CostSettings, "probe": S.ProbeGrid, "select": S.SelectSettings,
        "lens": S.LensSettings, "zero_shot": S.ZeroShotSettings, "exit": S.ExitSettings, "exit_timing": S.TimingSettings,
        "lens_exit": S.LensExitSettings, "archive": S.ArchiveSettings,
    }
    for name, settings in expected.items():
        assert settings.from_args(read[name]) == settings.from_config(config), name
    assert S.EmbedSettings.from_args(read["cost"]) == S.EmbedSettings.from_config(config)
    assert (read["summarize"].bootstrap, read["summarize"].seed, read["summarize_exit"].epsilon) == (200, 7, 0.05)
    assert read["lens"].skip_blocks is False and read["exit"].gates == ["margin", "patience"]


def test_settings_flags_round_trip_their_defaults():
    from plmexit.settings import ALL_SETTINGS

    for settings in ALL_SETTINGS:
        parser = argparse.ArgumentParser()
        settings.add_arguments(parser)
        assert settings.from_args(parser.parse_args([])) == settings()
        assert settings.from_args(parser.parse_args(shlex.split(settings().flags()))) == settings()


def test_no_function_in_the_package_is_over_120_lines():
    """Long functions hide several jobs; 120 lines is the house limit."""
    import ast

    long = []
    for path in sorted((REPO / "src" / "plmexit").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 120:
                long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, "functions over 120 lines: " + ", ".join(long)


def test_transformers_model_sources_and_their_fetch_flags():
    config = load("test.yaml")
    config["models"] = [
        {"id": "bert_hub", "hub": "Rostlab/prot_bert", "revision": "a" * 40},
        {"id": "ankh_dir", "path": "models/ankh_base", "family": "ankh"},
        {"id": "t5_random", "random": {"family": "t5", "layers": 2, "dim": 32, "heads": 4, "seed": 1}},
        {"id": "fair_random", "random": {"layers": 2, "dim": 32, "heads": 4}},
    ]
    validate(config, str(SCHEMA), set_default=True)
    plan = Plan(config)

    assert shlex.split(plan.model_source_flags("bert_hub")) == ["--hub", "Rostlab/prot_bert", "--revision", "a" * 40]
    assert plan.model_checkpoint("bert_hub") == []  # downloaded by fetch-model itself
    assert shlex.split(plan.model_source_flags("ankh_dir")) == ["--path", "models/ankh_base", "--family", "ankh"]
    assert plan.model_checkpoint("ankh_dir") == ["models/ankh_base"]
    assert plan.model_checkpoint("t5_random") == ["results/models/t5_random/t5_t2_32d_4h_seed1_random"]  # a directory
    assert shlex.split(plan.model_source_flags("t5_random")) == ["--path", "results/models/t5_random/t5_t2_32d_4h_seed1_random"]
    assert plan.model_checkpoint("fair_random") == ["results/models/fair_random/esm2_t2_32d_4h_seed0_random.pt"]


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"hub": "Rostlab/prot_bert", "revision": "a" * 40, "sha256": "b" * 64}, r"sha256 applies to a fair-esm checkpoint"),
        ({"path": "m", "url": "https://example.org/m.pt"}, r"url is a mirror for a fair-esm model given by name"),
        ({"name": "esm2_t6_8M_UR50D", "family": "esm"}, r"family applies to a transformers model \(hub or path\)"),
    ],
)
def test_model_keys_that_do_not_fit_the_source(entry, message):
    config = load("test.yaml")
    config["models"] = [{"id": "m", **entry}]
    with pytest.raises(ConfigError, match=rf"^config: models\[0\] \(m\): {message}"):
        Plan(config)


@pytest.mark.parametrize("revision", ["main", "a" * 39])
def test_a_hub_model_needs_a_pinned_commit(revision):
    config = load("test.yaml")
    config["models"] = [{"id": "m", "hub": "Rostlab/prot_bert", "revision": revision}]
    with pytest.raises(ConfigError, match=r"models\[0\] \(m\)\.revision"):
        check_config(config, load_schema(SCHEMA))


def test_a_model_can_be_run_on_some_task_entries_only():
    config = load("test.yaml")
    config["models"].append({"id": "big", "name": "esm2_t33_650M_UR50D", "tasks": ["proteingym", "deepsol"]})
    plan = Plan(config)
    assert [t for m, t in plan.pairs() if m == "big"] == [
        "BLAT_ECOLX_Stiffler_2015.fold_random_5", "BLAT_ECOLX_Stiffler_2015.fold_modulo_5", "BLAT_ECOLX_Stiffler_2015.fold_contiguous_5", "deepsol",
    ]
    assert len([t for m, t in plan.pairs() if m == "tiny_random"]) == len(plan.tasks)
    assert "results/figures/big/deepsol.png" in plan.final_targets() and "results/figures/big/ec.png" not in plan.final_targets()

    config["models"][-1]["tasks"] = ["deepsol", "deeploc"]
    with pytest.raises(ConfigError, match=r"^config: models\[6\] \(big\)\.tasks: 'deeploc' is not the id of a config task entry \(ids: proteingym, "):
        Plan(config)


def test_depth_diagnostics_are_planned_for_models_with_a_head():
    plan = Plan(load("test.yaml"))
    # Models with a head the diagnostics read: every family but T5; the transformers ones run only NUD15, lens and zero-shot.
    heads = ["tiny_esm_hf", "tiny_bert", "tiny_albert", "tiny_esmc"]
    assert plan.head_models() == ["tiny_random", *heads] and plan.depth_models() == ["tiny_random", *heads]
    assert plan.lens_sets("tiny_random") == ["NUD15_HUMAN_Suiter_2020", "deeploc_membrane"]
    assert plan.zero_shot_sets("tiny_random") == ["BLAT_ECOLX_Stiffler_2015", "NUD15_HUMAN_Suiter_2020"]
    for model in heads:
        assert plan.lens_sets(model) == plan.zero_shot_sets(model) == ["NUD15_HUMAN_Suiter_2020"]
    assert plan.assay_file("NUD15_HUMAN_Suiter_2020") == "results/data/proteingym/single_site_mutant_score/NUD15_HUMAN_Suiter_2020.csv"
    assert plan.lens_infos()[:2] == ["results/depth/tiny_random/lens/NUD15_HUMAN_Suiter_2020.json", "results/depth/tiny_random/lens/deeploc_membrane.json"]
    assert len(plan.lens_infos()) == 2 + 4 and len(plan.zero_shot_infos()) == 2 + 4
    assert len(plan.all_depth_selections()) == 1 + 3 + 1 + 4  # deeploc_membrane, BLAT's three schemes, NUD15's one; NUD15 for each head model
    assert plan.task_lens("tiny_random", "deeploc_membrane") == ["results/depth/tiny_random/lens/deeploc_membrane.tsv"]
    assert plan.task_zero_shot("tiny_random", "deeploc_membrane") == [] and plan.task_lens("tiny_random", "BLAT_ECOLX_Stiffler_2015.fold_random_5") == []
    assert plan.final_targets()[-1] == "results/summary/depth.tsv"
    drawn = plan.drawn()  # a task's lens and zero-shot curves are drawn in its own figure, beside its probe
    assert "results/figures/depth.png" in drawn and "results/figures/tiny_bert/NUD15_HUMAN_Suiter_2020.fold_contiguous_5.png" in drawn
    assert not [path for path in drawn if "/depth/" in path]

    config = load("test.yaml")
    config["depth"] = {"lens_tasks": ["deeploc"]}
    with pytest.raises(ConfigError, match=r"^config: depth\.lens_tasks: 'deeploc' is not the id of a config task entry"):
        Plan(config)
    config["depth"] = {}
    validate(config, str(SCHEMA), set_default=True)
    assert Plan(config).depth_models() == [] and "results/summary/depth.tsv" not in Plan(config).final_targets()


def test_the_heads_exit_is_planned_on_every_lens_set_of_every_head_model():
    plan = Plan(load("test.yaml"))
    tables = plan.exit_lens_tables()
    assert tables[:2] == ["results/exit/tiny_random/lens/NUD15_HUMAN_Suiter_2020.tsv", "results/exit/tiny_random/lens/deeploc_membrane.tsv"]
    assert len(tables) == len(plan.lens_infos()) == 2 + 4
    assert plan.exit_targets() == ["results/summary/exit.tsv", "results/summary/exit_lens.tsv"]
    assert "results/summary/exit_lens.tsv" in plan.final_targets()

    config = load("test.yaml")
    config["exit"]["lens"] = False
    assert Plan(config).exit_lens_tables() == [] and "results/summary/exit_lens.tsv" not in Plan(config).final_targets()
    config["exit"] = {"lens": True}  # the head's exit alone, without probe exit
    validate(config, str(SCHEMA), set_default=True)
    assert Plan(config).exit_targets() == ["results/summary/exit_lens.tsv"]
    config["depth"]["lens_tasks"] = []  # as exit.tasks: [] plans no probe exit
    assert Plan(config).exit_lens_tables() == [] and Plan(config).exit_targets() == []


def test_measured_exit_timing_is_planned_per_exit_task_unless_switched_off():
    plan = Plan(load("test.yaml"))
    assert plan.exit_timings() == ["results/exit/tiny_random/timing/deeploc_membrane.tsv"]
    assert plan.exit_timing("tiny_random", "deeploc_membrane") == plan.exit_timings()
    assert plan.task_variant_crop_flag("deeploc_membrane") == "" and plan.task_variant_crop_flag(NUD15_TASK) == "--variant-crop"
    config = load("test.yaml")
    config["exit"]["timing_sequences"] = 0  # estimated time only
    assert Plan(config).exit_timings() == [] and Plan(config).exit_timing("tiny_random", "deeploc_membrane") == []


def test_the_depth_and_exit_figure_is_planned_per_model_that_has_both():
    # config/test.yaml: tiny_random runs the lens and zero-shot, and early exit on deeploc_membrane; the
    # transformers models have a head but no exit task, T5 neither.
    plan = Plan(load("test.yaml"))
    assert plan.depth_exit_figures() == ["results/figures/tiny_random.depth_exit.png"]
    assert plan.model_exit_tables("tiny_random") == ["results/exit/tiny_random/deeploc_membrane.tsv"] and plan.model_exit_tables("tiny_bert") == []
    assert plan.drawn()[-1] == "results/figures/tiny_random.depth_exit.png"

    config = load("test.yaml")
    config["exit"]["tasks"] = ["deeploc_membrane", "proteingym_built"]  # now the transformers models exit on their task too
    assert Plan(config).depth_exit_figures() == [f"results/figures/{m}.depth_exit.png" for m in ("tiny_random", "tiny_esm_hf", "tiny_bert", "tiny_albert", "tiny_esmc")]
    config["depth"]["lens_tasks"], config["depth"]["zero_shot"] = [], False  # exit without depth diagnostics: nothing to lay beside it
    assert Plan(config).depth_exit_figures() == []
    config = load("test.yaml")
    config["exit"]["tasks"] = []
    assert Plan(config).depth_exit_figures() == [] and Plan(config).depth_models()


def test_the_plans_per_job_lookups_agree_with_its_grid_and_follow_a_checkpoint(tmp_path):
    """Each per-job answer (lens and zero-shot tables, depth tasks, batch selections) is a lookup in an index built
    once; it says what a scan over every (model, task) pair says, and is rebuilt when a checkpoint adds tasks."""
    plan = Plan(load("test.yaml"))
    pairs = plan.pairs()
    for model in plan.models:
        runs = [t for m, t in pairs if m == model]
        lens = sorted({plan.task(t).embedding_set for t in runs if plan.task(t).entry_id in plan.config["depth"]["lens_tasks"]})
        zero_shot = sorted({plan.task(t).dms_id for t in runs if plan.task(t).dms_id})
        assert plan.lens_sets(model) == lens and plan.zero_shot_sets(model) == zero_shot
        assert plan.depth_tasks(model) == [t for t in runs if plan.task(t).embedding_set in {*lens, *zero_shot}]
        for t in runs:
            assert plan.task_lens(model, t) == ([f"results/depth/{model}/lens/{plan.task(t).embedding_set}.tsv"] if plan.task(t).embedding_set in lens else [])
            assert bool(plan.task_zero_shot(model, t)) == (plan.task(t).embedding_set in zero_shot)
        for k, sets in enumerate(plan.batches(model)):
            assert plan.batch_selections(model, k) == [f"results/selection/{model}/{t}.json" for t in runs if plan.task(t).embedding_set in sets]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.task(NUD15_TASK).type = "classification"

    (tmp_path / "pg.tsv").write_text("DMS_id\tsingle_mutants\tseq_len\nA\t100\t98\n")
    config = load("test.yaml")
    config["tasks"].append({"id": "pg", "kind": "proteingym", "filter": {"max_length": 100}, "assay_dir": "assays"})
    plan = Plan(config, chosen_assays=lambda entry: str(tmp_path / f"{entry}.tsv"))
    assert plan.task(NUD15_TASK).dms_id == "NUD15_HUMAN_Suiter_2020" and not plan._index  # known without the checkpoint
    assert plan.zero_shot_sets("tiny_random")[0] == "A" and plan.task_zero_shot("tiny_random", "A.fold_random_5") == ["results/depth/tiny_random/zero_shot/A.tsv"]
