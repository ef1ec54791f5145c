"""The embed step: shards gathered into one store, resuming after SIGKILL, windows, progress."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from plmexit.cli.common import ProgressBar
from plmexit.data.tasks import TASK_COLUMNS, sequences_sha256
from plmexit.embedding import store
from plmexit.embedding.parts import shard_bounds
from plmexit.errors import StoreError
from plmexit.pipeline import model_steps, probe_steps
from plmexit.settings import EmbedSettings


def write_task(path: Path, n: int, seed: int = 0, duplicates: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    residues = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    sequences = ["".join(rng.choice(residues, size=rng.integers(5, 40))) for _ in range(n)]
    if duplicates:
        sequences[n // 2] = sequences[1]  # a duplicate in another shard / part
    table = pd.DataFrame({"id": [f"s{i}" for i in range(n)], "sequence": sequences, "label": rng.normal(size=n).round(4), "fold": np.arange(n) % 3})
    table[TASK_COLUMNS].to_csv(path, sep="\t", index=False)
    return path


@pytest.fixture
def task(tmp_path) -> Path:
    return write_task(tmp_path / "toy.tsv", 60)


@pytest.fixture
def manifest(tmp_path, tiny_model, tiny_model_sha256) -> Path:
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"id": "tiny", "name": tiny_model.stem, "source": "checkpoint", "checkpoint": str(tiny_model), "sha256": tiny_model_sha256}))
    return path


def read_all(path: Path) -> tuple[dict, dict]:
    """Every dataset and attribute of a store, for exact comparison."""
    with h5py.File(path, "r") as handle:
        data = {name: handle[name][()] for name in handle}
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in handle.attrs.items()}
    return data, attrs


def assert_same_store(a: Path, b: Path) -> None:
    (data_a, attrs_a), (data_b, attrs_b) = read_all(a), read_all(b)
    assert attrs_a == attrs_b
    assert data_a.keys() == data_b.keys()
    for name in data_a:
        np.testing.assert_array_equal(data_a[name], data_b[name], err_msg=name)


# --- shards ------------------------------------------------------------------------------------


def test_sharded_embedding_gathers_into_the_unsharded_store(tmp_path, task, manifest):
    settings = EmbedSettings(max_tokens=100, truncate=30)  # some sequences truncated, in several shards
    model_steps.embed_task(manifest, task, tmp_path / "whole.h5", settings, "float32")
    shard_files = [tmp_path / f"shards/{k}-of-3.h5" for k in range(3)]
    for k, path in enumerate(shard_files):
        model_steps.embed_task(manifest, task, path, settings, "float32", shard=k, shards=3)

    probe_steps.gather_embeddings(list(reversed(shard_files)), tmp_path / "gathered.h5")  # any order

    (whole, whole_attrs), (gathered, gathered_attrs) = read_all(tmp_path / "whole.h5"), read_all(tmp_path / "gathered.h5")
    np.testing.assert_array_equal(gathered["ids"], whole["ids"])
    np.testing.assert_array_equal(gathered["lengths"], whole["lengths"])
    np.testing.assert_allclose(gathered["embeddings"], whole["embeddings"], rtol=1e-5, atol=1e-6)  # other batches, same values
    assert gathered_attrs == {**whole_attrs, "shards": 3}
    assert whole_attrs["n_truncated"] == int(whole["truncated"].sum()) > 1
    assert gathered_attrs["input_sha256"] == sequences_sha256(*pd.read_csv(task, sep="\t")[["id", "sequence"]].T.values)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.name.startswith(".")) == []  # no parts or temporary files left


def test_shard_bounds_balance_residues_and_leave_no_gap():
    np.testing.assert_array_equal(shard_bounds(np.array([1, 1, 1, 1]), 2), [0, 2, 4])
    np.testing.assert_array_equal(shard_bounds(np.array([10, 1, 1, 1, 1]), 2), [0, 1, 5])  # the long one alone
    np.testing.assert_array_equal(shard_bounds(np.array([3, 4]), 3), [0, 1, 2, 2])  # more shards than rows: one is empty
    np.testing.assert_array_equal(shard_bounds(np.array([5, 5, 5]), 1), [0, 3])


def test_more_shards_than_sequences(tmp_path, manifest):
    task = write_task(tmp_path / "two.tsv", 2, duplicates=False)
    paths = [tmp_path / f"{k}-of-3.h5" for k in range(3)]
    for k, path in enumerate(paths):
        model_steps.embed_task(manifest, task, path, EmbedSettings(), "float32", shard=k, shards=3)

    probe_steps.gather_embeddings(paths, tmp_path / "out.h5")

    model_steps.embed_task(manifest, task, tmp_path / "whole.h5", EmbedSettings(), "float32")
    np.testing.assert_allclose(store.read_layer(tmp_path / "out.h5", 2), store.read_layer(tmp_path / "whole.h5", 2), rtol=1e-5, atol=1e-6)
    assert store.read_info(paths[2]).ids.tolist() == []


def test_gather_refuses_a_missing_shard(tmp_path, task, manifest):
    settings = EmbedSettings(max_tokens=100)
    paths = [tmp_path / f"{k}-of-3.h5" for k in range(3)]
    for k in (0, 2):
        model_steps.embed_task(manifest, task, paths[k], settings, "float16", shard=k, shards=3)

    with pytest.raises(StoreError, match=r"2-of-3.h5: shard 2 starts at row \d+, expected shard 1 at row \d+; pass every shard"):
        probe_steps.gather_embeddings([paths[0], paths[2]], tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


def test_a_shard_store_is_not_a_task_store(tmp_path, task, manifest):
    model_steps.embed_task(manifest, task, tmp_path / "whole.h5", EmbedSettings(), "float16")

    with pytest.raises(StoreError, match=r"whole.h5: not a shard store"):
        probe_steps.gather_embeddings([tmp_path / "whole.h5"], tmp_path / "out.h5")


# --- resuming ----------------------------------------------------------------------------------


def embed_command(manifest: Path, task: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "plmexit.cli", "embed", "--model", str(manifest), "--task", str(task), "--out", str(out),
            "--device", "cpu", "--threads", "1", "--max-tokens", "64", "--dtype", "float16", "--no-progress"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_model, tiny_model_sha256):
    """A task of 600 sequences (about 13 parts at --max-tokens 64) embedded without interruption."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    manifest = tmp / "model.json"
    manifest.write_text(json.dumps({"id": "tiny", "name": tiny_model.stem, "source": "checkpoint", "checkpoint": str(tiny_model), "sha256": tiny_model_sha256}))
    task = write_task(tmp / "big.tsv", 600, seed=1)
    subprocess.run(embed_command(manifest, task, tmp / "big.h5"), check=True, capture_output=True)
    return manifest, task, tmp / "big.h5"


