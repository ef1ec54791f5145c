"""How a task's rows are divided into work: shard jobs of about equal residues, and resumable parts within a job.

Invariant: both cuts depend only on the sequences (their residue counts and order), so every job
of a sharded task computes the same shard bounds and a resumed run sees the same parts. Nothing
here imports torch.
"""

from __future__ import annotations

import numpy as np

from plmexit.embedding.pieces import group_positions


def shard_bounds(residues: np.ndarray, shards: int) -> np.ndarray:
    """``(shards + 1,)`` row boundaries cutting a task into contiguous shards of about equal residues.

    Every shard gets at least one row when there are enough rows; the cut depends only on the
    residue counts, so every job of a sharded task computes the same bounds.
    """
    n = len(residues)
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    cumulative = np.concatenate([[0], np.cumsum(np.asarray(residues, dtype=np.float64))])
    targets = cumulative[-1] * np.arange(1, shards) / shards
    inner = np.searchsorted(cumulative, targets, side="left")
    bounds = np.concatenate([[0], inner, [n]]).astype(np.int64)
    # Monotone, and strictly increasing while rows last, so no shard is empty unless rows run out.
    for k in range(1, shards):
        bounds[k] = min(max(bounds[k], bounds[k - 1] + 1), n)
    return bounds


def plan_parts(sequences: list[str], budget_residues: int) -> list[np.ndarray]:
    """Split positions into parts of about ``budget_residues`` residues, keeping identical
    sequences in one part (so each is embedded once) and following first occurrence (so a part's
    rows are nearly contiguous and the store is written sequentially). Deterministic: a resumed run
    sees the same parts."""
    unique, first, inverse = np.unique(np.asarray(sequences, dtype=object), return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    owners = group_positions(inverse, len(unique))
    parts, current, size = [], [], 0
    for u in np.argsort(first, kind="stable"):
        current.append(owners[u])
        size += len(unique[u])
        if size >= budget_residues:
            parts.append(np.sort(np.concatenate(current)))
            current, size = [], 0
    if current:
        parts.append(np.sort(np.concatenate(current)))
    return parts
