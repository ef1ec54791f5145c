"""What running a model to depth k costs: analytic FLOPs and measured seconds.

Invariant: index ``k`` of every cost array is the cost of the token embedding plus the first
``k`` transformer blocks (so index 0 is the embedding alone and index ``L`` the whole encoder),
which is exactly what a model truncated after block ``k`` computes. Measured times come from
fair-esm's own forward pass, stopped right after block ``k``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from plmexit.models import LoadedModel

# FLOPs per token of one ESM2 block of width d attending over T tokens: the Q, K, V and output
# projections (4 d^2 multiply-adds) and the 4x-wide feed-forward (8 d^2) make 12 d^2
# multiply-adds = 24 d^2 FLOPs; attention scores and the weighted sum of values add 2 T d
# multiply-adds = 4 T d FLOPs. Layer norms, biases and softmax are lower order and left out.
def block_flops_per_token(dim: int, tokens: np.ndarray | float) -> np.ndarray | float:
    return 24.0 * dim * dim + 4.0 * tokens * dim


def analytic_flops(token_lengths: np.ndarray, n_layers: int, dim: int) -> np.ndarray:
    """(L + 1,) FLOPs to run every sequence (``token_lengths`` include BOS/EOS) to depth k.

    The token embedding is a lookup (no FLOPs), so depth 0 costs 0 and depth k costs k blocks.
    """
    lengths = np.asarray(token_lengths, dtype=np.float64)
    per_block = float(np.sum(lengths * block_flops_per_token(dim, lengths)))
    return np.arange(n_layers + 1, dtype=np.float64) * per_block


class _Stop(Exception):
    """Raised by a forward hook to end the forward pass after the block being timed."""


def _raise_stop(module, inputs, output):
    raise _Stop


def _forward_to_depth(model, tokens, depth: int) -> None:
    stop_after = model.embed_tokens if depth == 0 else model.layers[depth - 1]
    handle = stop_after.register_forward_hook(_raise_stop)
    try:
        model(tokens)
    except _Stop:
        pass
    finally:
        handle.remove()


def measure_depth_seconds(loaded: LoadedModel, sequences: list[str], device: str, repeats: int) -> np.ndarray:
    """(L + 1,) median wall-clock seconds of a forward pass of ``sequences`` (one batch) to depth k."""
    import torch  # here only: selection uses this module's fractions without loading torch

    _, _, tokens = loaded.alphabet.get_batch_converter()([(str(i), s) for i, s in enumerate(sequences)])
    tokens = tokens.to(device)
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    seconds = np.zeros((repeats, loaded.num_layers + 1))
    with torch.inference_mode():
        _forward_to_depth(loaded.model, tokens, loaded.num_layers)  # warm-up: allocator, kernels, caches
        for repeat in range(repeats):
            # Depths interleaved within a repeat, so drifting machine load hits every depth alike.
            for depth in range(loaded.num_layers + 1):
                synchronize()
                start = time.perf_counter()
                _forward_to_depth(loaded.model, tokens, depth)
                synchronize()
                seconds[repeat, depth] = time.perf_counter() - start
    return np.median(seconds, axis=0)


def fraction_saved(costs: np.ndarray, depth: int) -> float:
    """Fraction of the full model's cost (index L) not spent when stopping at ``depth``."""
    return float(1.0 - costs[depth] / costs[-1])
