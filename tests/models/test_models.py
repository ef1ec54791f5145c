"""Checkpoints: tiny test models, the safe loader and its allow-list, hashes, resolution, manifests."""

from __future__ import annotations

import argparse
import datetime
import json
import pickle
import re
import shutil
from pathlib import Path

import esm
import numpy as np
import pytest
import torch

from plmexit.download import sha256_file
from plmexit.errors import DownloadError, ModelError
from plmexit.models import fair_esm
from plmexit.models import manifest as model_manifest

# A name fair-esm publishes, so resolve_model accepts it; its real weights are never fetched.
PUBLISHED_NAME = "esm2_t6_8M_UR50D"
# The regression head is not in the main checkpoint and plmexit never loads it (no contacts).
CONTACT_REGRESSION = ("contact_head.regression.weight", "contact_head.regression.bias")


def fair_esm_load(path: Path):
    """fair-esm's own loader; under torch>=2.6 it needs the Namespace allow-list to unpickle."""
    with torch.serialization.safe_globals(fair_esm.SAFE_CHECKPOINT_GLOBALS):
        model, alphabet = esm.pretrained.load_model_and_alphabet_local(path)
    return model.eval(), alphabet


def _leave_marker(path: str) -> None:
    """What the malicious pickle below would run if anything unpickled it."""
    Path(path).write_text("unpickled and executed")


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return _leave_marker, (str(self.marker),)


# --- test models and fair-esm ------------------------------------------------------------------


def test_make_test_model_writes_a_fair_esm_checkpoint_pair(tmp_path):
    path = fair_esm.make_test_model(layers=2, dim=32, heads=4, seed=0, out_dir=tmp_path)

    assert path.name.startswith("esm2")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, path.stem + "-contact-regression.pt"])
    data = fair_esm.load_checkpoint(path)
    assert data["cfg"]["model"].encoder_layers == 2
    assert data["cfg"]["model"].encoder_embed_dim == 32
    assert all(key.startswith("encoder.sentence_encoder.") for key in data["model"])


def test_make_test_model_is_seeded(tmp_path):
    first = fair_esm.load_model(fair_esm.make_test_model(1, 16, 2, seed=5, out_dir=tmp_path / "a")).model.state_dict()
    again = fair_esm.load_model(fair_esm.make_test_model(1, 16, 2, seed=5, out_dir=tmp_path / "b")).model.state_dict()
    other = fair_esm.load_model(fair_esm.make_test_model(1, 16, 2, seed=6, out_dir=tmp_path / "c")).model.state_dict()

    key = "layers.0.self_attn.q_proj.weight"
    assert torch.equal(first[key], again[key])
    assert not torch.equal(first[key], other[key])


