"""The pipeline steps that run a model: fetch it, embed tasks (or a FASTA file's sequences), time forward passes.

Invariant: as every module of ``plmexit.pipeline`` (one function per CLI command, outputs written atomically); kept
apart because only these (and ``export_steps``, which ships a model, ``depth_steps`` and ``lens_exit_steps``, which read
its head, and ``exit_timing_steps``, which times exits inside its forward) need torch and a model backend (fair-esm or transformers), so every other step starts without loading them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

import plmexit
from plmexit.atomic import write_text
from plmexit.data import tasks
from plmexit.data.sequences import read_sequences
from plmexit.embedding import cost, engine, inputs, options, pieces, store
from plmexit.embedding.parts import plan_parts, shard_bounds
from plmexit.errors import InputError, StoreError
from plmexit.models import manifest as model_manifests
from plmexit.settings import LAYER_NORM_CONVENTIONS, EmbedSettings

log = logging.getLogger(__name__)

def fetch_model(out: str | Path, model_id: str | None = None, **source) -> dict:
    """Resolve a model (a fair-esm name or checkpoint, a pinned hub snapshot or a transformers
    directory; ``models.manifest.resolve``), hash it and write its manifest.

    ``model_id`` is the config's id of the model (default: the model's own name). It is the one id
    every later output carries (store, cost file, probe table, selection); the model's own name
    (fair-esm release, checkpoint stem, hub id) travels beside it as ``model_name``, for ProteinGym's files.
    """
    resolved = model_manifests.resolve(**source)
    manifest = {"id": model_id or resolved["name"], **resolved}
    model_manifests.write_manifest(manifest, out)
    return manifest


# Forward batches per resumable part: a killed run loses at most this much work, and every this
# many batches a small part file is written.
PART_BATCHES = 16
_PROGRESS_LOG_EVERY_S = 10.0
ProgressCallback = Callable[[int, int, float], None]
"""``(tokens done, tokens to do, seconds)`` after every forward batch."""


def parts_dir(out: str | Path) -> Path:
    """Hidden directory beside a store where finished parts wait until the store is written."""
    out = Path(out)
    return out.with_name(f".{out.name}.parts")


def embed_task(model_manifest: str | Path, task_table: str | Path, out: str | Path, settings: EmbedSettings, dtype: str, **options) -> None:
    """``embed_table`` on the task table file ``task_table`` with the model its manifest file ``model_manifest`` names;
    ``options`` are ``embed_table``'s (shard, shards, progress, variant_crop, record_out)."""
    embed_table(
        manifest=model_manifests.read_manifest(model_manifest), table=tasks.read_task_table(task_table), task_table=task_table, out=out,
        settings=settings, dtype=dtype, **options,
    )


def embed_fasta(
    fasta: str | Path,
    model: str,
    out: str | Path,
    settings: EmbedSettings,
    dtype: str,
    layers: list[int] | None = None,
    progress: ProgressCallback | None = None,
) -> None:
    """Embed every sequence of a FASTA (or CSV) file, ``data.sequences.read_sequences``, into a store, as a task table's are.

    ``model`` is a model manifest JSON from fetch-model, or a model as a config names it (``manifest.source_of``: a
    fair-esm release, a checkpoint file, a transformers directory, ORG/NAME@COMMIT), resolved and hashed here.
    ``layers``: store only these (negative numbers count from the end, -1 the final layer, as fair-esm's extract.py).
    """
    settings.check()
    ids, sequences = read_sequences(fasta)
    if Path(model).suffix == ".json" and Path(model).is_file():
        manifest = model_manifests.read_manifest(model)
    else:
        source = model_manifests.source_of(model)
        manifest = {"id": model_manifests.model_id(source), **model_manifests.resolve(**source)}
    table = pd.DataFrame({"id": ids, "sequence": sequences, "label": "", "fold": tasks.TRAIN_ONLY_FOLD})
    embed_table(manifest=manifest, table=table, task_table=fasta, out=out, settings=settings, dtype=dtype, progress=progress, layers=layers)


