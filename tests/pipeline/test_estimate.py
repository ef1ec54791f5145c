"""`plmexit estimate`: the tokens a config will embed and their GPU-hours, before anything is submitted."""

from __future__ import annotations

import json

import pytest
import yaml

from plmexit.cli import main
from plmexit.data.tasks import read_task_table
from plmexit.embedding import pieces
from plmexit.embedding.inputs import embedded_sequences
from plmexit.pipeline import estimate
from plmexit.pipeline.planning import Plan

from workflow_runs import REPO

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


@pytest.mark.workflow
def test_tokens_are_what_the_run_embedded_and_hours_use_its_measured_throughput(finished_run, monkeypatch):
    workdir, config_path = finished_run
    monkeypatch.chdir(workdir)
    plan = Plan.from_config(yaml.safe_load(config_path.read_text()), SCHEMA)
    table = estimate.estimate(plan, {"tiny_esm_hf": 500.0}).set_index("model")

    # Per embedding set: the sequences and tokens of the task tables the run prepared, cut as the run embedded them.
    settings = estimate.embed_settings(plan)
    for model, row in table.iterrows():
        sets = sorted(p.stem for p in (workdir / "results" / "embeddings" / model).glob("*.h5"))
        expected_sequences = expected_tokens = 0
        for s in sets:
            task_table = workdir / plan.embedding_table(s)
            sequences, _, cut, _ = embedded_sequences(read_task_table(task_table), settings, plan.is_variant_set(s), task_table)
            expected_sequences += len(sequences)
            expected_tokens += pieces.work_tokens(sequences, cut)
        assert (row["embedding_sets"], row["sequences"], row["tokens"]) == (len(sets), expected_sequences, expected_tokens), model

    # Hours: the given throughput, else the one the run's cost files measured at full depth.
    assert table.loc["tiny_esm_hf", "gpu_hours"] == pytest.approx(table.loc["tiny_esm_hf", "tokens"] / 500.0 / 3600)
    costs = [json.loads(p.read_text()) for p in sorted((workdir / "results" / "cost" / "tiny_random").glob("*.json"))]
    rate = sum(c["sample_tokens"] for c in costs) / sum(c["seconds"][-1] for c in costs)
    assert table.loc["tiny_random", "tokens_per_second"] == pytest.approx(rate)
    assert table.loc["tiny_random", "throughput"].startswith(f"measured: {len(costs)} cost files of results")


def test_files_not_fetched_yet_and_unknown_models_are_one_line(tmp_path, monkeypatch, capsys):
    config = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    config.pop("data")  # pinned files would be downloaded by the run: not there yet
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    args = ["estimate", "--configfile", "c.yaml", "--schema", str(SCHEMA)]
    assert main([*args, "--tokens-per-second", "nope=10"]) == 1
    assert capsys.readouterr().err.strip().endswith("--tokens-per-second nope: no model of that id in the config (ids: tiny_random, tiny_esm_hf, tiny_bert, tiny_albert, tiny_t5, tiny_esmc)")
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("plmexit estimate: error: results/data/proteingym/") and "not there yet; fetch the task files first" in err