@pytest.mark.parametrize(("layers", "dim", "heads"), [(0, 32, 4), (2, 30, 4), (2, 32, 0)])
def test_make_test_model_rejects_impossible_shapes(tmp_path, layers, dim, heads):
    with pytest.raises(ModelError, match=r"need layers >= 1 and dim divisible by heads"):
        fair_esm.make_test_model(layers, dim, heads, seed=0, out_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_fair_esm_loader_needs_the_allow_list_under_torch_2_6(tiny_model, monkeypatch):
    # Why SAFE_CHECKPOINT_GLOBALS exists: fair-esm calls torch.load without weights_only, which
    # defaults to True since torch 2.6 and refuses the argparse.Namespace every ESM2 config is.
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    with pytest.raises(pickle.UnpicklingError, match=r"argparse\.Namespace"):
        esm.pretrained.load_model_and_alphabet_local(tiny_model)

    model, _ = fair_esm_load(tiny_model)

    assert model.num_layers == 2 and model.embed_dim == 32


def test_load_model_matches_fair_esm(tiny_model, tiny_model_sha256):
    reference, reference_alphabet = fair_esm_load(tiny_model)

    loaded = fair_esm.load_model(tiny_model, tiny_model_sha256)

    assert (loaded.name, loaded.sha256, loaded.num_layers, loaded.embed_dim) == (tiny_model.stem, tiny_model_sha256, 2, 32)
    assert not loaded.model.training
    assert loaded.alphabet.all_toks == reference_alphabet.all_toks
    ours, theirs = loaded.model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    for key in theirs:
        if key not in CONTACT_REGRESSION:
            assert torch.equal(ours[key], theirs[key]), key


def test_load_model_accepts_an_upper_case_hash(tiny_model, tiny_model_sha256):
    assert fair_esm.load_model(tiny_model, tiny_model_sha256.upper()).sha256 == tiny_model_sha256


# --- load failures -----------------------------------------------------------------------------


def test_load_model_sha256_mismatch(tiny_model):
    with pytest.raises(ModelError, match=r"sha256 is [0-9a-f]{64}, expected 0{64}; the file is corrupt"):
        fair_esm.load_model(tiny_model, "0" * 64)


def test_load_model_missing_checkpoint(tmp_path):
    with pytest.raises(ModelError, match=r"checkpoint .*esm2_gone\.pt does not exist"):
        fair_esm.load_model(tmp_path / "esm2_gone.pt")


def test_load_model_needs_an_esm2_file_name(tiny_model, tmp_path):
    renamed = shutil.copy(tiny_model, tmp_path / "my_model.pt")

    with pytest.raises(ModelError, match=r"my_model\.pt: file name must start with 'esm2'"):
        fair_esm.load_model(renamed)


def _truncated(tiny_model: Path) -> bytes:
    return tiny_model.read_bytes()[:5000]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(_truncated, id="truncated"),
        pytest.param(b"", id="empty"),
        pytest.param(
            np.random.default_rng(0).bytes(1000), id="random-bytes",
        ),
        pytest.param(
            b"hello world\n", id="text",
        ),
    ],
)
def test_load_model_unreadable_checkpoint(tiny_model, tmp_path, content):
    path = tmp_path / "esm2_broken.pt"
    path.write_bytes(content(tiny_model) if callable(content) else content)

    with pytest.raises(ModelError, match=r"checkpoint .*esm2_broken\.pt is not a readable PyTorch checkpoint"):
        fair_esm.load_model(path)


@pytest.mark.parametrize("kind, global_name", [("code", "test_models._leave_marker"), ("datetime", "datetime.datetime")])
def test_disallowed_pickled_object_is_refused_and_never_executed(tmp_path, monkeypatch, kind, global_name):
    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)  # the control below unpickles freely
    marker = tmp_path / "marker"
    payload = _Payload(marker) if kind == "code" else datetime.datetime(2024, 1, 1)
    path = tmp_path / "esm2_evil.pt"
    torch.save({"cfg": {"model": payload}, "model": {}}, path)

    expected = f"esm2_evil.pt holds {global_name}, which is outside plmexit's allow-list (argparse.Namespace); refusing to unpickle it"
    with pytest.raises(ModelError, match=re.escape(expected)):
        fair_esm.load_model(path)

    assert not marker.exists()
    if kind == "code":
        # The control: an unrestricted unpickler really would have run the payload.
        torch.load(path, weights_only=False)
        assert marker.read_text() == "unpickled and executed"


def _namespace(**changes) -> argparse.Namespace:
    cfg = dict(encoder_layers=1, encoder_embed_dim=16, encoder_ffn_embed_dim=64, encoder_attention_heads=2, token_dropout=True)
    cfg.update(changes)
    return argparse.Namespace(**cfg)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([1, 2, 3], r"is not in fair-esm's format \(a dict with 'cfg' -> 'model' and 'model' entries\)"),
        ({"model": {}}, r"is not in fair-esm's format"),
        ({"cfg": {}, "model": {}}, r"is not in fair-esm's format"),
        ({"cfg": {"model": argparse.Namespace()}, "model": {}}, r"does not fit fair-esm's ESM2 \(.*encoder_layers"),
        ({"cfg": {"model": _namespace()}, "model": {}}, r"does not fit fair-esm's ESM2 \(Error\(s\) in loading state_dict"),
    ],
)
def test_wrong_structure(tmp_path, payload, message):
    path = tmp_path / "esm2_odd.pt"
    torch.save(payload, path)

    with pytest.raises(ModelError, match=rf"checkpoint .*esm2_odd\.pt {message}"):
        fair_esm.load_model(path)


