"""How sequences become model inputs: truncation, sliding windows, pieces with pooling weights, token batches.

Invariant: every sequence becomes one or more *pieces* (a stretch of its residues, which the
encoder's ``TokenScheme`` puts between its special tokens) with a weight per residue, and the
weights of all of a sequence's pieces sum to one over its residues, so the weighted sum of the
pieces' states is the sequence's mean. Truncation is one piece with weights ``1/n``; the
sliding-window mode cuts overlapping windows whose weights ``1/(n c_r)`` (``c_r`` windows cover
residue ``r``) average each residue's states over its windows before the mean, so windows can be
batched like any other sequence. Identical sequences are one piece set (``group_positions``).
Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from plmexit.embedding.options import EmbedSettings


def window_starts(length: int, window: int, overlap: int) -> list[int]:
    """Starts of the windows covering ``length`` residues: every ``window - overlap`` residues, the
    last one moved back so that it ends at the last residue (so every window is full length)."""
    if length <= window:
        return [0]
    step = window - overlap
    starts = list(range(0, length - window, step))
    return starts + [length - window]


def residue_weights(length: int, starts: list[int], window: int) -> list[np.ndarray]:
    """Per-window weights ``1 / (length * coverage)``: summing weighted states over all windows is
    the mean over residues of each residue's state averaged over the windows that cover it."""
    coverage = np.zeros(length)
    for start in starts:
        coverage[start : start + window] += 1
    return [1.0 / (length * coverage[start : start + window]) for start in starts]


@dataclass
class Pieces:
    """Every piece of a list of distinct sequences, as parallel arrays."""

    parent: np.ndarray  # (P,) index of the unique sequence each piece belongs to
    start: np.ndarray  # (P,) first residue
    length: np.ndarray  # (P,) residues
    weights: list[np.ndarray]  # P arrays of per-residue pooling weights


def make_pieces(unique: np.ndarray, settings: EmbedSettings) -> Pieces:
    """The pieces of every sequence of ``unique``: one per sequence in truncate mode, its windows in window mode."""
    parent, start, length, weights = [], [], [], []
    for i, sequence in enumerate(unique):
        n = len(sequence)
        if settings.long_sequences == "window":
            starts = window_starts(n, settings.window, settings.overlap)
            piece_weights = residue_weights(n, starts, settings.window)
        else:
            starts, piece_weights = [0], [np.full(n, 1.0 / max(n, 1))]
        for s, w in zip(starts, piece_weights):
            parent.append(i)
            start.append(s)
            length.append(len(w))
            weights.append(w)
    return Pieces(np.array(parent, dtype=np.int64), np.array(start, dtype=np.int64), np.array(length, dtype=np.int64), weights)


def work_tokens(sequences: list[str], settings: EmbedSettings, specials: int = 2) -> int:
    """Tokens (residues plus ``specials`` special tokens, such as BOS and EOS, of every piece of every
    distinct sequence) ``engine.embed_pooled`` runs; ``specials`` is the encoder's ``tokens.specials``."""
    pieces = make_pieces(np.unique(np.asarray(sequences, dtype=object)), settings)
    return int((pieces.length + specials).sum())


def piece_token_lengths(sequences: list[str], settings: EmbedSettings, specials: int = 2) -> np.ndarray:
    """Tokens (residues + ``specials``) of every piece of every sequence, duplicates included."""
    return make_pieces(np.asarray(sequences, dtype=object), settings).length + specials


def token_batches(lengths: np.ndarray, max_tokens: int, specials: int = 2) -> list[np.ndarray]:
    """Group indices into length-sorted batches of at most ``max_tokens`` padded tokens.

    A batch's padded size is ``count * (longest + specials)`` (BOS and EOS for ESM), as in fair-esm's
    ``FastaBatchedDataset.get_batch_indices``; a sequence longer than the budget gets its own batch.
    """
    order = np.argsort(lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    for end in range(1, len(order) + 1):
        longest = int(lengths[order[end - 1]]) + specials
        if end - start > 1 and (end - start) * longest > max_tokens:
            batches.append(order[start : end - 1])
            start = end - 1
    if start < len(order):
        batches.append(order[start:])
    return batches


def truncate_sequences(sequences: list[str], truncate: int) -> tuple[list[str], np.ndarray]:
    """Keep the first ``truncate`` residues of each sequence; returns them and a truncated mask."""
    truncated = np.array([len(s) > truncate for s in sequences], dtype=bool)
    return [s[:truncate] for s in sequences], truncated


def prepare_sequences(sequences: list[str], settings: EmbedSettings) -> tuple[list[str], np.ndarray]:
    """The sequences the model sees and which were truncated: cut to ``truncate`` residues in
    truncate mode; whole (windows cover them) in window mode."""
    if settings.long_sequences == "window":
        return list(sequences), np.zeros(len(sequences), dtype=bool)
    return truncate_sequences(sequences, settings.truncate)



def group_positions(inverse: np.ndarray, n_unique: int) -> list[np.ndarray]:
    """Positions of each distinct sequence, from ``np.unique``'s ``inverse``: entry ``i`` lists where sequence ``i`` occurs."""
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(n_unique + 1))
    return [order[bounds[i] : bounds[i + 1]] for i in range(n_unique)]
