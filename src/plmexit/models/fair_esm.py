"""ESM2 checkpoints: resolve, verify, load safely, and write tiny random ones for tests.

Invariant: every model plmexit runs, real or random, goes through ``load_model``: sha256 first,
then ``torch.load(weights_only=True)`` with an allow-list of exactly what fair-esm ESM2
checkpoints pickle (``argparse.Namespace``), then fair-esm's own ``load_model_and_alphabet_core``.
No code path unpickles arbitrary objects. This is the only module that imports ``esm``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import esm
import torch
from esm.model.esm2 import ESM2

from plmexit.atomic import atomic_path
from plmexit.download import download, sha256_file
from plmexit.errors import ModelError, one_line
from plmexit.models import families
from plmexit.models.esm2 import Esm2Block, Esm2Weights
from plmexit.models.esm2 import layer_norm as ln
from plmexit.models.esm2 import linear as lin
from plmexit.models.tokens import RESIDUES, TokenScheme

log = logging.getLogger(__name__)

FAIR_ESM_URL = "https://dl.fbaipublicfiles.com/fair-esm/models/{name}.pt"
# fair-esm's ESM2 releases. Hashes are filled in where they are published or measured; a model
# without one is hashed on download and the hash recorded in its manifest and every store.
ESM2_SHA256: dict[str, str | None] = {
    "esm2_t6_8M_UR50D": "c3c1145126ec08895c39c24a5df5e6f899441bf641eb09c72504ef9b7acd9e40",
    "esm2_t12_35M_UR50D": None,
    "esm2_t30_150M_UR50D": None,
    "esm2_t33_650M_UR50D": None,
    "esm2_t36_3B_UR50D": None,
    "esm2_t48_15B_UR50D": None,
}
# Exactly the non-tensor objects found in fair-esm ESM2 checkpoints (the model config).
SAFE_CHECKPOINT_GLOBALS = [argparse.Namespace]
# Real ESM2 checkpoints store the encoder under this prefix; fair-esm strips it on load.
_STATE_PREFIX = "encoder.sentence_encoder."
_REGRESSION_WARNING = "Regression weights not found"


@dataclass
class LoadedModel:
    """A ready-to-run ESM2 model and what identifies it."""

    model: ESM2
    alphabet: esm.data.Alphabet
    name: str
    sha256: str
    family: str = "fair-esm"

    @property
    def num_layers(self) -> int:
        return self.model.num_layers

    @property
    def embed_dim(self) -> int:
        return self.model.embed_dim

    @functools.cached_property
    def tokens(self) -> TokenScheme:
        """fair-esm's batch converter: ``<cls>`` + residues + ``<eos>``, unknown letters as ``<unk>``."""
        a = self.alphabet
        return TokenScheme.from_mapping(
            {r: a.get_idx(r) for r in RESIDUES if r in a.tok_to_idx}, a.unk_idx, [a.cls_idx], [a.eos_idx], a.padding_idx
        )

    @property
    def block_matmul_weights(self) -> int:
        """Entries of one block's weight matrices (Q, K, V, output, feed-forward): 12 dim^2 for ESM2."""
        return sum(m.weight.numel() for m in self.model.layers[0].modules() if isinstance(m, torch.nn.Linear))

    def esm2_weights(self) -> Esm2Weights:
        return esm2_weights(self.model)

    def describe(self) -> dict:
        """What the store records about the model's code."""
        return {"model_family": self.family, "model_format": "fair-esm", "fair_esm_version": fair_esm_version(), "final_norm": "emb_layer_norm_after"}