def _with_extra_weight(tiny_model: Path, tmp_path: Path) -> Path:
    data = fair_esm.load_checkpoint(tiny_model)
    data["model"]["encoder.sentence_encoder.extra.weight"] = torch.zeros(2)
    path = tmp_path / "esm2_extra.pt"
    torch.save(data, path)
    return path


def test_unexpected_weights_are_refused(tiny_model, tmp_path):
    path = _with_extra_weight(tiny_model, tmp_path)

    with pytest.raises(ModelError, match=r"esm2_extra\.pt does not fit fair-esm's ESM2"):
        fair_esm.load_model(path)


def test_state_dict_mismatch_names_the_keys(tiny_model, tmp_path):
    path = _with_extra_weight(tiny_model, tmp_path)

    with pytest.raises(ModelError, match=r"Unexpected key.*extra\.weight"):
        fair_esm.load_model(path)


# --- resolve_model -----------------------------------------------------------------------------


def test_resolve_local_checkpoint(tiny_model, tiny_model_sha256):
    manifest = fair_esm.resolve_model(checkpoint=tiny_model, sha256=tiny_model_sha256)

    assert manifest == {
        "name": tiny_model.stem, "source": "checkpoint", "checkpoint": str(tiny_model.resolve()), "sha256": tiny_model_sha256,
    }


def test_resolve_local_checkpoint_without_a_hash_records_it(tiny_model, tiny_model_sha256):
    assert fair_esm.resolve_model(checkpoint=tiny_model)["sha256"] == tiny_model_sha256


def test_resolve_failures(tiny_model, tmp_path):
    with pytest.raises(ModelError, match=r"sha256 is [0-9a-f]{64}, expected f{64}"):
        fair_esm.resolve_model(checkpoint=tiny_model, sha256="f" * 64)
    with pytest.raises(ModelError, match=r"does not exist"):
        fair_esm.resolve_model(checkpoint=tmp_path / "esm2_missing.pt")
    with pytest.raises(ModelError, match=r"file name must start with 'esm2'"):
        fair_esm.resolve_model(checkpoint=shutil.copy(tiny_model, tmp_path / "model.pt"))
    with pytest.raises(ModelError, match=r"exactly one of `name`"):
        fair_esm.resolve_model()
    with pytest.raises(ModelError, match=r"exactly one of `name`"):
        fair_esm.resolve_model(name=PUBLISHED_NAME, checkpoint=tiny_model)
    with pytest.raises(ModelError, match=r"a download `url` only applies to a model given by `name`"):
        fair_esm.resolve_model(checkpoint=tiny_model, url="http://127.0.0.1:9/unused")


