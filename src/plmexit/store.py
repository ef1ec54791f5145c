"""HDF5 store of per-layer pooled embeddings, one file per (model, task).

Layout::

    /embeddings  (n_layers + 1, n_sequences, dim)  float16 by default, chunked (1, rows, dim)
    /ids         (n_sequences,)                    utf-8 strings, in task-table order
    /lengths     (n_sequences,)                    residues before truncation
    /truncated   (n_sequences,)                    bool
    attrs: model, checkpoint_sha256, versions, pooling, layer_norm, truncation, input_sha256, ...

Invariant: a store at its final path is complete. It is written to a hidden temporary sibling,
``complete`` is set last, and only then is it renamed into place; readers refuse files without
``complete``. One chunk never spans two layers, so reading one layer reads no other. This is the
only module that imports ``h5py``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from plmexit.atomic import atomic_path
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
    n_layers: int  # transformer layers L; the store holds L + 1 layers (0 = token embeddings)
    dim: int
    attrs: dict


class StoreWriter:
    """Fills ``/embeddings`` block by block; see ``create_store``."""

    def __init__(self, handle: h5py.File, n_sequences: int):
        self._data = handle["embeddings"]
        self._written = np.zeros(n_sequences, dtype=bool)

    def write(self, indices: np.ndarray, block: np.ndarray) -> None:
        """Write ``block`` (layers, len(indices), dim) at sorted, unique sequence ``indices``."""
        self._data[:, indices, :] = block.astype(self._data.dtype)
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
) -> Iterator[StoreWriter]:
    """Create a store atomically; the caller writes every sequence through the yielded writer."""
    if dtype not in DTYPES:
        raise StoreError(f"embedding dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    n = len(ids)
    itemsize = np.dtype(DTYPES[dtype]).itemsize
    rows = int(min(max(n, 1), max(1, _CHUNK_BYTES // (dim * itemsize))))
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", locking=_FILE_LOCKING) as handle:
            handle.create_dataset("embeddings", shape=(n_layers + 1, n, dim), dtype=DTYPES[dtype], chunks=(1, rows, dim))
            handle.create_dataset("ids", data=np.asarray(ids, dtype=object), dtype=h5py.string_dtype("utf-8"))
            handle.create_dataset("lengths", data=np.asarray(lengths, dtype=np.int64))
            handle.create_dataset("truncated", data=np.asarray(truncated, dtype=bool))
            handle.attrs.update({k: _plain(v) for k, v in attrs.items() if v is not None})
            handle.attrs["format_version"] = FORMAT_VERSION
            handle.attrs["dtype"] = dtype
            handle.attrs["n_layers"] = n_layers
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
    return StoreInfo(ids=np.asarray(ids, dtype=object), n_layers=shape[0] - 1, dim=shape[2], attrs=attrs)


def read_layer(path: str | Path, layer: int) -> np.ndarray:
    """One layer's embeddings, ``(n_sequences, dim)`` float32; reads no other layer's chunks."""
    with _open(path) as handle:
        data = handle["embeddings"]
        if not 0 <= layer < data.shape[0]:
            raise StoreError(f"{path}: layer {layer} out of range 0..{data.shape[0] - 1}")
        return data[layer].astype(np.float32)
