"""HDF5 embedding store: exact round trips, per-layer chunks, provenance, atomic and complete-only."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from plmexit.embedding.store import FORMAT_VERSION, create_store, read_embedded_layer, read_info, read_layer
from plmexit.errors import StoreError

IDS = ["a", "b", "c", "d", "ε"]  # a non-ASCII id survives the utf-8 round trip
ATTRS = {"model": "esm2_tiny", "checkpoint_sha256": "ab" * 32, "max_tokens": 4096, "n_truncated": np.int64(1),
         "layer_norm": np.str_("raw"), "skipped": None}


def make_store(path, data: np.ndarray, dtype: str = "float32", blocks=([0, 2, 4], [1, 3])):
    layers, n, dim = data.shape
    with create_store(path, IDS[:n], layers - 1, dim, dtype, ATTRS, lengths=np.arange(n) + 10,
                      truncated=np.arange(n) == 1) as writer:
        for block in blocks:
            writer.write(np.asarray(block), data[:, block])


@pytest.fixture
def data() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(3, 5, 8)).astype(np.float32)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip(tmp_path, data, dtype):
    path = tmp_path / "store.h5"

    make_store(path, data, dtype)

    info = read_info(path)
    assert list(info.ids) == IDS
    assert (info.n_layers, info.dim) == (2, 8)
    for layer in range(3):
        got = read_layer(path, layer)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, data[layer].astype(dtype).astype(np.float32))


def test_provenance_attributes(tmp_path, data):
    path = tmp_path / "store.h5"

    make_store(path, data, "float16")

    attrs = read_info(path).attrs
    assert {k: attrs[k] for k in ("model", "checkpoint_sha256", "max_tokens", "n_truncated", "layer_norm")} == {
        "model": "esm2_tiny", "checkpoint_sha256": "ab" * 32, "max_tokens": 4096, "n_truncated": 1, "layer_norm": "raw",
    }
    assert isinstance(attrs["layer_norm"], str) and isinstance(attrs["n_truncated"], int)
    assert (attrs["format_version"], attrs["dtype"], attrs["n_layers"], bool(attrs["complete"])) == (FORMAT_VERSION, "float16", 2, True)
    assert "skipped" not in attrs
    with h5py.File(path, "r") as handle:
        np.testing.assert_array_equal(handle["lengths"][()], [10, 11, 12, 13, 14])
        np.testing.assert_array_equal(handle["truncated"][()], [False, True, False, False, False])


@pytest.mark.parametrize(
    ("n", "dim", "dtype", "rows"),
    [(5, 8, "float32", 5), (100, 4096, "float32", 64), (100, 4096, "float16", 100)],
)
def test_one_chunk_never_spans_two_layers(tmp_path, n, dim, dtype, rows):
    path = tmp_path / "store.h5"
    ids = [f"s{i}" for i in range(n)]
    with create_store(path, ids, 1, dim, dtype, {}, np.ones(n), np.zeros(n, bool)) as writer:
        writer.write(np.arange(n), np.zeros((2, n, dim), np.float32))

    with h5py.File(path, "r") as handle:
        assert handle["embeddings"].chunks == (1, rows, dim)  # about 1 MiB, one layer per chunk


def test_failure_inside_the_block_leaves_nothing(tmp_path, data):
    class Interrupted(Exception):
        pass

    with pytest.raises(Interrupted):
        with create_store(tmp_path / "store.h5", IDS, 2, 8, "float32", ATTRS, np.ones(5), np.zeros(5, bool)) as writer:
            writer.write(np.array([0, 1]), data[:, :2])
            raise Interrupted

    assert list(tmp_path.iterdir()) == []


def test_unwritten_rows_are_an_error_and_leave_nothing(tmp_path, data):
    with pytest.raises(StoreError, match=r"store\.h5: 2 sequences were never embedded"):
        make_store(tmp_path / "store.h5", data, blocks=([0, 2, 4],))

    assert list(tmp_path.iterdir()) == []


def test_a_store_without_the_complete_attribute_is_refused(tmp_path, data):
    path = tmp_path / "half.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("embeddings", data=data)
        handle.create_dataset("ids", data=np.asarray(IDS, dtype=object), dtype=h5py.string_dtype("utf-8"))

    with pytest.raises(StoreError, match=r"half\.h5: embedding store is incomplete; delete it and rerun `plmexit embed`"):
        read_info(path)
    with pytest.raises(StoreError, match=r"half\.h5: embedding store is incomplete"):
        read_layer(path, 0)


def test_unreadable_or_missing_store(tmp_path):
    (tmp_path / "text.h5").write_text("not hdf5")

    with pytest.raises(StoreError, match=r"text\.h5: not a readable embedding store"):
        read_info(tmp_path / "text.h5")
    with pytest.raises(StoreError, match=r"missing\.h5: not a readable embedding store"):
        read_layer(tmp_path / "missing.h5", 0)


def test_unknown_dtype_is_refused_before_writing(tmp_path):
    with pytest.raises(StoreError, match=r"embedding dtype 'bfloat16' is not one of float16, float32"):
        with create_store(tmp_path / "store.h5", IDS, 2, 8, "bfloat16", {}, np.ones(5), np.zeros(5, bool)):
            pass

    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("layer", [3, -1])
def test_layer_out_of_range(tmp_path, data, layer):
    make_store(tmp_path / "store.h5", data)

    with pytest.raises(StoreError, match=rf"store\.h5: layer {layer} out of range 0\.\.2"):
        read_layer(tmp_path / "store.h5", layer)


def test_stores_are_written_and_read_without_hdf5_file_locks(tmp_path, data, monkeypatch):
    """Network file systems without working flock make HDF5's locked opens fail; no open asks for one."""
    real_file, locking = h5py.File, []

    def recording_file(*args, **kwargs):
        handle = real_file(*args, **kwargs)
        locking.append(handle.id.get_access_plist().get_file_locking()[0])
        return handle

    monkeypatch.delenv("HDF5_USE_FILE_LOCKING", raising=False)
    monkeypatch.setattr(h5py, "File", recording_file)
    make_store(tmp_path / "store.h5", data)
    read_info(tmp_path / "store.h5")
    read_layer(tmp_path / "store.h5", 1)

    assert locking == [False, False, False]


