"""A fair-esm checkpoint cut to its first k blocks: fair-esm's format, prefix and companion file kept, later blocks gone."""

from __future__ import annotations

import torch

from plmexit.models import fair_esm


def test_the_cut_checkpoint_keeps_fair_esms_format(tiny_model, tiny_model_sha256, tmp_path):
    out = fair_esm.truncate_checkpoint(tiny_model, tiny_model_sha256, 1, tmp_path / "esm2_cut.pt")

    data = fair_esm.load_checkpoint(out)
    source = fair_esm.load_checkpoint(tiny_model)
    cfg = data["cfg"]["model"]
    assert (cfg.encoder_layers, cfg.plmexit_source_layers, cfg.plmexit_source_sha256) == (1, 2, tiny_model_sha256)
    assert all(key.startswith("encoder.sentence_encoder.") for key in data["model"])
    assert not any(".layers.1." in key for key in data["model"])
    assert set(data["model"]) == {key for key in source["model"] if ".layers.1." not in key}
    for key, value in data["model"].items():
        assert torch.equal(value, source["model"][key])
    regression = fair_esm.load_checkpoint_part(tmp_path / "esm2_cut-contact-regression.pt")
    full = fair_esm.load_checkpoint_part(tiny_model.with_name(tiny_model.stem + "-contact-regression.pt"))
    assert torch.equal(regression["contact_head.regression.weight"], full["contact_head.regression.weight"][:, :4])  # 1 block x 4 heads
    loaded = fair_esm.load_model(out)
    assert (loaded.num_layers, loaded.embed_dim, loaded.model.contact_head.regression.in_features) == (1, 32, 4)
