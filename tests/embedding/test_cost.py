"""Cost per depth: analytic FLOPs by hand, measured seconds on the tiny model, a forward that really stops."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from plmexit.data import tasks
from plmexit.embedding import cost, engine, fast_esm2
from plmexit.pipeline import model_steps
from plmexit.settings import EmbedSettings


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
    settings = EmbedSettings(device="cpu")

    seconds = cost.measure_depth_seconds(fast_esm2.FastEncoder(tiny_loaded, "cpu", "float32"), sequences, settings, repeats=3)

    assert seconds.shape == (3,)  # depths 0, 1, 2 of the 2-layer tiny model
    assert (seconds > 0).all()
    assert (np.diff(seconds) > 0).all()  # timestamps within one forward: every block adds time


def test_one_timed_forward_gives_what_a_forward_per_depth_gives(tiny_loaded, monkeypatch):
    """On a clock that only blocks advance (one tick a block), the timestamps within one forward per
    batch give exactly what the separate forward per depth gave: k ticks per batch to depth k.
    And the measurement runs one full forward per batch and repeat (plus the warm-up), no more."""
    encoder = fast_esm2.FastEncoder(tiny_loaded, "cpu", "float32")
    clock, blocks = [0.0], [0]
    block = encoder._block

    def ticking_block(*args):
        clock[0] += 1.0
        blocks[0] += 1
        return block(*args)

    monkeypatch.setattr(encoder, "_block", ticking_block)
    monkeypatch.setattr(cost, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    sequences = ["MKTAYIAKQR", "QISFV", "MKTAYIAKQRQISFVKSHFSRQ"]
    settings = EmbedSettings(device="cpu", max_tokens=40)
    batches = engine.device_batches(encoder, sequences, settings)
    assert len(batches) == 2

    seconds = cost.measure_depth_seconds(encoder, sequences, settings, repeats=3)

    assert blocks[0] == (1 + 3) * len(batches) * 2  # warm-up and three repeats, each one 2-block forward per batch
    separate = []
    for depth in range(3):  # what the cost step measured before: a forward stopped after block k, per depth
        start = clock[0]
        for tokens, weights in batches:
            encoder.pooled(tokens, weights, "raw", depth)
        separate.append(clock[0] - start)
    np.testing.assert_array_equal(seconds, separate)
    np.testing.assert_array_equal(seconds, [0.0, 2.0, 4.0])


@pytest.fixture
def counted_encoder(tiny_loaded, monkeypatch):
    """plmexit's encoder on the tiny model, counting the blocks and final layer norms it runs, with
    the batches embedding would run for two sequences of different lengths (so padding is masked)."""
    encoder = fast_esm2.FastEncoder(tiny_loaded, "cpu", "float32")
    calls = {"blocks": 0, "ln_after": 0}
    block, layer_norm = encoder._block, torch.nn.functional.layer_norm

    def counted_block(*args):
        calls["blocks"] += 1
        return block(*args)

    def counted_layer_norm(x, shape, weight=None, bias=None, eps=1e-5):
        calls["ln_after"] += weight is encoder.ln_after[0]
        return layer_norm(x, shape, weight, bias, eps)

    monkeypatch.setattr(encoder, "_block", counted_block)
    monkeypatch.setattr(torch.nn.functional, "layer_norm", counted_layer_norm)
    (tokens, weights), = engine.device_batches(encoder, ["MKTAYIAKQR", "QISFV"], EmbedSettings(device="cpu"))
    return encoder, tokens, weights, calls


@pytest.mark.parametrize(("depth", "layer_norm"), [(0, "raw"), (2, "raw"), (2, "final")])
def test_the_encoder_calls_back_after_each_layer_it_pools(counted_encoder, depth, layer_norm):
    encoder, tokens, weights, calls = counted_encoder
    seen = []  # (layer, blocks run, final norms run) at each callback

    encoder.pooled(tokens, weights, layer_norm, depth, on_layer=lambda k: seen.append((k, calls["blocks"], calls["ln_after"])))

    final = layer_norm == "final"  # every layer normed, else only layer L
    assert seen == [(k, k, k + 1 if final else int(k == 2)) for k in range(depth + 1)]  # right after its pooling, before the next block


@pytest.mark.parametrize(("depth", "blocks", "ln_after"), [(0, 0, 0), (1, 1, 0), (2, 2, 1)])
def test_the_timed_forward_stops_after_block_k(counted_encoder, depth, blocks, ln_after):
    encoder, tokens, weights, calls = counted_encoder

    pooled = encoder.pooled(tokens, weights, "raw", depth)

    assert pooled.shape == (depth + 1, 2, 32)
    assert calls == {"blocks": blocks, "ln_after": ln_after}  # no later block ran; the final norm only at layer L


def test_the_timed_forward_computes_what_the_embedding_computes(tiny_loaded):
    sequences = ["MKTAYIAKQR", "QISFV", "MKTAYIAKQRQISFVKSHFSRQ"]
    settings = EmbedSettings(device="cpu", max_tokens=40)  # several batches, as the embedding cuts them
    encoder = fast_esm2.FastEncoder(tiny_loaded, "cpu", "float32")
    batches = engine.device_batches(encoder, sequences, settings)
    assert len(batches) > 1

    timed = {depth: [encoder.pooled(t, w, "raw", depth) for t, w in batches] for depth in (1, 2)}
    embedded = [encoder.pooled(t, w, "raw") for t, w in batches]

    for k, (t, w) in enumerate(batches):
        assert torch.equal(timed[2][k], embedded[k])  # to depth L: the embedding forward, bit for bit
        assert torch.equal(timed[1][k], embedded[k][:2])  # to depth 1: its first two layers, bit for bit
    # and the batches are the embedding's: pooled per sequence they give embed_pooled's vectors
    pooled = np.concatenate([p.numpy() for p in embedded], axis=1)
    direct = np.concatenate([block for _, block in engine.embed_pooled(tiny_loaded, sequences, settings, encoder=encoder)], axis=1)

    def per_sequence(values: np.ndarray) -> list[tuple]:  # each sequence's vectors at every layer, as one row
        return sorted(map(tuple, values.transpose(1, 0, 2).reshape(values.shape[1], -1)))

    assert per_sequence(pooled) == per_sequence(direct)  # the same sequences' vectors, batched in another order


def test_measure_cost_writes_the_json(tiny_model, tiny_model_sha256, tmp_path):
    model_steps.fetch_model(tmp_path / "model.json", "tiny", checkpoint=tiny_model)
    table = pd.DataFrame({"id": ["a", "b", "c"], "sequence": ["MKTAY", "MKTAYIAKQRQISFV", "QIS"], "label": [0.1, 0.2, 0.3], "fold": [0, 1, 0]})
    tasks.write_task_table(table, tmp_path / "task.tsv")

    result = model_steps.measure_cost(tmp_path / "model.json", tmp_path / "task.tsv", tmp_path / "cost.json",
                                EmbedSettings(truncate=10, device="cpu"), sample_sequences=5, repeats=2, seed=0)

    written = json.loads((tmp_path / "cost.json").read_text())
    assert written == result
    assert set(written) == {
        "model", "model_name", "checkpoint_sha256", "n_layers", "dim", "n_sequences", "tokens", "flops", "device", "device_name",
        "engine", "embed_engine", "precision", "precision_requested", "precision_fallback_reason", "max_tokens", "layer_norm", "long_sequences",
        "truncation", "n_truncated", "timed", "sample_sequences", "sample_tokens", "repeats", "seconds",
    }
    assert (written["precision"], written["precision_requested"], written["precision_fallback_reason"]) == ("float32", "float32", "")
    assert (written["engine"], written["embed_engine"], written["precision"], written["max_tokens"], written["layer_norm"]) == (
        fast_esm2.FastEncoder.engine, "fast", "float32", 4096, "raw",
    )
    assert (written["model"], written["model_name"]) == ("tiny", tiny_model.stem)  # the config id, and the model's own name
    assert written["n_truncated"] == 1  # one sequence is longer than the 10-residue window (selection reports the count)
    # Truncated to 10 residues, plus BOS and EOS: T = 7, 12, 5.
    tokens = np.array([7, 12, 5])
    per_block = float(np.sum(tokens * (24 * 32**2 + 4 * tokens * 32)))
    assert written["flops"] == [0.0, per_block, 2 * per_block]
    assert (written["model"], written["checkpoint_sha256"], written["n_layers"], written["dim"]) == ("tiny", tiny_model_sha256, 2, 32)
    assert (written["n_sequences"], written["tokens"], written["sample_sequences"], written["sample_tokens"]) == (3, 24, 3, 24)
    assert (written["device"], written["repeats"]) == ("cpu", 2)
    assert len(written["seconds"]) == 3 and all(s > 0 for s in written["seconds"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cost.json", "model.json", "task.tsv"]
