"""The exit timing step: full depth, the deployed static layer and the calibrated adaptive forward, timed on one task's test sequences.

Invariant: as every module of ``plmexit.pipeline`` (one function per CLI command, outputs written
atomically); it runs a model, so it imports torch (as ``model_steps``). The controllers timed are the
ones ``plmexit exit`` calibrated (its info JSON: per fold and gate the threshold and reference
layer), and the probes inside the forward are refitted on that fold's training rows at the probe
step's hyperparameters (``exit.outputs.fold_probes``, the refit whose test outputs the exit table
scores), so the forward takes the exits the exit table reports. Only the fold's test sequences are
timed (a seeded sample of them), with the embedding's settings, so the times belong to what was embedded.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import plmexit
from plmexit.atomic import write_text
from plmexit.data import tasks
from plmexit.embedding import engine, store
from plmexit.embedding.inputs import embedded_sequences
from plmexit.errors import InputError
from plmexit.exit import adaptive
from plmexit.exit.controller import Controller
from plmexit.exit.outputs import fold_probes
from plmexit.models import manifest as model_manifests
from plmexit.pipeline.reading import read_hyperparameters, read_json
from plmexit.probing.selection import Selection
from plmexit.probing.tables import task_targets
from plmexit.settings import EmbedSettings

log = logging.getLogger(__name__)

# One row per gate and forward: full depth, the static layer and every gate's adaptive forwards are timed
# interleaved (so drifting load hits all alike; full depth and the static layer once, repeated in each gate's
# rows); ``adaptive_one_deep`` is the same controller with the first sequence of every batch held to the
# reference layer (one deep sequence per batch).
RUNS = ("full_depth", "static_layer", "adaptive", "adaptive_one_deep")
TIMING_COLUMNS = [
    "model", "task", "fold", "gate", "run", "layer", "threshold", "certified", "n_sequences", "n_batches", "repeats", "seconds",
    "time_saved", "mean_layer", "layers_saved", "gate_seconds", "gate_overhead", "device",
]


def time_exit_task(
    model_manifest: str | Path, task_table: str | Path, embeddings: str | Path, probe_table: str | Path, selection_file: str | Path,
    exit_info: str | Path, out: str | Path, info_out: str | Path, settings: EmbedSettings, sample_sequences: int, repeats: int,
    seed: int, variant_crop: bool = False,
) -> pd.DataFrame:
    """Measured wall clock of full depth, the deployed layer and each calibrated controller on one fold's test sequences.

    The fold is the first of the exit table's (one is enough: the controllers of every fold are calibrated alike, and
    the times are about the device). Writes ``out`` (TSV, ``TIMING_COLUMNS``; ``time_saved`` against the same gate's
    full-depth runs, ``gate_overhead`` the gates' share of the adaptive forward) and ``info_out`` (JSON: device,
    precision, batches, exit histograms).
    """
    settings.check()
    if sample_sequences < 1 or repeats < 1:
        raise InputError(f"--sample-sequences {sample_sequences} and --repeats {repeats} must both be at least 1")
    meta = read_json(exit_info, "`plmexit exit`", ("model", "task", "task_type", "n_layers", "settings", "folds"))
    task_type = meta["task_type"]
    table = tasks.read_task_table(task_table, task_type)
    info = store.read_task_info(embeddings, table, task_table)
    if info.attrs.get("layer_norm", settings.layer_norm) != settings.layer_norm:
        raise InputError(f"{embeddings} holds layer norm convention {info.attrs['layer_norm']!r}, not --layer-norm {settings.layer_norm}; "
                         "time with the embedding's settings")
    L = info.n_layers
    if meta["n_layers"] != L:
        raise InputError(f"{exit_info} describes {meta['n_layers']} layers but {embeddings} holds {L}; rerun the pipeline for one model")
    if not meta["folds"]:
        raise InputError(f"{exit_info} holds no calibrated controller; rerun `plmexit exit`")
    selection = Selection.from_json(selection_file)
    static_layer = L if selection.deployed_layer is None else selection.deployed_layer
    fold = meta["folds"][0]["fold"]
    controllers = [c for c in meta["folds"] if c["fold"] == fold]
    y, classes = task_targets(table, task_type)
    folds = table["fold"].to_numpy()
    train, test = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    rng = np.random.default_rng(seed)
    timed_rows = np.sort(rng.choice(test, size=min(sample_sequences, len(test)), replace=False))
    hyper = read_hyperparameters(probe_table, L)
    probes = fold_probes(lambda k: store.read_layer(embeddings, k), y, task_type, classes, train, hyper[fold].to_numpy())
    tolerance = meta["settings"]["tolerance"] * float(np.std(y[train])) if task_type == "regression" else 0.0
    first_layer = int(meta["settings"]["first_layer"])

    manifest = model_manifests.read_manifest(model_manifest)
    sequences, _, embed_settings, crop = embedded_sequences(table, settings, variant_crop, task_table)
    loaded = model_manifests.load(manifest, settings.device)
    encoder = engine.make_encoder(loaded, settings.device, settings.precision, engine=settings.engine)
    batches = engine.device_batches(encoder, [sequences[i] for i in timed_rows], embed_settings)
    rules, chosen = {}, {}
    for c in controllers:
        controller = Controller(c["gate"], float(c["threshold"]), min(first_layer, c["reference_layer"]), int(c["reference_layer"]))
        chosen[c["gate"]] = (controller, c["certified"])
        for run, forced in (("adaptive", frozenset()), ("adaptive_one_deep", frozenset({0}))):
            rules[f"{c['gate']}:{run}"] = adaptive.ProbeExitRule(probes, controller, task_type, classes, tolerance, forced=forced)
    timed = adaptive.time_runs(encoder, batches, rules, static_layer, settings.layer_norm, settings.device, repeats)
    seconds = timed["seconds"]
    full = seconds["full_depth"]
    rows, details = [], []
    for gate, (controller, certified) in chosen.items():
        base = {"model": manifest["id"], "task": meta["task"], "fold": fold, "gate": gate, "threshold": controller.threshold, "certified": certified,
                "n_sequences": len(timed_rows), "n_batches": len(batches), "repeats": repeats, "device": settings.device}
        # full depth and the static layer are timed once, interleaved with every controller; each gate's rows repeat them
        for run, layer in (("full_depth", L), ("static_layer", static_layer)):
            rows.append({**base, "run": run, "layer": layer, "seconds": seconds[run], "time_saved": 1.0 - seconds[run] / full,
                         "mean_layer": layer, "layers_saved": 1.0 - layer / L, "gate_seconds": 0.0, "gate_overhead": 0.0})
        for run in ("adaptive", "adaptive_one_deep"):
            name = f"{gate}:{run}"
            layers, spent, gate_spent = timed["layers"][name], seconds[name], timed["gate_seconds"][name]
            rows.append({**base, "run": run, "layer": controller.reference_layer, "seconds": spent, "time_saved": 1.0 - spent / full,
                         "mean_layer": float(layers.mean()), "layers_saved": float(1.0 - layers.mean() / L), "gate_seconds": gate_spent,
                         "gate_overhead": gate_spent / spent if spent > 0 else float("nan")})
            details.append({"gate": gate, "run": run, "exit_histogram": [int(c) for c in np.bincount(layers, minlength=L + 1)]})
    result = pd.DataFrame(rows, columns=TIMING_COLUMNS)
    write_text(out, result.to_csv(sep="\t", index=False, float_format="%.6g"))
    meta_out = {
        "model": manifest["id"], "task": meta["task"], "fold": fold, "n_layers": L, "static_layer": static_layer,
        "static_layer_is": "the deployed layer (plmexit select, on the rows that are never test rows)" if selection.deployed_layer is not None else "none deployed: full depth",
        "n_sequences": len(timed_rows), "sequence_ids": [str(i) for i in table["id"].to_numpy()[timed_rows]], "seed": seed, "repeats": repeats,
        "batch_sizes": [int(t.shape[0]) for t, _ in batches], "max_tokens": settings.max_tokens, "layer_norm": settings.layer_norm,
        "long_sequences": settings.long_sequences, "truncation": crop.describe() if crop is not None else settings.long_sequence_description(),
        "pieces": "a sequence cut into windows is timed piece by piece; each piece exits on its own vectors",
        "timing": "median seconds over repeats after one warm-up, device synchronised around each run; full depth, the static layer and "
                  "every gate's adaptive forwards interleaved; gate seconds (probe, gate, copy of pooled vectors to the host) inside the adaptive forward",
        "device": settings.device,
        "device_name": engine.device_name(settings.device),
        "torch_threads": torch.get_num_threads(), "engine": encoder.engine, "embed_engine": settings.engine, **encoder.resolved.attrs(),
        "seconds": seconds, "plmexit_version": plmexit.__version__, "torch_version": torch.__version__, "runs": details,
    }
    write_text(info_out, json.dumps(meta_out, indent=2) + "\n")
    return result
