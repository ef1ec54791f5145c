"""Model manifests of both backends, and the one ``load`` every step that runs a model calls.

Invariant: a manifest is what ``plmexit fetch-model`` wrote, and ``load`` verifies every hash in
it before any weight is read. Every manifest has ``id``, the config's id of the model, which every
output carries. ``format`` says the backend: ``fair-esm`` (keys name, source, checkpoint, sha256;
manifests written before the key existed have none and are fair-esm) or
``transformers`` (adds family, repo_id, revision, path and files, the sha256 of every file;
``sha256`` is then the hash over those). ``source_of`` reads a model named on the command line as the
config's ``models`` entry keys that ``resolve`` takes. Only ``fair_esm`` imports ``esm`` and only ``hub`` imports
``transformers``; each is imported here only when its backend is asked for.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

from plmexit.atomic import write_text
from plmexit.errors import MissingExtraError, ModelError
from plmexit.models import families

FORMATS = (families.FAIR_ESM, families.TRANSFORMERS)  # a manifest's format is its family's backend
_KEYS = {
    "fair-esm": ("id", "name", "source", "checkpoint", "sha256"),
    "transformers": ("id", "name", "source", "family", "repo_id", "revision", "path", "files", "sha256"),
}


def write_manifest(manifest: dict, path: str | Path) -> None:
    write_text(path, json.dumps(manifest, indent=2) + "\n")


def read_manifest(path: str | Path) -> dict:
    """The manifest at ``path`` with its ``format`` (``fair-esm`` when the file names none)."""
    try:
        manifest = json.loads(Path(path).read_text())
        fmt = manifest.get("format", "fair-esm")
        if fmt not in FORMATS:
            raise ModelError(f"{path}: model format {fmt!r} is not one of {', '.join(FORMATS)}; rerun `plmexit fetch-model`")
        return {"format": fmt, **{key: manifest[key] for key in _KEYS[fmt]}}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"{path}: not a model manifest written by `plmexit fetch-model` ({exc}); rerun fetch-model") from None


def load(manifest: dict | str | Path, device: str = "cpu"):
    """Verify and load the model a manifest (or manifest file) describes, with either backend.

    Returns an object with ``name``, ``sha256``, ``family``, ``num_layers``, ``embed_dim``,
    ``tokens`` (a ``TokenScheme``), ``block_matmul_weights`` (for analytic FLOPs), ``esm2_weights()``
    (the fast encoder's layout, or None) and ``describe()`` (what a store records about it);
    transformers models also give ``module``,
    ``blocks`` and ``final_norm`` for ``plmexit.embedding.generic``.
    """
    if not isinstance(manifest, dict):
        manifest = read_manifest(manifest)
    if manifest.get("format", "fair-esm") == "fair-esm":
        from plmexit.models import fair_esm

        return fair_esm.load_model(manifest["checkpoint"], manifest["sha256"], device)
    return backend("plmexit.models.hub", manifest.get("id") or manifest["name"]).load_transformers(manifest, device)


def backend(module: str, model: str):
    """A backend's loader module, imported for ``model``: without its pip extra, one line naming the model."""
    try:
        return importlib.import_module(module)
    except MissingExtraError as exc:
        raise MissingExtraError(f"model {model}: {exc}") from None


def resolve(**source) -> dict:
    """A manifest dict for a model: ``hub``/``revision``/``path``/``family`` for a transformers model,
    else fair-esm's ``name``/``checkpoint``/``sha256``/``url``; ``cache_dir`` for either."""
    if source.get("hub") is not None or source.get("path") is not None:
        hub = backend("plmexit.models.hub", source.get("hub") or source.get("path"))
        if any(source.get(k) is not None for k in ("name", "checkpoint", "sha256", "url")):
            raise ModelError("a transformers model (hub or path) takes no fair-esm name, checkpoint, sha256 or url; give one kind of model")
        return hub.resolve_transformers(**{k: source.get(k) for k in ("hub", "revision", "path", "family", "cache_dir")})
    if source.get("revision") is not None or source.get("family") is not None:
        raise ModelError("`revision` and `family` only apply to a transformers model given by hub or path")
    from plmexit.models import fair_esm

    return fair_esm.resolve_model(**{k: source.get(k) for k in ("name", "checkpoint", "sha256", "url", "cache_dir")})


# A model named on the command line (`plmexit scan --model`, `plmexit embed --fasta --model`) is what one
# config model entry names: a fair-esm release, a local checkpoint file or transformers directory, or a hub
# repository pinned to a commit, written ORG/NAME@COMMIT.
HUB_PIN = "@"
# Characters a config id (a model's, a task's) may not hold: the schema's ids are ^[A-Za-z0-9][A-Za-z0-9_.-]*$.
_NOT_ID = re.compile(r"[^A-Za-z0-9_.-]+")


def config_id(name: str, fallback: str) -> str:
    """An id the config schema accepts, made from ``name`` (a model's, or ``plmexit scan``'s task's): other
    characters become ``_`` and a leading ``_``, ``.`` or ``-`` is dropped; ``fallback`` when nothing is left."""
    return _NOT_ID.sub("_", name).lstrip("_.-") or fallback


def source_of(text: str) -> dict:
    """The config model entry keys ``text`` stands for (``resolve`` and the config's ``models`` take them):
    ``checkpoint`` for a file that exists, ``path`` for a directory that exists, ``hub`` and ``revision`` for
    ``ORG/NAME@COMMIT``, else ``name``, a fair-esm ESM2 release; a ``ModelError`` naming ``text`` when it is none of these.
    Hashes and downloads are ``resolve``'s."""
    path = Path(text)
    if path.is_file():
        return {"checkpoint": text}
    if path.is_dir():
        return {"path": text}
    repo, pin, revision = text.partition(HUB_PIN)
    if pin:
        return {"hub": repo, "revision": revision}
    if "/" in text:
        raise ModelError(f"model {text!r}: no such file or directory, and a hub model needs its commit: {text}{HUB_PIN}COMMIT (the 40-hex commit on the hub)")
    from plmexit.models import fair_esm  # the releases' list; the fair-esm backend is what a bare name asks for

    if text not in fair_esm.ESM2_SHA256:
        raise ModelError(
            f"model {text!r} is not a fair-esm ESM2 release ({', '.join(fair_esm.ESM2_SHA256)}), an existing checkpoint file or "
            f"model directory, or a hub model pinned as ORG/NAME{HUB_PIN}COMMIT; give one of those"
        )
    return {"name": text}


def model_id(source: dict) -> str:
    """A config model id for a ``source_of`` source: the model's own name as ``resolve`` gives it (release,
    checkpoint stem, directory or hub repository name), with characters an id may not hold replaced by ``_``."""
    if "name" in source:
        name = source["name"]
    elif "hub" in source:
        name = source["hub"].split("/")[-1]
    else:
        path = Path(source.get("checkpoint") or source["path"]).resolve()
        name = path.stem if "checkpoint" in source else path.name
    return config_id(name, "model")


def make_test_model(family: str, layers: int, dim: int, heads: int, seed: int, out_dir: str | Path) -> Path:
    """A tiny random model of ``family`` (``families.TEST_MODEL_FAMILIES``), written by the family's
    loader as ``families.test_model_name`` says: a fair-esm checkpoint file, or a transformers
    directory in its published format."""
    entry = families.get(family)
    if not entry.test_model:
        raise ModelError(f"test model: family {family!r} has no test model; use one of {', '.join(families.TEST_MODEL_FAMILIES)}")
    loader = backend(entry.loader, f"{family} (test model)")  # torch, and esm or transformers, only now
    if entry.backend == families.FAIR_ESM:
        return loader.make_test_model(layers, dim, heads, seed, out_dir)
    return loader.make_test_model(family, layers, dim, heads, seed, out_dir)
