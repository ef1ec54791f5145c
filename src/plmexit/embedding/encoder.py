"""The encoder seam: what the embedding driver, the cost measurement and the exit timing need of any model's forward.

Invariant: an ``Encoder``'s ``pooled`` returns, for layer ``k``, the sum over a batch's positions of
the pooling weights (zero off residues) times hidden state ``k`` — the token embedding for
``k = 0``, raw block outputs for ``0 < k < L`` and the final-normed output for ``k = L``
(fair-esm's ``representations[k]`` for ESM2), every layer normed under the ``final`` convention —
whatever the backend (``fast_esm2.FastEncoder`` for ESM2 weights, ``generic.HookedEncoder`` for
any other family; under ``embed.engine: reference`` the model's own forward for every model,
``generic.FairEsmHookedEncoder`` for fair-esm's ESM2; ``engine.make_encoder`` picks one).
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch

from plmexit.embedding.exiting import ExitRule
from plmexit.models.tokens import TokenScheme

LayerDone = Callable[[int], None]
"""Called by ``Encoder.pooled`` with ``k`` as soon as layer ``k``'s pooling has been issued, before
block ``k + 1`` starts: everything a forward stopped after block ``k`` does has been queued by then
(on an asynchronous device the callback synchronises if it needs the work finished)."""


class Encoder(Protocol):
    """What ``embed_pooled``, ``device_batches`` and ``cost.measure_depth_seconds`` need of a model.

    ``tokens`` places each piece's residues between its special tokens; ``pooled`` runs one padded
    batch and returns ``(depth + 1, B, E)`` float32, per layer ``k`` the sum over positions of
    ``weights`` (zero outside residues) times hidden state ``k`` under ``layer_norm``; ``depth``
    stops the forward after that many blocks; ``on_layer(k)`` is called right after layer ``k`` is
    pooled, for every ``k`` from 0 to ``depth`` in order (``LayerDone``). ``pooled_exiting`` runs the
    same forward block by block, dropping each row from the batch after the layer where ``rule`` lets
    it leave, and returns each row's exit layer and its pooled vector there (``embedding.exiting``).
    """

    engine: str
    precision: str  # what the forward computes in (``precision.DTYPES``)
    num_layers: int
    embed_dim: int
    tokens: TokenScheme
    norm_last: bool  # whether the raw convention applies the final norm to layer L (False: a model cut after a raw layer)

    def pooled(
        self, tokens: torch.Tensor, weights: torch.Tensor, layer_norm: str, depth: int | None = None, on_layer: LayerDone | None = None,
    ) -> torch.Tensor: ...

    def pooled_exiting(
        self, tokens: torch.Tensor, weights: torch.Tensor, layer_norm: str, rule: ExitRule, depth: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...
