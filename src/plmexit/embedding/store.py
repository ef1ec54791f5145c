"""HDF5 store of per-layer pooled embeddings, one file per (model, embedding set): the tasks that share sequences (a ProteinGym assay's fold schemes) share one.

Layout::

    /embeddings  (n_layers + 1, n_sequences, dim)  float16 by default, chunked (1, rows, dim)
    /ids         (n_sequences,)                    utf-8 strings, in task-table order
    /lengths     (n_sequences,)                    residues before truncation
    /truncated   (n_sequences,)                    bool
    attrs: model, checkpoint_sha256, versions, pooling, layer_norm, long_sequences, precision,
           input_sha256, shards, ...

A store of chosen layers only (``plmexit embed --fasta ... --layers``) holds ``len(layers)`` rows in
``/embeddings`` and says which in the ``layers`` attribute (ascending layer numbers); a store without
it holds every layer 0..L, row k being layer k. ``read_layer`` takes a layer number either way; the
workflow's steps, which read every layer, refuse a store of chosen layers (``read_task_info``).

A *shard store* has the same layout for a contiguous row range of a task (attrs ``shard``,
``row_start``, ``row_stop``); ``gather`` streams shard stores into the task's store. A *part* is a
small file of finished rows (``/indices``, ``/embeddings``) that lets an interrupted embedding
resume where it stopped.

Invariant: a store (or part) at its final path is complete. It is written to a hidden temporary sibling,
``complete`` is set last, and only then is it renamed into place; readers refuse files without
``complete``. One chunk never spans two layers, so reading one layer reads no other. This is the
only module that imports ``h5py``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import h5py
import numpy as np

from plmexit.atomic import atomic_path
from plmexit.data.tasks import sequences_sha256
from plmexit.errors import StoreError

FORMAT_VERSION = 1
# About 1 MiB per chunk: large enough for fast sequential reads, small enough that reading one
# layer of a small task does not drag in much padding.
_CHUNK_BYTES = 1 << 20
# HDF5 (>= 1.10) takes an flock on every file it opens. On network file systems without working
# locks (NFS without lockd, some Lustre and GPFS mounts) that open fails, so cluster jobs could not
# read or write stores; sites usually answer with HDF5_USE_FILE_LOCKING=FALSE in every job. The
# decision belongs here, next to the only h5py import, rather than in each job's environment: the
# locks would protect nothing for us. A store is written under a private temporary name by exactly
# one job and renamed into place complete, and readers open only complete stores, read-only. So
# plmexit opens every store with locking off, on every file system and executor (local runs,
# `snakemake -p` commands rerun by hand, SLURM jobs). HDF5 lets HDF5_USE_FILE_LOCKING override
# this setting, so a site that wants the locks back can still set it to TRUE.
_FILE_LOCKING = False
DTYPES = {"float16": np.float16, "float32": np.float32}


@dataclass
class StoreInfo:
    ids: np.ndarray
    n_layers: int  # transformer layers L of the model; a full store holds L + 1 layers (0 = token embeddings)
    dim: int
    attrs: dict
    layers: tuple[int, ...] = ()  # the layers the store holds (0..L unless it holds chosen layers only)


class EmbeddedLayer(NamedTuple):
    """One layer of a store, as ``plmexit.read_layer`` returns it."""

    ids: list[str]  # the sequence ids, in the store's (task table's or FASTA file's) order
    embeddings: np.ndarray  # (n_sequences, dim) float32, row i the mean-pooled embedding of ids[i]


class StoreWriter:
    """Fills ``/embeddings`` block by block; see ``create_store``."""

    def __init__(self, handle: h5py.File, n_sequences: int):
        self._data = handle["embeddings"]
        self._written = np.zeros(n_sequences, dtype=bool)

    def write(self, indices: np.ndarray, block: np.ndarray) -> None:
        """Write ``block`` (layers, len(indices), dim) at sorted, unique sequence ``indices``."""
        indices = np.asarray(indices)
        block = block.astype(self._data.dtype, copy=False)
        if len(indices) and indices[-1] - indices[0] + 1 == len(indices):  # contiguous: one hyperslab
            self._data[:, int(indices[0]) : int(indices[-1]) + 1, :] = block
        else:
            self._data[:, indices, :] = block
        self._written[indices] = True

    @property
    def missing(self) -> int:
        return int((~self._written).sum())


@contextlib.contextmanager
def create_store(
    path: str | Path,
    ids: list[str],
    n_layers: int,
    dim: int,
    dtype: str,
    attrs: dict,
    lengths: np.ndarray,
    truncated: np.ndarray,
    layers: list[int] | None = None,
) -> Iterator[StoreWriter]:
    """Create a store atomically; the caller writes every sequence through the yielded writer.

    ``layers``: store only these layers (ascending, each in 0..n_layers), whose rows the writer's
    blocks then hold; None: every layer."""
    if dtype not in DTYPES:
        raise StoreError(f"embedding dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    n = len(ids)
    itemsize = np.dtype(DTYPES[dtype]).itemsize
    rows = int(min(max(n, 1), max(1, _CHUNK_BYTES // (dim * itemsize))))
    if layers is not None and (list(layers) != sorted(set(layers)) or not all(0 <= k <= n_layers for k in layers) or not layers):
        raise StoreError(f"{path}: layers {list(layers)} are not ascending distinct layers of 0..{n_layers}; this is a bug, please report it")
    stored = n_layers + 1 if layers is None else len(layers)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", locking=_FILE_LOCKING) as handle:
            # An empty shard (more shards than rows) has no chunks: HDF5 chunks may not exceed the shape.
            chunks = (1, rows, dim) if n else None
            handle.create_dataset("embeddings", shape=(stored, n, dim), dtype=DTYPES[dtype], chunks=chunks)
            handle.create_dataset("ids", data=np.asarray(ids, dtype=object), dtype=h5py.string_dtype("utf-8"))
            handle.create_dataset("lengths", data=np.asarray(lengths, dtype=np.int64))
            handle.create_dataset("truncated", data=np.asarray(truncated, dtype=bool))
            handle.attrs.update({k: _plain(v) for k, v in attrs.items() if v is not None})
            handle.attrs["format_version"] = FORMAT_VERSION
            handle.attrs["dtype"] = dtype
            handle.attrs["n_layers"] = n_layers
            if layers is not None:
                handle.attrs["layers"] = np.asarray(layers, dtype=np.int64)
            writer = StoreWriter(handle, n)
            yield writer
            if writer.missing:
                raise StoreError(f"{path}: {writer.missing} sequences were never embedded; this is a bug, please report it")
            handle.attrs["complete"] = True


def _plain(value):
    """HDF5 attributes take plain Python str and scalars, not numpy str_/scalars or str subclasses
    (such as ``torch.__version__``), for which h5py has no conversion path."""
    if isinstance(value, str):
        return value.encode().decode()
    return value.item() if isinstance(value, np.generic) else value


# Attributes that describe one shard only; ``gather`` drops them from the task's store.
SHARD_ATTRS = ("shard", "row_start", "row_stop", "input_sha256", "task_input_sha256", "n_truncated")
# Rows read at a time when gathering: bounds memory whatever the task's size (34 layers x 1,280
# wide x 1,024 rows in float32 is 178 MB).
_GATHER_ROWS = 1024


def gather(shards: list[str | Path], out: str | Path, attrs: dict) -> None:
    """Stream shard stores, ordered by ``shard``, into one store at ``out`` with ``attrs`` on top
    of the shards' common attributes. The shards must tile rows ``0..n`` with no gap or overlap."""
    infos = []
    for path in shards:
        with _open(path) as handle:
            if "shard" not in handle.attrs:
                raise StoreError(f"{path}: not a shard store (no 'shard' attribute); pass the files written by `plmexit embed --shards`")
            a = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in handle.attrs.items()}
            infos.append((a["shard"], path, a, handle["embeddings"].shape, handle["embeddings"].dtype))
    infos.sort(key=lambda item: item[0])
    first = infos[0][2]
    common = {k: v for k, v in first.items() if k not in SHARD_ATTRS + ("complete", "format_version", "dtype", "n_layers")}
    expected_row = 0
    for index, (shard, path, a, _shape, _) in enumerate(infos):
        differing = sorted(k for k in common if a.get(k) != common[k])
        if differing:
            raise StoreError(f"{path}: shard differs from shard {infos[0][0]} in {', '.join(differing)}; re-embed the shards with one configuration")
        if shard != index or a["row_start"] != expected_row:
            raise StoreError(
                f"{path}: shard {shard} starts at row {a['row_start']}, expected shard {index} at row {expected_row}; pass every shard of the task once"
            )
        expected_row = a["row_stop"]
    if len(infos) != first["shards"]:
        raise StoreError(f"{infos[0][1]}: the task has {first['shards']} shards but {len(infos)} were given; pass every shard")
    ids, lengths, truncated = [], [], []
    for _, path, _, _, _ in infos:
        with _open(path) as handle:
            ids.extend(handle["ids"].asstr()[()])
            lengths.append(handle["lengths"][()])
            truncated.append(handle["truncated"][()])
    n_layers, dim = infos[0][3][0] - 1, infos[0][3][2]
    truncated = np.concatenate(truncated)
    attrs = {**common, "n_truncated": int(truncated.sum()), **attrs}
    with create_store(out, ids, n_layers, dim, first["dtype"], attrs, np.concatenate(lengths), truncated) as writer:
        for _, path, a, shape, _ in infos:
            with _open(path) as handle:
                data = handle["embeddings"]
                for start in range(0, shape[1], _GATHER_ROWS):
                    stop = min(start + _GATHER_ROWS, shape[1])
                    writer.write(np.arange(a["row_start"] + start, a["row_start"] + stop), data[:, start:stop, :])


