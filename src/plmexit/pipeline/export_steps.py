"""Ship the deployed layer: export the truncated model, its refitted probe and a card; predict with an export.

Invariant: as every module of ``plmexit.pipeline`` (one function per CLI command, outputs written
atomically: an export directory appears whole or not at all). ``predict`` computes exactly the
feature the probe was trained on: the recorded ``EmbedSettings`` through ``prepare_sequences`` and
``embed_pooled``, read at the deployed layer ``k`` under the store's layer-norm convention.
Under ``final`` (or ``k = L``) that is the exported ``k``-block model's own last output (fair-esm
applies ``emb_layer_norm_after`` after its last block); under ``raw`` with ``k < L`` it is block
``k``'s output before that norm, which ``_encoder`` reads by running the export's blocks without
treating the last one as the model's last.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

import plmexit
from plmexit.atomic import atomic_directory, atomic_path, write_text
from plmexit.data import tasks
from plmexit.data.sequences import read_sequences
from plmexit.download import sha256_file
from plmexit.embedding import cost, engine, options, pieces, store
from plmexit.errors import InputError, ModelError, StoreError
from plmexit.models import fair_esm
from plmexit.models import manifest as model_manifests
from plmexit.pipeline.reading import read_json
from plmexit.probing import choice, folds, metrics, probes, tables
from plmexit.probing.linear import LinearProbe
from plmexit.probing.selection import TEST_UNIT_POSITIONS, Selection
from plmexit.reporting.card import render_card
from plmexit.settings import EmbedSettings

log = logging.getLogger(__name__)

CARD = "card.json"
README = "README.md"
TRANSFORMERS_DIR = "model"  # a transformers export's model directory, inside the export
PROBE = "probe.json"
FORMAT = "plmexit-export"
FORMAT_VERSION = 1
_OLD_TRUNCATION = re.compile(r"truncated to the first (\d+) residues")


def export_model(
    model_manifest: str | Path, embeddings: str | Path, task_table: str | Path, selection_file: str | Path, cost_file: str | Path,
    task_type: str, out: str | Path,
) -> dict:
    """Write ``out/``: the model's first ``k`` blocks (``k`` the selection's deployed layer), the probe
    refitted on the deploy rows (``folds.deploy_rows``: never an official test row) at the deploy
    fold's hyperparameter (``probes.refit_probe``), ``card.json`` and ``README.md``. Returns the card."""
    selection = Selection.from_json(selection_file)
    if selection.status != choice.STATUS_OK or selection.deployed_layer is None or selection.deployed_hyperparameter is None:
        raise InputError(f"{selection_file}: status {selection.status!r}, no deployed layer to export (no layer carries a signal)")
    manifest = model_manifests.read_manifest(model_manifest)
    table = tasks.read_task_table(task_table, task_type)
    info = store.read_task_info(embeddings, table, task_table)
    if not selection.model == manifest["id"] == info.attrs.get("model"):
        raise InputError(
            f"{selection_file} selects for model {selection.model!r}, {model_manifest} is {manifest['id']!r} and {embeddings} holds "
            f"{info.attrs.get('model')!r}; pass one model's manifest, store and selection"
        )
    if info.attrs.get("checkpoint_sha256") != manifest["sha256"]:
        raise StoreError(f"{embeddings} was embedded with checkpoint {info.attrs.get('checkpoint_sha256')}, not {model_manifest}'s {manifest['sha256']}; pass the model the store was made with")
    layer, n_layers = selection.deployed_layer, selection.n_layers
    if n_layers != info.n_layers or not 0 <= layer <= n_layers:
        raise InputError(f"{selection_file}: deployed layer {layer} of {n_layers} does not fit {embeddings} (layers 0..{info.n_layers}); pass the selection made from this store")
    settings = recorded_settings(info.attrs, embeddings)
    costs = read_json(cost_file, "`plmexit cost`", ("model", "n_layers", "flops", "seconds"))
    if costs["model"] != manifest["id"]:
        raise InputError(f"{cost_file} times model {costs['model']!r}, not {manifest['id']!r}; pass the cost file of the same model")
    if len(costs["flops"]) != n_layers + 1 or len(costs["seconds"]) != n_layers + 1:
        raise InputError(f"{cost_file}: flops and seconds need {n_layers + 1} entries (depths 0..{n_layers}); rerun `plmexit cost`")
    if costs["n_layers"] != n_layers:
        raise InputError(f"{cost_file} describes {costs['n_layers']} layers but {selection_file} has {n_layers}; pass this model's cost file")

    labels = table["label"].to_numpy()
    classes = tables.classes_of(labels) if task_type == "multilabel" else None
    y = tables.indicator(labels, classes) if classes else labels
    # The deploy fold's rows (never an official test row), as the probe step fitted the deploy fold.
    rows = folds.deploy_rows(table["fold"].to_numpy())
    probe = probes.refit_probe(store.read_layer(embeddings, layer)[rows], y[rows], task_type, selection.deployed_hyperparameter, classes)

    blocks = max(layer, 1)  # fair-esm's ESM2 needs one block; layer 0 (token embeddings) is read before it
    with atomic_directory(out) as tmp:
        model = write_model(manifest, blocks, tmp)
        write_text(tmp / PROBE, probe.to_json())
        card = _card(manifest, selection, costs, info.attrs, settings, probe, layer, model, len(rows))
        write_text(tmp / CARD, json.dumps(card, indent=2) + "\n")
        write_text(tmp / README, render_card(card))
    log.info("exported %s: layer %d of %d (a %d-block model) with its %s probe to %s", manifest["name"], layer, n_layers, blocks, task_type, out)
    return card


