"""Transformers models: tokenisation equals each family's own tokenizer, manifests hash every file,
loading refuses wrong hashes, unrecorded files, pickle-only weights and unpinned revisions, and a
pinned hub snapshot is fetched through huggingface_hub's real code from a prepared offline cache."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import sys

import huggingface_hub
import pytest

from plmexit.cli import main
from plmexit.errors import MissingExtraError, ModelError
from plmexit.models import families, hub
from plmexit.models import manifest as model_manifest

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQ", "WYXBUZO", "G", "ACDEFGHIKLMNPQRSTVWYXBOUZ"]


def model_card_input(family: str, sequence: str) -> str:
    """How each model card says to prepare a sequence for the model's tokenizer."""
    if family in ("bert", "albert", "t5"):  # Rostlab: rare residues to X, residues separated by spaces
        return " ".join(re.sub(f"[{hub.RARE_RESIDUES}]", "X", sequence))
    return sequence


@pytest.mark.parametrize("family", families.HUB_TEST_MODEL_FAMILIES)
def test_token_scheme_equals_the_model_tokenizer(tiny_hub_loaded, family):
    loaded = tiny_hub_loaded[family]
    scheme = loaded.tokens
    for sequence in SEQUENCES:
        expected = loaded.tokenizer(model_card_input(family, sequence))["input_ids"]
        ours = [*scheme.prefix, *scheme.encode(sequence).tolist(), *scheme.suffix]
        assert ours == expected, (family, sequence)
    assert scheme.specials == {"esm": 2, "bert": 2, "albert": 2, "t5": 1, "esmc": 2}[family]  # T5: no BOS, </s> only


def test_fair_esm_alphabet_scheme_equals_its_batch_converter(tiny_loaded):
    convert = tiny_loaded.alphabet.get_batch_converter()
    scheme = tiny_loaded.tokens
    for sequence in SEQUENCES:
        _, _, tokens = convert([("s", sequence)])
        assert [*scheme.prefix, *scheme.encode(sequence).tolist(), *scheme.suffix] == tokens[0].tolist()


def test_manifest_records_every_loaded_file_and_round_trips(tmp_path, tiny_hub_models):
    source = tiny_hub_models["t5"]
    manifest = model_manifest.resolve(path=source)
    assert manifest["format"] == "transformers" and manifest["family"] == "t5" and manifest["source"] == "directory"
    assert set(manifest["files"]) == {"config.json", "model.safetensors", "spiece.model", "tokenizer_config.json", "special_tokens_map.json"}
    assert manifest["sha256"] == hub.combined_sha256(manifest["files"])
    model_manifest.write_manifest({"id": "t5_tiny", **manifest}, tmp_path / "m.json")
    assert model_manifest.read_manifest(tmp_path / "m.json") == {"id": "t5_tiny", **manifest}


def test_a_masked_lm_checkpoint_loads_as_its_encoder_quietly(tiny_hub_models, capfd, caplog):
    """transformers' load report (the head's tensors are unused) stays off stderr; plmexit logs it."""
    caplog.set_level("INFO", logger="plmexit.models.hub")
    model_manifest.load(model_manifest.resolve(path=tiny_hub_models["esm"]))
    assert capfd.readouterr().err == ""
    assert any("are not part of EsmModel and are not used (lm_head." in r.getMessage() for r in caplog.records)


def test_fair_esm_manifests_without_a_format_key_read_as_fair_esm(tmp_path, tiny_model, tiny_model_sha256):
    written = {"id": "tiny", "name": tiny_model.stem, "source": "checkpoint", "checkpoint": str(tiny_model), "sha256": tiny_model_sha256}
    (tmp_path / "m.json").write_text(json.dumps(written))
    assert model_manifest.read_manifest(tmp_path / "m.json") == {"format": "fair-esm", **written}
    assert model_manifest.load(tmp_path / "m.json").family == "fair-esm"
    # Manifests from before models carried their config id: one line saying to fetch again.
    (tmp_path / "old.json").write_text(json.dumps({k: v for k, v in written.items() if k != "id"}))
    with pytest.raises(ModelError, match=r"old\.json: not a model manifest written by `plmexit fetch-model` \('id'\); rerun fetch-model"):
        model_manifest.read_manifest(tmp_path / "old.json")


def copy_model(tiny_hub_models, tmp_path, family="esm"):
    directory = tmp_path / "model"
    shutil.copytree(tiny_hub_models[family], directory)
    return directory, model_manifest.resolve(path=directory)


def test_load_refuses_a_weight_file_with_another_sha256(tmp_path, tiny_hub_models):
    directory, manifest = copy_model(tiny_hub_models, tmp_path)
    weights = directory / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"model\.safetensors: sha256 is [0-9a-f]{64}, expected"):
        model_manifest.load(manifest)


def test_load_refuses_a_model_file_the_manifest_does_not_name(tmp_path, tiny_hub_models):
    directory, manifest = copy_model(tiny_hub_models, tmp_path)
    shutil.copy(directory / "model.safetensors", directory / "model-extra.safetensors")
    with pytest.raises(ModelError, match=r"model files not in its manifest \(model-extra\.safetensors\)"):
        model_manifest.load(manifest)


