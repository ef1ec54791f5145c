"""Batching, truncation and the key correctness checks: pooled per-layer embeddings equal fair-esm's
``scripts/extract.py`` computation (``reference_pooled``) and a one-sequence-at-a-time computation
with fair-esm itself, in fp32 to 1e-5 and in bf16/fp16 to the stated tolerances."""

from __future__ import annotations

import esm
import numpy as np
import pytest
import torch

from plmexit.embedding.engine import embed_pooled
from plmexit.embedding.fast_esm2 import FastEncoder, onednn_unavailable_reason
from plmexit.embedding.pieces import residue_weights, token_batches, truncate_sequences, window_starts
from plmexit.embedding.reference import reference_pooled
from plmexit.models import fair_esm
from plmexit.settings import EmbedSettings

# Different lengths so a batch needs padding; a duplicate; the rare codes X, B, U, Z, O.
SEQUENCES = [
    "MKTAYIAKQRQISFVKSHFSRQ",
    "GG",
    "ACDEFGHIKLMNPQRSTVWY",
    "MKTAYIAKQRQISFVKSHFSRQ",
    "WYXBUZO",
    "MKV",
    "GG",
]
RTOL = 1e-5  # fp32: batching, padding masks and summation order move only the last bits
# Reduced-precision compute, relative to each pooled vector's largest component. The unit roundoff
# is 2^-8 (bf16) and 2^-11 (fp16); errors measured on random ESM2s of 2 and 12 layers were at most
# 0.7% / 1.0% (bf16) and 0.10% / 0.11% (fp16), so the bounds leave about 2x headroom.
PRECISION_RTOL = {"bfloat16": 2e-2, "float16": 2e-3}


def reference_embeddings(checkpoint, sequences: list[str], layer_norm: str = "raw") -> np.ndarray:
    """(L + 1, N, D): fair-esm on each sequence alone, mean over residue positions 1..len."""
    with torch.serialization.safe_globals(fair_esm.SAFE_CHECKPOINT_GLOBALS):
        model, alphabet = esm.pretrained.load_model_and_alphabet_local(checkpoint)
    model.eval()
    convert = alphabet.get_batch_converter()
    layers = list(range(model.num_layers + 1))
    out = np.zeros((len(layers), len(sequences), model.embed_dim), dtype=np.float32)
    with torch.no_grad():
        for i, sequence in enumerate(sequences):
            _, _, tokens = convert([("s", sequence)])
            assert tokens.shape == (1, len(sequence) + 2)  # BOS + residues + EOS, no padding
            representations = model(tokens, repr_layers=layers)["representations"]
            for layer in layers:
                hidden = representations[layer]
                if layer_norm == "final" and layer != layers[-1]:
                    hidden = model.emb_layer_norm_after(hidden)
                out[layer, i] = hidden[0, 1 : len(sequence) + 1].mean(dim=0).numpy()
    return out


def collect(blocks, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Assemble yielded blocks into (L + 1, n, D), checking every index arrives exactly once."""
    seen = np.zeros(n, dtype=int)
    result, indices = None, []
    for index, block in blocks:
        assert block.dtype == np.float32
        assert np.all(np.diff(index) > 0), "indices within a block are sorted and unique"
        assert block.shape[1] == len(index)
        if result is None:
            result = np.full((block.shape[0], n, block.shape[2]), np.nan, dtype=np.float32)
        result[:, index] = block
        seen[index] += 1
        indices.append(index)
    np.testing.assert_array_equal(seen, np.ones(n, dtype=int))
    return result, indices


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """Largest difference relative to each pooled vector's scale, so components near zero do not demand more."""
    return float((np.abs(actual - expected) / np.abs(expected).max(axis=-1, keepdims=True)).max())


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float = RTOL) -> None:
    scale = np.abs(expected).max(axis=-1, keepdims=True)
    np.testing.assert_array_less(np.abs(actual - expected), np.broadcast_to(rtol * scale + 1e-12, actual.shape))


# --- batching and truncation -------------------------------------------------------------------


def test_token_batches_exact_grouping():
    lengths = np.array([5, 1, 9, 3, 3, 30, 2])

    batches = token_batches(lengths, max_tokens=20)

    assert [b.tolist() for b in batches] == [[1, 6, 3, 4], [0], [2], [5]]


@pytest.mark.parametrize("max_tokens", [1, 12, 50, 10_000])
def test_token_batches_respect_the_budget_and_cover_every_index_once(max_tokens):
    lengths = np.random.default_rng(0).integers(1, 40, size=57)

    batches = token_batches(lengths, max_tokens)

    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(57))
    for batch in batches:
        padded = len(batch) * (lengths[batch].max() + 2)
        assert padded <= max_tokens or len(batch) == 1


