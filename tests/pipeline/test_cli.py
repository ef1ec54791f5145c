"""The command line: a whole tiny run through every subcommand, and expected errors as one line."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plmexit.cli import main
from plmexit.data.tasks import sequences_sha256, write_task_table
from plmexit.download import sha256_file
from plmexit.embedding import store
from plmexit.probing.choice import ACROSS_TASK_COLUMNS, SUMMARY_COLUMNS
from plmexit.probing.tables import PREDICTION_COLUMNS, PROBE_COLUMNS

SUBCOMMANDS = [
    "scan", "make-test-model", "fetch-model", "fetch-data", "choose-assays", "prepare", "embed", "gather-embeddings", "cost", "summarize-gpu-batch", "probe", "select", "summarize",
    "summarize-proteingym", "export", "predict", "plot", "plot-summary", "lens", "zero-shot", "summarize-depth", "plot-depth",
    "exit", "summarize-exit", "plot-exit", "plot-depth-exit",
]


def toy_csv(path: Path, n: int = 30, seed: int = 0) -> Path:
    """``n`` random sequences with a learnable label (the fraction of K and R)."""
    rng = np.random.default_rng(seed)
    residues = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    lines = ["name,sequence,charge"]
    for i in range(n):
        sequence = "".join(rng.choice(residues, size=rng.integers(8, 25)))
        label = (sequence.count("K") + sequence.count("R")) / len(sequence)
        lines.append(f"v{i},{sequence},{label:.6f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(err: str, command: str, *names) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"plmexit {command}: error: ")
    for name in names:
        assert str(name) in lines[0]


def test_full_run(tmp_path, capsys):
    csv = toy_csv(tmp_path / "toy.csv")

    code, out, _ = run(capsys, "make-test-model", "--layers", 2, "--dim", 32, "--heads", 4, "--seed", 0, "--out", tmp_path / "models")
    assert code == 0
    checkpoint = Path(out.strip())
    assert checkpoint.parent == tmp_path / "models" and checkpoint.name.startswith("esm2")
    digest = sha256_file(checkpoint)

    steps = [
        ["fetch-model", "--id", "tiny", "--checkpoint", checkpoint, "--sha256", digest, "--out", tmp_path / "model.json"],
        ["prepare", "--name", "toy", "--format", "csv", "--path", csv, "--type", "regression", "--id-column", "name",
         "--label-column", "charge", "--cv-folds", 3, "--seed", 1, "--out", tmp_path / "toy.tsv", "--info-out", tmp_path / "toy.json"],
        ["embed", "--model", tmp_path / "model.json", "--task", tmp_path / "toy.tsv", "--out", tmp_path / "toy.h5",
         "--device", "cpu", "--max-tokens", 200, "--dtype", "float32"],
        ["cost", "--model", tmp_path / "model.json", "--task", tmp_path / "toy.tsv", "--out", tmp_path / "cost.json",
         "--device", "cpu", "--sample-sequences", 4, "--repeats", 1],
        ["probe", "--embeddings", tmp_path / "toy.h5", "--task", tmp_path / "toy.tsv", "--type", "regression",
         "--metric", "spearman", "--model-id", "tiny", "--task-name", "toy", "--alphas", "1,10,100", "--out", tmp_path / "probes.tsv",
         "--predictions", tmp_path / "predictions.tsv.gz"],
        ["select", "--probes", tmp_path / "probes.tsv", "--predictions", tmp_path / "predictions.tsv.gz", "--cost", tmp_path / "cost.json",
         "--task-info", tmp_path / "toy.json", "--type", "regression", "--metric", "spearman", "--tolerance", 0.01, "--bootstrap", 50, "--seed", 2,
         "--out", tmp_path / "selection.json"],
        ["summarize", tmp_path / "selection.json", "--out", tmp_path / "best_layers.tsv", "--across-out", tmp_path / "across.tsv",
         "--bootstrap", 50],
        ["plot", "--probes", tmp_path / "probes.tsv", "--selection", tmp_path / "selection.json", "--cost", tmp_path / "cost.json", "--out", tmp_path / "toy.png"],
        ["plot-summary", "--summary", tmp_path / "best_layers.tsv", "--out", tmp_path / "summary.png"],
    ]
    for argv in steps:
        code, _, err = run(capsys, *argv)
        assert code == 0, (argv[0], err)

    manifest = json.loads((tmp_path / "model.json").read_text())
    assert manifest == {"id": "tiny", "name": checkpoint.stem, "source": "checkpoint", "checkpoint": str(checkpoint.resolve()), "sha256": digest}

    table = pd.read_csv(tmp_path / "toy.tsv", sep="\t", dtype={"id": str})
    assert list(table.columns) == ["id", "sequence", "label", "fold"]
    assert list(table["id"]) == [f"v{i}" for i in range(30)]
    assert sorted(table["fold"].value_counts()) == [10, 10, 10]

    info = store.read_info(tmp_path / "toy.h5")
    assert (info.n_layers, info.dim, list(info.ids)) == (2, 32, list(table["id"]))
    assert info.attrs["checkpoint_sha256"] == digest
    assert info.attrs["input_sha256"] == sequences_sha256(table["id"], table["sequence"])
    assert info.attrs["layer_norm"] == "raw" and info.attrs["dtype"] == "float32"

    probes = pd.read_csv(tmp_path / "probes.tsv", sep="\t")
    assert list(probes.columns) == PROBE_COLUMNS
    # layers 0..2 x folds 0..2 x (spearman, mse, inner_spearman, hyperparameter, hyperparameter_edge), and per layer
    # the deploy fold (-1: all training rows) x (inner_spearman, hyperparameter, hyperparameter_edge)
    assert len(probes) == 3 * 3 * 5 + 3 * 3
    assert set(probes["metric"]) == {"spearman", "mse", "inner_spearman", "hyperparameter", "hyperparameter_edge"}
    assert set(probes.loc[probes.fold == -1, "metric"]) == {"inner_spearman", "hyperparameter", "hyperparameter_edge"}

    predictions = pd.read_csv(tmp_path / "predictions.tsv.gz", sep="\t", dtype={"id": str})
    assert list(predictions.columns) == PREDICTION_COLUMNS
    assert len(predictions) == 3 * 30  # every item once per layer, in its own test fold
    assert (predictions.groupby("layer")["id"].apply(sorted) == [sorted(table["id"])] * 3).all()
    merged = predictions.merge(table, on="id")
    assert (merged["fold_x"] == merged["fold_y"]).all() and np.allclose(merged["label_x"], merged["label_y"])

    cost = json.loads((tmp_path / "cost.json").read_text())
    assert (cost["n_layers"], cost["dim"], cost["n_sequences"], cost["sample_sequences"], cost["repeats"]) == (2, 32, 30, 4, 1)
    assert cost["tokens"] == int(table["sequence"].str.len().sum()) + 2 * 30
    assert cost["flops"][0] == 0 and cost["flops"][2] == 2 * cost["flops"][1] > 0
    assert len(cost["seconds"]) == 3

    selection = json.loads((tmp_path / "selection.json").read_text())
    assert (selection["model"], selection["task"], selection["n_layers"], selection["n_folds"]) == ("tiny", "toy", 2, 3)
    assert selection["status"] == "ok" and 0 <= selection["deployed_layer"] <= 2 and len(selection["fold_layers"]) == 3
    assert selection["gain_ci_low"] <= selection["gain_ci_high"]
    assert selection["deployed_compute_saved"] == (2 - selection["deployed_layer"]) / 2
    assert selection["deployed_time_saved"] <= 1.0 and selection["layer_norm"] == "raw"
    assert selection["bootstrap"] == {
        "resamples": 50, "seed": 2, "level": 0.95, "unit": "test items, paired within folds; probes not refitted, layers not re-chosen",
    }

    summary = pd.read_csv(tmp_path / "best_layers.tsv", sep="\t")
    assert list(summary.columns) == SUMMARY_COLUMNS and len(summary) == 1
    across = pd.read_csv(tmp_path / "across.tsv", sep="\t")
    assert list(across.columns) == ACROSS_TASK_COLUMNS and across["model"].tolist() == ["tiny"]
    assert across.at[0, "n_tasks"] == 1
    assert across.at[0, "final_selected_fraction"] == float(selection["deployed_layer"] == 2)
    assert across.at[0, "mean_gain_ci_low"] == across.at[0, "mean_gain"] == across.at[0, "mean_gain_ci_high"]  # one task

    for png in ("toy.png", "summary.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    hidden = [p.name for p in tmp_path.rglob(".*")]
    assert hidden == []  # no temporary siblings left anywhere

    # Layers probed in two worker processes give the very same tables as one layer at a time.
    parallel = [*steps[4][:-4], "--threads", 2, "--out", tmp_path / "probes2.tsv", "--predictions", tmp_path / "predictions2.tsv.gz"]
    assert run(capsys, *parallel)[0] == 0
    assert (tmp_path / "probes2.tsv").read_text() == (tmp_path / "probes.tsv").read_text()
    assert pd.read_csv(tmp_path / "predictions2.tsv.gz", sep="\t").equals(pd.read_csv(tmp_path / "predictions.tsv.gz", sep="\t"))


# --- expected errors ---------------------------------------------------------------------------


def test_prepare_with_a_missing_column(tmp_path, capsys):
    csv = toy_csv(tmp_path / "toy.csv")

    code, _, err = run(capsys, "prepare", "--name", "toy", "--format", "csv", "--path", csv, "--type", "regression",
                       "--label-column", "fitness", "--out", tmp_path / "toy.tsv", "--info-out", tmp_path / "toy.json")

    assert code == 1
    assert_one_error_line(err, "prepare", csv, "'fitness'", "tasks.toy.label_column")
    assert not (tmp_path / "toy.tsv").exists()


def test_fetch_model_with_a_wrong_sha256(tiny_model, tmp_path, capsys):
    code, _, err = run(capsys, "fetch-model", "--checkpoint", tiny_model, "--sha256", "0" * 64, "--out", tmp_path / "model.json")

    assert code == 1
    assert_one_error_line(err, "fetch-model", tiny_model, "sha256")
    assert not (tmp_path / "model.json").exists()


def test_embed_with_an_unreadable_manifest(tmp_path, capsys):
    manifest = tmp_path / "model.json"
    manifest.write_text("{not json")
    task = toy_csv(tmp_path / "toy.csv")  # never reached

    code, _, err = run(capsys, "embed", "--model", manifest, "--task", task, "--out", tmp_path / "toy.h5", "--device", "cpu")

    assert code == 1
    assert_one_error_line(err, "embed", manifest, "fetch-model")
    assert not (tmp_path / "toy.h5").exists()


def test_embed_with_a_missing_checkpoint(tiny_model, tmp_path, capsys):
    moved = Path(shutil.copy(tiny_model, tmp_path / tiny_model.name))
    assert run(capsys, "fetch-model", "--checkpoint", moved, "--out", tmp_path / "model.json")[0] == 0
    csv = toy_csv(tmp_path / "toy.csv")
    assert run(capsys, "prepare", "--name", "toy", "--format", "csv", "--path", csv, "--type", "regression",
               "--label-column", "charge", "--cv-folds", 3, "--out", tmp_path / "toy.tsv", "--info-out", tmp_path / "toy.json")[0] == 0
    moved.unlink()

    code, _, err = run(capsys, "embed", "--model", tmp_path / "model.json", "--task", tmp_path / "toy.tsv",
                       "--out", tmp_path / "toy.h5", "--device", "cpu")

    assert code == 1
    assert_one_error_line(err, "embed", moved, "does not exist")


def test_probe_with_a_store_from_other_sequences(tiny_model, tmp_path, capsys):
    assert run(capsys, "fetch-model", "--checkpoint", tiny_model, "--out", tmp_path / "model.json")[0] == 0
    for seed in (0, 1):
        csv = toy_csv(tmp_path / f"toy{seed}.csv", n=12, seed=seed)
        assert run(capsys, "prepare", "--name", "toy", "--format", "csv", "--path", csv, "--type", "regression",
                   "--label-column", "charge", "--cv-folds", 3, "--out", tmp_path / f"toy{seed}.tsv", "--info-out", tmp_path / f"toy{seed}.json")[0] == 0
    assert run(capsys, "embed", "--model", tmp_path / "model.json", "--task", tmp_path / "toy0.tsv",
               "--out", tmp_path / "toy0.h5", "--device", "cpu")[0] == 0

    code, _, err = run(capsys, "probe", "--embeddings", tmp_path / "toy0.h5", "--task", tmp_path / "toy1.tsv", "--type", "regression",
                       "--metric", "spearman", "--model-id", "tiny", "--task-name", "toy", "--out", tmp_path / "probes.tsv",
                       "--predictions", tmp_path / "predictions.tsv.gz")

    assert code == 1
    assert_one_error_line(err, "probe", tmp_path / "toy0.h5", tmp_path / "toy1.tsv")
    assert not (tmp_path / "probes.tsv").exists()
    assert not (tmp_path / "predictions.tsv.gz").exists()

    # The store carries the model's id (fetch-model's default: the checkpoint's name); another id is refused.
    code, _, err = run(capsys, "probe", "--embeddings", tmp_path / "toy0.h5", "--task", tmp_path / "toy0.tsv", "--type", "regression",
                       "--metric", "spearman", "--model-id", "tiny", "--task-name", "toy", "--out", tmp_path / "probes.tsv",
                       "--predictions", tmp_path / "predictions.tsv.gz")
    assert code == 1
    assert_one_error_line(err, "probe", tmp_path / "toy0.h5", f"holds model {tiny_model.stem!r}, not 'tiny'")
    assert not (tmp_path / "probes.tsv").exists()


def test_probe_with_a_bad_selection_metric(tmp_path, capsys):
    code, _, err = run(capsys, "probe", "--embeddings", tmp_path / "x.h5", "--task", tmp_path / "x.tsv", "--type", "regression",
                       "--metric", "mse", "--model-id", "tiny", "--task-name", "toy", "--out", tmp_path / "probes.tsv",
                       "--predictions", tmp_path / "predictions.tsv.gz")

    assert code == 1
    assert_one_error_line(err, "probe", "'mse'", "spearman")


def test_plot_with_a_missing_selection(tmp_path, capsys):
    probes = tmp_path / "probes.tsv"
    probes.write_text("\t".join(PROBE_COLUMNS) + "\n")

    code, _, err = run(capsys, "plot", "--probes", probes, "--selection", tmp_path / "nope.json", "--cost", tmp_path / "nope.json", "--out", tmp_path / "x.png")

    assert code == 1
    assert_one_error_line(err, "plot", tmp_path / "nope.json")
    assert not (tmp_path / "x.png").exists()


def test_summarize_with_a_broken_selection(tmp_path, capsys):
    broken = tmp_path / "selection.json"
    broken.write_text("{")

    code, _, err = run(capsys, "summarize", broken, "--out", tmp_path / "best_layers.tsv", "--across-out", tmp_path / "across.tsv")

    assert code == 1
    assert_one_error_line(err, "summarize", broken)
    assert not (tmp_path / "best_layers.tsv").exists() and not (tmp_path / "across.tsv").exists()


def test_summarize_gpu_batch_reports_each_jobs_measured_throughput(tmp_path, capsys):
    """A GPU batch's table: per shard record and cost file its set, device, tokens, seconds, tokens per second,
    and TFLOP/s at two FLOPs per block weight per token (12 x layers x dim^2)."""
    found = {"model": "esm2_3B", "n_layers": 36, "dim": 2560, "device_name": "NVIDIA H100", "engine": "fast_esm2", "precision": "float32"}
    (tmp_path / "A.B.shards").mkdir()
    (tmp_path / "A.B.shards" / "1-of-2.json").write_text(json.dumps({**found, "shard": 1, "shards": 2, "tokens": 6000, "seconds": 2.0}))
    (tmp_path / "C.json").write_text(json.dumps({**found, "sample_tokens": 8000, "seconds": [0.0, 1.0, 8.0]}))

    code, _, err = run(capsys, "summarize-gpu-batch", "--shards", tmp_path / "A.B.shards" / "1-of-2.json", "--costs", tmp_path / "C.json",
                       "--out", tmp_path / "batch.tsv")

    assert code == 0, err
    table = pd.read_csv(tmp_path / "batch.tsv", sep="\t")
    assert table[["step", "set", "tokens", "seconds", "tokens_per_second"]].values.tolist() == [["embed", "A.B", 6000, 2.0, 3000.0], ["cost", "C", 8000, 8.0, 1000.0]]
    assert table["shard"].tolist()[0] == 1 and pd.isna(table["shard"].tolist()[1])
    assert table["tflops"].tolist() == pytest.approx([2 * 12 * 36 * 2560**2 * rate / 1e12 for rate in (3000, 1000)], rel=1e-5)
    (tmp_path / "C.json").write_text(json.dumps(found))
    code, _, err = run(capsys, "summarize-gpu-batch", "--costs", tmp_path / "C.json", "--out", tmp_path / "broken.tsv")
    assert code == 1
    assert_one_error_line(err, "summarize-gpu-batch", tmp_path / "C.json")
    assert not (tmp_path / "broken.tsv").exists()


def select_argv(tmp_path: Path, probes: Path, **paths) -> list:
    """``plmexit select`` on ``probes``; the other inputs default to files under ``tmp_path`` (absent unless written)."""
    inputs = {name: paths.get(name, tmp_path / default) for name, default in
              (("predictions", "predictions.tsv.gz"), ("cost", "cost.json"), ("info", "toy.json"))}
    return ["select", "--probes", probes, "--predictions", inputs["predictions"], "--cost", inputs["cost"],
            "--task-info", inputs["info"], "--type", "regression", "--metric", "spearman",
            "--bootstrap", 10, "--out", tmp_path / "sel.json"]


def test_select_with_a_wrong_probe_table(tmp_path, capsys):
    probes = tmp_path / "probes.tsv"
    probes.write_text("a\tb\n1\t2\n")

    code, _, err = run(capsys, *select_argv(tmp_path, probes))

    assert code == 1
    assert_one_error_line(err, "select", probes, "rerun `plmexit probe`")
    assert not (tmp_path / "sel.json").exists()


def _probe_table_without(tmp_path: Path, metric: str | None) -> Path:
    rows = [("tiny", "toy", layer, 0, name, 0.5) for layer in range(3) for name in ("spearman", "inner_spearman")]
    rows += [("tiny", "toy", layer, -1, "inner_spearman", 0.5) for layer in range(3)]  # the deploy fold
    path = tmp_path / "probes.tsv"
    pd.DataFrame([r for r in rows if r[4] != metric], columns=PROBE_COLUMNS).to_csv(path, sep="\t", index=False)
    return path


def _predictions(tmp_path: Path) -> Path:
    """Predictions matching ``_probe_table_without``: fold 0, layers 0..2, four items."""
    rows = [("tiny", "toy", layer, 0, f"v{i}", float(i), float(i * layer)) for layer in range(3) for i in range(4)]
    path = tmp_path / "predictions.tsv.gz"
    pd.DataFrame(rows, columns=PREDICTION_COLUMNS).to_csv(path, sep="\t", index=False, compression="gzip")
    return path


def test_select_with_a_metric_the_table_lacks(tmp_path, capsys):
    probes = _probe_table_without(tmp_path, "inner_spearman")

    code, _, err = run(capsys, *select_argv(tmp_path, probes))

    assert code == 1
    assert_one_error_line(err, "select", "'inner_spearman'")


def test_probe_error_in_a_worker_process_is_one_line(tmp_path, capsys):
    # Fold 0 holds every 'b': its training part has only 'a', which no classifier can learn from.
    n = 12
    table = pd.DataFrame({"id": [f"p{i}" for i in range(n)], "sequence": "MKV", "label": ["b"] * 3 + ["a"] * 9, "fold": np.arange(n) // 3})
    write_task_table(table, tmp_path / "task.tsv")
    attrs = {"input_sha256": sequences_sha256(table["id"], table["sequence"])}
    with store.create_store(tmp_path / "e.h5", list(table["id"]), 2, 4, "float32", attrs, np.full(n, 3), np.zeros(n, dtype=bool)) as writer:
        writer.write(np.arange(n), np.random.default_rng(0).normal(size=(3, n, 4)))

    code, _, err = run(capsys, "probe", "--embeddings", tmp_path / "e.h5", "--task", tmp_path / "task.tsv", "--type", "classification",
                       "--metric", "accuracy", "--model-id", "m", "--task-name", "t", "--threads", 2,
                       "--out", tmp_path / "probes.tsv", "--predictions", tmp_path / "predictions.tsv.gz")

    assert code == 1
    assert_one_error_line(err, "probe", "a training part holds only class 'a'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.h5", "task.tsv"]


def mutant_store(tmp_path: Path, ids: list[str], layers: np.ndarray, folds: np.ndarray) -> None:
    """A regression task table of ``ids`` and a store of ``layers`` ``(L + 1, n, d)`` embedded from it."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"id": ids, "sequence": "MKV", "label": rng.normal(size=len(ids)), "fold": folds})
    write_task_table(table, tmp_path / "task.tsv")
    attrs = {"input_sha256": sequences_sha256(table["id"], table["sequence"])}
    n = len(ids)
    with store.create_store(tmp_path / "e.h5", ids, layers.shape[0] - 1, layers.shape[2], "float32", attrs, np.full(n, 3), np.zeros(n, dtype=bool)) as writer:
        writer.write(np.arange(n), layers)


