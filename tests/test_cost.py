"""Cost per depth: analytic FLOPs by hand, measured seconds on the tiny model, a forward that really stops."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from plmexit import cost, model_steps, models, tasks
from plmexit.embed import EmbedSettings


def test_analytic_flops_by_hand():
    # d = 4: a block costs 24 * 16 + 4 * T * 4 = 384 + 16 T FLOPs per token.
    # T = 5: 5 * (384 + 80) = 2320; T = 7: 7 * (384 + 112) = 3472; one block over both: 5792.
    assert cost.block_flops_per_token(4, 5) == 464.0
    np.testing.assert_array_equal(cost.analytic_flops(np.array([5, 7]), n_layers=3, dim=4), [0.0, 5792.0, 11584.0, 17376.0])


def test_depth_zero_costs_nothing():
    flops = cost.analytic_flops(np.array([3, 300, 1024]), n_layers=6, dim=320)

    assert flops.shape == (7,) and flops[0] == 0.0
    np.testing.assert_array_equal(np.diff(flops), np.full(6, flops[1]))  # every block costs the same


def test_fraction_saved_exact():
    flops = np.array([0.0, 5792.0, 11584.0, 17376.0])

    assert [cost.fraction_saved(flops, k) for k in range(4)] == [1.0, pytest.approx(2 / 3), pytest.approx(1 / 3), 0.0]
    assert cost.fraction_saved(np.array([0.5, 1.0, 2.0, 4.0]), 2) == 0.5


# --- measured on the tiny model ------------------------------------------------------------------


def test_measure_depth_seconds_on_the_tiny_model(tiny_loaded):
    sequences = ["MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQ"] * 4

    seconds = cost.measure_depth_seconds(tiny_loaded, sequences, "cpu", repeats=3)

    assert seconds.shape == (3,)  # depths 0, 1, 2 of the 2-layer tiny model
    assert (seconds > 0).all()
    assert seconds[-1] > seconds[0]  # two blocks take longer than the embedding lookup alone


@pytest.fixture
def counted_model(tiny_model):
    """A fresh tiny model whose modules count their forward calls (and keep layer outputs)."""
    loaded = models.load_model(tiny_model)
    model = loaded.model
    watched = {"embed_tokens": model.embed_tokens, "emb_layer_norm_after": model.emb_layer_norm_after, "lm_head": model.lm_head}
    watched.update({f"layer{i}": layer for i, layer in enumerate(model.layers)})
    calls = {name: 0 for name in watched}
    outputs = {}

    def counter(name):
        def hook(module, inputs, output):
            calls[name] += 1
            outputs[name] = output

        return hook

    for name, module in watched.items():
        module.register_forward_hook(counter(name))
    _, _, tokens = loaded.alphabet.get_batch_converter()([("a", "MKTAYIAKQR"), ("b", "QISFV")])
    return model, tokens, watched, calls, outputs


@pytest.mark.parametrize(
    ("depth", "expected"),
    [
        (0, {"embed_tokens": 1, "layer0": 0, "layer1": 0, "emb_layer_norm_after": 0, "lm_head": 0}),
        (1, {"embed_tokens": 1, "layer0": 1, "layer1": 0, "emb_layer_norm_after": 0, "lm_head": 0}),
        (2, {"embed_tokens": 1, "layer0": 1, "layer1": 1, "emb_layer_norm_after": 0, "lm_head": 0}),
    ],
)
def test_forward_to_depth_stops_after_block_k(counted_model, depth, expected):
    model, tokens, watched, calls, _ = counted_model

    with torch.inference_mode():
        cost._forward_to_depth(model, tokens, depth)

    assert calls == expected
    assert all(len(module._forward_hooks) == 1 for module in watched.values())  # its stop hook is gone again


def test_forward_to_depth_computes_what_the_full_forward_computes(counted_model):
    model, tokens, _, calls, outputs = counted_model

    with torch.inference_mode():
        cost._forward_to_depth(model, tokens, 1)
        truncated = outputs["layer0"][0].transpose(0, 1).clone()  # block output is (T, B, E)
        full = model(tokens, repr_layers=[1])["representations"][1]

    assert calls["layer1"] == 1 and calls["lm_head"] == 1  # the full forward ran to the end
    assert torch.equal(truncated, full)  # bit for bit: the same ops on the same input


def test_measure_cost_writes_the_json(tiny_model, tiny_model_sha256, tmp_path):
    model_steps.fetch_model(tmp_path / "model.json", checkpoint=tiny_model)
    table = pd.DataFrame({"id": ["a", "b", "c"], "sequence": ["MKTAY", "MKTAYIAKQRQISFV", "QIS"], "label": [0.1, 0.2, 0.3], "fold": [0, 1, 0]})
    tasks.write_task_table(table, tmp_path / "task.tsv")

    result = model_steps.measure_cost(tmp_path / "model.json", tmp_path / "task.tsv", tmp_path / "cost.json",
                                EmbedSettings(truncate=10, device="cpu"), sample_sequences=5, repeats=2, seed=0)

    written = json.loads((tmp_path / "cost.json").read_text())
    assert written == result
    assert set(written) == {
        "model", "checkpoint_sha256", "n_layers", "dim", "n_sequences", "tokens", "flops", "device", "device_name",
        "sample_sequences", "sample_tokens", "repeats", "seconds",
    }
    # Truncated to 10 residues, plus BOS and EOS: T = 7, 12, 5.
    tokens = np.array([7, 12, 5])
    per_block = float(np.sum(tokens * (24 * 32**2 + 4 * tokens * 32)))
    assert written["flops"] == [0.0, per_block, 2 * per_block]
    assert (written["model"], written["checkpoint_sha256"], written["n_layers"], written["dim"]) == (tiny_model.stem, tiny_model_sha256, 2, 32)
    assert (written["n_sequences"], written["tokens"], written["sample_sequences"], written["sample_tokens"]) == (3, 24, 3, 24)
    assert (written["device"], written["repeats"]) == ("cpu", 2)
    assert len(written["seconds"]) == 3 and all(s > 0 for s in written["seconds"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cost.json", "model.json", "task.tsv"]