def test_resolve_unknown_name(tmp_path):
    with pytest.raises(ModelError, match=r"model name 'esm2_t99_1T' is not a fair-esm ESM2 model; use one of esm2_t6_8M_UR50D"):
        fair_esm.resolve_model(name="esm2_t99_1T", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_resolve_by_name_downloads_once_then_uses_the_cache(tiny_model, tiny_model_sha256, http_server, tmp_path):
    shutil.copy(tiny_model, http_server.directory / f"{PUBLISHED_NAME}.pt")
    url, cache = http_server.url(f"{PUBLISHED_NAME}.pt"), tmp_path / "hub"

    manifest = fair_esm.resolve_model(name=PUBLISHED_NAME, sha256=tiny_model_sha256, url=url, cache_dir=cache)

    cached = cache / "checkpoints" / f"{PUBLISHED_NAME}.pt"
    assert manifest == {"name": PUBLISHED_NAME, "source": "fair-esm", "checkpoint": str(cached.resolve()), "sha256": tiny_model_sha256}
    assert cached.read_bytes() == tiny_model.read_bytes()
    http_server.stop()
    assert fair_esm.resolve_model(name=PUBLISHED_NAME, sha256=tiny_model_sha256, url=url, cache_dir=cache) == manifest
    assert fair_esm.load_model(manifest["checkpoint"], manifest["sha256"]).num_layers == 2


def test_resolve_by_name_with_a_wrong_hash_leaves_no_file(tiny_model, http_server, tmp_path, files_under):
    # The served file is the tiny model, so the published hash of the real model cannot match.
    shutil.copy(tiny_model, http_server.directory / f"{PUBLISHED_NAME}.pt")
    cache = tmp_path / "hub"

    with pytest.raises(DownloadError, match=rf"sha256 is [0-9a-f]{{64}}, expected {fair_esm.ESM2_SHA256[PUBLISHED_NAME]}"):
        fair_esm.resolve_model(name=PUBLISHED_NAME, url=http_server.url(f"{PUBLISHED_NAME}.pt"), cache_dir=cache)

    assert files_under(cache) == []


def test_resolve_by_name_with_a_corrupt_cache_is_refused(tiny_model_sha256, tmp_path):
    cached = tmp_path / "hub" / "checkpoints" / f"{PUBLISHED_NAME}.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"half a download")

    with pytest.raises(ModelError, match=r"sha256 is [0-9a-f]{64}, expected"):
        fair_esm.resolve_model(name=PUBLISHED_NAME, sha256=tiny_model_sha256, url="http://127.0.0.1:9/unused", cache_dir=tmp_path / "hub")


# --- manifests ---------------------------------------------------------------------------------


def test_manifest_round_trip(tiny_model, tiny_model_sha256, tmp_path):
    manifest = {"id": "tiny", **fair_esm.resolve_model(checkpoint=tiny_model, sha256=tiny_model_sha256)}

    model_manifest.write_manifest(manifest, tmp_path / "models" / "tiny.json")

    assert model_manifest.read_manifest(tmp_path / "models" / "tiny.json") == {"format": "fair-esm", **manifest}
    assert json.loads((tmp_path / "models" / "tiny.json").read_text()) == manifest
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["tiny.json"]
    assert sha256_file(manifest["checkpoint"]) == manifest["sha256"]


@pytest.mark.parametrize(
    "content",
    [None, "not json", '["a", "list"]', '{"name": "esm2_x", "source": "checkpoint", "checkpoint": "/x"}'],
    ids=["missing", "not-json", "list", "missing-key"],
)
def test_broken_manifest(tmp_path, content):
    path = tmp_path / "model.json"
    if content is not None:
        path.write_text(content)

    with pytest.raises(ModelError, match=r"model\.json: not a model manifest written by `plmexit fetch-model`"):
        model_manifest.read_manifest(path)


def test_a_model_named_on_the_command_line_is_a_config_entrys_source(tmp_path, monkeypatch):
    """``source_of``: what `plmexit scan --model` and `embed --fasta --model` take, as a config's models entry names it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "esm2_mine.pt").write_bytes(b"")
    (tmp_path / "my model").mkdir()
    commit = "0" * 40

    assert model_manifest.source_of("esm2_t6_8M_UR50D") == {"name": "esm2_t6_8M_UR50D"}
    assert model_manifest.source_of("esm2_mine.pt") == {"checkpoint": "esm2_mine.pt"}
    assert model_manifest.source_of("my model") == {"path": "my model"}
    assert model_manifest.source_of(f"Rostlab/prot_bert@{commit}") == {"hub": "Rostlab/prot_bert", "revision": commit}
    ids = [model_manifest.model_id(model_manifest.source_of(text)) for text in ("esm2_t6_8M_UR50D", "esm2_mine.pt", "my model", f"Rostlab/prot_bert@{commit}")]
    assert ids == ["esm2_t6_8M_UR50D", "esm2_mine", "my_model", "prot_bert"]
    for text in ("esm2_t99_1T", "missing.pt"):
        with pytest.raises(ModelError, match=rf"model '{re.escape(text)}' is not a fair-esm ESM2 release \(esm2_t6_8M_UR50D, .*ORG/NAME@COMMIT"):
            model_manifest.source_of(text)
    with pytest.raises(ModelError, match=r"model 'Rostlab/prot_bert': no such file or directory, and a hub model needs its commit: Rostlab/prot_bert@COMMIT"):
        model_manifest.source_of("Rostlab/prot_bert")