def probe_argv(tmp_path: Path, *extra) -> list:
    return ["probe", "--embeddings", tmp_path / "e.h5", "--task", tmp_path / "task.tsv", "--type", "regression", "--metric", "spearman",
            "--model-id", "m", "--task-name", "t", "--out", tmp_path / "probes.tsv", "--predictions", tmp_path / "predictions.tsv.gz", *extra]


def test_probe_with_a_position_grouped_inner_split(tmp_path, capsys, caplog):
    positions = np.repeat(np.arange(1, 21), 2)  # 20 positions, two variants each, contiguous outer folds of 4 positions
    ids = [f"A{p}{'CD'[i % 2]}" for i, p in enumerate(positions)]
    layers = np.random.default_rng(1).normal(size=(3, 40, 4))
    layers[0] = 0.5  # every variant the same vector: a layer with no signal
    mutant_store(tmp_path, ids, layers, (positions - 1) // 4)

    with caplog.at_level("WARNING", logger="plmexit.pipeline.probe_steps"):
        code, _, err = run(capsys, *probe_argv(tmp_path, "--inner-split", "contiguous", "--inner-folds", 3, "--alphas", "1,100"))

    assert code == 0, err
    table = pd.read_csv(tmp_path / "probes.tsv", sep="\t")
    deploy = table[table.fold == -1]
    assert set(deploy.metric) == {"inner_spearman", "hyperparameter", "hyperparameter_edge"} and set(deploy.layer) == {0, 1, 2}
    inner = table[table.metric == "inner_spearman"].set_index(["layer", "fold"])["value"]
    assert inner.loc[0].isna().all() and inner.loc[[1, 2]].notna().all()  # the constant layer is never selectable
    chosen = table[(table.metric == "hyperparameter") & (table.layer > 0)]["value"]
    assert set(chosen) <= {1.0, 100.0} and len(chosen) == 2 * 6
    assert -1 not in set(pd.read_csv(tmp_path / "predictions.tsv.gz", sep="\t")["fold"])
    # A two-value grid puts every choice on an edge: one summary line says so.
    edge_lines = [r.getMessage() for r in caplog.records if "widen --alphas" in r.getMessage()]
    assert len(edge_lines) == 1 and "of 12 (layer, fold) fits" in edge_lines[0]


@pytest.mark.parametrize(
    ("ids", "message"),
    [(["p1", "p2"], "is not a ProteinGym mutant"), (["A1C:A2C", "A2D"], "names 2 positions")],
)
def test_probe_with_a_grouped_inner_split_needs_single_mutants(tmp_path, capsys, ids, message):
    n = 20
    ids = ids + [f"A{3 + i}C" for i in range(n - len(ids))]
    mutant_store(tmp_path, ids, np.random.default_rng(0).normal(size=(2, n, 3)), np.arange(n) % 2)

    code, _, err = run(capsys, *probe_argv(tmp_path, "--inner-split", "modulo"))

    assert code == 1
    assert_one_error_line(err, "probe", tmp_path / "task.tsv", message, "--inner-split")
    assert not (tmp_path / "probes.tsv").exists()


def test_probe_inner_split_is_for_regression_only(tmp_path, capsys):
    code, _, err = run(capsys, "probe", "--embeddings", tmp_path / "x.h5", "--task", tmp_path / "x.tsv", "--type", "classification",
                       "--metric", "accuracy", "--model-id", "m", "--task-name", "t", "--inner-split", "modulo",
                       "--out", tmp_path / "probes.tsv", "--predictions", tmp_path / "predictions.tsv.gz")

    assert code == 1
    assert_one_error_line(err, "probe", "'modulo'", "regression tasks only")


def test_select_error_names_the_probe_table(tmp_path, capsys):
    probes = _probe_table_without(tmp_path, "inner_spearman")

    _, _, err = run(capsys, *select_argv(tmp_path, probes))

    assert str(probes) in err


def test_select_with_missing_predictions(tmp_path, capsys):
    probes = _probe_table_without(tmp_path, None)

    code, _, err = run(capsys, *select_argv(tmp_path, probes))

    assert code == 1
    assert_one_error_line(err, "select", probes, tmp_path / "predictions.tsv.gz", "rerun `plmexit probe`")
    assert not (tmp_path / "sel.json").exists()


def test_select_with_an_unreadable_cost_file(tmp_path, capsys):
    probes, predictions = _probe_table_without(tmp_path, None), _predictions(tmp_path)
    (tmp_path / "cost.json").write_text("{")

    code, _, err = run(capsys, *select_argv(tmp_path, probes, predictions=predictions))

    assert code == 1
    assert_one_error_line(err, "select", tmp_path / "cost.json", "`plmexit cost`")
    assert not (tmp_path / "sel.json").exists()


def test_select_with_a_cost_file_for_another_depth(tmp_path, capsys):
    probes, predictions = _probe_table_without(tmp_path, None), _predictions(tmp_path)
    (tmp_path / "cost.json").write_text(json.dumps({"model": "tiny", "model_name": "esm2_tiny", "n_layers": 6, "flops": [0.0] * 7, "seconds": [1.0] * 7}))

    code, _, err = run(capsys, *select_argv(tmp_path, probes, predictions=predictions))

    assert code == 1
    assert_one_error_line(err, "select", tmp_path / "cost.json", "6 layers", probes, "has 2", "rerun `plmexit cost`")
    assert not (tmp_path / "sel.json").exists()


def test_select_with_a_cost_file_that_does_not_say_what_was_embedded(tmp_path, capsys):
    probes, predictions = _probe_table_without(tmp_path, None), _predictions(tmp_path)
    (tmp_path / "cost.json").write_text(json.dumps({"model": "tiny", "model_name": "esm2_tiny", "n_layers": 2, "flops": [0.0] * 3, "seconds": [1.0] * 3}))

    code, _, err = run(capsys, *select_argv(tmp_path, probes, predictions=predictions))

    assert code == 1
    assert_one_error_line(err, "select", tmp_path / "cost.json", "lacks layer_norm, n_truncated", "rerun `plmexit cost`")
    assert not (tmp_path / "sel.json").exists()


def test_select_with_a_cost_file_of_another_model(tmp_path, capsys):
    """One model id from config to every output: a cost file of another model is refused, not mixed in."""
    probes, predictions = _probe_table_without(tmp_path, None), _predictions(tmp_path)
    (tmp_path / "cost.json").write_text(json.dumps({"model": "other", "model_name": "esm2_other", "n_layers": 2, "flops": [0.0] * 3, "seconds": [1.0] * 3}))

    code, _, err = run(capsys, *select_argv(tmp_path, probes, predictions=predictions))

    assert code == 1
    assert_one_error_line(err, "select", tmp_path / "cost.json", "times model 'other'", "probes 'tiny'", "same model")
    assert not (tmp_path / "sel.json").exists()


def test_cost_with_an_unreadable_manifest(tmp_path, capsys):
    manifest = tmp_path / "model.json"
    manifest.write_text("{not json")

    code, _, err = run(capsys, "cost", "--model", manifest, "--task", tmp_path / "toy.tsv", "--out", tmp_path / "cost.json", "--device", "cpu")

    assert code == 1
    assert_one_error_line(err, "cost", manifest, "fetch-model")
    assert not (tmp_path / "cost.json").exists()


def test_plot_summary_with_a_missing_summary(tmp_path, capsys):
    code, _, err = run(capsys, "plot-summary", "--summary", tmp_path / "nope.tsv", "--out", tmp_path / "summary.png")

    assert code == 1
    assert_one_error_line(err, "plot-summary", tmp_path / "nope.tsv", "rerun `plmexit summarize`")
    assert not (tmp_path / "summary.png").exists()


# --- argparse ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_for_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])

    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: plmexit {command}")


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])

    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(command in out for command in SUBCOMMANDS)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])

    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("plmexit ")