def test_a_sequence_over_the_budget_is_alone():
    batches = token_batches(np.array([3, 100, 4]), max_tokens=20)

    assert [b.tolist() for b in batches] == [[0, 2], [1]]


def test_token_batches_of_nothing():
    assert token_batches(np.array([], dtype=int), max_tokens=100) == []


def test_truncate_sequences():
    sequences, truncated = truncate_sequences(["ACDEF", "AC", "ACD", ""], 3)

    assert sequences == ["ACD", "AC", "ACD", ""]
    np.testing.assert_array_equal(truncated, [True, False, False, False])


# --- embedding ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tiny_model):
    return reference_embeddings(tiny_model, SEQUENCES)


@pytest.mark.parametrize("max_tokens", [4096, 30, 1], ids=["one-padded-batch", "several-batches", "one-per-batch"])
def test_embed_pooled_equals_fair_esm_one_sequence_at_a_time(tiny_loaded, reference, max_tokens):
    settings = EmbedSettings(max_tokens=max_tokens)

    embedded, _ = collect(embed_pooled(tiny_loaded, SEQUENCES, settings), len(SEQUENCES))

    assert embedded.shape == (3, len(SEQUENCES), 32)
    assert_close(embedded, reference)


def test_the_reference_is_not_trivially_matched(reference):
    # Guard for the test above: layers and sequences differ, so a mix-up cannot pass unnoticed.
    assert not np.allclose(reference[0], reference[1], rtol=1e-2)
    assert not np.allclose(reference[:, 0], reference[:, 1], rtol=1e-2)
    assert not np.allclose(reference[:, 0], reference[:, 5], rtol=1e-2)


def test_padding_does_not_leak_into_short_sequences(tiny_loaded):
    short = "MKV"
    alone, _ = collect(embed_pooled(tiny_loaded, [short], EmbedSettings()), 1)
    padded, _ = collect(embed_pooled(tiny_loaded, [short, "W" * 200], EmbedSettings()), 2)

    assert_close(padded[:, :1], alone)


def test_duplicates_are_embedded_once_and_written_everywhere(tiny_loaded, reference, monkeypatch):
    import plmexit.embedding.engine as embed_module

    rows_seen = []
    real_forward = embed_module._forward_pooled

    def counting_forward(encoder, tokens, weights, layer_norm):
        rows_seen.extend(tokens.tolist())
        return real_forward(encoder, tokens, weights, layer_norm)

    monkeypatch.setattr(embed_module, "_forward_pooled", counting_forward)
    embedded, _ = collect(embed_pooled(tiny_loaded, SEQUENCES, EmbedSettings(max_tokens=4096)), len(SEQUENCES))

    assert len(rows_seen) == len(set(SEQUENCES)) == 5
    np.testing.assert_array_equal(embedded[:, 0], embedded[:, 3])
    np.testing.assert_array_equal(embedded[:, 1], embedded[:, 6])
    assert_close(embedded, reference)


def test_final_layer_norm_convention(tiny_model, tiny_loaded, reference):
    expected = reference_embeddings(tiny_model, SEQUENCES, layer_norm="final")

    embedded, _ = collect(embed_pooled(tiny_loaded, SEQUENCES, EmbedSettings(layer_norm="final", max_tokens=30)), len(SEQUENCES))

    assert_close(embedded, expected)
    assert_close(embedded[-1], reference[-1])  # the last layer is normed once, not twice
    assert not np.allclose(embedded[1], reference[1], rtol=1e-2)


def test_every_index_is_yielded_once_in_sorted_blocks(tiny_loaded):
    sequences = ["M" * n for n in (5, 1, 9, 3, 3, 30, 2)] + ["M" * 3]

    _, blocks = collect(embed_pooled(tiny_loaded, sequences, EmbedSettings(max_tokens=20)), len(sequences))

    assert len(blocks) > 1


# --- fair-esm's extract.py, and reduced precision -----------------------------------------------


def test_reference_is_fair_esm_extract_one_sequence_at_a_time(tiny_loaded, reference):
    # extract.py batches by its own rule (several padded batches here); the result is per sequence.
    assert_close(reference_pooled(tiny_loaded, SEQUENCES, toks_per_batch=40), reference)