def esm2_weights(model: ESM2) -> Esm2Weights:
    """fair-esm's ESM2 module's weights in the fast encoder's layout (``plmexit.models.esm2``)."""

    blocks = [
        Esm2Block(
            ln1=ln(layer.self_attn_layer_norm), q=lin(layer.self_attn.q_proj), k=lin(layer.self_attn.k_proj), v=lin(layer.self_attn.v_proj),
            out=lin(layer.self_attn.out_proj), ln2=ln(layer.final_layer_norm), fc1=lin(layer.fc1), fc2=lin(layer.fc2),
        )
        for layer in model.layers
    ]
    return Esm2Weights(
        embed_tokens=model.embed_tokens.weight, embed_scale=model.embed_scale, blocks=blocks, ln_after=ln(model.emb_layer_norm_after),
        inv_freq=model.layers[0].self_attn.rot_emb.inv_freq, heads=model.attention_heads, token_dropout=model.token_dropout,
        mask_idx=model.mask_idx, padding_idx=model.padding_idx,
    )


def fair_esm_version() -> str:
    return esm.version.version


def resolve_model(
    *,
    name: str | None = None,
    checkpoint: str | Path | None = None,
    sha256: str | None = None,
    url: str | None = None,
    cache_dir: str | Path | None = None,
) -> dict:
    """Make a model available locally and describe it as a manifest dict.

    ``name`` is a fair-esm ESM2 model, downloaded into the torch hub cache (as fair-esm does) unless
    already there; ``checkpoint`` is a local file. Either way the file's sha256 is checked against
    ``sha256`` (or the published hash of a named model) before anything else reads it.
    """
    if (name is None) == (checkpoint is None):
        raise ModelError("a model needs exactly one of `name` (a fair-esm model) or `checkpoint` (a local file)")
    if url is not None and name is None:
        raise ModelError("a download `url` only applies to a model given by `name`; drop it for a local checkpoint")
    if name is not None:
        if name not in ESM2_SHA256:
            raise ModelError(f"model name {name!r} is not a fair-esm ESM2 model; use one of {', '.join(ESM2_SHA256)} or give a checkpoint path")
        expected = sha256 or ESM2_SHA256[name]
        hub = Path(cache_dir) if cache_dir else Path(torch.hub.get_dir())
        path = hub / "checkpoints" / f"{name}.pt"
        if path.is_file():
            found = verify_checkpoint(path, expected)
        else:
            log.info("downloading %s into %s", name, path)
            found = download(url or FAIR_ESM_URL.format(name=name), path, expected)
        source = "fair-esm"
    else:
        path = Path(checkpoint)
        found = verify_checkpoint(path, sha256)
        name = path.stem
        source = "checkpoint"
    if not name.startswith("esm2"):
        raise ModelError(f"{path}: file name must start with 'esm2' (fair-esm picks the ESM2 architecture by name); rename the file")
    return {"name": name, "source": source, "checkpoint": str(path.resolve()), "sha256": found}


def verify_checkpoint(path: Path, expected: str | None) -> str:
    """sha256 of ``path``; a ``ModelError`` if it is missing or does not match ``expected``."""
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist; fix the model's checkpoint path in the config")
    found = sha256_file(path)
    if expected is not None and found != expected.lower():
        raise ModelError(f"checkpoint {path}: sha256 is {found}, expected {expected}; the file is corrupt or not the configured model")
    return found