def test_a_pickle_only_directory_is_refused(tmp_path, tiny_hub_models):
    directory, _ = copy_model(tiny_hub_models, tmp_path)
    (directory / "model.safetensors").rename(directory / "pytorch_model.bin")
    with pytest.raises(ModelError, match=r"only pickled weights \(pytorch_model\.bin\).*refuses"):
        model_manifest.resolve(path=directory)


@pytest.mark.parametrize("revision", [None, "main", "v1.0", COMMIT[:12]])
def test_a_hub_model_must_be_pinned_to_a_commit(revision):
    with pytest.raises(ModelError, match="not a 40-hex commit"):
        model_manifest.resolve(hub="facebook/esm2_t6_8M_UR50D", revision=revision)


def test_hub_snapshot_is_fetched_pinned_from_the_cache_offline(tmp_path, tiny_hub_models, monkeypatch):
    """huggingface_hub's own snapshot_download, offline, over a hub cache laid out as a real download
    leaves it; a pickle the snapshot also holds is neither recorded nor read."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    snapshot = tmp_path / "cache" / "models--plmexit--tiny-esm" / "snapshots" / COMMIT
    shutil.copytree(tiny_hub_models["esm"], snapshot)
    (snapshot / "pytorch_model.bin").write_bytes(b"not read")
    manifest = model_manifest.resolve(hub="plmexit/tiny-esm", revision=COMMIT, cache_dir=tmp_path / "cache")
    assert (manifest["source"], manifest["repo_id"], manifest["revision"], manifest["family"]) == ("hub", "plmexit/tiny-esm", COMMIT, "esm")
    assert "pytorch_model.bin" not in manifest["files"] and "model.safetensors" in manifest["files"]
    assert model_manifest.load(manifest).num_layers == 2


def test_a_missing_hub_snapshot_is_one_clear_error_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match=f"hub model plmexit/absent at {COMMIT}: could not download"):
        model_manifest.resolve(hub="plmexit/absent", revision=COMMIT, cache_dir=tmp_path / "cache")


def test_family_must_fit_the_config(tiny_hub_models):
    with pytest.raises(ModelError, match="model_type 'bert' is not a t5 model"):
        model_manifest.resolve(path=tiny_hub_models["bert"], family="t5")


def test_cli_makes_fetches_and_converts_models(tmp_path, tiny_model, capsys):
    assert main(["make-test-model", "--family", "bert", "--layers", "1", "--dim", "8", "--heads", "2", "--out", str(tmp_path)]) == 0
    directory = tmp_path / "bert_t1_8d_2h_seed0_random"
    assert capsys.readouterr().out.strip() == str(directory)
    assert main(["fetch-model", "--path", str(directory), "--out", str(tmp_path / "bert.json")]) == 0
    assert model_manifest.read_manifest(tmp_path / "bert.json")["family"] == "bert"
    assert main(["convert-model", "--checkpoint", str(tiny_model), "--out", str(tmp_path / "converted")]) == 0
    assert main(["fetch-model", "--path", str(tmp_path / "converted"), "--out", str(tmp_path / "esm.json")]) == 0
    assert main(["fetch-model", "--hub", "org/model", "--revision", "main", "--out", str(tmp_path / "x.json")]) == 1
    assert "not a 40-hex commit" in capsys.readouterr().err


@pytest.fixture
def without_hub_extra(monkeypatch):
    """plmexit as installed without ``[hub]``: importing transformers or safetensors fails, and the
    modules that import them are imported afresh."""
    import plmexit.models

    for name in ("transformers", "safetensors"):
        monkeypatch.setitem(sys.modules, name, None)  # `import name` raises ModuleNotFoundError
    for module in ("hub", "hf_truncate"):
        monkeypatch.delitem(sys.modules, f"plmexit.models.{module}", raising=False)
        monkeypatch.delattr(plmexit.models, module, raising=False)


def test_without_the_hub_extra_a_transformers_model_is_one_line_naming_the_extra(tiny_hub_models, without_hub_extra, tmp_path, capsys):
    install = "pip install 'plmexit[hub]'"
    assert main(["make-test-model", "--family", "bert", "--layers", "1", "--dim", "8", "--heads", "2", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model bert (test model): " in err and "transformers is not installed" in err and install in err
    assert main(["fetch-model", "--path", str(tiny_hub_models["bert"]), "--out", str(tmp_path / "bert.json")]) == 1
    assert f"model {tiny_hub_models['bert']}: " in capsys.readouterr().err
    with pytest.raises(MissingExtraError, match=rf"^model bert_tiny: transformers models need plmexit's hub extra.*{re.escape(install)}"):
        model_manifest.load({"format": "transformers", "id": "bert_tiny", "name": "bert"})
    with pytest.raises(MissingExtraError, match="safetensors is not installed"):
        importlib.import_module("plmexit.models.hf_truncate")
    assert not (tmp_path / "bert_t1_8d_2h_seed0_random").exists() and not (tmp_path / "bert.json").exists()


def test_without_the_hub_extra_fair_esm_models_load(tiny_model, tiny_model_sha256, without_hub_extra):
    loaded = model_manifest.load({"format": "fair-esm", "id": "tiny", "name": "tiny", "checkpoint": str(tiny_model), "sha256": tiny_model_sha256})
    assert loaded.num_layers > 0 and "plmexit.models.hub" not in sys.modules
