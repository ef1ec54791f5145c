"""One function per pipeline step: read inputs, call the computing modules, write outputs.

Invariant: these are the only functions that combine file I/O with computation; each CLI
subcommand wraps exactly one of them, and each writes its outputs atomically.
"""

from __future__ import annotations

import json
import logging
import platform
from pathlib import Path

import pandas as pd
import torch

import plmexit
from plmexit import embed, figures, models, probes, select, store, tasks
from plmexit.atomic import write_text
from plmexit.errors import InputError, StoreError

log = logging.getLogger(__name__)


def fetch_model(out: str | Path, **source) -> dict:
    """Resolve a model (download by name, or verify a local checkpoint) and write its manifest."""
    manifest = models.resolve_model(**source)
    models.write_manifest(manifest, out)
    return manifest


def prepare_task(spec: tasks.TaskSpec, out: str | Path) -> pd.DataFrame:
    """Read and validate a task's source file into a normalised task table."""
    table = tasks.load_task(spec)
    tasks.write_task_table(table, out)
    return table


def embed_task(model_manifest: str | Path, task_table: str | Path, out: str | Path, settings: embed.EmbedSettings, dtype: str) -> None:
    """Embed every sequence of a task at every layer into an HDF5 store."""
    manifest = models.read_manifest(model_manifest)
    table = tasks.read_task_table(task_table)
    loaded = models.load_model(manifest["checkpoint"], manifest["sha256"], settings.device)
    sequences, truncated = embed.truncate_sequences(list(table["sequence"]), settings.truncate)
    if truncated.any():
        log.warning("%s: %d of %d sequences longer than %d residues were truncated to their first %d", task_table, truncated.sum(), len(table), settings.truncate, settings.truncate)
    attrs = {
        "model": manifest["name"],
        "model_source": manifest["source"],
        "checkpoint_sha256": loaded.sha256,
        "fair_esm_version": models.fair_esm_version(),
        "plmexit_version": plmexit.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": settings.device,
        "pooling": embed.POOLING,
        "layer_norm": settings.layer_norm,
        "layer_norm_description": embed.LAYER_NORM_CONVENTIONS[settings.layer_norm],
        "truncation": f"first {settings.truncate} residues",
        "n_truncated": int(truncated.sum()),
        "max_tokens": settings.max_tokens,
        "input_sha256": tasks.sequences_sha256(table["id"], table["sequence"]),
    }
    lengths = table["sequence"].str.len().to_numpy()
    with store.create_store(out, list(table["id"]), loaded.num_layers, loaded.embed_dim, dtype, attrs, lengths, truncated) as writer:
        for indices, block in embed.embed_pooled(loaded, sequences, settings):
            writer.write(indices, block)


def probe_task(embeddings: str | Path, task_table: str | Path, model: str, task: str, settings: probes.ProbeSettings, out: str | Path) -> pd.DataFrame:
    """Fit probes at every layer and fold; write the long table ``model, task, layer, fold, metric, value``."""
    table = tasks.read_task_table(task_table, settings.task_type)
    info = store.read_info(embeddings)
    if info.attrs.get("input_sha256") != tasks.sequences_sha256(table["id"], table["sequence"]):
        raise StoreError(f"{embeddings} was embedded from other sequences than {task_table}; delete it and rerun `plmexit embed`")
    y, folds = table["label"].to_numpy(), table["fold"].to_numpy()
    rows = []
    for layer in range(info.n_layers + 1):
        X = store.read_layer(embeddings, layer)
        rows.extend((model, task, layer, fold, metric, value) for fold, metric, value in probes.probe_layer(X, y, folds, settings))
        log.info("%s/%s: probed layer %d of %d", model, task, layer, info.n_layers)
    result = pd.DataFrame(rows, columns=select.PROBE_COLUMNS)
    write_text(out, result.to_csv(sep="\t", index=False, float_format="%.10g"))
    return result


def read_probe_table(path: str | Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, sep="\t")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: not a readable probe table ({exc}); rerun `plmexit probe`") from None
    if list(table.columns) != select.PROBE_COLUMNS:
        raise InputError(f"{path}: columns {list(table.columns)} are not {select.PROBE_COLUMNS}; rerun `plmexit probe`")
    return table


def select_task(probe_table: str | Path, metric: str, tolerance: float, out: str | Path) -> dict:
    """Choose the layer for one (model, task) and write the selection as JSON."""
    try:
        selection = select.select_layer(read_probe_table(probe_table), metric, tolerance)
    except InputError as exc:
        raise InputError(f"{probe_table}: {exc}") from None
    write_text(out, json.dumps(selection, indent=2) + "\n")
    return selection


def _read_selection(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a selection written by `plmexit select` ({exc})") from None


def summarize_selections(selection_files: list[str | Path], out: str | Path) -> pd.DataFrame:
    """Gather every selection into ``best_layers.tsv``."""
    summary = select.summarize([_read_selection(p) for p in selection_files])
    write_text(out, summary.to_csv(sep="\t", index=False, float_format="%.6g"))
    return summary


def plot_task(probe_table: str | Path, selection_file: str | Path, out: str | Path) -> None:
    """Figure of the selection metric against layer for one (model, task)."""
    figures.plot_layers(read_probe_table(probe_table), _read_selection(selection_file), out)


def resolve_device(device: str) -> str:
    """``auto`` means the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device is visible; use --device cpu or auto")
    return device