def write_part(path: str | Path, indices: np.ndarray, block: np.ndarray, dtype: str) -> None:
    """Write finished rows (sorted ``indices`` into the store, ``block`` (layers, rows, dim)) atomically."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", locking=_FILE_LOCKING) as handle:
            handle.create_dataset("indices", data=np.asarray(indices, dtype=np.int64))
            handle.create_dataset("embeddings", data=block.astype(DTYPES[dtype]))
            handle.attrs["complete"] = True


def read_part(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, block)`` of a part written by ``write_part``."""
    with _open(path) as handle:
        return handle["indices"][()], handle["embeddings"][()]


def _open(path: str | Path) -> h5py.File:
    path = Path(path)
    try:
        handle = h5py.File(path, "r", locking=_FILE_LOCKING)
    except (OSError, FileNotFoundError) as exc:
        raise StoreError(f"{path}: not a readable embedding store ({exc}); rerun `plmexit embed`") from None
    if not handle.attrs.get("complete", False) or "embeddings" not in handle:
        handle.close()
        raise StoreError(f"{path}: embedding store is incomplete; delete it and rerun `plmexit embed`")
    return handle


def read_info(path: str | Path) -> StoreInfo:
    """Ids, shape and provenance attributes of a store, without reading embeddings."""
    with _open(path) as handle:
        shape = handle["embeddings"].shape
        ids = handle["ids"].asstr()[()]
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in handle.attrs.items()}
        layers = _stored_layers(handle)
    n_layers = int(attrs["n_layers"]) if "layers" in attrs else shape[0] - 1
    return StoreInfo(ids=np.asarray(ids, dtype=object), n_layers=n_layers, dim=shape[2], attrs=attrs, layers=layers)


