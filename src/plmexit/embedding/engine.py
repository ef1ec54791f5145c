"""The embedding driver: per-layer mean-pooled embeddings of a list of sequences, all layers in one forward pass.

Invariant: the vector for layer ``k`` of a sequence is the mean, over that sequence's residue
positions only (never special tokens or padding), of hidden state ``k`` (see ``encoder.Encoder``)
after the layer-norm convention, the same for every backend: ``make_encoder`` picks the encoder
(under ``embed.engine: fast``, ``fast_esm2.FastEncoder`` for ESM2 weights, from fair-esm or a
transformers directory, else ``generic.HookedEncoder``; under ``reference``, the model's own forward
for every model: ``generic.FairEsmHookedEncoder`` or ``generic.HookedEncoder``), and ``embed_pooled`` runs it over length-sorted token batches of
pieces (``pieces``: truncation, sliding windows, pooling weights), summing each sequence's pieces
so only pooled vectors leave the device. Identical sequences are embedded once; a batch that runs
out of device memory is split and retried.
"""

from __future__ import annotations

import logging
import platform
from typing import Callable, Iterator

import numpy as np
import torch

from plmexit.embedding import precision as precisions
from plmexit.embedding.encoder import Encoder
from plmexit.embedding.fast_esm2 import FastEncoder
from plmexit.embedding.pieces import Pieces, group_positions, make_pieces, token_batches
from plmexit.errors import EmbedError
from plmexit.settings import EMBED_ENGINES, EmbedSettings

log = logging.getLogger(__name__)

Progress = Callable[[int], None]
"""Called after every forward batch with the number of tokens (residues and special tokens) it finished."""


def device_name(device: str) -> str:
    """What a run's records call its device: the GPU's name for a CUDA device, else the processor's."""
    return torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor() or platform.machine()


def make_encoder(loaded, device: str, precision: str, norm_last: bool = True, engine: str = "fast") -> Encoder:
    """The encoder for a loaded model of either backend. ``engine="fast"`` (``settings.EMBED_ENGINES``):
    ``FastEncoder`` when the model is an ESM2 (its model module fills ``Esm2Weights``), else the model's
    own forward (``generic.HookedEncoder``); ``engine="reference"``: the model's own forward always,
    fair-esm's ESM2 modules (``generic.FairEsmHookedEncoder``) or the transformers model's.

    ``norm_last=False`` leaves the final norm off the last layer under the ``raw`` convention: a model
    cut after block ``k`` of a deeper one (``plmexit export``) then gives block ``k``'s raw output, as
    the deeper model's raw layer ``k`` is.

    ``precision`` is resolved for ``device`` first (``precision.resolve``): one the device does not
    compute natively runs as float32, logged; the encoder's ``precision`` and ``resolved`` say what ran."""
    from plmexit.embedding.generic import FairEsmHookedEncoder, HookedEncoder

    if engine not in EMBED_ENGINES:
        raise ValueError(f"unknown engine {engine!r}; use one of {', '.join(EMBED_ENGINES)}")
    resolved = precisions.resolve_and_log(precision, device)
    if engine == "fast" and loaded.esm2_weights() is not None:
        encoder = FastEncoder(loaded, device, resolved.ran, norm_last)
    elif hasattr(loaded, "module"):  # a transformers model (models.hub.HubModel)
        encoder = HookedEncoder(loaded, device, resolved.ran, norm_last)
    else:  # a fair-esm ESM2 (models.fair_esm.LoadedModel)
        encoder = FairEsmHookedEncoder(loaded, device, resolved.ran, norm_last)
    encoder.resolved = resolved
    return encoder