def stored_layers(layers: list[int] | None, n_layers: int, model: str) -> list[int] | None:
    """``--layers`` as ascending layer numbers of 0..``n_layers`` (negative ones count from the end); None: every layer."""
    if layers is None:
        return None
    bad = [k for k in layers if not -(n_layers + 1) <= k <= n_layers]
    if bad:
        raise InputError(f"--layers {bad[0]}: {model} has layers 0..{n_layers} (-1 the final one); ask for layers in that range")
    return sorted({k % (n_layers + 1) for k in layers})


def embed_table(
    manifest: dict,
    table: pd.DataFrame,
    task_table: str | Path,
    out: str | Path,
    settings: EmbedSettings,
    dtype: str,
    shard: int | None = None,
    shards: int = 1,
    progress: ProgressCallback | None = None,
    variant_crop: bool = False,
    layers: list[int] | None = None,
    record_out: str | Path | None = None,
) -> None:
    """Embed every sequence of a task, or of shard ``shard`` of ``shards``, at every layer (or ``layers``) into a store.

    ``manifest`` is a model manifest (``models.manifest``), ``table`` a task table, ``task_table`` the file it was read from.

    Shards are contiguous row ranges of about equal residues (``parts.shard_bounds``); a shard's
    store is gathered with the others by ``gather_embeddings``. Work is done in parts of
    ``PART_BATCHES`` batches, each written atomically to ``parts_dir(out)`` as it finishes; a rerun
    after a kill (even SIGKILL) skips finished parts, and the store is then streamed from the parts,
    so it is identical to an uninterrupted run's. ``variant_crop``: the table is one target's
    substitution variants, embedded through one crop over the mutated positions (``inputs.embedded_sequences``).
    ``record_out``: a JSON record of this run, written before the store: the tokens it embedded (a resumed run
    only its own), their seconds, the device and the model's layers and width (a GPU batch's table reads it).
    """
    settings.check()
    if shard is not None and not 0 <= shard < shards:
        raise InputError(f"--shard {shard} is outside 0..{shards - 1} for --shards {shards}; pass a shard index below --shards")
    bounds = shard_bounds(table["sequence"].str.len().to_numpy(), shards)
    start, stop = (int(bounds[shard]), int(bounds[shard + 1])) if shard is not None else (0, len(table))
    rows = table.iloc[start:stop]
    # The crop is computed over the whole table before the shard's rows are taken, so every shard agrees.
    all_sequences, all_truncated, embed_settings, crop = inputs.embedded_sequences(table, settings, variant_crop, task_table)
    sequences, truncated = all_sequences[start:stop], all_truncated[start:stop]
    if crop is not None:
        log.info("%s: %s", task_table, crop.describe())
    elif truncated.any():
        log.warning("%s: %d of %d sequences longer than %d residues were truncated to their first %d", task_table, truncated.sum(), len(rows), settings.truncate, settings.truncate)
    loaded = model_manifests.load(manifest, settings.device)
    layers = stored_layers(layers, loaded.num_layers, manifest["id"])
    encoder = engine.make_encoder(loaded, settings.device, settings.precision, engine=settings.engine)
    attrs = {
        "model": manifest["id"],
        "model_name": manifest["name"],
        "model_source": manifest["source"],
        "checkpoint_sha256": loaded.sha256,
        **loaded.describe(),
        "plmexit_version": plmexit.__version__,
        "torch_version": str(torch.__version__),  # a str subclass that HDF5 attributes cannot store
        "python_version": platform.python_version(),
        "device": settings.device,
        "engine": encoder.engine,
        "embed_engine": settings.engine,  # the embed.engine setting: fast or reference
        **encoder.resolved.attrs(),  # precision: what ran; precision_requested: what was asked
        "pooling": options.POOLING,
        "layer_norm": settings.layer_norm,
        "layer_norm_description": LAYER_NORM_CONVENTIONS[settings.layer_norm],
        "long_sequences": settings.long_sequences,
        "truncation": crop.describe() if crop is not None else settings.long_sequence_description(),
        "truncate": settings.truncate if settings.long_sequences == "truncate" else None,
        "window": settings.window if settings.long_sequences == "window" else None,
        "overlap": settings.overlap if settings.long_sequences == "window" else None,
        "n_truncated": int(truncated.sum()),
        "max_tokens": settings.max_tokens,
        "shards": shards,
        "input_sha256": tasks.sequences_sha256(rows["id"], rows["sequence"]),
        **(crop.attrs() if crop is not None else {}),
    }
    if shard is not None:
        attrs.update(shard=shard, row_start=start, row_stop=stop, task_input_sha256=tasks.sequences_sha256(table["id"], table["sequence"]))
    parts = plan_parts(sequences, PART_BATCHES * settings.max_tokens)
    workdir = parts_dir(out)
    _open_parts_dir(workdir, {"attrs": attrs, "dtype": dtype, "parts": [p.tolist() for p in parts]}, settings.engine)
    part_files = [workdir / f"part-{i:06d}.h5" for i in range(len(parts))]
    todo = [i for i, f in enumerate(part_files) if not f.exists()]
    if len(todo) < len(parts):
        log.info("%s: resuming, %d of %d parts already embedded in %s", out, len(parts) - len(todo), len(parts), workdir)
    specials = encoder.tokens.specials
    tracker = _Progress(sum(pieces.work_tokens([sequences[j] for j in parts[i]], embed_settings, specials) for i in todo), progress)
    for i in todo:
        part = parts[i]
        block = np.empty((loaded.num_layers + 1, len(part), loaded.embed_dim), dtype=np.float32)
        for index, pooled in engine.embed_pooled(loaded, [sequences[j] for j in part], embed_settings, tracker, encoder):
            block[:, index] = pooled
        store.write_part(part_files[i], part, block, dtype)
    tracker.finish()
    if record_out is not None:
        record = {
            "model": manifest["id"], "shard": shard, "shards": shards, "rows": len(rows), "tokens": tracker.total,
            "seconds": time.monotonic() - tracker.started, "n_layers": loaded.num_layers, "dim": loaded.embed_dim,
            "device": settings.device, "device_name": engine.device_name(settings.device), "engine": encoder.engine, "precision": attrs["precision"],
        }
        write_text(record_out, json.dumps(record, indent=2) + "\n")
    lengths = rows["sequence"].str.len().to_numpy()
    with store.create_store(out, list(rows["id"]), loaded.num_layers, loaded.embed_dim, dtype, attrs, lengths, truncated, layers) as writer:
        for part, path in zip(parts, part_files):
            index, block = store.read_part(path)
            if not np.array_equal(index, part):
                raise StoreError(f"{path}: holds other rows than planned; delete {workdir} and rerun `plmexit embed`")
            writer.write(index, block if layers is None else block[layers])
    shutil.rmtree(workdir)