def write_model(manifest: dict, blocks: int, directory: Path) -> dict:
    """Write the model's first ``blocks`` blocks into ``directory`` in the format it came in; the card's ``model`` entry.

    A fair-esm checkpoint file (``fair_esm.truncate_checkpoint``), or a transformers model directory
    ``directory / "model"`` with ``config.json``'s layer count set to ``blocks`` (``hf_truncate``),
    every file of it hashed into the card.
    """
    if manifest["format"] == "transformers":
        from plmexit.models import families, hf_truncate, hub  # transformers only for transformers models

        hf_truncate.truncate_directory(manifest["path"], blocks, directory / TRANSFORMERS_DIR)
        files = hub.hash_files(directory / TRANSFORMERS_DIR)
        family = families.get(manifest["family"])
        tokenisation = "one token per residue, " + ("residues separated by spaces, U Z O B as X" if family.rare_to_x else "residues as given")
        return {"family": family.name, "format": "transformers", "directory": TRANSFORMERS_DIR, "files": files,
                "sha256": hub.combined_sha256(files), "blocks": blocks, "model_class": family.encoder_class, "tokenisation": tokenisation,
                "final_norm": family.final_norm_description}
    name = f"{manifest['name']}_blocks{blocks}.pt"
    fair_esm.truncate_checkpoint(manifest["checkpoint"], manifest["sha256"], blocks, directory / name)
    return {"family": "fair-esm", "format": "fair-esm", "file": name, "sha256": sha256_file(directory / name), "blocks": blocks,
            "contact_regression_file": Path(name).stem + "-contact-regression.pt"}


