"""A transformers directory cut to k layers: transformers loads it with k layers and the same first hidden states."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from plmexit.errors import ModelError
from plmexit.models.hf_truncate import truncate_directory

transformers = pytest.importorskip("transformers")

VOCAB = ["<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWCXBUZO", ".", "-", "<null_1>", "<mask>"]


@pytest.fixture(scope="module")
def tiny_esm(tmp_path_factory):
    """A random 3-layer transformers ESM (masked LM, with its tokenizer) saved as safetensors; its final norm is not the identity."""
    path = tmp_path_factory.mktemp("hf") / "tiny_esm"
    config = transformers.EsmConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, pad_token_id=1,
        mask_token_id=32, token_dropout=True, position_embedding_type="rotary", emb_layer_norm_before=False, max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = transformers.EsmForMaskedLM(config).eval()
    with torch.no_grad():
        model.esm.encoder.emb_layer_norm_after.weight.normal_()
        model.esm.encoder.emb_layer_norm_after.bias.normal_()
    model.save_pretrained(path)
    (path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    transformers.EsmTokenizer(str(path / "vocab.txt")).save_pretrained(path)
    return path


def _hidden_states(path, ids):
    model = transformers.AutoModel.from_pretrained(path, add_pooling_layer=False).eval()
    with torch.no_grad():
        return model, model(ids, output_hidden_states=True)


def test_the_cut_directory_loads_with_k_layers_and_the_sources_first_states(tiny_esm, tmp_path):
    done = truncate_directory(tiny_esm, 2, tmp_path / "cut")

    assert done == {"config_key": "num_hidden_layers", "source_layers": 3, "layers": 2, "dropped_tensors": 16}
    assert json.loads((tmp_path / "cut" / "config.json").read_text())["num_hidden_layers"] == 2
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "cut")
    ids = tokenizer(["MKTAYIAKQR", "MKV"], padding=True, return_tensors="pt")["input_ids"]
    source, full = _hidden_states(tiny_esm, ids)
    cut, short = _hidden_states(tmp_path / "cut", ids)
    assert len(cut.encoder.layer) == 2 and len(short.hidden_states) == 3
    for k in (0, 1):
        torch.testing.assert_close(short.hidden_states[k], full.hidden_states[k], rtol=0, atol=0)
    # Layer 2, the cut model's last, comes out with the final norm, as the source's raw layer 2 normed.
    torch.testing.assert_close(short.hidden_states[2], source.encoder.emb_layer_norm_after(full.hidden_states[2]), rtol=1e-6, atol=1e-6)
    with safe_open(str(tmp_path / "cut" / "model.safetensors"), framework="pt") as handle:
        assert not any(".layer.2." in name for name in handle.keys())
        assert handle.get_tensor("esm.contact_head.regression.weight").shape == (1, 2 * 4)
    assert not list((tmp_path / "cut").glob("*.bin")) and not list(tmp_path.glob(".*"))


def test_pickled_weights_only_are_refused(tiny_esm, tmp_path):
    source = tmp_path / "pickled"
    source.mkdir()
    (source / "config.json").write_text((tiny_esm / "config.json").read_text())
    (source / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ModelError, match="safetensors only, never pickled"):
        truncate_directory(source, 1, tmp_path / "cut")
    with pytest.raises(ModelError, match=r"cannot keep 4 layers of a model with 3 \(keep 1..3\)"):
        truncate_directory(tiny_esm, 4, tmp_path / "cut")
    with pytest.raises(ModelError, match="no readable config.json"):
        truncate_directory(tmp_path / "nowhere", 1, tmp_path / "cut")
    assert not (tmp_path / "cut").exists()
