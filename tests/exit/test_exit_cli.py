"""The exit step through the command line, on a tiny random ESM2 and a toy classification task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from plmexit.cli import main
from plmexit.download import sha256_file
from plmexit.pipeline import lens_exit_steps
from plmexit.pipeline.exit_steps import EXIT_COLUMNS, SUMMARY_COLUMNS
from plmexit.pipeline.exit_timing_steps import TIMING_COLUMNS


def toy_classes(path: Path, n: int = 60, seed: int = 0) -> Path:
    """``n`` random sequences labelled by whether they are rich in K and R."""
    rng = np.random.default_rng(seed)
    residues = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    lines = ["name,sequence,kind"]
    for i in range(n):
        sequence = "".join(rng.choice(residues, size=rng.integers(8, 25)))
        rich = (sequence.count("K") + sequence.count("R")) / len(sequence) > 0.1
        lines.append(f"v{i},{sequence},{'rich' if rich else 'poor'}")
    path.write_text("\n".join(lines) + "\n")
    return path


def run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_exit_step_writes_per_fold_tables_a_summary_and_a_figure(tmp_path, capsys, tiny_model):
    t = tmp_path
    steps = [
        ["fetch-model", "--id", "tiny", "--checkpoint", tiny_model, "--sha256", sha256_file(tiny_model), "--out", t / "model.json"],
        ["prepare", "--name", "toy", "--format", "csv", "--path", toy_classes(t / "toy.csv"), "--type", "classification", "--id-column", "name",
         "--label-column", "kind", "--cv-folds", 3, "--seed", 1, "--out", t / "toy.tsv", "--info-out", t / "toy.json"],
        ["embed", "--model", t / "model.json", "--task", t / "toy.tsv", "--out", t / "toy.h5", "--device", "cpu", "--max-tokens", 400, "--dtype", "float32"],
        ["cost", "--model", t / "model.json", "--task", t / "toy.tsv", "--out", t / "cost.json", "--device", "cpu", "--sample-sequences", 4, "--repeats", 1],
        ["probe", "--embeddings", t / "toy.h5", "--task", t / "toy.tsv", "--type", "classification", "--metric", "accuracy", "--model-id", "tiny",
         "--task-name", "toy", "--cs", "0.1,1", "--out", t / "probes.tsv", "--predictions", t / "predictions.tsv.gz"],
        ["select", "--probes", t / "probes.tsv", "--predictions", t / "predictions.tsv.gz", "--cost", t / "cost.json", "--task-info", t / "toy.json",
         "--type", "classification", "--metric", "accuracy", "--bootstrap", 20, "--out", t / "selection.json"],
        ["exit", "--embeddings", t / "toy.h5", "--task", t / "toy.tsv", "--probes", t / "probes.tsv", "--selection", t / "selection.json",
         "--cost", t / "cost.json", "--model-id", "tiny", "--task-name", "toy", "--type", "classification", "--metric", "accuracy",
         "--epsilon", 0.2, "--delta", 0.2, "--n-thresholds", 10, "--max-patience", 1, "--out", t / "exit.tsv", "--info-out", t / "exit.json"],
        ["exit-timing", "--model", t / "model.json", "--task", t / "toy.tsv", "--embeddings", t / "toy.h5", "--probes", t / "probes.tsv",
         "--selection", t / "selection.json", "--exit-info", t / "exit.json", "--device", "cpu", "--max-tokens", 400, "--sample-sequences", 100,
         "--repeats", 1, "--engine", "reference", "--out", t / "timing.tsv", "--info-out", t / "timing.json"],  # fair-esm's own forward
        ["summarize-exit", t / "exit.tsv", "--timings", t / "timing.tsv", "--epsilon", 0.2, "--out", t / "summary.tsv"],
        ["plot-exit", "--table", t / "exit.tsv", "--timing", t / "timing.tsv", "--out", t / "exit.png"],
    ]
    for argv in steps:
        code, err = run(capsys, *argv)
        assert code == 0, (argv[0], err)

    table = pd.read_csv(t / "exit.tsv", sep="\t")
    assert list(table.columns) == EXIT_COLUMNS
    gates = ["entropy", "margin", "patience", "probability"]
    # per fold: layers 0..2 static, and per gate one calibrated and one Hart row
    assert len(table) == 3 * (3 + 2 * len(gates))
    assert sorted(table.loc[table.kind == "calibrated", "gate"].unique()) == gates
    static = table[table.kind == "static"]
    assert (static["mean_layer"] == static["layer"]).all() and (static.loc[static.layer == 2, "disagreement"] == 0).all()
    calibrated = table[table.kind == "calibrated"]
    assert ((calibrated.mean_layer >= 1) & (calibrated.mean_layer <= 2)).all() and (calibrated.n_calibration == 40).all()
    assert ((table.flops_saved >= 0) & (table.flops_saved <= 1)).all()
    # the probe step's layer-2 test accuracy, from the same refit: the exit step's static rows agree with it
    probes = pd.read_csv(t / "probes.tsv", sep="\t")
    accuracy = probes[(probes.metric == "accuracy") & (probes.layer == 2)].set_index("fold")["value"]
    assert np.allclose(static[static.layer == 2].set_index("fold")["score"].sort_index(), accuracy.sort_index())

    info = json.loads((t / "exit.json").read_text())
    assert len(info["folds"]) == 3 * len(gates)
    for fold in info["folds"]:
        tested = fold["tested"]
        assert all(step["rejected"] for step in tested[:-1])  # fixed sequence: only the last test may fail
        assert fold["certified"] == tested[0]["rejected"]
    summary = pd.read_csv(t / "summary.tsv", sep="\t")
    assert list(summary.columns) == SUMMARY_COLUMNS and set(summary.kind) == {"static", "calibrated", "hart_test_swept"}
    assert (t / "exit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Measured wall clock: per gate, full depth, the deployed layer and the calibrated controller inside the forward, on
    # the first fold's test sequences (all 20 of them here); the adaptive forward exits where the exit table's controller does.
    timing = pd.read_csv(t / "timing.tsv", sep="\t")
    assert list(timing.columns) == TIMING_COLUMNS
    assert len(timing) == len(gates) * 4 and set(timing.run) == {"full_depth", "static_layer", "adaptive", "adaptive_one_deep"}
    assert (timing.seconds > 0).all() and (timing.fold == 0).all() and (timing.n_sequences == 20).all()
    selection = json.loads((t / "selection.json").read_text())
    assert (timing.loc[timing.run == "static_layer", "layer"] == selection["deployed_layer"]).all()
    assert (timing.loc[timing.run == "full_depth", "time_saved"] == 0).all()
    adaptive = timing[timing.run.str.startswith("adaptive")]
    assert ((adaptive.gate_overhead > 0) & (adaptive.gate_overhead < 1)).all() and ((adaptive.mean_layer >= 0) & (adaptive.mean_layer <= 2)).all()
    timed = json.loads((t / "timing.json").read_text())
    assert timed["fold"] == 0 and len(timed["sequence_ids"]) == 20 and timed["static_layer"] == selection["deployed_layer"]
    assert timed["embed_engine"] == "reference" and timed["engine"].startswith("fair-esm's own ESM2 forward")
    fold0 = table[(table.kind == "calibrated") & (table.fold == 0)].set_index("gate")
    plain = adaptive[adaptive.run == "adaptive"].set_index("gate")
    assert np.allclose(plain.loc[gates, "mean_layer"], fold0.loc[gates, "mean_layer"])
    calibrated_summary = summary[summary.kind == "calibrated"].set_index("gate")
    one_fold = adaptive[adaptive.run == "adaptive"].set_index("gate")
    assert np.allclose(calibrated_summary.loc[gates, "time_saved_measured"], one_fold.loc[gates, "time_saved"])
    assert summary.loc[(summary.kind == "static") & (summary.layer == 2), "time_saved_measured"].iloc[0] == 0
    assert summary.loc[(summary.kind == "static") & (summary.layer == 1) & (selection["deployed_layer"] != 1), "time_saved_measured"].isna().all()

    code, err = run(capsys, *steps[6][:-4], "--epsilon", 1.5, "--out", t / "bad.tsv", "--info-out", t / "bad.json")
    assert code == 1 and err.strip().startswith("plmexit exit: error: exit.epsilon is 1.5") and len(err.strip().splitlines()) == 1
    assert not (t / "bad.tsv").exists()


def test_exit_is_planned_for_the_configured_tasks_only():
    import pytest
    import yaml
    from snakemake.utils import validate

    from plmexit.errors import ConfigError
    from plmexit.pipeline.planning import Plan

    repo = Path(__file__).resolve().parents[2]
    schema = str(repo / "workflow" / "schemas" / "config.schema.yaml")
    config = yaml.safe_load((repo / "config" / "test.yaml").read_text())
    validate(config, schema, set_default=True)
    plan = Plan(config)
    assert plan.exit_tables() == ["results/exit/tiny_random/deeploc_membrane.tsv"]
    assert {"results/summary/exit.tsv", "results/figures/exit/tiny_random/deeploc_membrane.png"} <= set(plan.final_targets())
    assert config["exit"]["epsilon"] == 0.1 and config["exit"]["fallback"] == "full"  # schema defaults

    config["exit"]["tasks"] = ["nope"]
    with pytest.raises(ConfigError, match=r"^config: exit\.tasks: 'nope' is not the id of a config task entry"):
        Plan(config)
    config["exit"] = {"gate": "probability"}
    with pytest.raises(Exception, match="Additional properties"):
        validate(config, schema, set_default=True)
    config["exit"] = {}
    validate(config, schema, set_default=True)
    assert Plan(config).exit_targets() == []


def test_lens_exit_calibrates_the_heads_exit_on_other_sequences_than_it_reports(tmp_path, capsys, tiny_model):
    t = tmp_path
    steps = [
        ["fetch-model", "--id", "tiny", "--checkpoint", tiny_model, "--sha256", sha256_file(tiny_model), "--out", t / "model.json"],
        ["prepare", "--name", "toy", "--format", "csv", "--path", toy_classes(t / "toy.csv", n=30), "--type", "classification", "--id-column", "name",
         "--label-column", "kind", "--cv-folds", 3, "--seed", 1, "--out", t / "toy.tsv", "--info-out", t / "toy.json"],
        ["lens-exit", "--model", t / "model.json", "--task", t / "toy.tsv", "--task-name", "toy", "--sample", 20, "--mask-fraction", 0.3,
         "--gates", "probability", "patience", "--epsilon", 0.3, "--delta", 0.2, "--n-thresholds", 10, "--max-patience", 1, "--device", "cpu",
         "--out", t / "lens.tsv", "--info-out", t / "lens.json"],
        ["summarize-lens-exit", t / "lens.tsv", "--epsilon", 0.3, "--out", t / "summary.tsv"],
    ]
    for argv in steps:
        code, err = run(capsys, *argv)
        assert code == 0, (argv[0], err)

    table = pd.read_csv(t / "lens.tsv", sep="\t")
    assert list(table.columns) == lens_exit_steps.LENS_EXIT_COLUMNS
    static = table[table.kind == "static"]
    assert static["layer"].tolist() == [0, 1, 2] and (static["mean_layer"] == static["layer"]).all()
    assert static.iloc[-1]["disagreement"] == 0 and static.iloc[-1]["accuracy"] == static.iloc[-1]["final_accuracy"]
    calibrated = table[table.kind == "calibrated"]
    assert sorted(zip(calibrated.gate, calibrated.unit)) == [(g, u) for g in ("patience", "probability") for u in ("position", "sequence")]
    assert ((calibrated.mean_layer >= 1) & (calibrated.mean_layer <= 2)).all()
    assert (calibrated[["n_calibration", "n_test"]] == [10, 10]).all().all()  # both controllers calibrate and report on sequences

    info = json.loads((t / "lens.json").read_text())
    assert info["n_sequences"] == 20 and info["model"] == "tiny" and info["num_layers"] == 2
    assert len(info["calibration_ids"]) == len(info["test_ids"]) == 10 and not set(info["calibration_ids"]) & set(info["test_ids"])
    assert info["n_calibration_positions"] + info["n_test_positions"] == info["n_masked_positions"]
    assert {(c["gate"], c["unit"]) for c in info["controllers"]} == set(zip(calibrated.gate, calibrated.unit))
    summary = pd.read_csv(t / "summary.tsv", sep="\t")
    assert list(summary.columns) == lens_exit_steps.SUMMARY_COLUMNS and len(summary) == 4
    sequence_rows = summary[summary.unit == "sequence"]
    assert (sequence_rows["risk"] == sequence_rows["sequence_disagreement"]).all()
    position_rows = summary[summary.unit == "position"]
    assert (position_rows["risk"] == position_rows["position_risk"]).all()
    assert "Hoeffding-Bentkus" in info["guarantee"]

    code, err = run(capsys, "lens-exit", "--model", t / "model.json", "--task", t / "toy.tsv", "--task-name", "toy", "--sample", 1,
                    "--device", "cpu", "--out", t / "one.tsv", "--info-out", t / "one.json")
    assert code == 1 and err.strip().endswith("head exit needs at least 2 sampled sequences (one to calibrate, one to test), found 1; raise exit.lens_sample")
    assert len(err.strip().splitlines()) == 1 and not (t / "one.tsv").exists()