def embed_pooled(
    loaded,
    sequences: list[str],
    settings: EmbedSettings,
    progress: Progress | None = None,
    encoder: Encoder | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(indices, pooled)`` blocks covering every input sequence exactly once.

    ``indices`` are sorted positions into ``sequences``; ``pooled`` is float32 of shape
    ``(L + 1, len(indices), D)``. In truncate mode sequences must already be cut to the model's
    window (``prepare_sequences``); in window mode longer ones are cut into windows here.
    ``encoder`` reuses an encoder across calls (it holds the weights in the working precision);
    without one, ``make_encoder(loaded, ...)`` builds it.
    """
    settings.check()
    if not sequences:
        return
    encoder = encoder or make_encoder(loaded, settings.device, settings.precision, engine=settings.engine)
    specials = encoder.tokens.specials
    unique, inverse = np.unique(np.asarray(sequences, dtype=object), return_inverse=True)
    owners = group_positions(inverse.reshape(-1), len(unique))
    pieces = make_pieces(unique, settings)
    remaining = np.bincount(pieces.parent, minlength=len(unique))
    sums = {}
    for batch in token_batches(pieces.length, settings.max_tokens, specials):
        pooled = _pooled_splitting_on_oom(encoder, unique, pieces, batch, settings)
        finished = []
        for j, piece in enumerate(batch):
            parent = int(pieces.parent[piece])
            sums[parent] = sums[parent] + pooled[:, j] if parent in sums else pooled[:, j]
            remaining[parent] -= 1
            if remaining[parent] == 0:
                finished.append(parent)
        if progress is not None:
            progress(int((pieces.length[batch] + specials).sum()))
        if not finished:
            continue
        positions = np.concatenate([owners[i] for i in finished])
        block = np.repeat(np.stack([sums.pop(i) for i in finished], axis=1), [len(owners[i]) for i in finished], axis=1)
        order = np.argsort(positions)
        yield positions[order], block[:, order]


def device_batches(encoder: Encoder, sequences: list[str], settings: EmbedSettings) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The ``(tokens, weights)`` batches ``embed_pooled`` runs for ``sequences`` (distinct ones,
    cut into pieces, in ``settings.max_tokens`` batches), on ``settings.device``."""
    unique = np.unique(np.asarray(sequences, dtype=object))
    pieces = make_pieces(unique, settings)
    return [
        tuple(t.to(settings.device) for t in _batch_tensors(encoder, unique, pieces, batch))
        for batch in token_batches(pieces.length, settings.max_tokens, encoder.tokens.specials)
    ]


def _batch_tensors(encoder: Encoder, unique, pieces: Pieces, batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens (B, T): each piece as ``prefix + residues + suffix`` of the encoder's ``TokenScheme``
    (fair-esm's batch converter for ESM), right-padded; and pooling weights (B, T), zero off residues."""
    scheme = encoder.tokens
    before, after = len(scheme.prefix), len(scheme.suffix)
    T = int(pieces.length[batch].max()) + before + after
    tokens = np.full((len(batch), T), scheme.padding_idx, dtype=np.int64)
    weights = np.zeros((len(batch), T), dtype=np.float32)
    for row, piece in enumerate(batch):
        start, n = int(pieces.start[piece]), int(pieces.length[piece])
        tokens[row, :before] = scheme.prefix
        tokens[row, before : before + n] = scheme.encode(unique[pieces.parent[piece]][start : start + n])
        tokens[row, before + n : before + n + after] = scheme.suffix
        weights[row, before : before + n] = pieces.weights[piece]
    return torch.from_numpy(tokens), torch.from_numpy(weights)


def _pooled_splitting_on_oom(encoder: Encoder, unique, pieces: Pieces, batch: np.ndarray, settings: EmbedSettings) -> np.ndarray:
    """Pooled ``(L + 1, len(batch), E)`` for one batch; a batch that runs out of device memory is
    split in halves and retried, down to single sequences, so one long sequence does not fail a job."""
    tokens, weights = _batch_tensors(encoder, unique, pieces, batch)
    try:
        return _forward_pooled(encoder, tokens.to(settings.device), weights.to(settings.device), settings.layer_norm)
    except torch.OutOfMemoryError:
        pass  # retried below, after the except block: until it ends, the traceback keeps the failed forward's tensors alive
    if settings.device.startswith("cuda"):
        torch.cuda.empty_cache()
    if len(batch) == 1:
        raise EmbedError(
            f"one sequence of {int(pieces.length[batch[0]])} residues does not fit in {settings.device} memory even alone; "
            "lower embed.truncate (or embed.window) or max_tokens, or use a device with more memory"
        ) from None
    half = len(batch) // 2
    log.warning("out of %s memory on a batch of %d sequences (%d tokens); retrying as two halves", settings.device, len(batch), tokens.numel())
    return np.concatenate(
        [_pooled_splitting_on_oom(encoder, unique, pieces, part, settings) for part in (batch[:half], batch[half:])],
        axis=1,
    )


def _forward_pooled(encoder: Encoder, tokens: torch.Tensor, weights: torch.Tensor, layer_norm: str) -> np.ndarray:
    return encoder.pooled(tokens, weights, layer_norm).cpu().numpy()  # (L + 1, B, E)