def test_reference_truncates_like_extract(tiny_loaded, tiny_model):
    long = "MKTAYIAKQRQISFVKSHFSRQ" * 3

    got = reference_pooled(tiny_loaded, [long, "GG"], truncation_seq_length=10)

    assert_close(got, reference_embeddings(tiny_model, [long[:10], "GG"]))


@pytest.mark.parametrize("layer_norm", ["raw", "final"])
def test_embed_pooled_equals_extract_py_in_fp32(tiny_loaded, layer_norm):
    sequences = SEQUENCES + ["MSIQHFRVALIPFFAAFCLPVFAHPETLVKVKDAEDQLGARVGYIELDLNSG" * 2]
    expected = reference_pooled(tiny_loaded, sequences, layer_norm=layer_norm)

    embedded, _ = collect(embed_pooled(tiny_loaded, sequences, EmbedSettings(max_tokens=100, layer_norm=layer_norm)), len(sequences))

    assert relative_error(embedded, expected) <= RTOL


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_reduced_precision_within_its_stated_tolerance(tiny_loaded, reference, precision):
    # The encoder itself, so the arithmetic runs in that precision even on a CPU where embed falls back to fp32.
    encoder = FastEncoder(tiny_loaded, "cpu", precision)
    embedded, _ = collect(embed_pooled(tiny_loaded, SEQUENCES, EmbedSettings(precision=precision, max_tokens=30), encoder=encoder), len(SEQUENCES))

    error = relative_error(embedded, reference)
    assert error <= PRECISION_RTOL[precision]
    assert error > RTOL  # it really computed in reduced precision


def test_both_fp32_matmul_paths_equal_fair_esm_and_the_one_not_taken_says_why(tiny_loaded, reference, caplog, monkeypatch):
    """CPU float32 runs its linear layers as oneDNN matmuls over prepacked weights where torch has
    them; with oneDNN switched off it runs addmm, and logs why. Both equal fair-esm to 1e-5."""
    reason = onednn_unavailable_reason("cpu", torch.float32)
    if reason:
        pytest.skip(f"this torch cannot run the oneDNN path: {reason}")
    fused = FastEncoder(tiny_loaded, "cpu", "float32")
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    with caplog.at_level("INFO", logger="plmexit.embedding.fast_esm2"):
        plain = FastEncoder(tiny_loaded, "cpu", "float32")
    monkeypatch.undo()
    assert (fused.matmul, plain.matmul) == ("onednn", "addmm")
    assert "not oneDNN: torch.backends.mkldnn.enabled is False" in caplog.text
    for encoder in (fused, plain):
        embedded, _ = collect(embed_pooled(tiny_loaded, SEQUENCES, EmbedSettings(max_tokens=30), encoder=encoder), len(SEQUENCES))
        assert relative_error(embedded, reference) <= RTOL


def test_unknown_layer_norm_convention(tiny_loaded):
    with pytest.raises(ValueError, match=r"unknown layer_norm 'pre'"):
        list(embed_pooled(tiny_loaded, ["MKV"], EmbedSettings(layer_norm="pre")))


# --- out of device memory ----------------------------------------------------------------------


def test_a_batch_out_of_memory_is_split_and_retried(tiny_loaded, monkeypatch, caplog):
    """Batches over two sequences 'run out of memory'; results equal an unconstrained run."""
    import plmexit.embedding.engine as embed_module

    expected, _ = collect(embed_pooled(tiny_loaded, SEQUENCES, EmbedSettings(max_tokens=4096)), len(SEQUENCES))
    real_forward = embed_module._forward_pooled
    attempted, succeeded = [], []

    def forward_with_small_memory(encoder, tokens, weights, layer_norm):
        attempted.append(tokens.shape[0])
        if tokens.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        succeeded.append(tokens.shape[0])
        return real_forward(encoder, tokens, weights, layer_norm)

    monkeypatch.setattr(embed_module, "_forward_pooled", forward_with_small_memory)
    with caplog.at_level("WARNING", logger="plmexit.embedding.engine"):
        actual, _ = collect(embed_pooled(tiny_loaded, SEQUENCES, EmbedSettings(max_tokens=4096)), len(SEQUENCES))

    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    # 5 unique sequences in one batch: 5 fails, halves 2 and 3, 3 fails, halves 1 and 2.
    assert attempted == [5, 2, 3, 1, 2] and succeeded == [2, 1, 2]
    assert "retrying as two halves" in caplog.text