def load_checkpoint(path: str | Path) -> dict:
    """``torch.load`` a fair-esm checkpoint with ``weights_only=True`` and the ESM2 allow-list."""
    path = Path(path)
    # torch.save has written zip archives since torch 1.6, as are all fair-esm ESM2 releases.
    if not zipfile.is_zipfile(path):
        raise ModelError(f"checkpoint {path} is not a readable PyTorch checkpoint (not a torch.save zip archive); download it again")
    try:
        with torch.serialization.safe_globals(SAFE_CHECKPOINT_GLOBALS):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):
            raise ModelError(f"checkpoint {path} is not a readable PyTorch checkpoint ({one_line(exc)})") from None
        found = re.search(r"GLOBAL (\S+)", str(exc))
        raise ModelError(
            f"checkpoint {path} holds {found.group(1) if found else 'an object'}, which is outside plmexit's allow-list "
            f"({', '.join(g.__module__ + '.' + g.__qualname__ for g in SAFE_CHECKPOINT_GLOBALS)}); refusing to unpickle it"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any failure to parse an untrusted file means "unreadable"
        raise ModelError(f"checkpoint {path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {one_line(exc)})") from None
    if not isinstance(data, dict) or "model" not in data or not isinstance(data.get("cfg"), dict) or "model" not in data["cfg"]:
        raise ModelError(f"checkpoint {path} is not in fair-esm's format (a dict with 'cfg' -> 'model' and 'model' entries)")
    return data


def load_model(checkpoint: str | Path, sha256: str | None = None, device: str = "cpu") -> LoadedModel:
    """Verify, load and return an ESM2 checkpoint in eval mode on ``device``."""
    path = Path(checkpoint)
    found = verify_checkpoint(path, sha256)
    name = path.stem
    if not name.startswith("esm2"):
        raise ModelError(f"{path}: file name must start with 'esm2' (fair-esm picks the ESM2 architecture by name); rename the file")
    data = load_checkpoint(path)
    try:
        with warnings.catch_warnings():
            # Contact-regression weights only matter for contact prediction, which plmexit never does.
            warnings.filterwarnings("ignore", message=_REGRESSION_WARNING)
            model, alphabet = esm.pretrained.load_model_and_alphabet_core(name, data, None)
    except (RuntimeError, AttributeError, KeyError) as exc:
        raise ModelError(f"checkpoint {path} does not fit fair-esm's ESM2 ({one_line(exc)})") from None
    model.eval().to(device)
    log.info("loaded %s (%d layers, width %d, sha256 %s) on %s", name, model.num_layers, model.embed_dim, found[:12], device)
    return LoadedModel(model=model, alphabet=alphabet, name=name, sha256=found)


def make_test_model(layers: int, dim: int, heads: int, seed: int, out_dir: str | Path) -> Path:
    """Write a randomly initialised ESM2 in fair-esm's checkpoint format; returns its path.

    The file holds ``{"cfg": {"model": Namespace(...)}, "model": state_dict}`` with the
    ``encoder.sentence_encoder.`` key prefix of the released checkpoints, plus the co-located
    ``-contact-regression.pt`` file that ``esm.pretrained.load_model_and_alphabet_local`` expects,
    so tests exercise the same loading code as real weights. Never a real model.
    """
    if layers < 1 or dim < 1 or heads < 1 or dim % heads:
        raise ModelError(f"test model: need layers >= 1 and dim divisible by heads (got layers={layers}, dim={dim}, heads={heads})")
    torch.manual_seed(seed)
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    model = ESM2(num_layers=layers, embed_dim=dim, attention_heads=heads, alphabet=alphabet, token_dropout=True)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("contact_head.")}
    cfg = argparse.Namespace(
        encoder_layers=layers,
        encoder_embed_dim=dim,
        encoder_ffn_embed_dim=4 * dim,
        encoder_attention_heads=heads,
        token_dropout=True,
        max_positions=1024,
        plmexit_random_init_seed=seed,
    )
    data = {"cfg": {"model": cfg}, "model": {_STATE_PREFIX + k: v for k, v in state.items()}}
    regression = {
        "model": {
            "contact_head.regression.weight": model.contact_head.regression.weight.detach().clone(),
            "contact_head.regression.bias": model.contact_head.regression.bias.detach().clone(),
        }
    }
    out_dir = Path(out_dir)
    path = out_dir / families.test_model_name(families.FAIR_ESM, layers, dim, heads, seed)
    for dest, payload in ((path.with_name(path.stem + "-contact-regression.pt"), regression), (path, data)):
        with atomic_path(dest) as tmp:
            torch.save(payload, tmp)
    log.info("wrote random ESM2 test model %s", path)
    return path


# An ESM2 block's parameters sit under ``layers.<index>.`` (after whatever prefix the checkpoint uses).
_BLOCK_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_CONTACT_REGRESSION = "contact_head.regression."


