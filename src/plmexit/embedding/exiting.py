"""Bookkeeping for a forward pass that drops sequences as they exit: which rows still run, what each left with.

Invariant: ``Survivors`` holds, for a batch of ``B`` rows, each row's exit layer and the pooled
vector it had there; ``leave(k, pooled)`` asks the ``ExitRule`` which of the rows still running
leave after layer ``k`` (all of them at ``depth``), records them and returns which rows stay, so
an encoder can shrink every batch-sized tensor it carries to the survivors. The rule never sees a
row twice at one layer, and a row that has left is never computed again. Knows nothing of probes
(the rule does: ``plmexit.exit.adaptive``).
"""

from __future__ import annotations

from typing import Protocol

import torch


class ExitRule(Protocol):
    """``rule(k, pooled, rows) -> leave``: ``pooled`` ``(n, E)`` float32 are layer ``k``'s pooled vectors of
    the batch rows ``rows`` ``(n,)`` (indices into the original batch) still running; ``leave`` ``(n,)`` bool."""

    def __call__(self, layer: int, pooled: torch.Tensor, rows: torch.Tensor) -> torch.Tensor: ...


class Survivors:
    """The rows of one batch still running through an exiting forward, and what the others left with."""

    def __init__(self, batch: int, embed_dim: int, depth: int, rule: ExitRule, device):
        self.depth = depth
        self.rule = rule
        self.rows = torch.arange(batch, device=device)
        self.layer = torch.full((batch,), depth, dtype=torch.long, device=device)
        self.out = torch.empty((batch, embed_dim), dtype=torch.float32, device=device)
        # Row sets after each drop, keyed by their size (sizes only fall, so each is unique): a tensor
        # cut to an earlier survivor set is cut again to the current one (``shrink``).
        self.history: dict[int, torch.Tensor] = {batch: self.rows}

    def leave(self, layer: int, pooled: torch.Tensor) -> torch.Tensor | None:
        """Record the rows leaving after ``layer``; the survivors' positions among the rows before it, or
        None when none left (nothing to shrink)."""
        if layer >= self.depth:
            leaving = torch.ones(len(self.rows), dtype=torch.bool, device=pooled.device)
        else:
            leaving = self.rule(layer, pooled, self.rows).to(device=pooled.device, dtype=torch.bool)
        if not bool(leaving.any()):
            return None
        gone = self.rows[leaving]
        self.layer[gone] = layer
        self.out[gone] = pooled[leaving]
        keep = torch.nonzero(~leaving).squeeze(1)
        self.rows = self.rows[keep]
        if len(self.rows):
            self.history[len(self.rows)] = self.rows
        return keep

    @property
    def done(self) -> bool:
        return len(self.rows) == 0

    def shrink(self, value):
        """``value`` (a tensor, or a tuple/list/dict of them) with every tensor whose first dimension is an
        earlier survivor set's size (and that has at least 2 dimensions: masks, biases, hidden states)
        cut to the current survivors; anything else as it is."""
        if isinstance(value, torch.Tensor):
            n = value.shape[0] if value.dim() >= 2 else None
            if n is None or n == len(self.rows) or n not in self.history:
                return value
            position = torch.searchsorted(self.history[n], self.rows)  # rows only ever get removed, so sorted
            return value[position]
        if isinstance(value, tuple):
            return tuple(self.shrink(v) for v in value)
        if isinstance(value, list):
            return [self.shrink(v) for v in value]
        if isinstance(value, dict):
            return {k: self.shrink(v) for k, v in value.items()}
        return value
