"""Per-layer mean-pooled embeddings from an ESM2 model, all layers in one forward pass.

Invariant: the vector for layer ``k`` of a sequence is the mean, over that sequence's residue
positions only (never BOS, EOS or padding), of fair-esm's ``representations[k]`` — the token
embedding for ``k = 0``, raw block outputs for ``0 < k < L`` and the final-layer-normed output for
``k = L`` — after the layer-norm convention below. Identical (post-truncation) sequences are
embedded once. Pooling happens on the device, so only pooled vectors leave it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from plmexit.errors import EmbedError
from plmexit.models import LoadedModel

log = logging.getLogger(__name__)

LAYER_NORM_CONVENTIONS = {
    "raw": "fair-esm representations as returned: raw residual stream for layers 0..L-1, "
    "emb_layer_norm_after applied to layer L only",
    "final": "emb_layer_norm_after applied to every layer 0..L, so probing layer k equals "
    "shipping the first k blocks plus the final layer norm",
}
POOLING = "mean over residue positions (BOS, EOS and padding excluded)"
# ESM2 was trained on 1024-token crops: BOS + 1022 residues + EOS (as fair-esm's extract.py).
ESM2_MAX_RESIDUES = 1022
_PROGRESS_EVERY_S = 10.0


@dataclass(frozen=True)
class EmbedSettings:
    """How to embed; every field is recorded in the store."""

    max_tokens: int = 4096
    truncate: int = ESM2_MAX_RESIDUES
    layer_norm: str = "raw"
    device: str = "cpu"


def token_batches(lengths: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Group indices into length-sorted batches of at most ``max_tokens`` padded tokens.

    A batch's padded size is ``count * (longest + 2)`` (BOS and EOS), as in fair-esm's
    ``FastaBatchedDataset.get_batch_indices``; a sequence longer than the budget gets its own batch.
    """
    order = np.argsort(lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    for end in range(1, len(order) + 1):
        longest = int(lengths[order[end - 1]]) + 2
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


def embed_pooled(
    loaded: LoadedModel,
    sequences: list[str],
    settings: EmbedSettings,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(indices, pooled)`` blocks covering every input sequence exactly once.

    ``indices`` are sorted positions into ``sequences``; ``pooled`` is float32 of shape
    ``(L + 1, len(indices), D)``. Sequences must already be truncated to the model's window.
    """
    if settings.layer_norm not in LAYER_NORM_CONVENTIONS:
        raise ValueError(f"unknown layer_norm {settings.layer_norm!r}")
    unique, inverse = np.unique(np.asarray(sequences, dtype=object), return_inverse=True)
    owners = _group_positions(inverse, len(unique))
    lengths = np.array([len(s) for s in unique])
    batch_converter = loaded.alphabet.get_batch_converter()
    model, alphabet = loaded.model, loaded.alphabet
    layers = list(range(model.num_layers + 1))
    done_seqs, done_tokens, started, last = 0, 0, time.monotonic(), time.monotonic()
    for batch in token_batches(lengths, settings.max_tokens):
        pooled = _pooled_splitting_on_oom(model, alphabet, batch_converter, unique, batch, layers, settings)
        positions = np.concatenate([owners[i] for i in batch])
        block = np.repeat(pooled, [len(owners[i]) for i in batch], axis=1)
        order = np.argsort(positions)
        yield positions[order], block[:, order]
        done_seqs += len(positions)
        done_tokens += int(lengths[batch].sum())
        now = time.monotonic()
        if now - last > _PROGRESS_EVERY_S or done_seqs == len(sequences):
            last = now
            log.info(
                "embedded %d/%d sequences, %.0f residues/s", done_seqs, len(sequences), done_tokens / max(now - started, 1e-9)
            )


def _pooled_splitting_on_oom(model, alphabet, batch_converter, unique, batch: np.ndarray, layers: list[int], settings: EmbedSettings) -> np.ndarray:
    """Pooled ``(L + 1, len(batch), E)`` for one batch; a batch that runs out of device memory is
    split in halves and retried, down to single sequences, so one long sequence does not fail a job."""
    _, _, tokens = batch_converter([(str(i), unique[i]) for i in batch])
    try:
        return _forward_pooled(model, alphabet, tokens.to(settings.device), layers, settings.layer_norm)
    except torch.OutOfMemoryError:
        if settings.device.startswith("cuda"):
            torch.cuda.empty_cache()
        if len(batch) == 1:
            raise EmbedError(
                f"one sequence of {len(unique[batch[0]])} residues does not fit in {settings.device} memory even alone; "
                "lower embed.truncate or max_tokens, or use a device with more memory"
            ) from None
        half = len(batch) // 2
        log.warning("out of %s memory on a batch of %d sequences (%d tokens); retrying as two halves", settings.device, len(batch), tokens.numel())
        return np.concatenate(
            [_pooled_splitting_on_oom(model, alphabet, batch_converter, unique, part, layers, settings) for part in (batch[:half], batch[half:])],
            axis=1,
        )


def _group_positions(inverse: np.ndarray, n_unique: int) -> list[np.ndarray]:
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(n_unique + 1))
    return [order[bounds[i] : bounds[i + 1]] for i in range(n_unique)]


@torch.inference_mode()
def _forward_pooled(model, alphabet, tokens: torch.Tensor, layers: list[int], layer_norm: str) -> np.ndarray:
    reps = model(tokens, repr_layers=layers)["representations"]
    residues = (tokens != alphabet.padding_idx) & (tokens != alphabet.cls_idx) & (tokens != alphabet.eos_idx)  # (B, T)
    weights = (residues / residues.sum(dim=1, keepdim=True)).unsqueeze(-1)  # (B, T, 1)
    final = layers[-1]
    pooled = []
    for layer in layers:
        hidden = reps[layer]  # (B, T, E)
        if layer_norm == "final" and layer != final:
            hidden = model.emb_layer_norm_after(hidden)
        pooled.append((hidden * weights).sum(dim=1))  # (B, E)
    return torch.stack(pooled).float().cpu().numpy()  # (L + 1, B, E)
