"""What running a model to depth k costs: analytic FLOPs and measured seconds.

Invariant: index ``k`` of every cost array is the cost of the token embedding plus the first
``k`` transformer blocks (so index 0 is the embedding alone and index ``L`` the whole encoder),
which is exactly what a model truncated after block ``k`` computes. Measured times come from
the encoder that embeds (``engine.make_encoder``'s under ``embed.engine``, for either backend), at the
embedding's precision and batching: the time until block ``k``'s output is pooled, read from
timestamps within one forward (``Encoder.pooled``'s ``on_layer`` callback), which is the time of a
forward stopped right after block ``k``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from plmexit.embedding.encoder import Encoder
    from plmexit.settings import EmbedSettings

# FLOPs per token of one block of width d attending over T tokens: every weight matrix is one
# multiply-add per entry, 2 FLOPs; for ESM2 the Q, K, V and output projections (4 d^2) and the
# 4x-wide feed-forward (8 d^2) make 12 d^2 weights = 24 d^2 FLOPs (other families pass their
# block's own count: T5's wider feed-forward, ESM-C's gated one). Attention scores and the
# weighted sum of values add 2 T d multiply-adds = 4 T d FLOPs. Layer norms, biases and softmax
# are lower order and left out.
def block_flops_per_token(dim: int, tokens: np.ndarray | float, matmul_weights: float | None = None) -> np.ndarray | float:
    weights = 12.0 * dim * dim if matmul_weights is None else float(matmul_weights)
    return 2.0 * weights + 4.0 * tokens * dim


def analytic_flops(token_lengths: np.ndarray, n_layers: int, dim: int, matmul_weights: float | None = None) -> np.ndarray:
    """(L + 1,) FLOPs to run every sequence (``token_lengths`` include special tokens) to depth k.

    ``matmul_weights``: entries of one block's weight matrices (default ESM2's ``12 dim^2``). The
    token embedding is a lookup (no FLOPs), so depth 0 costs 0 and depth k costs k blocks.
    """
    lengths = np.asarray(token_lengths, dtype=np.float64)
    per_block = float(np.sum(lengths * block_flops_per_token(dim, lengths, matmul_weights)))
    return np.arange(n_layers + 1, dtype=np.float64) * per_block


TIMED = (
    "wall-clock median over repeats of the encoder that embeds (embed.engine's) run over the sampled sequences' pieces "
    "in the embedding's token-budget batches, at its precision and device; one timed forward per batch gives every depth: "
    "depth k is the time from the batch's start to the end of layer k's pooling on the device (the forward a model cut "
    "after block k runs), depth L the whole forward including copying the pooled vectors to the host; summed over "
    "batches; excludes tokenisation and loading the model"
)


def measure_depth_seconds(encoder: Encoder, sequences: list[str], settings: EmbedSettings, repeats: int) -> np.ndarray:
    """(L + 1,) median wall-clock seconds to embed ``sequences`` to depth k (see ``TIMED``).

    The batches are exactly ``engine.embed_pooled``'s (``engine.device_batches``), built once before
    the clock runs. Each timed run sends every batch once through ``encoder.pooled``, which calls
    back after pooling each layer: the time to that callback is what a forward stopped after block
    k (``pooled(..., depth=k)``) takes, since the blocks run in order and layer k's pooling is the
    last work such a forward does, so one full forward per batch gives every depth (the separate
    forward per depth it replaces ran about ``(L + 1) / 2`` full forwards' work per repeat instead
    of one; ``benchmarks/cost_depth.py`` compares the two). On CUDA the device is synchronised
    before the clock starts and at every timestamp, so queued kernels are counted where they run
    (which exposes each block's kernel launches, partly hidden in a forward that is not stopped);
    elsewhere nothing is synchronised. Every run's times rise with depth, and so do their medians.
    """
    import torch  # here only: selection uses this module's fractions without loading torch

    from plmexit.embedding import engine

    batches = engine.device_batches(encoder, sequences, settings)
    synchronize = torch.cuda.synchronize if settings.device.startswith("cuda") else (lambda: None)
    n_layers = encoder.num_layers

    def run() -> np.ndarray:
        total = np.zeros(n_layers + 1)
        for tokens, weights in batches:
            stamps = np.empty(n_layers + 1)

            def stamp(k: int) -> None:
                synchronize()
                stamps[k] = time.perf_counter()

            synchronize()
            start = time.perf_counter()
            encoder.pooled(tokens, weights, settings.layer_norm, on_layer=stamp).cpu()
            synchronize()
            stamps[n_layers] = time.perf_counter()  # the whole forward: the model's own tail and the copy to the host too
            total += stamps - start
        return total

    run()  # warm-up: allocator, kernels, rotary tables
    return np.median(np.stack([run() for _ in range(repeats)]), axis=0)


def fraction_saved(costs: np.ndarray, depth: int) -> float:
    """Fraction of the full model's cost (index L) not spent when stopping at ``depth``."""
    return float(1.0 - costs[depth] / costs[-1])