def _open_parts_dir(workdir: Path, plan: dict, embed_engine: str) -> None:
    """Make ``workdir`` hold parts of exactly this plan: parts of any other run (other model,
    settings, sequences or versions) are discarded, with a warning, so they are never mixed in;
    parts made by the other ``embed.engine`` are refused, with a one-line error, so that a switch of
    engine is a choice made knowingly, never a silent re-embedding or a store of two engines."""
    fingerprint = hashlib.sha256(json.dumps(plan, sort_keys=True, default=str).encode()).hexdigest()
    stamp, made_by = workdir / "fingerprint", workdir / "engine"
    if workdir.exists() and made_by.is_file() and (found := made_by.read_text().strip()) != embed_engine:
        raise StoreError(
            f"{workdir}: holds parts embedded with embed.engine {found}, not {embed_engine}; resume with embed.engine: {found} "
            f"(--engine {found}), or delete {workdir} to embed with {embed_engine}"
        )
    if workdir.exists() and (not stamp.is_file() or stamp.read_text().strip() != fingerprint):
        log.warning("%s: holds parts of another run (other model, settings, sequences or versions); discarding them", workdir)
        shutil.rmtree(workdir)
    if not workdir.exists():
        workdir.mkdir(parents=True)
        write_text(made_by, embed_engine + "\n")
        write_text(stamp, fingerprint + "\n")


