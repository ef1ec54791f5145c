"""``plmexit scan``: the config it writes is an ordinary one, its answer is the workflow's, and its mistakes are one line."""

from __future__ import annotations

import copy
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from test_cli import assert_one_error_line, run

from plmexit.pipeline.planning import Plan
from plmexit.pipeline.scan_steps import scan_config
from plmexit.probing.choice import describe

from workflow_runs import REPO, snakemake_env

EXAMPLE = REPO / "examples" / "my_proteins.csv"
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def test_the_config_is_one_csv_task_and_one_model_and_passes_the_schema(tiny_model, tmp_path):
    config = scan_config(EXAMPLE, "location", str(tiny_model), tmp_path / "results", id_column="name", export=True)

    assert config["models"] == [{"id": tiny_model.stem, "checkpoint": str(tiny_model.resolve())}]
    assert config["tasks"] == [{
        "id": "my_proteins_location", "kind": "csv", "type": "classification", "path": str(EXAMPLE.resolve()), "label_column": "location",
        "sequence_column": "sequence", "id_column": "name",
    }]
    assert config["export"] == {"enabled": True} and config["pathvars"] == {"results": str(tmp_path / "results")}
    plan = Plan.from_config(copy.deepcopy(config), SCHEMA)
    assert plan.pairs() == [(tiny_model.stem, "my_proteins_location")]


@pytest.mark.parametrize("label, task_type", [("charge", "regression"), ("location", "classification")])
def test_numeric_labels_make_a_regression_task(label, task_type, tmp_path):
    assert scan_config(EXAMPLE, label, "esm2_t6_8M_UR50D", tmp_path)["tasks"][0]["type"] == task_type


def test_a_named_release_and_a_hub_model_are_config_entries(tmp_path):
    commit = "a" * 40
    assert scan_config(EXAMPLE, "charge", "esm2_t6_8M_UR50D", tmp_path)["models"] == [{"id": "esm2_t6_8M_UR50D", "name": "esm2_t6_8M_UR50D"}]
    assert scan_config(EXAMPLE, "charge", f"facebook/esm2_t6_8M_UR50D@{commit}", tmp_path)["models"] == [
        {"id": "esm2_t6_8M_UR50D", "hub": "facebook/esm2_t6_8M_UR50D", "revision": commit}
    ]


@pytest.mark.parametrize(
    "argv, names",
    [(["missing.csv", "--label", "charge"], ["missing.csv", "no such file"]),
     ([str(EXAMPLE), "--label", "charg"], ["my_proteins.csv", "no column 'charg' for --label", "columns: name, sequence, charge, location"]),
     ([str(EXAMPLE), "--label", "charge", "--id-column", "id"], ["no column 'id' for --id-column"]),
     ([str(EXAMPLE), "--label", "charge", "--model", "esm2_t99_1T"], ["model 'esm2_t99_1T' is not a fair-esm ESM2 release"])],
    ids=["missing-file", "missing-label-column", "missing-id-column", "unknown-model"],
)
def test_mistakes_are_one_line_and_write_nothing(argv, names, tiny_model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "--model" not in argv:
        argv = [*argv, "--model", str(tiny_model)]

    code, out, err = run(capsys, "scan", *argv)

    assert code == 1 and out == ""
    assert_one_error_line(err, "scan", *names)
    assert not (tmp_path / "results").exists()


@pytest.mark.workflow
def test_scan_runs_the_workflow_prints_its_answer_and_exports(tiny_model, tmp_path):
    results, export = tmp_path / "results", tmp_path / "shipped"
    command = [sys.executable, "-m", "plmexit.cli", "scan", str(EXAMPLE), "--model", str(tiny_model), "--label", "charge",
               "--id-column", "name", "--results", str(results), "--export", str(export), "--cores", "2"]

    scanned = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=snakemake_env())

    assert scanned.returncode == 0, scanned.stderr[-3000:]
    summary = pd.read_csv(results / "summary" / "best_layers.tsv", sep="\t")
    assert summary[["model", "task", "metric"]].values.tolist() == [[tiny_model.stem, "my_proteins_charge", "spearman"]]
    # stdout is the answer alone (Snakemake's progress is on stderr): the workflow's closing lines, then the export.
    assert scanned.stdout.splitlines() == [
        f"plmexit: 1 tasks summarised in {results}/summary/best_layers.tsv (figures in {results}/figures/); the deployed layer of each:",
        f"  {describe(summary.iloc[0].to_dict())}",
        f"plmexit: exported to {export}/ (plmexit predict --export {export} --input new.fasta --out predictions.csv)",
    ]
    assert " / my_proteins_charge: layer " in scanned.stdout and " of 2, spearman " in scanned.stdout
    # The config it wrote is an ordinary one, and the export is the workflow's.
    config = yaml.safe_load((results / "config.yaml").read_text())
    assert Plan.from_config(config, SCHEMA).exports() == [f"{results}/export/{tiny_model.stem}/my_proteins_charge"]
    shipped = sorted(p.name for p in export.iterdir())
    assert {"probe.json", "card.json", "README.md"} <= set(shipped)
    assert shipped == sorted(p.name for p in (results / "export" / tiny_model.stem / "my_proteins_charge").iterdir())
    assert (export / "probe.json").read_bytes() == (results / "export" / tiny_model.stem / "my_proteins_charge" / "probe.json").read_bytes()