def recorded_settings(attrs: dict, source: str | Path) -> EmbedSettings:
    """The ``EmbedSettings`` a store records (device left to the caller)."""
    if attrs.get("variant_crop") and attrs.get("n_truncated", 0):
        raise StoreError(
            f"{source}: embedded through one variant crop (residues {attrs.get('crop_start', 0) + 1}..{attrs.get('crop_stop')}) that new "
            "sequences cannot share; an export needs a store embedded whole (embed.long_sequences: window)"
        )
    truncate = attrs.get("truncate")
    if truncate is None and attrs.get("long_sequences") == "truncate":
        found = _OLD_TRUNCATION.search(str(attrs.get("truncation", "")))
        if found is None:
            raise StoreError(f"{source}: records no truncation length; rerun `plmexit embed`")
        truncate = int(found.group(1))
    defaults = EmbedSettings()
    try:
        settings = EmbedSettings(
            max_tokens=int(attrs.get("max_tokens", defaults.max_tokens)), truncate=int(truncate or defaults.truncate),
            layer_norm=attrs["layer_norm"], precision=attrs.get("precision", defaults.precision), long_sequences=attrs["long_sequences"],
            window=int(attrs.get("window") or defaults.window), overlap=int(attrs.get("overlap") or defaults.overlap),
            engine=attrs.get("embed_engine", defaults.engine),  # stores made before the setting ran the fast engine
        )
        settings.check()
    except (KeyError, ValueError) as exc:
        raise StoreError(f"{source}: does not record its embedding settings ({exc}); rerun `plmexit embed`") from None
    return settings


def feature_description(layer_norm: str, layer: int, n_layers: int, blocks: int) -> tuple[str, str, bool]:
    """``(representation, how to compute it, whether it is the exported model's own normed last output)``."""
    if layer == 0:
        normed = layer_norm == "final"
        what = "the token embedding (layer 0)" + (" with emb_layer_norm_after applied" if normed else ", before any block or norm")
        how = "representations[0] of the exported model" + (", passed through model.emb_layer_norm_after" if normed else "")
        return what, how + ", mean over residue positions (BOS, EOS and padding excluded)", False
    if layer == n_layers or layer_norm == "final":
        return (
            f"the output of block {layer} with emb_layer_norm_after applied, i.e. the exported {blocks}-block model's own last representation",
            f"representations[{layer}] of the exported model (fair-esm applies the final norm after the last block), "
            "mean over residue positions (BOS, EOS and padding excluded)",
            True,
        )
    return (
        f"the raw output of block {layer} (the residual stream before emb_layer_norm_after, as fair-esm returns layers 0..L-1 of the full model)",
        f"representations[{layer}] of the exported model after `model.emb_layer_norm_after = torch.nn.Identity()` "
        "(without that, fair-esm applies the final norm to its last block), mean over residue positions (BOS, EOS and padding excluded)",
        False,
    )


def transformers_feature_description(layer_norm: str, layer: int, n_layers: int, model: dict) -> tuple[str, str, bool]:
    """``feature_description`` for a transformers export: hidden state ``layer`` (0 = what enters the first block)."""
    normed = layer_norm == "final" or layer == n_layers
    norm = f"the family's final norm ({model['final_norm']})"
    what = f"hidden state {layer} of the source model (0: the embeddings entering block 1), " + (f"with {norm} applied" if normed else f"before {norm}")
    how = (
        f"`plmexit predict`; by hand, the output of the exported model's block {layer} (its hidden_states[{layer}], which transformers "
        f"returns with the final norm applied to the last block){', then the final norm' if normed and layer < model['blocks'] else ''}, "
        "mean over residue positions (special tokens and padding excluded)"
    )
    return what, how, normed and layer == model["blocks"]