class _Progress:
    """Counts tokens done; calls the caller's callback after every batch, or logs every 10 s."""

    def __init__(self, total: int, callback: ProgressCallback | None):
        self.total, self.callback, self.done = total, callback, 0
        self.started = self.last_log = time.monotonic()

    def __call__(self, tokens: int) -> None:
        self.done += tokens
        now = time.monotonic()
        if self.callback is not None:
            self.callback(self.done, self.total, now - self.started)
        elif now - self.last_log > _PROGRESS_LOG_EVERY_S:
            self.last_log = now
            self._log(now)

    def finish(self) -> None:
        if self.total:
            self._log(time.monotonic())

    def _log(self, now: float) -> None:
        log.info("embedded %d/%d tokens, %.0f tokens/s", self.done, self.total, self.done / max(now - self.started, 1e-9))


def measure_cost(
    model_manifest: str | Path,
    task_table: str | Path,
    out: str | Path,
    settings: EmbedSettings,
    sample_sequences: int,
    repeats: int,
    seed: int,
    variant_crop: bool = False,
) -> dict:
    """Analytic FLOPs (every sequence of the task) and measured seconds (a sample) per depth.

    Both count exactly what ``embed_task`` with the same ``settings`` and ``variant_crop`` runs:
    the same cut sequences (truncated, cropped or windowed), timed on plmexit's own encoder at
    ``settings.precision`` in ``settings.max_tokens`` batches (``cost.measure_depth_seconds``).
    """
    settings.check()
    manifest = model_manifests.read_manifest(model_manifest)
    table = tasks.read_task_table(task_table)
    sequences, truncated, embed_settings, crop = inputs.embedded_sequences(table, settings, variant_crop, task_table)
    loaded = model_manifests.load(manifest, settings.device)
    rng = np.random.default_rng(seed)
    sampled = np.sort(rng.choice(len(sequences), size=min(sample_sequences, len(sequences)), replace=False))
    sample = [sequences[i] for i in sampled]
    encoder = engine.make_encoder(loaded, settings.device, settings.precision, engine=settings.engine)
    seconds = cost.measure_depth_seconds(encoder, sample, embed_settings, repeats)
    log.info("%s: full forward of %d sampled sequences takes %.4f s on %s", task_table, len(sample), seconds[-1], settings.device)
    token_lengths = pieces.piece_token_lengths(sequences, embed_settings, encoder.tokens.specials)  # + special tokens, per piece
    result = {
        "model": manifest["id"],
        "model_name": manifest["name"],
        "checkpoint_sha256": loaded.sha256,
        "n_layers": loaded.num_layers,
        "dim": loaded.embed_dim,
        "n_sequences": len(sequences),
        "tokens": int(token_lengths.sum()),
        "flops": cost.analytic_flops(token_lengths, loaded.num_layers, loaded.embed_dim, loaded.block_matmul_weights).tolist(),
        "device": settings.device,
        "device_name": engine.device_name(settings.device),
        "engine": encoder.engine,
        "embed_engine": settings.engine,  # the embed.engine setting: fast or reference
        **encoder.resolved.attrs(),  # precision: what was timed; precision_requested: what was asked
        "max_tokens": settings.max_tokens,
        "layer_norm": settings.layer_norm,
        "long_sequences": settings.long_sequences,
        "truncation": crop.describe() if crop is not None else settings.long_sequence_description(),
        "n_truncated": int(truncated.sum()),  # as the embedding counts them (selection reports it)
        "timed": cost.TIMED,
        "sample_sequences": len(sample),
        "sample_tokens": int(pieces.piece_token_lengths(sample, embed_settings, encoder.tokens.specials).sum()),
        "repeats": repeats,
        "seconds": seconds.tolist(),
        **(crop.attrs() if crop is not None else {}),
    }
    write_text(out, json.dumps(result, indent=2) + "\n")
    return result


def resolve_device(device: str) -> str:
    """``auto`` means the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device is visible; use --device cpu or auto")
    return device


