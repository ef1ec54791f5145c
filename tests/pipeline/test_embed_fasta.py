"""``plmexit embed --fasta``: a FASTA file's sequences at chosen layers, read back by ``plmexit.read_layer`` and by
the README's h5py snippet, held to fair-esm's extract.py; bad input as one line, nothing written."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from test_cli import assert_one_error_line, run
from test_docs import fenced_blocks

import plmexit
from plmexit.cli import main
from plmexit.data.tasks import write_task_table
from plmexit.embedding import store
from plmexit.embedding.reference import reference_pooled
from plmexit.errors import StoreError

from workflow_runs import REPO

RECORDS = {"p1 first protein": "MKTAYIAKQRQISFVKSHFSRQ", "p2": "GSHMLEDPVDAFQLGQ", "p3|x": "MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHF"}


def write_fasta(path, records=RECORDS):
    path.write_text("".join(f">{header}\n{sequence}\n" for header, sequence in records.items()))
    return path


def embed_fasta(capsys, fasta, model, out, *extra):
    return run(capsys, "embed", "--fasta", fasta, "--model", model, "--out", out, "--device", "cpu", "--dtype", "float32", "--no-progress", *extra)


def readme_snippet() -> str:
    """The README's h5py-only read of a store: its python block."""
    (body,) = [body for language, body, _ in fenced_blocks((REPO / "README.md").read_text()) if language == "python" and "import h5py" in body]
    return body


def test_chosen_layers_read_back_by_read_layer_the_readme_snippet_and_equal_to_fair_esm(tiny_model, tiny_loaded, tmp_path, capsys):
    fasta = write_fasta(tmp_path / "in.fa")

    code, _, err = embed_fasta(capsys, fasta, tiny_model, tmp_path / "out.h5", "--layers", "0", "-1")

    assert code == 0, err
    ids = ["p1", "p2", "p3|x"]  # FASTA ids: the header up to the first space
    expected = reference_pooled(tiny_loaded, list(RECORDS.values()))  # fair-esm's extract.py, every layer
    info = store.read_info(tmp_path / "out.h5")
    assert (info.n_layers, info.layers, info.attrs["model"]) == (2, (0, 2), tiny_model.stem)
    for layer in (0, 2):
        got = plmexit.read_layer(tmp_path / "out.h5", layer)
        assert got.ids == ids
        assert got.embeddings.dtype == np.float32 and got.embeddings.shape == (3, 32)
        np.testing.assert_allclose(got.embeddings, expected[layer], rtol=1e-5, atol=1e-5)
    with pytest.raises(StoreError, match=r"out\.h5: layer 1 is not in the store, which holds layers 0, 2 only"):
        plmexit.read_layer(tmp_path / "out.h5", 1)
    # The README's snippet, as printed there, reads the same ids and layer 6 of its example; here layer 2.
    snippet = readme_snippet().replace('"proteins.h5"', repr(str(tmp_path / "out.h5"))).replace("layers.index(6)", "layers.index(2)")
    assert snippet != readme_snippet()
    namespace: dict = {}
    exec(snippet, namespace)
    assert list(namespace["ids"]) == ids
    np.testing.assert_array_equal(namespace["X"], plmexit.read_layer(tmp_path / "out.h5", 2).embeddings)


def test_every_layer_by_default_and_the_task_mode_store_is_the_same(tiny_model, tmp_path, capsys):
    """Without --layers the store holds 0..L, as the workflow's store of the same sequences does."""
    fasta = write_fasta(tmp_path / "in.fa")
    assert embed_fasta(capsys, fasta, tiny_model, tmp_path / "all.h5")[0] == 0
    import pandas as pd

    table = pd.DataFrame({"id": ["p1", "p2", "p3|x"], "sequence": list(RECORDS.values()), "label": [0.0, 1.0, 2.0], "fold": [0, 1, 2]})
    write_task_table(table, tmp_path / "task.tsv")
    assert run(capsys, "fetch-model", "--checkpoint", tiny_model, "--out", tmp_path / "model.json")[0] == 0
    assert run(capsys, "embed", "--task", tmp_path / "task.tsv", "--model", tmp_path / "model.json", "--out", tmp_path / "task.h5",
               "--device", "cpu", "--dtype", "float32", "--no-progress")[0] == 0

    assert store.read_info(tmp_path / "all.h5").layers == (0, 1, 2)
    for layer in range(3):
        np.testing.assert_array_equal(store.read_layer(tmp_path / "all.h5", layer), store.read_layer(tmp_path / "task.h5", layer))
    assert store.read_info(tmp_path / "all.h5").attrs["input_sha256"] == store.read_info(tmp_path / "task.h5").attrs["input_sha256"]


