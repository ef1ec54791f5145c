"""ESM2's weights in the one layout plmexit's fast encoder runs, whichever backend loaded them.

Invariant: an ``Esm2Weights`` describes exactly fair-esm's ESM2 forward (pre-norm blocks, rotary
positions ``0..T-1`` over the padded batch, token-dropout rescaling, ``emb_layer_norm_after`` on
the last layer); ``fair_esm`` fills it from fair-esm's module and ``hub`` from a transformers
``EsmModel``, so the same weights run the same arithmetic whichever format they came in.
Tensors are the modules' own (no copies); the encoder casts and moves them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LayerNorm = tuple[torch.Tensor, torch.Tensor, float]  # weight, bias, eps


def layer_norm(module) -> LayerNorm:
    """A ``torch.nn.LayerNorm``'s ``(weight, bias, eps)``."""
    return (module.weight, module.bias, module.eps)


def linear(module) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``torch.nn.Linear``'s ``(weight, bias)``."""
    return (module.weight, module.bias)


@dataclass
class Esm2Block:
    ln1: LayerNorm  # before attention
    q: tuple[torch.Tensor, torch.Tensor]  # weight (E, E), bias (E,)
    k: tuple[torch.Tensor, torch.Tensor]
    v: tuple[torch.Tensor, torch.Tensor]
    out: tuple[torch.Tensor, torch.Tensor]
    ln2: LayerNorm  # before the feed-forward
    fc1: tuple[torch.Tensor, torch.Tensor]
    fc2: tuple[torch.Tensor, torch.Tensor]


@dataclass
class Esm2Weights:
    embed_tokens: torch.Tensor  # (V, E)
    embed_scale: float
    blocks: list[Esm2Block]
    ln_after: LayerNorm
    inv_freq: torch.Tensor  # (head_dim / 2,) rotary inverse frequencies
    heads: int
    token_dropout: bool
    mask_idx: int
    padding_idx: int