@pytest.mark.parametrize("kill_after_parts", [1, 8])
def test_sigkill_then_rerun_gives_the_uninterrupted_store(tmp_path, uninterrupted, kill_after_parts):
    manifest, task, reference = uninterrupted
    out = tmp_path / "resumed" / "big.h5"
    parts = model_steps.parts_dir(out)
    process = subprocess.Popen(embed_command(manifest, task, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while process.poll() is None and len(list(parts.glob("part-*.h5"))) < kill_after_parts:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run finished before it could be killed; give it more work"
    assert not out.exists()
    done = len(list(parts.glob("part-*.h5")))
    assert done >= kill_after_parts

    rerun = subprocess.run(embed_command(manifest, task, out), capture_output=True, text=True)

    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming, {done} of" in rerun.stderr
    assert_same_store(out, reference)
    assert not parts.exists()


def test_parts_of_another_run_are_discarded(tmp_path, task, manifest, caplog):
    out = tmp_path / "toy.h5"
    model_steps.parts_dir(out).mkdir()
    (model_steps.parts_dir(out) / "fingerprint").write_text("another run\n")
    (model_steps.parts_dir(out) / "part-000000.h5").write_text("stale")

    with caplog.at_level("WARNING"):
        model_steps.embed_task(manifest, task, out, EmbedSettings(), "float32")

    assert "holds parts of another run" in caplog.text
    assert store.read_info(out).ids.tolist() == [f"s{i}" for i in range(60)]


# --- long sequences and provenance --------------------------------------------------------------


def test_the_store_records_the_long_sequence_mode(tmp_path, task, manifest):
    model_steps.embed_task(manifest, task, tmp_path / "t.h5", EmbedSettings(truncate=20), "float16")
    model_steps.embed_task(manifest, task, tmp_path / "w.h5", EmbedSettings(long_sequences="window", window=16, overlap=4), "float16")

    t, w = store.read_info(tmp_path / "t.h5").attrs, store.read_info(tmp_path / "w.h5").attrs
    assert (t["long_sequences"], t["truncation"], t["precision"], t["shards"]) == ("truncate", "truncated to the first 20 residues", "float32", 1)
    assert "window" not in t and t["n_truncated"] > 0
    assert (w["long_sequences"], w["window"], w["overlap"], w["n_truncated"]) == ("window", 16, 4, 0)
    assert w["truncation"].startswith("sliding windows of 16 residues overlapping by 4")


# --- the engine (embed.engine) ------------------------------------------------------------------


def test_the_reference_engine_fills_the_same_store_and_records_itself(tmp_path, task, manifest):
    """Windows, store and cost through fair-esm's own forward: the same rows within 1e-5 relative of the
    fast engine's, every attribute the same but the two that name the engine."""
    from plmexit.embedding import fast_esm2, generic

    fast = EmbedSettings(max_tokens=100, long_sequences="window", window=16, overlap=4)  # most sequences are longer than 16
    reference = EmbedSettings(max_tokens=100, long_sequences="window", window=16, overlap=4, engine="reference")
    model_steps.embed_task(manifest, task, tmp_path / "fast.h5", fast, "float32")
    model_steps.embed_task(manifest, task, tmp_path / "reference.h5", reference, "float32")

    (data_f, attrs_f), (data_r, attrs_r) = read_all(tmp_path / "fast.h5"), read_all(tmp_path / "reference.h5")
    assert (attrs_f["embed_engine"], attrs_f["engine"]) == ("fast", fast_esm2.FastEncoder.engine)
    assert (attrs_r["embed_engine"], attrs_r["engine"]) == ("reference", generic.FairEsmHookedEncoder.engine)
    assert {k for k in attrs_f.keys() | attrs_r.keys() if attrs_f.get(k) != attrs_r.get(k)} == {"embed_engine", "engine"}
    np.testing.assert_array_equal(data_f["ids"], data_r["ids"])
    scale = np.abs(data_f["embeddings"]).max(axis=-1, keepdims=True)
    assert np.all(np.abs(data_r["embeddings"] - data_f["embeddings"]) <= 1e-5 * scale)

    result = model_steps.measure_cost(manifest, task, tmp_path / "cost.json", reference, sample_sequences=5, repeats=1, seed=0)
    assert (result["embed_engine"], result["engine"]) == ("reference", generic.FairEsmHookedEncoder.engine)
    assert np.all(np.diff(result["seconds"]) >= 0) and result["seconds"][0] > 0


class _Killed(Exception):
    pass


def test_parts_of_the_other_engine_are_refused(tmp_path, task, manifest, monkeypatch):
    """An embedding killed under one engine is not resumed, nor silently redone, under the other: a
    one-line error says which engine made the parts and how to go on."""
    out = tmp_path / "toy.h5"
    write_part = store.write_part

    def killed_after_one_part(path, *args):
        if list(path.parent.glob("part-*.h5")):
            raise _Killed
        write_part(path, *args)

    monkeypatch.setattr(store, "write_part", killed_after_one_part)
    with pytest.raises(_Killed):
        model_steps.embed_task(manifest, task, out, EmbedSettings(max_tokens=40), "float32")
    monkeypatch.setattr(store, "write_part", write_part)
    parts = model_steps.parts_dir(out)
    assert len(list(parts.glob("part-*.h5"))) == 1

    with pytest.raises(StoreError) as refused:
        model_steps.embed_task(manifest, task, out, EmbedSettings(max_tokens=40, engine="reference"), "float32")
    assert str(refused.value) == (
        f"{parts}: holds parts embedded with embed.engine fast, not reference; resume with embed.engine: fast (--engine fast), "
        f"or delete {parts} to embed with reference"
    )
    assert len(list(parts.glob("part-*.h5"))) == 1 and not out.exists()
    model_steps.embed_task(manifest, task, out, EmbedSettings(max_tokens=40), "float32")  # the same engine resumes
    assert store.read_info(out).attrs["embed_engine"] == "fast" and not parts.exists()


def test_shards_of_two_engines_are_not_gathered(tmp_path, task, manifest):
    model_steps.embed_task(manifest, task, tmp_path / "s0.h5", EmbedSettings(), "float16", shard=0, shards=2)
    model_steps.embed_task(manifest, task, tmp_path / "s1.h5", EmbedSettings(engine="reference"), "float16", shard=1, shards=2)

    with pytest.raises(StoreError, match=r"s1.h5: shard differs from shard 0 in embed_engine, engine; re-embed the shards with one configuration"):
        probe_steps.gather_embeddings([tmp_path / "s0.h5", tmp_path / "s1.h5"], tmp_path / "out.h5")


# --- progress ----------------------------------------------------------------------------------


def test_progress_reaches_the_total(tmp_path, task, manifest):
    calls = []

    model_steps.embed_task(manifest, task, tmp_path / "t.h5", EmbedSettings(max_tokens=100), "float16", progress=lambda *a: calls.append(a))

    sequences = pd.read_csv(task, sep="\t")["sequence"]
    total = int((sequences.drop_duplicates().str.len() + 2).sum())  # the duplicate runs once
    assert len(calls) > 1 and [c[1] for c in calls] == [total] * len(calls)
    assert calls[-1][0] == total and [c[0] for c in calls] == sorted(c[0] for c in calls)


def test_progress_bar_lines_when_not_a_terminal():
    stream = io.StringIO()
    bar = ProgressBar(stream, every_s=10.0)

    for done, seconds in ((100, 1.0), (200, 2.0), (900, 12.0), (1000, 13.0)):
        bar(done, 1000, seconds)

    lines = stream.getvalue().splitlines()
    assert len(lines) == 3  # first, after 10 s, and the end
    assert lines[0] == "embed [###...........................]  10.0% 100/1,000 tokens, 100 tokens/s, 1 s elapsed, about 9 s left"
    assert lines[-1] == "embed [##############################] 100.0% 1,000/1,000 tokens, 77 tokens/s, 13 s elapsed"
