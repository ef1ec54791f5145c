"""The masked language model a manifest names, loaded as a ``MaskedLM``, and the provenance every depth output records.

Invariant: this is the one place that knows which backend (fair-esm or transformers) a manifest
names; the lens, zero-shot and head-exit steps all load their model through ``load_masked_lm``.
"""

from __future__ import annotations

from pathlib import Path

import torch

import plmexit
from plmexit.depth.heads import ENGINES, FairEsmMaskedLM, MaskedLM, TransformersMaskedLM
from plmexit.errors import ModelError
from plmexit.models import fair_esm


def load_masked_lm(manifest: dict, source: str | Path, device: str = "cpu", engine: str = "exact") -> MaskedLM:
    """The model a manifest (``plmexit fetch-model``, read from ``source``) names, verified and loaded, as a ``MaskedLM``."""
    if manifest["format"] == "transformers":
        from plmexit.models import hub  # transformers only for transformers models

        try:
            module, tokenizer = hub.load_masked_lm(manifest, device)
        except ModelError as exc:
            raise ModelError(f"{source}: {exc}") from None
        if engine != "exact":
            raise ModelError(f"{source}: --engine {engine} runs fair-esm ESM2 models; a transformers model runs its own forward (--engine exact)")
        return TransformersMaskedLM(module, tokenizer, manifest["name"], device)
    loaded = fair_esm.load_model(manifest["checkpoint"], manifest["sha256"], device)
    return FairEsmMaskedLM(loaded, device, engine)


def provenance(lm: MaskedLM, manifest: dict, device: str, engine: str) -> dict:
    """What a depth output was computed with: versions, the model (id, name, checkpoint hash, layers), device and engine."""
    versions = {"fair_esm_version": fair_esm.fair_esm_version()}
    if manifest["format"] == "transformers":
        from plmexit.models import hub  # loaded already: the model is a transformers one

        versions = {"transformers_version": hub.transformers_version()}
    return {
        "plmexit_version": plmexit.__version__, "torch_version": torch.__version__, **versions,
        "model": manifest["id"], "model_name": manifest["name"], "checkpoint_sha256": manifest["sha256"], "num_layers": lm.num_layers, "device": device,
        "model_format": manifest["format"], "model_family": manifest.get("family", "fair-esm"), "engine": engine,
        "engine_description": ENGINES[engine] if manifest["format"] == "fair-esm" else "the transformers model's own forward, states read by hooks",
    }
