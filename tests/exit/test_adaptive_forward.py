"""The exiting forward returns, for every sequence, what a static forward to its exit layer returns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plmexit.embedding import engine
from plmexit.embedding.generic import FairEsmHookedEncoder, HookedEncoder
from plmexit.models import families
from plmexit.settings import EmbedSettings

RTOL = 1e-5
SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQ", "GG", "WYXBUZO", "ACDEFGHIKLMNPQRSTVWYACDEFGHIK", "MKV", "MKTAYIAKQ", "ACDEFG"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def planned_rule(plan: np.ndarray):
    """Row ``i`` of the batch leaves after layer ``plan[i]``; records what the rule was shown."""
    seen = []

    def rule(layer, pooled, rows):
        seen.append((layer, rows.tolist()))
        return torch.as_tensor(plan[rows.numpy()] == layer)

    return rule, seen


def check_exiting(encoder, layer_norm: str, plan: np.ndarray, depth: int | None = None):
    settings = EmbedSettings(max_tokens=10_000, layer_norm=layer_norm)
    (tokens, weights), = engine.device_batches(encoder, SEQUENCES, settings)
    rule, seen = planned_rule(plan)
    layers, vectors = encoder.pooled_exiting(tokens, weights, layer_norm, rule, depth)
    depth = encoder.num_layers if depth is None else depth
    assert layers.tolist() == np.minimum(plan, depth).tolist()
    static = encoder.pooled(tokens, weights, layer_norm)
    for i, k in enumerate(layers.tolist()):
        expected = static[k, i]
        assert torch.all((vectors[i] - expected).abs() <= RTOL * expected.abs().max()), (i, k)
        alone = encoder.pooled(tokens, weights, layer_norm, k)[k, i]  # a forward that stops at the row's exit layer
        assert torch.all((vectors[i] - alone).abs() <= RTOL * alone.abs().max())
    # A row is shown to the rule at every layer until it leaves, and never after.
    for layer, rows in seen:
        assert all(plan[r] >= layer for r in rows)
    return seen


@pytest.mark.parametrize("layer_norm", ["raw", "final"])
def test_fair_esm_exiting_forward_matches_static_forward(tiny_loaded, layer_norm):
    encoder = engine.make_encoder(tiny_loaded, "cpu", "float32")
    L = encoder.num_layers
    plan = np.array([0, 1, L, 1, 2, L, 0])[: len(SEQUENCES)]
    seen = check_exiting(encoder, layer_norm, plan)
    assert [len(rows) for _, rows in seen] == [7, 5, 3][: len(seen)]  # the batch shrinks as rows leave
    check_exiting(encoder, layer_norm, np.full(len(SEQUENCES), L), depth=1)  # everyone stops at the given depth


@pytest.mark.parametrize("layer_norm", ["raw", "final"])
def test_fair_esm_reference_engine_exiting_forward_matches_static_forward(tiny_loaded, layer_norm):
    """fair-esm's own forward (embed.engine: reference), whose blocks pass (T, B, E) states: the rows that
    leave are cut from the state's second dimension and from the padding mask, and the last block runs
    on the rows that reach it only."""
    encoder = engine.make_encoder(tiny_loaded, "cpu", "float32", engine="reference")
    assert isinstance(encoder, FairEsmHookedEncoder)
    L = encoder.num_layers
    sizes = []
    last = tiny_loaded.model.layers[-1].register_forward_hook(lambda module, args, output: sizes.append(output[0].shape[1]))
    try:
        plan = np.array([0, 1, L, 1, 2, L, 0])[: len(SEQUENCES)]
        seen = check_exiting(encoder, layer_norm, plan)
    finally:
        last.remove()
    assert [len(rows) for _, rows in seen] == [7, 5, 3][: len(seen)]
    assert sizes[0] == int((plan >= L).sum())
    check_exiting(encoder, layer_norm, np.full(len(SEQUENCES), L), depth=1)


@pytest.mark.parametrize("family", families.HUB_TEST_MODEL_FAMILIES)
def test_transformers_exiting_forward_matches_static_forward(tiny_hub_loaded, family):
    loaded = tiny_hub_loaded[family]
    encoder = engine.make_encoder(loaded, "cpu", "float32")
    L = encoder.num_layers
    plan = np.array([1, 0, L, 2, 1, L, 2]) % (L + 1)
    if not isinstance(encoder, HookedEncoder):  # an ESM2 in transformers' layout runs FastEncoder
        check_exiting(encoder, "raw", plan)
        check_exiting(encoder, "final", np.array([L, 1, 1, 0, L, 1, 0]))
        return
    sizes = []
    last = encoder.blocks[-1].register_forward_hook(lambda module, args, output: sizes.append((output[0] if isinstance(output, tuple) else output).shape[0]))
    try:
        check_exiting(encoder, "raw", plan)
    finally:
        last.remove()
    uses = sum(block is encoder.blocks[-1] for block in encoder.blocks)  # ALBERT runs one shared block L times
    assert sizes[uses - 1] == int((plan >= L).sum())  # the last block ran on the rows that reached it only
    check_exiting(encoder, "final", np.array([L, 1, 1, 0, L, 1, 0]))


def random_probes(n_layers: int, dim: int, classes: int, seed: int) -> dict:
    from plmexit.probing.linear import LinearProbe

    rng = np.random.default_rng(seed)
    return {
        k: LinearProbe("classification", rng.normal(0, 0.1, dim), np.ones(dim), rng.normal(0, 3, (dim, classes)), rng.normal(0, 1, classes),
                       "softmax", [f"c{j}" for j in range(classes)], 1.0, 10)
        for k in range(n_layers + 1)
    }


@pytest.mark.parametrize("gate", ["probability", "patience"])
def test_probe_rule_exits_where_the_offline_controller_does(tiny_hub_loaded, tiny_loaded, gate):
    from plmexit.exit import adaptive, gates
    from plmexit.exit.controller import Controller
    from plmexit.exit.outputs import probe_outputs

    for loaded in (tiny_loaded, tiny_hub_loaded["bert"]):
        encoder = engine.make_encoder(loaded, "cpu", "float32")
        L = encoder.num_layers
        probes = random_probes(L, encoder.embed_dim, 3, 0)
        settings = EmbedSettings(max_tokens=10_000)
        batches = engine.device_batches(encoder, SEQUENCES, settings)
        static = encoder.pooled(*batches[0], "raw").numpy()
        outputs = np.stack([probe_outputs(probes[k], static[k], ["c0", "c1", "c2"]) for k in range(L + 1)])
        scores = gates.gate_scores(outputs, gate, "classification")
        threshold = 1.0 if gate == "patience" else float(np.median(scores[1:L]))
        controller = Controller(gate, threshold, 1, L)
        rule = adaptive.ProbeExitRule(probes, controller, "classification", ["c0", "c1", "c2"])
        (layers, _), = adaptive.exit_batches(encoder, batches, rule, "raw")
        assert layers.tolist() == controller.exit_layers(scores).tolist()
        timing = adaptive.time_forwards(encoder, batches, rule, 1, "raw", "cpu", repeats=1)
        assert set(timing["seconds"]) == {"full_depth", "static_layer", "adaptive"} and timing["gate_seconds"] > 0
