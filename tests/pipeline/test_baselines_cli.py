"""The baselines through the command line: probe writes them beside the layers, select scores them, and a task whose
labels are noise gets the verdict not_above_chance with no saving (before: a deployed layer and a saving)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plmexit.cli import main
from plmexit.download import sha256_file
from plmexit.errors import InputError
from plmexit.pipeline import select_steps
from plmexit.probing import choice
from plmexit.probing.tables import BASELINE_COLUMNS, BASELINE_PREDICTION_COLUMNS


def noise_csv(path: Path, n: int = 60, seed: int = 0) -> Path:
    """``n`` random sequences whose label is noise: nothing in a sequence predicts it."""
    rng = np.random.default_rng(seed)
    residues = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    lines = ["name,sequence,score"] + [f"v{i},{''.join(rng.choice(residues, size=rng.integers(8, 25)))},{rng.normal():.6f}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_task_with_noise_labels_is_not_above_chance_and_saves_nothing(tmp_path, capsys, caplog):
    t = tmp_path
    assert main(["make-test-model", "--layers", "2", "--dim", "16", "--heads", "2", "--seed", "0", "--out", str(t / "models")]) == 0
    checkpoint = Path(capsys.readouterr().out.strip())
    steps = [
        ["fetch-model", "--id", "tiny", "--checkpoint", checkpoint, "--sha256", sha256_file(checkpoint), "--out", t / "model.json"],
        ["prepare", "--name", "noise", "--format", "csv", "--path", noise_csv(t / "noise.csv"), "--type", "regression", "--id-column", "name",
         "--label-column", "score", "--cv-folds", 3, "--seed", 1, "--out", t / "noise.tsv", "--info-out", t / "noise.json"],
        ["embed", "--model", t / "model.json", "--task", t / "noise.tsv", "--out", t / "noise.h5", "--device", "cpu", "--max-tokens", 400, "--dtype", "float32"],
        ["cost", "--model", t / "model.json", "--task", t / "noise.tsv", "--out", t / "cost.json", "--device", "cpu", "--sample-sequences", 4, "--repeats", 1],
        ["probe", "--embeddings", t / "noise.h5", "--task", t / "noise.tsv", "--type", "regression", "--metric", "spearman", "--model-id", "tiny",
         "--task-name", "noise", "--out", t / "probes.tsv", "--predictions", t / "predictions.tsv.gz",
         "--baseline-features", "composition", "--baselines-out", t / "baselines.tsv", "--baseline-predictions", t / "baselines.predictions.tsv.gz"],
        ["select", "--probes", t / "probes.tsv", "--predictions", t / "predictions.tsv.gz", "--cost", t / "cost.json", "--task-info", t / "noise.json",
         "--type", "regression", "--metric", "spearman", "--bootstrap", 200, "--seed", 0, "--out", t / "selection.json",
         "--baselines", t / "baselines.tsv", "--baseline-predictions", t / "baselines.predictions.tsv.gz"],
        ["summarize", t / "selection.json", "--out", t / "best_layers.tsv", "--across-out", t / "across.tsv", "--bootstrap", 50],
        ["plot", "--probes", t / "probes.tsv", "--selection", t / "selection.json", "--cost", t / "cost.json", "--out", t / "noise.png"],
    ]
    with caplog.at_level(logging.WARNING):
        for argv in steps:
            assert main([str(a) for a in argv]) == 0, (argv[0], capsys.readouterr().err)

    table = pd.read_csv(t / "baselines.tsv", sep="\t")
    assert list(table.columns) == BASELINE_COLUMNS and set(table["baseline"]) == {"chance", "composition"}
    assert set(table["fold"]) == {0, 1, 2, -1}
    # The chance predictor is one value per fold: Spearman exactly 0 on every fold.
    assert table[(table.baseline == "chance") & (table.metric == "spearman")]["value"].tolist() == [0.0, 0.0, 0.0]
    baseline_predictions = pd.read_csv(t / "baselines.predictions.tsv.gz", sep="\t")
    assert list(baseline_predictions.columns) == BASELINE_PREDICTION_COLUMNS and len(baseline_predictions) == 2 * 60

    selection = json.loads((t / "selection.json").read_text())
    assert selection["status"] == "ok" and selection["verdict"] == choice.NOT_ABOVE_CHANCE
    assert selection["nested_gain_over_chance_ci_low"] <= 0 and selection["final_gain_over_chance_ci_low"] <= 0
    assert selection["deployed_layer"] is not None  # what selection chose is kept, but nothing is claimed saved
    for key in ("deployed_compute_saved", "deployed_time_saved", "folds_compute_saved", "folds_time_saved"):
        assert selection[key] is None
    assert selection["chance_score"] == 0.0 and selection["baseline_features"] == "composition"
    assert selection["final_gain_over_chance"] == selection["final_score"]
    assert any("beats chance" in r.getMessage() for r in caplog.records)

    summary = pd.read_csv(t / "best_layers.tsv", sep="\t")
    assert list(summary.columns) == choice.SUMMARY_COLUMNS
    assert summary.loc[0, "verdict"] == choice.NOT_ABOVE_CHANCE and pd.isna(summary.loc[0, "deployed_time_saved"])
    assert summary.loc[0, "chance_score"] == 0.0 and summary.loc[0, "baseline_features"] == "composition"
    assert choice.describe(summary.to_dict("records")[0]).endswith("no layer to deploy, no saving")
    across = pd.read_csv(t / "across.tsv", sep="\t")
    assert across.loc[0, "n_not_above_chance"] == 1 and pd.isna(across.loc[0, "mean_gain"]) and pd.isna(across.loc[0, "mean_deployed_time_saved"])

    # The workflow's select_layer job: the selection and the task's figure in one process, both or neither.
    select = [str(a) for a in steps[5]]
    select = select[: select.index("--out")] + select[select.index("--out") + 2 :]
    assert main([*select, "--out", str(t / "again.json"), "--figure", str(t / "again.png"), "--lens", "--zero-shot"]) == 0
    assert json.loads((t / "again.json").read_text()) == selection and (t / "again.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert main([*select, "--out", str(t / "lone.json"), "--lens", str(t / "lens.tsv")]) == 1
    assert "pass --figure PNG as well" in capsys.readouterr().err and not (t / "lone.json").exists()
    pd.DataFrame({"model": ["other"], "task": ["noise"], "lens": ["raw"], "layer": [2], "metric": ["kl_to_final"], "value": [0.0]}).to_csv(
        t / "lens.tsv", sep="\t", index=False)
    assert main([*select, "--out", str(t / "half.json"), "--figure", str(t / "half.png"), "--lens", str(t / "lens.tsv")]) == 1
    err = capsys.readouterr().err.strip().splitlines()  # the selection's warnings, then the error's one line
    assert "lens.tsv: speaks of model ['other']" in err[-1] and not any("Traceback" in line for line in err)
    assert not (t / "half.json").exists() and not (t / "half.png").exists()


def test_baseline_files_go_together(tmp_path):
    with pytest.raises(InputError, match="--baselines and --baseline-predictions go together"):
        select_steps.select_task(tmp_path / "p.tsv", tmp_path / "p.tsv.gz", tmp_path / "c.json", tmp_path / "i.json", "regression", "spearman",
                                 0.0, 10, 0, tmp_path / "s.json", baselines=tmp_path / "b.tsv")