def _card(manifest, selection: Selection, costs, attrs, settings, probe: LinearProbe, layer, model: dict, n_rows) -> dict:
    n_layers = selection.n_layers
    if model["format"] == "transformers":
        what, how, normed_last = transformers_feature_description(settings.layer_norm, layer, n_layers, model)
    else:
        what, how, normed_last = feature_description(settings.layer_norm, layer, n_layers, model["blocks"])
    flops, seconds = costs["flops"], costs["seconds"]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "plmexit_version": plmexit.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
        "source_model": {"family": manifest.get("family", "fair-esm"), "id": manifest["id"], "name": manifest["name"], "sha256": manifest["sha256"], "n_layers": n_layers},
        "model": model,
        "task": {"name": selection.task, "type": probe.task_type, "metric": selection.metric,
                 "classes": probe.classes, "n_training_rows": n_rows},
        "deployed_layer": layer,
        "final_layer": n_layers,
        "feature": {"layer": layer, "layer_norm": settings.layer_norm, "representation": what, "how_to_compute": how,
                    "is_exported_models_last_output": normed_last, "pooling": options.POOLING},
        "scores": {
            "nested_score": selection.nested_score, "final_score": selection.final_score, "gain": selection.gain,
            "gain_ci_low": selection.gain_ci_low, "gain_ci_high": selection.gain_ci_high,
            "interval_level": selection.bootstrap.level, "interval_resamples": selection.bootstrap.resamples,
            "interval_of": "the gain (nested score minus the final layer's score), not the nested score itself",
            "interval_covers": (
                f"a percentile bootstrap over {selection.bootstrap.unit}, so it covers the test sample's variability only"
                + ("; resampling mutated positions, it speaks about the assay's positions, not only further variants at the positions tested"
                   if selection.test_unit == TEST_UNIT_POSITIONS else "")
            ),
            "nested_score_covers": "mean over evaluation folds of each fold's test score at the layer chosen on that fold's training rows only",
            "verdict": selection.verdict, "fold_layers": list(selection.fold_layers), "fold_agreement": selection.fold_agreement,
            "split": selection.split,
            # The baselines (README, "Baselines"); None where the probe step fitted none.
            **{k: getattr(selection, k) for k in choice.BASELINE_SUMMARY_COLUMNS},
            # Homology folds: how MMseqs2 clustered the task (whole clusters per fold); None for other splits.
            "clustering": selection.task_info.get("clustering"),
        },
        "compute": {
            # Of the exported depth, from the cost file itself (the selection's figures are for its deployed layer, the same one).
            "flops_saved": cost.fraction_saved(np.asarray(flops, dtype=float), layer) if flops[n_layers] else None,
            "time_saved": cost.fraction_saved(np.asarray(seconds, dtype=float), layer),
            "flops_deployed": flops[layer], "flops_final": flops[n_layers],
            "seconds_deployed": seconds[layer], "seconds_final": seconds[n_layers],
            "measured_on": {k: costs.get(k) for k in ("device", "device_name", "precision", "sample_sequences", "repeats")},
        },
        "embedding": {
            "long_sequences": settings.long_sequences, "truncate": settings.truncate, "window": settings.window, "overlap": settings.overlap,
            "max_tokens": settings.max_tokens, "precision": settings.precision, "engine": settings.engine, "truncation": attrs.get("truncation"),
            "n_truncated_in_training": attrs.get("n_truncated"),
        },
        "probe": {"file": PROBE, "link": probe.link, "hyperparameter": probe.hyperparameter,
                  "fit": ("refitted on the deploy rows (the training file's rows where the task has an official test file, which never "
                          "fits it; every row of a cross-validated task) at the hyperparameter the deploy fold chose by inner cross-validation")},
    }


# --- predict -----------------------------------------------------------------------------------


