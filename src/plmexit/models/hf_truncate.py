"""A transformers model directory cut to its first ``k`` layers, at the file level: no model class is built.

Invariant: the output directory is the source's with ``config.json``'s layer count set to ``k``
(``num_hidden_layers``; T5's ``num_layers``), every tensor of layers ``k`` and later dropped from a
single ``model.safetensors``, the contact head's regression (ESM) cut to the kept layers'
attention maps, ESM-C's residual-branch projections rescaled for its depth-dependent residual
scaling, and every other top-level file (tokenizer, generation config) copied unchanged.
Only safetensors are read or written: a directory holding only pickled weights
(``pytorch_model.bin``) is refused, never unpickled. The directory appears whole or not at all.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from pathlib import Path

from plmexit.atomic import atomic_directory
from plmexit.errors import MissingExtraError, ModelError, one_line
from plmexit.models import families

try:
    from safetensors import safe_open
    from safetensors.torch import save_file
except ModuleNotFoundError as exc:  # plmexit installed without the hub extra
    raise MissingExtraError.of("hub", "transformers models", exc) from None

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
# config.json keys holding the number of encoder layers, in the order they are looked for.
LAYER_COUNT_KEYS = ("num_hidden_layers", "num_layers")
# A layer's tensors sit under ``<prefix>.layer.<i>.`` (BERT, ESM), ``layers.<i>.`` or ``block.<i>.`` (T5).
_LAYER_KEY = re.compile(r"(?:^|\.)(?:layer|layers|block)\.(\d+)\.")
_CONTACT_REGRESSION = "contact_head.regression.weight"
# ESM-C's residual branches end in these projections (weights and biases).
_ESMC_BRANCH_OUTPUT = re.compile(r"\.(?:self_attn\.o_proj|mlp\.down_proj)\.(?:weight|bias)$")
# Files that hold weights: never copied (the truncated weights replace them).
_WEIGHT_FILE = re.compile(r"(\.safetensors|\.bin|\.pt|\.pth|\.h5|\.msgpack|\.ckpt|\.index\.json)$")


def truncate_directory(source: str | Path, layers: int, out: str | Path) -> dict:
    """Write the first ``layers`` layers of the transformers model in ``source`` to the directory ``out``.

    Returns what was done: ``{"config_key", "source_layers", "layers", "dropped_tensors"}``.
    """
    source, out = Path(source), Path(out)
    config = _read_config(source)
    key = next((k for k in LAYER_COUNT_KEYS if isinstance(config.get(k), int)), None)
    if key is None:
        raise ModelError(f"{source / 'config.json'}: no layer count ({' or '.join(LAYER_COUNT_KEYS)}); not a transformers encoder plmexit can truncate")
    total = config[key]
    if not 1 <= layers <= total:
        raise ModelError(f"{source}: cannot keep {layers} layers of a model with {total} (keep 1..{total})")
    tensors, metadata = _read_weights(source)
    if config.get("num_decoder_layers") and any(name.startswith("decoder.") for name in tensors):
        raise ModelError(f"{source}: an encoder-decoder checkpoint; save its encoder alone (T5EncoderModel.save_pretrained) and export that")
    indices = {int(m.group(1)) for name in tensors if (m := _LAYER_KEY.search(name))}
    family = families.for_model_type(config.get("model_type"))
    if family is not None and family.shared_blocks:
        indices = set(range(total))  # ALBERT runs one shared group of weights num_hidden_layers times: fewer runs, the same weights
    if indices != set(range(total)):
        raise ModelError(f"{source}: the weights name layers {sorted(indices)[:5]}..., not 0..{total - 1} as config.json's {key} says; cannot tell which tensors to drop")
    kept = {}
    for name, tensor in tensors.items():
        found = _LAYER_KEY.search(name)
        if found is not None and int(found.group(1)) >= layers:
            continue
        if name.endswith(_CONTACT_REGRESSION) and isinstance(config.get("num_attention_heads"), int):
            tensor = tensor[:, : layers * config["num_attention_heads"]]  # one weight per kept layer's attention head
        if config.get("model_type") == "esmc" and _ESMC_BRANCH_OUTPUT.search(name):
            # ESM-C divides each residual branch by sqrt(num_hidden_layers / 36): a model of fewer
            # layers divides by less, so its branch outputs are scaled down to compute the same.
            tensor = tensor * math.sqrt(layers / total)
        kept[name] = tensor.contiguous()
    with atomic_directory(out) as tmp:
        for path in sorted(source.iterdir()):
            if path.is_file() and path.name != "config.json" and not _WEIGHT_FILE.search(path.name):
                shutil.copy2(path, tmp / path.name)
        (tmp / "config.json").write_text(json.dumps({**config, key: layers}, indent=2, sort_keys=True) + "\n")
        save_file(kept, str(tmp / WEIGHTS), metadata=metadata or {"format": "pt"})
    log.info("wrote the first %d of %d layers of %s to %s", layers, total, source, out)
    return {"config_key": key, "source_layers": total, "layers": layers, "dropped_tensors": len(tensors) - len(kept)}


def _read_config(source: Path) -> dict:
    try:
        config = json.loads((source / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{source}: no readable config.json ({one_line(exc)}); pass a directory written by save_pretrained") from None
    if not isinstance(config, dict):
        raise ModelError(f"{source / 'config.json'}: not a JSON object; pass a directory written by save_pretrained")
    return config


def _read_weights(source: Path) -> tuple[dict, dict | None]:
    """Every tensor of ``model.safetensors``, or of the shards its index names; and the first file's metadata."""
    if (source / WEIGHTS).is_file():
        files = [source / WEIGHTS]
    elif (source / WEIGHTS_INDEX).is_file():
        try:
            index = json.loads((source / WEIGHTS_INDEX).read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{source / WEIGHTS_INDEX}: not a safetensors index ({one_line(exc)})") from None
        files = [source / name for name in dict.fromkeys(index.values())]
    else:
        raise ModelError(
            f"{source}: no {WEIGHTS} (or {WEIGHTS_INDEX}); plmexit reads safetensors only, never pickled weights: "
            "save the model with save_pretrained(..., safe_serialization=True)"
        )
    tensors, metadata = {}, None
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = metadata if metadata is not None else handle.metadata()
                tensors.update({name: handle.get_tensor(name) for name in handle.keys()})
        except Exception as exc:  # noqa: BLE001 - any failure to parse an untrusted file means "unreadable"
            raise ModelError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {one_line(exc)})") from None
    return tensors, metadata