@pytest.mark.parametrize(
    "argv",
    [[], ["frobnicate"], ["prepare", "--name", "x"], ["make-test-model", "--layers", "0", "--dim", "8", "--heads", "2", "--out", "x"],
     ["probe", "--alphas", "1,x"]],
    ids=["no-command", "unknown-command", "missing-required", "non-positive", "bad-float-list"],
)
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)

    assert exit_info.value.code == 2
    assert "usage: plmexit" in capsys.readouterr().err


def prepare_toy_assay(capsys, tmp_path, write_file, assay: str, scheme: str) -> tuple[int, str, str]:
    """``plmexit prepare`` of a ProteinGym-format assay of the 6-residue reference protein TOY."""
    reference = write_file("ref.csv", "DMS_id,target_seq,seq_len,DMS_total_number_mutants,coarse_selection_type\nTOY,MKVLAG,6,5,Stability\n")
    return run(capsys, "prepare", "--name", f"TOY.{scheme}", "--format", "proteingym", "--path", write_file("TOY.csv", assay),
               "--reference", reference, "--dms-id", "TOY", "--fold-scheme", scheme, "--type", "regression",
               "--out", tmp_path / "t.tsv", "--info-out", tmp_path / "t.json")


def test_prepare_a_benchmark_error_is_one_line_and_writes_nothing(tmp_path, capsys, write_file):
    code, _, err = prepare_toy_assay(capsys, tmp_path, write_file, "mutant,score\nK2R,0.5\nA3C,1.0\n", "fold_random_5")

    assert code == 1
    assert_one_error_line(err, "prepare", tmp_path / "TOY.csv", "row 3", "'A3C'", "target_seq of TOY has V there")
    assert not (tmp_path / "t.tsv").exists() and not (tmp_path / "t.json").exists()