def read_export(export_dir: str | Path) -> tuple[dict, LinearProbe]:
    """The card and probe of an export directory, checked; a one-line error naming what is missing."""
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise InputError(f"export directory {export_dir} does not exist; pass the --out of `plmexit export`")
    card = read_json(export_dir / CARD, "`plmexit export`", ("format", "format_version", "model", "feature", "embedding", "probe"))
    if card["format"] != FORMAT or card["format_version"] != FORMAT_VERSION:
        raise InputError(f"{export_dir / CARD}: format {card['format']!r} version {card['format_version']!r}, expected {FORMAT!r} {FORMAT_VERSION}; export again")
    probe_path = export_dir / card["probe"]["file"]
    try:
        data = json.loads(probe_path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{probe_path}: not a readable probe ({exc}); export again") from None
    return card, LinearProbe.from_dict(data, str(probe_path))


def load_exported_model(export_dir: Path, card: dict, device: str):
    """The export's model through plmexit's safe loaders (every hash first, no arbitrary unpickling)."""
    model = card["model"]
    if model.get("format") == "transformers":
        from plmexit.models import hub  # transformers only for transformers models

        directory = export_dir / model["directory"]
        manifest = {
            "format": "transformers", "name": card["source_model"]["name"], "source": "directory", "family": model["family"], "repo_id": None,
            "revision": None, "path": str(directory), "files": model["files"], "sha256": model["sha256"],
        }
        return hub.load_transformers(manifest, device)
    if model.get("family") != "fair-esm":
        raise ModelError(f"{export_dir / CARD}: model family {model.get('family')!r} is not one plmexit exports; export again")
    if not (export_dir / model["file"]).is_file():
        raise ModelError(f"{export_dir / model['file']}: the export's model file is missing; export again")
    return fair_esm.load_model(export_dir / model["file"], model["sha256"], device)


def _encoder(loaded, settings: EmbedSettings, layer: int, final_layer: int):
    """The export's encoder: under ``raw`` a model cut after block ``k < L`` must not norm its last
    layer (the source model's raw layer ``k`` was not normed), so ``norm_last`` is off then."""
    raw_cut = settings.layer_norm == "raw" and layer == loaded.num_layers and layer < final_layer
    return engine.make_encoder(loaded, settings.device, settings.precision, norm_last=not raw_cut, engine=settings.engine)


def exported_features(loaded, sequences: list[str], settings: EmbedSettings, layer: int, final_layer: int) -> np.ndarray:
    """``(n, dim)`` float32: the probe's feature (layer ``layer`` of the source model, under
    ``settings.layer_norm``) for each sequence, computed with the export's ``loaded`` model."""
    prepared, _ = pieces.prepare_sequences(sequences, settings)
    features = np.empty((len(prepared), loaded.embed_dim), dtype=np.float32)
    encoder = _encoder(loaded, settings, layer, final_layer)
    for index, pooled in engine.embed_pooled(loaded, prepared, settings, encoder=encoder):
        features[index] = pooled[layer]
    return features


def predict(export_dir: str | Path, input_file: str | Path, out: str | Path, device: str = "cpu") -> pd.DataFrame:
    """One row per input sequence: ``id``, ``prediction`` (a value, a class, or the labels called at
    ``metrics.MULTILABEL_THRESHOLD`` joined by ``;``) and, for classifiers, ``p_<class>`` per class; CSV, atomically."""
    export_dir = Path(export_dir)
    card, probe = read_export(export_dir)
    ids, sequences = read_sequences(input_file)
    recorded = card["embedding"]
    settings = EmbedSettings(
        max_tokens=recorded["max_tokens"], truncate=recorded["truncate"], layer_norm=card["feature"]["layer_norm"], device=device,
        precision=recorded["precision"], long_sequences=recorded["long_sequences"], window=recorded["window"], overlap=recorded["overlap"],
        engine=recorded.get("engine", "fast"),  # the engine the probe's training features came from (cards before the setting: fast)
    )
    loaded = load_exported_model(export_dir, card, device)
    features = exported_features(loaded, sequences, settings, card["feature"]["layer"], card["final_layer"])
    result = pd.DataFrame({"id": ids})
    if probe.task_type == "regression":
        result["prediction"] = probe.predict(features)
    else:
        p = probe.probabilities(features)
        if probe.task_type == "classification":
            result["prediction"] = probe.predict(features)
        else:
            result["prediction"] = [tasks.LABEL_SEPARATOR.join(c for c, q in zip(probe.classes, row) if q >= metrics.MULTILABEL_THRESHOLD) for row in p]
        for j, c in enumerate(probe.classes):
            result[f"p_{c}"] = p[:, j]
    with atomic_path(out) as tmp:
        result.to_csv(tmp, index=False, float_format="%.10g")
    log.info("predicted %d sequences with %s (layer %d) into %s", len(result), export_dir, card["feature"]["layer"], out)
    return result