def test_the_halves_run_after_the_failed_forward_has_let_go_of_its_memory(tiny_loaded, monkeypatch):
    """On a GPU the halves need the memory the failed forward held; while an ``except`` block runs, the
    exception's traceback keeps that forward's tensors alive, so the retry must come after the block."""
    import weakref

    import plmexit.embedding.engine as embed_module

    real_forward = embed_module._forward_pooled
    failed = []

    def forward(encoder, tokens, weights, layer_norm):
        assert all(ref() is None for ref in failed), "a failed forward's activations are still alive during the retry"
        if tokens.shape[0] > 2:
            activations = torch.empty(1024)  # what the failed forward had allocated
            failed.append(weakref.ref(activations))
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(encoder, tokens, weights, layer_norm)

    monkeypatch.setattr(embed_module, "_forward_pooled", forward)
    actual, _ = collect(embed_pooled(tiny_loaded, SEQUENCES, EmbedSettings(max_tokens=4096)), len(SEQUENCES))
    assert len(failed) == 2 and np.isfinite(actual).all()


def test_a_single_sequence_out_of_memory_is_a_clear_error(tiny_loaded, monkeypatch):
    import plmexit.embedding.engine as embed_module
    from plmexit.errors import EmbedError

    def no_memory(*args):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(embed_module, "_forward_pooled", no_memory)
    with pytest.raises(EmbedError, match=r"one sequence of \d+ residues does not fit in cpu memory even alone; lower embed.truncate"):
        list(embed_pooled(tiny_loaded, ["MKTAYIAK", "GG"], EmbedSettings(max_tokens=4096)))


# --- long sequences: sliding windows -----------------------------------------------------------


def test_window_starts_cover_the_sequence_with_full_windows():
    assert window_starts(10, window=10, overlap=3) == [0]
    assert window_starts(50, window=20, overlap=6) == [0, 14, 28, 30]  # the last one ends at residue 50
    assert window_starts(21, window=20, overlap=0) == [0, 1]


def test_window_weights_average_over_coverage_then_mean():
    weights = residue_weights(8, [0, 2, 4], window=4)

    coverage = np.array([1, 1, 2, 2, 2, 2, 1, 1])
    np.testing.assert_allclose(np.concatenate(weights), 1 / (8 * np.concatenate([coverage[0:4], coverage[2:6], coverage[4:8]])))
    assert sum(w.sum() for w in weights) == pytest.approx(1.0)


def test_window_mode_equals_the_plain_path_for_sequences_within_the_window(tiny_loaded):
    plain, _ = collect(embed_pooled(tiny_loaded, SEQUENCES, EmbedSettings(max_tokens=30)), len(SEQUENCES))
    windowed, _ = collect(embed_pooled(tiny_loaded, SEQUENCES, EmbedSettings(max_tokens=30, long_sequences="window", window=22, overlap=5)), len(SEQUENCES))

    np.testing.assert_array_equal(windowed, plain)


def test_a_long_sequence_is_the_mean_of_residue_states_averaged_over_its_windows(tiny_model, tiny_loaded):
    long = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAE"  # 52 residues
    starts = [0, 14, 28, 32]  # window 20, overlap 6
    with torch.serialization.safe_globals(fair_esm.SAFE_CHECKPOINT_GLOBALS):
        model, alphabet = esm.pretrained.load_model_and_alphabet_local(tiny_model)
    model.eval()
    layers = list(range(model.num_layers + 1))
    sums, counts = np.zeros((len(layers), len(long), model.embed_dim)), np.zeros(len(long))
    with torch.no_grad():
        for start in starts:
            _, _, tokens = alphabet.get_batch_converter()([("w", long[start : start + 20])])  # its own BOS and EOS
            reps = model(tokens, repr_layers=layers)["representations"]
            for layer in layers:
                sums[layer, start : start + 20] += reps[layer][0, 1:21].numpy()
            counts[start : start + 20] += 1
    expected = (sums / counts[None, :, None]).mean(axis=1)[:, None, :]

    settings = EmbedSettings(long_sequences="window", window=20, overlap=6)
    got, _ = collect(embed_pooled(tiny_loaded, [long, "MKV"], settings), 2)

    assert window_starts(len(long), 20, 6) == starts
    assert_close(got[:, :1], expected.astype(np.float32))
    assert not np.allclose(got[:, 0], reference_pooled(tiny_loaded, [long])[:, 0], rtol=1e-2)  # not the whole-sequence pass


def test_window_overlap_must_be_less_than_the_window(tiny_loaded):
    from plmexit.errors import EmbedError

    with pytest.raises(EmbedError, match=r"embed.overlap 20 must be at least 0 and less than embed.window 20; lower embed.overlap"):
        list(embed_pooled(tiny_loaded, ["MKV"], EmbedSettings(long_sequences="window", window=20, overlap=20)))
