"""The command line: a whole tiny run through every subcommand, and expected errors as one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plmexit import store
from plmexit.cli import main
from plmexit.download import sha256_file
from plmexit.select import PROBE_COLUMNS, SUMMARY_COLUMNS
from plmexit.tasks import sequences_sha256

SUBCOMMANDS = ["make-test-model", "fetch-model", "prepare", "embed", "probe", "select", "summarize", "plot"]


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
        ["fetch-model", "--checkpoint", checkpoint, "--sha256", digest, "--out", tmp_path / "model.json"],
        ["prepare", "--name", "toy", "--format", "csv", "--path", csv, "--type", "regression", "--id-column", "name",
         "--label-column", "charge", "--cv-folds", 3, "--seed", 1, "--out", tmp_path / "toy.tsv"],
        ["embed", "--model", tmp_path / "model.json", "--task", tmp_path / "toy.tsv", "--out", tmp_path / "toy.h5",
         "--device", "cpu", "--max-tokens", 200, "--dtype", "float32"],
        ["probe", "--embeddings", tmp_path / "toy.h5", "--task", tmp_path / "toy.tsv", "--type", "regression",
         "--metric", "spearman", "--model-name", "tiny", "--task-name", "toy", "--alphas", "1,10,100", "--out", tmp_path / "probes.tsv"],
        ["select", "--probes", tmp_path / "probes.tsv", "--metric", "spearman", "--tolerance", 0.01, "--out", tmp_path / "selection.json"],
        ["summarize", tmp_path / "selection.json", "--out", tmp_path / "best_layers.tsv"],
        ["plot", "--probes", tmp_path / "probes.tsv", "--selection", tmp_path / "selection.json", "--out", tmp_path / "toy.png"],
    ]
    for argv in steps:
        code, _, err = run(capsys, *argv)
        assert code == 0, (argv[0], err)

    manifest = json.loads((tmp_path / "model.json").read_text())
    assert manifest == {"name": checkpoint.stem, "source": "checkpoint", "checkpoint": str(checkpoint.resolve()), "sha256": digest}

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
    assert len(probes) == 3 * 3 * 3  # layers 0..2, folds 0..2, spearman + mse + inner_spearman
    assert set(probes["metric"]) == {"spearman", "mse", "inner_spearman"}

    selection = json.loads((tmp_path / "selection.json").read_text())
    assert (selection["model"], selection["task"], selection["n_layers"], selection["n_folds"]) == ("tiny", "toy", 2, 3)
    assert 0 <= selection["best_layer"] <= 2

    summary = pd.read_csv(tmp_path / "best_layers.tsv", sep="\t")
    assert list(summary.columns) == SUMMARY_COLUMNS and len(summary) == 1

    assert (tmp_path / "toy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    hidden = [p.name for p in tmp_path.rglob(".*")]
    assert hidden == []  # no temporary siblings left anywhere


# --- expected errors ---------------------------------------------------------------------------


def test_prepare_with_a_missing_column(tmp_path, capsys):
    csv = toy_csv(tmp_path / "toy.csv")

    code, _, err = run(capsys, "prepare", "--name", "toy", "--format", "csv", "--path", csv, "--type", "regression",
                       "--label-column", "fitness", "--out", tmp_path / "toy.tsv")

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
               "--label-column", "charge", "--cv-folds", 3, "--out", tmp_path / "toy.tsv")[0] == 0
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
                   "--label-column", "charge", "--cv-folds", 3, "--out", tmp_path / f"toy{seed}.tsv")[0] == 0
    assert run(capsys, "embed", "--model", tmp_path / "model.json", "--task", tmp_path / "toy0.tsv",
               "--out", tmp_path / "toy0.h5", "--device", "cpu")[0] == 0

    code, _, err = run(capsys, "probe", "--embeddings", tmp_path / "toy0.h5", "--task", tmp_path / "toy1.tsv", "--type", "regression",
                       "--metric", "spearman", "--model-name", "tiny", "--task-name", "toy", "--out", tmp_path / "probes.tsv")

    assert code == 1
    assert_one_error_line(err, "probe", tmp_path / "toy0.h5", tmp_path / "toy1.tsv")
    assert not (tmp_path / "probes.tsv").exists()


def test_probe_with_a_bad_selection_metric(tmp_path, capsys):
    code, _, err = run(capsys, "probe", "--embeddings", tmp_path / "x.h5", "--task", tmp_path / "x.tsv", "--type", "regression",
                       "--metric", "mse", "--model-name", "tiny", "--task-name", "toy", "--out", tmp_path / "probes.tsv")

    assert code == 1
    assert_one_error_line(err, "probe", "'mse'", "spearman")


def test_plot_with_a_missing_selection(tmp_path, capsys):
    probes = tmp_path / "probes.tsv"
    probes.write_text("\t".join(PROBE_COLUMNS) + "\n")

    code, _, err = run(capsys, "plot", "--probes", probes, "--selection", tmp_path / "nope.json", "--out", tmp_path / "x.png")

    assert code == 1
    assert_one_error_line(err, "plot", tmp_path / "nope.json")
    assert not (tmp_path / "x.png").exists()


def test_summarize_with_a_broken_selection(tmp_path, capsys):
    broken = tmp_path / "selection.json"
    broken.write_text("{")

    code, _, err = run(capsys, "summarize", broken, "--out", tmp_path / "best_layers.tsv")

    assert code == 1
    assert_one_error_line(err, "summarize", broken)


def test_select_with_a_wrong_probe_table(tmp_path, capsys):
    probes = tmp_path / "probes.tsv"
    probes.write_text("a\tb\n1\t2\n")

    code, _, err = run(capsys, "select", "--probes", probes, "--metric", "spearman", "--out", tmp_path / "sel.json")

    assert code == 1
    assert_one_error_line(err, "select", probes, "rerun `plmexit probe`")


def _probe_table_without(tmp_path: Path, metric: str) -> Path:
    rows = [("tiny", "toy", layer, 0, name, 0.5) for layer in range(3) for name in ("spearman", "inner_spearman")]
    path = tmp_path / "probes.tsv"
    pd.DataFrame([r for r in rows if r[4] != metric], columns=PROBE_COLUMNS).to_csv(path, sep="\t", index=False)
    return path


def test_select_with_a_metric_the_table_lacks(tmp_path, capsys):
    probes = _probe_table_without(tmp_path, "inner_spearman")

    code, _, err = run(capsys, "select", "--probes", probes, "--metric", "spearman", "--out", tmp_path / "sel.json")

    assert code == 1
    assert_one_error_line(err, "select", "'inner_spearman'")


def test_select_error_names_the_probe_table(tmp_path, capsys):
    probes = _probe_table_without(tmp_path, "inner_spearman")

    _, _, err = run(capsys, "select", "--probes", probes, "--metric", "spearman", "--out", tmp_path / "sel.json")

    assert str(probes) in err


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