def test_prepare_writes_the_split_it_used(tmp_path, capsys, write_file):
    code, _, err = prepare_toy_assay(capsys, tmp_path, write_file, "mutant,score\nK2R,0.5\nV3C,1.0\nL4A,2\nA5G,3\nG6A,4\n", "fold_modulo_5")

    assert code == 0, err
    assert json.loads((tmp_path / "t.json").read_text()) == {
        "task": "TOY.fold_modulo_5", "format": "proteingym", "type": "regression", "n_sequences": 5, "dms_id": "TOY",
        "fold_scheme": "fold_modulo_5_built", "split": "fold_modulo_5_built: fold_modulo_5 made by plmexit, not ProteinGym's published column",
        "folds": None, "clustering": None, "clusters": None,  # ProteinGym's own schemes: no random or homology folds
        # Every file read, with its sha256; no archive it was staged from.
        "files": {role: {"path": str(tmp_path / name), "sha256": sha256_file(tmp_path / name)} for role, name in (("path", "TOY.csv"), ("reference", "ref.csv"))},
        "source": None,
    }
    assert pd.read_csv(tmp_path / "t.tsv", sep="\t")["fold"].tolist() == [2, 3, 4, 0, 1]


def test_help_says_the_pipeline_runs_through_snakemake_and_explains_every_prepare_option(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "Snakemake" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--type", "--format"):
        described = re.search(rf"{option} \{{[^}}]+\}}\s+(\S.*?)(?: --|$)", text)
        assert described and len(described.group(1)) > 20, option
    with pytest.raises(SystemExit):
        main(["embed", "--help"])
    assert "default float32" in " ".join(capsys.readouterr().out.split())


def test_with_a_log_file_an_error_is_in_the_log_and_on_stderr(tmp_path, capsys):
    """By hand, --log FILE keeps the log in FILE, appended; a failed command's one-line reason still reaches the console."""
    log = tmp_path / "prepare.log"

    code, _, err = run(capsys, "--log", log, "prepare", "--name", "t", "--format", "csv", "--path", tmp_path / "absent.csv",
                       "--type", "regression", "--out", tmp_path / "t.tsv", "--info-out", tmp_path / "t.json")

    assert code == 1
    line = f"plmexit prepare: error: task 't': file {tmp_path / 'absent.csv'} does not exist; fix tasks.t.path"
    assert err.strip().splitlines() == [line]
    assert log.read_text().strip().splitlines()[-1] == line
    run(capsys, "--log", log, "prepare", "--name", "t", "--format", "csv", "--path", tmp_path / "absent.csv",
        "--type", "regression", "--out", tmp_path / "t.tsv", "--info-out", tmp_path / "t.json")
    assert log.read_text().count(line) == 2  # a second run appends