def test_a_store_of_chosen_layers_is_refused_by_the_workflows_steps(tiny_model, tmp_path, capsys):
    fasta = write_fasta(tmp_path / "in.fa")
    assert embed_fasta(capsys, fasta, tiny_model, tmp_path / "two.h5", "--layers", "1")[0] == 0
    import pandas as pd

    table = pd.DataFrame({"id": ["p1", "p2", "p3|x"], "sequence": list(RECORDS.values()), "label": [0.0, 1.0, 2.0], "fold": [0, 1, 2]})

    with pytest.raises(StoreError, match=r"two\.h5 holds layers 1 of 0\.\.2 only \(embed --layers\)"):
        store.read_task_info(tmp_path / "two.h5", table, "task.tsv")


def test_a_sequence_outside_the_alphabet_is_one_line_and_writes_nothing(tiny_model, tmp_path, capsys):
    fasta = write_fasta(tmp_path / "bad.fa", {"ok": "MKTAYIAK", "bad1": "MKTJAYIAK"})

    code, _, err = embed_fasta(capsys, fasta, tiny_model, tmp_path / "out.h5")

    assert code == 1
    assert_one_error_line(err, "embed", "bad.fa", "bad1", "'J'", "outside the ESM alphabet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.fa"]


@pytest.mark.parametrize(
    "model, message",
    [("esm2_t99_1T", "model 'esm2_t99_1T' is not a fair-esm ESM2 release (esm2_t6_8M_UR50D, "),
     ("facebook/esm2_t6_8M_UR50D@main", "revision 'main' is not a 40-hex commit")],
    ids=["unknown-name", "hub-branch"],
)
def test_an_unknown_model_is_one_line_naming_it(model, message, tmp_path, capsys):
    code, _, err = embed_fasta(capsys, write_fasta(tmp_path / "in.fa"), model, tmp_path / "out.h5")

    assert code == 1
    assert_one_error_line(err, "embed", message)
    assert not (tmp_path / "out.h5").exists()


def test_layers_out_of_range_name_the_models_layers(tiny_model, tmp_path, capsys):
    code, _, err = embed_fasta(capsys, write_fasta(tmp_path / "in.fa"), tiny_model, tmp_path / "out.h5", "--layers", "1", "3")

    assert code == 1  # after the model's loading is logged: the error line ends the output
    assert err.splitlines()[-1].startswith(f"plmexit embed: error: --layers 3: {tiny_model.stem} has layers 0..2 (-1 the final one)")
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.parametrize(
    "argv, message",
    [(["--fasta", "in.fa", "--shard", "0", "--shards", "2"], "--shard applies to a task table (--task), not to --fasta"),
     (["--fasta", "in.fa", "--variant-crop"], "--variant-crop applies to a task table (--task), not to --fasta"),
     (["--task", "t.tsv", "--layers", "1"], "--layers applies to --fasta")],
    ids=["shard", "variant-crop", "layers-with-task"],
)
def test_flags_of_the_other_mode_are_one_line(argv, message, capsys):
    code, _, err = run(capsys, "embed", *argv, "--model", "m.json", "--out", "o.h5", "--device", "cpu")

    assert code == 1
    assert_one_error_line(err, "embed", message)


def test_task_and_fasta_are_one_or_the_other(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["embed", "--task", "t.tsv", "--fasta", "in.fa", "--model", "m.json", "--out", "o.h5"])

    assert exit_info.value.code == 2
    assert re.search(r"argument --fasta: not allowed with argument --task", capsys.readouterr().err)


def test_import_plmexit_loads_neither_h5py_nor_numpy():
    """``plmexit.read_layer`` is imported on first use: every plmexit process imports the package."""
    code = "import sys, plmexit; assert 'h5py' not in sys.modules and 'numpy' not in sys.modules; plmexit.read_layer; assert 'h5py' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