def _stored_layers(handle: h5py.File) -> tuple[int, ...]:
    """The layer number of each row of ``/embeddings``: the ``layers`` attribute, or 0..L."""
    if "layers" in handle.attrs:
        return tuple(int(k) for k in handle.attrs["layers"])
    return tuple(range(handle["embeddings"].shape[0]))


def read_task_info(path: str | Path, table, task_table: str | Path) -> StoreInfo:
    """``read_info``, and a ``StoreError`` unless the store was embedded from exactly ``table``'s (id, sequence) pairs, in order.

    ``table`` is the task table read from ``task_table`` (``id`` and ``sequence`` columns); every
    step that lines a store's rows up with a task table's labels and folds checks this first.
    """
    info = read_info(path)
    if len(info.layers) != info.n_layers + 1:
        raise StoreError(
            f"{path} holds layers {', '.join(map(str, info.layers))} of 0..{info.n_layers} only (embed --layers); "
            "the workflow's steps read every layer: embed the task without --layers"
        )
    if info.attrs.get("input_sha256") != sequences_sha256(table["id"], table["sequence"]):
        raise StoreError(
            f"{path} was embedded from other sequences than {task_table}; pass the task table the store was made from, "
            "or delete the store and rerun `plmexit embed`"
        )
    return info


def read_layer(path: str | Path, layer: int) -> np.ndarray:
    """One layer's embeddings, ``(n_sequences, dim)`` float32; reads no other layer's chunks."""
    with _open(path) as handle:
        return _layer_rows(handle, path, layer)


def _layer_rows(handle: h5py.File, path: str | Path, layer: int) -> np.ndarray:
    layers = _stored_layers(handle)
    if layer not in layers:
        if layers == tuple(range(len(layers))):
            raise StoreError(f"{path}: layer {layer} out of range 0..{layers[-1]}")
        raise StoreError(f"{path}: layer {layer} is not in the store, which holds layers {', '.join(map(str, layers))} only (embed --layers)")
    return handle["embeddings"][layers.index(layer)].astype(np.float32)


def read_embedded_layer(path: str | Path, layer: int) -> EmbeddedLayer:
    """The sequence ids and one layer's mean-pooled embeddings, ``(n_sequences, dim)`` float32, of a store
    written by ``plmexit embed`` (from a task table or a FASTA file); ``plmexit.read_layer``.

    ``layer`` is a layer number: 0 the token embeddings, k the output of block k (under the store's
    ``layer_norm`` convention), whether the store holds every layer or chosen ones. Only that layer's
    chunks are read. A ``StoreError`` names the file if it is not a complete store or lacks the layer.
    """
    with _open(path) as handle:
        return EmbeddedLayer(ids=list(handle["ids"].asstr()[()]), embeddings=_layer_rows(handle, path, layer))