def truncate_checkpoint(checkpoint: str | Path, sha256: str | None, blocks: int, out: str | Path) -> Path:
    """Write the first ``blocks`` blocks of a verified ESM2 checkpoint as a fair-esm checkpoint at ``out``.

    The file keeps fair-esm's format (``cfg.model.encoder_layers = blocks``, state-dict keys and
    their prefix as in the source, every later block dropped; token embedding, the final
    ``emb_layer_norm_after`` and the LM head kept), so ``esm.pretrained.load_model_and_alphabet_local``
    and ``load_model`` read it. Beside it goes the ``-contact-regression.pt`` file fair-esm's local
    loader expects: the source's regression over the kept blocks' attention maps (its first
    ``blocks * heads`` weights), which is not a trained contact predictor for the shorter model;
    plmexit never predicts contacts. Both files are written atomically.
    """
    out = Path(out)
    if not out.stem.startswith("esm2") or out.suffix != ".pt":
        raise ModelError(f"{out}: an exported fair-esm checkpoint's name must start with 'esm2' and end in .pt (fair-esm picks the architecture by name)")
    source_sha256 = verify_checkpoint(Path(checkpoint), sha256)
    data = load_checkpoint(checkpoint)
    cfg = data["cfg"]["model"]
    layers = getattr(cfg, "encoder_layers", None)
    if not isinstance(layers, int) or not 1 <= blocks <= layers:
        raise ModelError(f"checkpoint {checkpoint}: cannot keep {blocks} blocks of a model with {layers} (keep 1..{layers})")
    state, regression = {}, {}
    for key, value in data["model"].items():
        block = _BLOCK_KEY.search(key)
        if block is not None and int(block.group(1)) >= blocks:
            continue
        (regression if _CONTACT_REGRESSION in key else state)[key] = value
    # The cfg also says where the blocks came from (extra Namespace fields, which fair-esm ignores).
    provenance = {"plmexit_source_layers": layers, "plmexit_source_sha256": source_sha256}
    model_cfg = argparse.Namespace(**{**vars(cfg), "encoder_layers": blocks, **provenance})
    truncated = {**data, "cfg": {**data["cfg"], "model": model_cfg}, "model": state}
    source_regression = Path(checkpoint).with_name(Path(checkpoint).stem + "-contact-regression.pt")
    if not regression and source_regression.is_file():
        regression = load_checkpoint_part(source_regression)
    heads = cfg.encoder_attention_heads
    if not regression:  # no source regression: a zero one of the right shape, so fair-esm's loader still finds the file
        regression = {"contact_head.regression.weight": torch.zeros(1, layers * heads), "contact_head.regression.bias": torch.zeros(1)}
    kept = {
        key: value[:, : blocks * heads].clone() if key.endswith("weight") else value.clone()
        for key, value in ((_strip_to(k, _CONTACT_REGRESSION), v) for k, v in regression.items())
    }
    for dest, payload in ((out.with_name(out.stem + "-contact-regression.pt"), {"model": kept}), (out, truncated)):
        with atomic_path(dest) as tmp:
            torch.save(payload, tmp)
    log.info("wrote the first %d of %d blocks of %s to %s", blocks, layers, checkpoint, out)
    return out


def _strip_to(key: str, marker: str) -> str:
    """``key`` from ``marker`` on (a checkpoint's prefix dropped, as fair-esm's regression file names its keys)."""
    return key[key.index(marker):]


def load_checkpoint_part(path: Path) -> dict:
    """The tensors of a fair-esm ``-contact-regression.pt`` file (``{"model": {...}}``), loaded with ``weights_only=True``."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        return dict(data["model"])
    except Exception as exc:  # noqa: BLE001 - an unreadable untrusted file
        raise ModelError(f"{path} is not a readable contact-regression file ({type(exc).__name__}: {one_line(exc)})") from None


def fair_esm_batch_indices(sequences: list[str], toks_per_batch: int, extra_toks_per_seq: int) -> list[list[int]]:
    """fair-esm's own length-sorted batching (``FastaBatchedDataset.get_batch_indices``), as its
    ``scripts/extract.py`` uses it."""
    dataset = esm.data.FastaBatchedDataset([str(i) for i in range(len(sequences))], list(sequences))
    return dataset.get_batch_indices(toks_per_batch, extra_toks_per_seq=extra_toks_per_seq)