def test_a_store_of_chosen_layers_is_read_by_layer_number(tmp_path, data):
    """``layers``: rows of /embeddings are those layers; reads ask by layer number, as for a full store."""
    path = tmp_path / "chosen.h5"
    with create_store(path, IDS[:5], 4, 8, "float32", ATTRS, lengths=np.arange(5), truncated=np.zeros(5, bool), layers=[0, 2, 4]) as writer:
        writer.write(np.arange(5), data)

    info = read_info(path)
    assert (info.n_layers, info.layers, info.dim) == (4, (0, 2, 4), 8)
    for row, layer in enumerate((0, 2, 4)):
        np.testing.assert_array_equal(read_layer(path, layer), data[row])
        got = read_embedded_layer(path, layer)
        assert got.ids == IDS[:5]
        np.testing.assert_array_equal(got.embeddings, data[row])
    with pytest.raises(StoreError, match=r"chosen\.h5: layer 3 is not in the store, which holds layers 0, 2, 4 only \(embed --layers\)"):
        read_layer(path, 3)


def test_a_full_store_lists_every_layer_and_read_embedded_layer_gives_its_ids(tmp_path, data):
    make_store(tmp_path / "store.h5", data)

    assert read_info(tmp_path / "store.h5").layers == (0, 1, 2)
    ids, embeddings = read_embedded_layer(tmp_path / "store.h5", 1)
    assert ids == IDS and embeddings.dtype == np.float32
    np.testing.assert_array_equal(embeddings, data[1])


@pytest.mark.parametrize("layers", [[2, 0], [0, 0], [5], []], ids=["unsorted", "repeated", "out-of-range", "none"])
def test_chosen_layers_must_be_ascending_layers_of_the_model(tmp_path, layers):
    with pytest.raises(StoreError, match="are not ascending distinct layers of 0..4"):
        with create_store(tmp_path / "s.h5", ["a"], 4, 8, "float32", {}, np.ones(1), np.zeros(1, bool), layers=layers):
            pass
    assert list(tmp_path.iterdir()) == []
