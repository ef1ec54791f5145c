"""Every backend through the one embedding path: the same ESM2 weights give the same pooled layers
through fair-esm and through the transformers layout, and every family's pooled layers equal its
own ``output_hidden_states`` forward run one sequence (one window) at a time, in both conventions."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from plmexit.embedding import cost, engine, fast_esm2, pieces
from plmexit.embedding.engine import embed_pooled
from plmexit.embedding.generic import FairEsmHookedEncoder, HookedEncoder
from plmexit.embedding.reference import reference_pooled
from plmexit.models import families, hub
from plmexit.models import manifest as model_manifest
from plmexit.settings import EmbedSettings

RTOL = 1e-5
# Padding in a batch, duplicates, rare residues, one sequence longer than the test window.
SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQ", "GG", "WYXBUZO", "MKTAYIAKQRQISFVKSHFSRQ", "ACDEFGHIKLMNPQRSTVWYACDEFGHIK", "GG", "MKV"]
WINDOW, OVERLAP = 12, 4


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a loaded 2-core machine threads wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pooled(loaded, sequences, settings, encoder=None) -> np.ndarray:
    out = np.full((loaded.num_layers + 1, len(sequences), loaded.embed_dim), np.nan, dtype=np.float32)
    for index, block in embed_pooled(loaded, sequences, settings, encoder=encoder):
        out[:, index] = block
    assert not np.isnan(out).any()
    return out


def assert_close(ours: np.ndarray, expected: np.ndarray) -> None:
    scale = np.abs(expected).max(axis=-1, keepdims=True)  # per pooled vector
    assert np.all(np.abs(ours - expected) <= RTOL * scale), float((np.abs(ours - expected) / scale).max())


@torch.no_grad()
def own_forward(loaded, sequence: str, layer_norm: str) -> np.ndarray:
    """(L + 1, N, E) for one piece: the family's tokenizer on the model-card input, the model's own
    ``output_hidden_states`` forward, residue positions from the tokenizer's special-token mask, the
    final norm on layers 0..L-1 for ``final`` (transformers' ``hidden_states[L]`` is already normed)."""
    text = " ".join(sequence.translate(str.maketrans("UZOB", "XXXX"))) if families.get(loaded.family).rare_to_x else sequence
    encoded = loaded.tokenizer(text, return_tensors="pt", return_special_tokens_mask=True)
    residues = encoded.pop("special_tokens_mask")[0] == 0
    assert int(residues.sum()) == len(sequence)
    output = loaded.module(**encoded, output_hidden_states=True)
    hidden = list(output.hidden_states)
    assert len(hidden) == loaded.num_layers + 1
    torch.testing.assert_close(hidden[-1], output.last_hidden_state, rtol=0, atol=0)
    norm = loaded.final_norm
    if layer_norm == "final" and norm is not None:
        hidden = [norm(h) for h in hidden[:-1]] + hidden[-1:]
    return torch.stack([h[0, residues] for h in hidden]).numpy()  # (L + 1, n, E)


def reference(loaded, sequences, layer_norm: str, window: int | None = None) -> np.ndarray:
    """Each sequence alone; in window mode each window alone, every residue's states averaged over
    the windows covering it, then the mean over residues."""
    out = []
    for sequence in sequences:
        n = len(sequence)
        starts = [0] if window is None or n <= window else sorted({*range(0, n - window, window - OVERLAP), n - window})
        width = n if window is None else min(window, n)
        total, count = 0.0, np.zeros(n)
        for start in starts:
            states = own_forward(loaded, sequence[start : start + width], layer_norm)
            padded = np.zeros((states.shape[0], n, states.shape[2]))
            padded[:, start : start + width] = states
            total = total + padded
            count[start : start + width] += 1
        out.append((total / count[None, :, None]).mean(axis=1))
    return np.stack(out, axis=1).astype(np.float32)


@pytest.mark.parametrize("layer_norm", ["raw", "final"])
def test_fair_esm_and_transformers_layouts_of_one_esm2_agree(tmp_path, tiny_loaded, layer_norm):
    converted = hub.convert_fair_esm(tiny_loaded.model, tiny_loaded.alphabet, tmp_path / "hf")
    loaded = model_manifest.load(model_manifest.resolve(path=converted))
    settings = EmbedSettings(max_tokens=64, layer_norm=layer_norm)
    expected = reference_pooled(tiny_loaded, SEQUENCES, layer_norm=layer_norm)  # fair-esm's extract.py
    fast = pooled(loaded, SEQUENCES, settings)  # the transformers weights through FastEncoder
    generic = pooled(loaded, SEQUENCES, settings, HookedEncoder(loaded, "cpu", "float32"))  # transformers' own forward
    assert isinstance(engine.make_encoder(loaded, "cpu", "float32"), fast_esm2.FastEncoder)
    assert_close(pooled(tiny_loaded, SEQUENCES, settings), expected)
    assert_close(fast, expected)
    assert_close(generic, expected)


@pytest.mark.parametrize("layer_norm", ["raw", "final"])
@pytest.mark.parametrize("family", families.HUB_TEST_MODEL_FAMILIES)
def test_every_family_equals_its_own_forward(tiny_hub_loaded, family, layer_norm):
    loaded = tiny_hub_loaded[family]
    truncate = EmbedSettings(max_tokens=64, layer_norm=layer_norm)
    window = EmbedSettings(max_tokens=64, layer_norm=layer_norm, long_sequences="window", window=WINDOW, overlap=OVERLAP)
    assert_close(pooled(loaded, SEQUENCES, truncate), reference(loaded, SEQUENCES, layer_norm))
    assert_close(pooled(loaded, SEQUENCES, window), reference(loaded, SEQUENCES, layer_norm, WINDOW))


def test_post_norm_families_have_one_convention(tiny_hub_loaded):
    loaded = tiny_hub_loaded["bert"]
    assert loaded.final_norm is None
    raw, final = (pooled(loaded, SEQUENCES[:3], EmbedSettings(layer_norm=c)) for c in ("raw", "final"))
    np.testing.assert_array_equal(raw, final)


@pytest.mark.parametrize("family", ["t5", "esmc"])
def test_depth_stops_the_forward_and_keeps_the_layers_it_reached(tiny_hub_loaded, family):
    loaded = tiny_hub_loaded[family]
    encoder = engine.make_encoder(loaded, "cpu", "float32")
    settings = EmbedSettings(max_tokens=64, layer_norm="final")
    (tokens, weights), *_ = engine.device_batches(encoder, SEQUENCES, settings)
    full = encoder.pooled(tokens, weights, "final")
    for depth in range(loaded.num_layers + 1):
        seen = []
        part = encoder.pooled(tokens, weights, "final", depth, on_layer=seen.append)
        assert part.shape == (depth + 1, *full.shape[1:])
        torch.testing.assert_close(part, full[: depth + 1], rtol=0, atol=0)
        assert seen == list(range(depth + 1))  # called back after each layer's pooling, in order (the cost step's timestamps)
    ran = []
    handle = encoder.blocks[-1].register_forward_hook(lambda *args: ran.append(1))
    encoder.pooled(tokens, weights, "raw", 1)
    handle.remove()
    assert ran == []  # the last block never ran
    seconds = cost.measure_depth_seconds(encoder, SEQUENCES, settings, repeats=1)
    assert seconds.shape == (loaded.num_layers + 1,) and np.all(seconds > 0) and np.all(np.diff(seconds) >= 0)


def test_token_budgets_count_each_family_special_tokens(tiny_hub_loaded):
    settings = EmbedSettings()
    t5 = engine.make_encoder(tiny_hub_loaded["t5"], "cpu", "float32")
    assert pieces.work_tokens(["MKV", "GG", "MKV"], settings, t5.tokens.specials) == (3 + 1) + (2 + 1)
    (tokens, weights), = engine.device_batches(t5, ["MKV", "GG"], settings)
    assert tokens.shape == (2, 4) and weights[:, -1].eq(0).all()  # residues, then </s> (and padding)
    np.testing.assert_array_equal(pieces.piece_token_lengths(["MKV"], settings, 1), [4])


def test_embed_and_cost_steps_run_a_transformers_model(tmp_path, tiny_hub_models):
    """The pipeline's steps through a transformers manifest: the store records the family and its
    versions; the cost counts T5's one special token and its own block weights."""
    import h5py
    import pandas as pd

    from plmexit.data.tasks import TASK_COLUMNS
    from plmexit.pipeline import model_steps

    table = pd.DataFrame({"id": [f"s{i}" for i in range(len(SEQUENCES))], "sequence": SEQUENCES, "label": 0.5, "fold": 0})
    table[TASK_COLUMNS].to_csv(tmp_path / "task.tsv", sep="\t", index=False)
    model_steps.fetch_model(tmp_path / "t5.json", path=tiny_hub_models["t5"])
    settings = EmbedSettings(max_tokens=64)
    model_steps.embed_task(tmp_path / "t5.json", tmp_path / "task.tsv", tmp_path / "t5.h5", settings, "float32")
    with h5py.File(tmp_path / "t5.h5", "r") as handle:
        attrs = dict(handle.attrs)
        stored = handle["embeddings"][()]
    assert (attrs["model_family"], attrs["model_format"], attrs["engine"]) == ("t5", "transformers", HookedEncoder.engine)
    assert "transformers_version" in attrs and "fair_esm_version" not in attrs
    loaded = model_manifest.load(tmp_path / "t5.json")
    assert_close(stored, reference(loaded, SEQUENCES, "raw"))
    result = model_steps.measure_cost(tmp_path / "t5.json", tmp_path / "task.tsv", tmp_path / "cost.json", settings, 3, 1, 0)
    assert result["tokens"] == sum(len(s) + 1 for s in SEQUENCES)
    dim = loaded.embed_dim  # T5 block: q, k, v, o (4 d^2), relu feed-forward d x 4d twice (8 d^2)
    assert result["flops"][1] == pytest.approx(sum((len(s) + 1) * (24.0 * dim * dim + 4.0 * (len(s) + 1) * dim) for s in SEQUENCES), rel=1e-12)


def test_out_of_memory_inside_a_transformers_forward_is_split_and_retried(tiny_hub_loaded, caplog):
    """The OOM is raised inside the model's own forward (a block), as a real one would be: the batch
    is split and retried, the results are unchanged, and plmexit's pooling hooks are all removed."""
    loaded = tiny_hub_loaded["t5"]
    encoder = engine.make_encoder(loaded, "cpu", "float32")
    settings = EmbedSettings(max_tokens=4096)
    expected = pooled(loaded, SEQUENCES, settings, encoder)

    def small_memory(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.shape[0] > 2:
            raise torch.OutOfMemoryError("out of memory (simulated)")

    def hooks() -> list[int]:  # transformers installs its own capturing hooks once output_hidden_states was asked for
        return [len(b._forward_hooks) + len(b._forward_pre_hooks) for b in encoder.blocks]

    before = hooks()
    block = encoder.blocks[1]
    handle = block.register_forward_pre_hook(small_memory, with_kwargs=True)
    try:
        with caplog.at_level("WARNING", logger="plmexit.embedding.engine"):
            actual = pooled(loaded, SEQUENCES, settings, encoder)
    finally:
        handle.remove()
    assert "retrying as two halves" in caplog.text
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-7)
    assert hooks() == before


@pytest.mark.parametrize("family", ["t5", "esmc"])
def test_generic_encoder_in_bfloat16_stays_near_float32(tiny_hub_models, tiny_hub_loaded, family):
    """``embed.precision`` reaches the generic encoder: the model runs in bf16, pooling stays fp32
    (same bound as the ESM2 encoder's bf16 test: 2e-2 of each vector's largest component)."""
    expected = pooled(tiny_hub_loaded[family], SEQUENCES, EmbedSettings(max_tokens=64))
    loaded = model_manifest.load(model_manifest.resolve(path=tiny_hub_models[family]))  # a fresh copy: the encoder casts it
    settings = EmbedSettings(max_tokens=64, precision="bfloat16")
    encoder = HookedEncoder(loaded, "cpu", "bfloat16")  # not make_encoder: it falls back to fp32 on CPUs without bf16
    assert next(encoder.module.parameters()).dtype == torch.bfloat16
    actual = pooled(loaded, SEQUENCES, settings, encoder)
    scale = np.abs(expected).max(axis=-1, keepdims=True)
    assert np.all(np.abs(actual - expected) <= 2e-2 * scale) and not np.array_equal(actual, expected)


# --- the reference engine (embed.engine: reference): every model's own forward -------------------


@pytest.mark.parametrize("long_sequences", ["truncate", "window"])
@pytest.mark.parametrize("layer_norm", ["raw", "final"])
@pytest.mark.parametrize("backend", ["fair-esm", "esm"])
def test_the_reference_engine_equals_the_fast_one_at_every_layer(tiny_loaded, tiny_hub_loaded, backend, layer_norm, long_sequences):
    """fair-esm's own ESM2 modules, and transformers' own EsmModel, through the same pieces, batches and
    pooling as the fused encoder: equal to it (and to fair-esm's extract.py) within 1e-5 relative in fp32,
    windows of a sequence longer than the window included."""
    loaded = tiny_loaded if backend == "fair-esm" else tiny_hub_loaded["esm"]
    window = {"window": WINDOW, "overlap": OVERLAP} if long_sequences == "window" else {}
    fast = EmbedSettings(max_tokens=64, layer_norm=layer_norm, long_sequences=long_sequences, **window)
    reference_engine = dataclasses.replace(fast, engine="reference")
    assert isinstance(engine.make_encoder(loaded, "cpu", "float32"), fast_esm2.FastEncoder)
    expected_type = FairEsmHookedEncoder if backend == "fair-esm" else HookedEncoder
    assert type(engine.make_encoder(loaded, "cpu", "float32", engine="reference")) is expected_type
    ours = pooled(loaded, SEQUENCES, reference_engine)  # embed_pooled makes the encoder from the settings' engine
    assert_close(ours, pooled(loaded, SEQUENCES, fast))
    if backend == "fair-esm" and long_sequences == "truncate":
        assert_close(ours, reference_pooled(tiny_loaded, SEQUENCES, layer_norm=layer_norm))  # fair-esm's extract.py
    assert long_sequences == "truncate" or any(len(s) > WINDOW for s in SEQUENCES)


def test_the_reference_engine_stops_at_depth_and_times_every_depth(tiny_loaded):
    """fair-esm's forward ends after block ``depth`` (after the last block too: its LM head never runs),
    calls back after each layer, and ``plmexit cost``'s timing runs on it."""
    encoder = engine.make_encoder(tiny_loaded, "cpu", "float32", engine="reference")
    settings = EmbedSettings(max_tokens=64, layer_norm="final", engine="reference")
    (tokens, weights), *_ = engine.device_batches(encoder, SEQUENCES, settings)
    heads = []
    handles = [tiny_loaded.model.lm_head.register_forward_hook(lambda *args: heads.append(1))]
    handles.append(tiny_loaded.model.layers[-1].register_forward_hook(lambda *args: heads.append("last block")))
    try:
        full = encoder.pooled(tokens, weights, "final")
        assert heads == ["last block"]
        heads.clear()
        for depth in range(tiny_loaded.num_layers + 1):
            seen = []
            part = encoder.pooled(tokens, weights, "final", depth, on_layer=seen.append)
            torch.testing.assert_close(part, full[: depth + 1], rtol=0, atol=0)
            assert seen == list(range(depth + 1))
        assert heads == ["last block"]  # only the full-depth run reached it
        seconds = cost.measure_depth_seconds(encoder, SEQUENCES, settings, repeats=1)
    finally:
        for handle in handles:
            handle.remove()
    assert seconds.shape == (tiny_loaded.num_layers + 1,) and np.all(seconds > 0) and np.all(np.diff(seconds) >= 0)
    assert all(not b._forward_hooks and not b._forward_pre_hooks for b in tiny_loaded.model.layers)


def test_the_reference_engine_runs_int8_as_the_fast_one_does(tiny_model):
    """Precision goes through the same resolution; int8 quantises fair-esm's own linear layers but the
    attention output projections, which stay float32 as in the fused encoder."""
    from plmexit.embedding import precision as precisions
    from plmexit.models import fair_esm

    loaded = fair_esm.load_model(tiny_model)  # a fresh copy: the encoder quantises it in place
    expected = pooled(loaded, SEQUENCES, EmbedSettings(max_tokens=64))
    encoder = engine.make_encoder(loaded, "cpu", "int8", engine="reference")
    kept = [name for name, m in encoder.module.layers.named_modules() if type(m) is torch.nn.Linear]
    assert encoder.resolved.ran == "int8" and kept == [f"{i}.self_attn.out_proj" for i in range(loaded.num_layers)]
    actual = pooled(loaded, SEQUENCES, EmbedSettings(max_tokens=64, precision="int8", engine="reference"), encoder)
    scale = np.abs(expected).max(axis=-1, keepdims=True)
    deviation = (np.abs(actual - expected) / scale).max(axis=(1, 2))
    assert deviation[0] < 1e-6 and np.all(deviation[1:] <= 2.5e-2) and deviation.max() > 1e-5 and precisions.keeps_float32(kept[0])


@pytest.mark.parametrize("backend", ["fair-esm", "esm"])
def test_the_reference_engine_keeps_rotary_angles_float32_at_reduced_precision(tiny_model, tiny_hub_models, backend):
    """In bfloat16 the model's own rotary code would round its frequencies (transformers) or its positions
    (fair-esm: past 256 they are no longer whole numbers apart); the reference engine computes the angles in
    float32 from float32 frequencies and casts cos and sin, as the fast engine does."""
    from plmexit.models import fair_esm

    def load():  # fresh copies: the encoder casts its model in place
        return fair_esm.load_model(tiny_model) if backend == "fair-esm" else model_manifest.load(model_manifest.resolve(path=tiny_hub_models["esm"]))

    loaded, plain = load(), load()
    long = "".join(np.random.default_rng(0).choice(list("ACDEFGHIKLMNPQRSTVWY"), size=700))
    settings = EmbedSettings(max_tokens=4096)
    expected = pooled(plain, [long, *SEQUENCES], settings)
    encoder_type = FairEsmHookedEncoder if backend == "fair-esm" else HookedEncoder
    encoder = encoder_type(loaded, "cpu", "bfloat16")  # built directly: bfloat16 runs (emulated) whatever the CPU
    actual = pooled(loaded, [long, *SEQUENCES], settings, encoder)
    frequencies = [m.inv_freq for m in (plain.model if backend == "fair-esm" else plain.module).modules() if hasattr(m, "inv_freq")]
    assert len(encoder.rotary) == loaded.num_layers if backend == "fair-esm" else len(encoder.rotary) >= 1
    for rotary, inv_freq in zip(encoder.rotary, frequencies):
        assert rotary.inv_freq.dtype == torch.float32 and torch.equal(rotary.inv_freq, inv_freq)
    if backend == "fair-esm":  # the tables its forward used: float32 angles of whole positions, cast once
        positions = torch.arange(len(long) + 2, dtype=torch.float32)
        angles = torch.cat([positions[:, None] * frequencies[0][None, :]] * 2, dim=-1)
        for rotary in encoder.rotary:
            assert rotary._cos_cached.dtype == torch.bfloat16 and torch.equal(rotary._cos_cached[0], angles.cos().to(torch.bfloat16))
    scale = np.abs(expected).max(axis=-1, keepdims=True)
    assert np.all(np.abs(actual - expected) <= 2e-2 * scale)
