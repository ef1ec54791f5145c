"""Per-layer mean-pooled embeddings from a protein language model, all layers in one forward pass.

Invariant: the vector for layer ``k`` of a sequence is the mean, over that sequence's residue
positions only (never special tokens or padding), of hidden state ``k`` — the token embedding for
``k = 0``, raw block outputs for ``0 < k < L`` and the final-normed output for ``k = L`` (fair-esm's
``representations[k]`` for ESM2) — after the layer-norm convention below. Everything here is the
same for every backend: an ``Encoder`` (``make_encoder``) owns the model side, its ``TokenScheme``
(special tokens around each piece) and its ``pooled`` forward. ESM2 weights, from fair-esm or
from a transformers directory, run ``FastEncoder`` (fused QKV projection, fused attention,
pooling on the device), held to fair-esm's ``scripts/extract.py`` (``reference.reference_pooled``)
within 1e-5 relative in fp32; other families run ``generic.HookedEncoder``. Identical sequences
are embedded once.

Every sequence becomes one or more *pieces* (the scheme's prefix + residues + suffix) with a weight
per residue;
a sequence's pooled vector is the weighted sum of its pieces' states. Truncation is one piece with
weights ``1/n``; the sliding-window mode cuts overlapping windows whose weights ``1/(n c_r)``
(``c_r`` windows cover residue ``r``) average each residue's states over its windows before the
mean, so windows can be batched like any other sequence and only pooled vectors leave the device.
A variant set (one target's substitutions) is first cut through one ``VariantCrop`` over its
mutated positions, so no mutation is cut away and every variant sees the same stretch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from plmexit.embedding import precision as precisions
from plmexit.embedding.exiting import ExitRule, Survivors
from plmexit.embedding.options import (  # noqa: F401 - re-exported: the settings belong with the engine's API
    ESM2_MAX_RESIDUES,
    LAYER_NORM_CONVENTIONS,
    LONG_SEQUENCE_MODES,
    POOLING,
    PRECISION_NAMES,
    EmbedSettings,
    check_depth,
)
from plmexit.errors import EmbedError
from plmexit.models.tokens import TokenScheme

log = logging.getLogger(__name__)

PRECISIONS = precisions.DTYPES

Progress = Callable[[int], None]
"""Called after every forward batch with the number of tokens (residues and special tokens) it finished."""

LayerDone = Callable[[int], None]
"""Called by ``Encoder.pooled`` with ``k`` as soon as layer ``k``'s pooling has been issued, before
block ``k + 1`` starts: everything a forward stopped after block ``k`` does has been queued by then
(on an asynchronous device the callback synchronises if it needs the work finished)."""


# --- pieces and batches ------------------------------------------------------------------------


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
class _Pieces:
    parent: np.ndarray  # (P,) index of the unique sequence each piece belongs to
    start: np.ndarray  # (P,) first residue
    length: np.ndarray  # (P,) residues
    weights: list[np.ndarray]  # P arrays of per-residue pooling weights


def _make_pieces(unique: np.ndarray, settings: EmbedSettings) -> _Pieces:
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
    return _Pieces(np.array(parent, dtype=np.int64), np.array(start, dtype=np.int64), np.array(length, dtype=np.int64), weights)


def work_tokens(sequences: list[str], settings: EmbedSettings, specials: int = 2) -> int:
    """Tokens (residues plus ``specials`` special tokens, such as BOS and EOS, of every piece of every
    distinct sequence) ``embed_pooled`` runs; ``specials`` is the encoder's ``tokens.specials``."""
    pieces = _make_pieces(np.unique(np.asarray(sequences, dtype=object)), settings)
    return int((pieces.length + specials).sum())


def piece_token_lengths(sequences: list[str], settings: EmbedSettings, specials: int = 2) -> np.ndarray:
    """Tokens (residues + ``specials``) of every piece of every sequence, duplicates included."""
    return _make_pieces(np.asarray(sequences, dtype=object), settings).length + specials


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


# Rows compared at once when finding where variants differ: bounds memory to this many x length bytes.
_DIFF_CHUNK_ROWS = 4096


@dataclass(frozen=True)
class VariantCrop:
    """The one stretch of a variant set's target through which every variant is embedded.

    A variant set is one target with substitutions, so every sequence has the same length and the
    variants differ only at mutated positions. Cutting all of them at the same place keeps them
    comparable (their pooled vectors differ only through the mutations), and placing the cut over
    the mutated positions keeps every mutation in view. ``start``/``stop`` are 0-based half-open
    residue positions; ``windowed`` is True when the stretch is wider than the model's window and
    is embedded as overlapping windows of ``window`` residues (``window_starts``).
    """

    length: int
    start: int
    stop: int
    n_mutated: int
    windowed: bool
    window: int
    overlap: int

    def apply(self, sequences: list[str]) -> list[str]:
        return [s[self.start : self.stop] for s in sequences]

    def settings(self, settings: EmbedSettings) -> EmbedSettings:
        """The settings that embed the cropped sequences: windows when the crop is wider than the window."""
        if self.windowed and settings.long_sequences == "truncate":
            return replace(settings, long_sequences="window", window=self.window, overlap=self.overlap)
        return settings

    def covers(self, position: int) -> bool:
        """Whether 0-based ``position`` is embedded."""
        return self.start <= position < self.stop

    def describe(self) -> str:
        where = f"residues {self.start + 1}..{self.stop} (1-based, inclusive) of the {self.length}-residue target"
        how = f" as windows of {self.window} overlapping by {self.overlap}" if self.windowed else ""
        return f"every variant embedded through the same crop, {where}{how}, covering the {self.n_mutated} positions where variants differ"

    def attrs(self) -> dict:
        return {
            "variant_crop": True, "crop_start": self.start, "crop_stop": self.stop, "crop_convention": "0-based half-open residue positions",
            "crop_windowed": self.windowed, "crop_window": self.window, "crop_overlap": self.overlap, "n_mutated_positions": self.n_mutated,
        }


def mutated_span(sequences: list[str], source: str) -> tuple[int, int, int]:
    """``(first, last + 1, count)`` of the 0-based positions where any sequence differs from the
    first (``(0, 0, 0)`` when none do); sequences of unequal length are an ``EmbedError``."""
    length = len(sequences[0])
    for i, sequence in enumerate(sequences):
        if len(sequence) != length:
            raise EmbedError(
                f"{source}: row {i + 1} has {len(sequence)} residues but row 1 has {length}; a variant crop needs one target's "
                "substitution variants (all one length): drop --variant-crop for a set of different proteins"
            )
    first = np.frombuffer(sequences[0].encode("ascii"), dtype=np.uint8)
    differs = np.zeros(length, dtype=bool)
    for chunk in range(0, len(sequences), _DIFF_CHUNK_ROWS):
        rows = sequences[chunk : chunk + _DIFF_CHUNK_ROWS]
        block = np.frombuffer("".join(rows).encode("ascii"), dtype=np.uint8).reshape(len(rows), length)
        differs |= (block != first).any(axis=0)
    positions = np.flatnonzero(differs)
    if positions.size == 0:
        return 0, 0, 0
    return int(positions[0]), int(positions[-1]) + 1, int(positions.size)


def variant_crop(sequences: list[str], settings: EmbedSettings, source: str) -> VariantCrop:
    """The crop every variant of a variant set is embedded through (see ``VariantCrop``).

    Deterministic and computed from all of a task's sequences, so every shard job gets the same.
    Truncate mode: the whole target when it fits the window (``settings.truncate``); else a window
    centred on the span of mutated positions, moved inside the target; else, when the span is wider
    than the window, exactly the span, embedded as overlapping windows. Window mode already embeds
    every residue, so its crop is the whole target.
    """
    length = len(sequences[0])
    lo, hi, n_mutated = mutated_span(sequences, source)
    if settings.long_sequences == "window":
        return VariantCrop(length, 0, length, n_mutated, length > settings.window, settings.window, settings.overlap)
    width = settings.truncate
    # Windows over a crop wider than truncate overlap by embed.overlap, but at most half a window:
    # truncate may be set below the default overlap, which is sized for full 1022-residue windows.
    overlap = min(settings.overlap, width // 2)
    if length <= width:
        return VariantCrop(length, 0, length, n_mutated, False, width, overlap)
    if hi - lo <= width:
        start = min(max((lo + hi - width) // 2, 0), length - width)
        return VariantCrop(length, start, start + width, n_mutated, False, width, overlap)
    return VariantCrop(length, lo, hi, n_mutated, True, width, overlap)


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
    owners = _group_positions(inverse, len(unique))
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


# --- the forward pass ---------------------------------------------------------------------------


# Rows of the check run through oneDNN's linear before an encoder trusts it (a few ms once).
_ONEDNN_CHECK_ROWS = 64


def onednn_unavailable_reason(device: str, dtype: torch.dtype) -> str:
    """Why ``FastEncoder`` cannot run its linear layers as oneDNN matmuls over prepacked weights here
    ("" when it can): CPU and float32 only (other precisions keep their own kernels), torch built with
    oneDNN and not switched off (``torch.backends.mkldnn.enabled = False`` turns the lever off), the
    private ops inductor uses present, and one small linear through them equal to ``F.linear``."""
    if device != "cpu":
        return f"device {device} (oneDNN matmuls are the CPU path)"
    if dtype != torch.float32:
        return f"{dtype} (the oneDNN path is float32 only)"
    if not torch.backends.mkldnn.is_available():
        return "this torch was built without oneDNN (MKLDNN)"
    if not torch.backends.mkldnn.enabled:
        return "torch.backends.mkldnn.enabled is False"
    ops = torch.ops.mkldnn
    if not (hasattr(ops, "_linear_pointwise") and hasattr(ops, "_reorder_linear_weight")):
        return f"torch {torch.__version__} lacks mkldnn::_linear_pointwise or mkldnn::_reorder_linear_weight"
    generator = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*shape, generator=generator) for shape in ((_ONEDNN_CHECK_ROWS, 32), (48, 32), (48,)))
    try:
        with torch.inference_mode():
            y = ops._linear_pointwise(x, ops._reorder_linear_weight(w, None), b, "gelu", [], "none")
    except RuntimeError as error:
        return f"mkldnn::_linear_pointwise failed on a test input ({str(error).splitlines()[0]})"
    expected = F.gelu(F.linear(x, w, b))
    if not torch.allclose(y, expected, rtol=1e-5, atol=1e-5):
        return f"mkldnn::_linear_pointwise differs from F.linear by {float((y - expected).abs().max()):.2g} on a test input"
    return ""


class FastEncoder:
    """fair-esm's ESM2 forward, rewritten for inference over ESM2 weights from either backend.

    Built from ``Esm2Weights`` (filled by ``models.fair_esm`` from fair-esm's module or by
    ``models.hub`` from a transformers ``EsmModel``), so both formats run this same arithmetic.
    Differences from fair-esm that change no result beyond rounding: Q, K and V are one matrix
    multiply; attention is ``scaled_dot_product_attention`` (a fused kernel, no (B, H, T, T) scores
    in memory); the batch stays (B, T, E) (no transposes); the LM head and the attention maps are
    never computed; each layer is pooled as soon as it is produced, on the device. In float32 on a
    CPU the four projections are oneDNN matmuls over weights prepacked once, with GELU and the
    residual adds fused into them (``_block_onednn``; ``onednn_unavailable_reason`` says when not).

    ``precision`` is run as given (``make_encoder`` first resolves what the device supports). int8:
    the QKV and the two FFN linear layers of each block are torch's dynamic int8 linear op over
    prepacked per-channel int8 weights (``precision.quantize_linear``); the attention output
    projection (``precision.INT8_FLOAT32_LINEARS``) and everything else stay float32.
    """

    engine = "plmexit fused ESM2 forward (verified against fair-esm scripts/extract.py and transformers' EsmModel)"

    def __init__(self, loaded, device: str, precision: str, norm_last: bool = True):
        weights = loaded.esm2_weights()
        self.norm_last = norm_last
        self.tokens = loaded.tokens
        self.precision = precision
        self.dtype = PRECISIONS[precision]
        self.int8 = precision == "int8"
        if self.int8 and device != "cpu":
            raise ValueError(f"precision int8 runs on the CPU only, not on {device}")
        self._reduce_range = precisions.reduce_range() if self.int8 else False
        self.device = device
        self.num_layers = len(weights.blocks)
        self.heads = weights.heads
        self.embed_dim = weights.embed_tokens.shape[1]
        self.head_dim = self.embed_dim // self.heads
        self.token_dropout = weights.token_dropout
        self.mask_idx, self.padding_idx = weights.mask_idx, weights.padding_idx

        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(device=device, dtype=self.dtype).contiguous()

        def ln(norm: tuple) -> tuple:
            return (cast(norm[0]), cast(norm[1]), norm[2])

        self.embed_tokens = cast(weights.embed_tokens)
        self.embed_scale = weights.embed_scale
        self.layers = [
            {
                "ln1": ln(b.ln1),
                "qkv_w": cast(torch.cat([b.q[0], b.k[0], b.v[0]])),
                "qkv_b": cast(torch.cat([b.q[1], b.k[1], b.v[1]])),
                "out_w": cast(b.out[0]), "out_b": cast(b.out[1]),
                "ln2": ln(b.ln2),
                "fc1_w": cast(b.fc1[0]), "fc1_b": cast(b.fc1[1]),
                "fc2_w": cast(b.fc2[0]), "fc2_b": cast(b.fc2[1]),
            }
            for b in weights.blocks
        ]
        if self.int8:
            for layer in self.layers:
                for name in ("qkv", "out", "fc1", "fc2"):
                    if name not in precisions.INT8_FLOAT32_LINEARS:
                        layer[name] = precisions.quantize_linear(layer.pop(f"{name}_w"), layer.pop(f"{name}_b"))
        # How the linear layers run (``_block``): "onednn" (CPU float32 wherever it works) or "addmm"
        # (other float32); "linear" (one op per projection) for int8, bfloat16 and float16.
        self.matmul = "addmm" if self.dtype == torch.float32 and not self.int8 else "linear"
        if self.matmul == "addmm":
            reason = onednn_unavailable_reason(device, self.dtype)
            if reason:
                log.info("%s linear layers: torch.addmm into reused buffers (not oneDNN: %s)", precision, reason)
            else:
                self.matmul = "onednn"
                for layer in self.layers:
                    for name in ("qkv", "out", "fc1", "fc2"):
                        layer[f"{name}_packed"] = torch.ops.mkldnn._reorder_linear_weight(layer.pop(f"{name}_w"), None)
                log.info("%s linear layers: oneDNN matmuls over weights prepacked once, GELU and residual adds fused into them", precision)
        self.ln_after = ln(weights.ln_after)
        self.inv_freq = weights.inv_freq.detach().to(device=device, dtype=torch.float32)
        self._rotary_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._buffers: dict[str, torch.Tensor] = {}

    def _rotary(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin tables (T, head_dim), computed in fp32 as fair-esm's RotaryEmbedding.

        fair-esm rotates ``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = cat(-x2, x1)``;
        that equals ``x * cos + roll(x, half) * sin_signed`` with the first half of ``sin`` negated,
        which is one roll and one fused multiply-add instead of a slice, negation and concatenation.
        """
        if length not in self._rotary_cache:
            t = torch.arange(length, device=self.device).type_as(self.inv_freq)
            freqs = torch.einsum("i,j->ij", t, self.inv_freq)
            emb = torch.cat((freqs, freqs), dim=-1)
            sin = emb.sin()
            sin[:, : self.head_dim // 2] *= -1
            self._rotary_cache[length] = (emb.cos().to(self.dtype), sin.to(self.dtype))
        return self._rotary_cache[length]

    @torch.inference_mode()
    def pooled(
        self, tokens: torch.Tensor, weights: torch.Tensor, layer_norm: str, depth: int | None = None, on_layer: LayerDone | None = None,
    ) -> torch.Tensor:
        """``(depth + 1, B, E)`` float32: per layer, the sum over positions of ``weights`` (B, T) times
        the hidden state, with fair-esm's layer-L norm (and every layer's, for ``final``).

        ``depth`` (default ``L``) stops the forward after that many blocks, as a model cut after
        block ``depth`` would. ``on_layer(k)`` is called as soon as layer ``k`` is pooled (see
        ``LayerDone``): ``plmexit cost`` timestamps there, so the timing is of the engine that embeds.
        """
        depth = check_depth(depth, self.num_layers)
        B, T = tokens.shape
        x, mask = self._embed(tokens)
        w = weights.unsqueeze(1).to(torch.float32)  # (B, 1, T)
        out = torch.empty((depth + 1, B, self.embed_dim), dtype=torch.float32, device=tokens.device)
        out[0] = self._pool(0, x, w, layer_norm)
        if on_layer is not None:
            on_layer(0)
        cos, sin_signed = self._rotary(T)
        for k, p in enumerate(self.layers[:depth], start=1):
            x = self._block(x, p, mask, cos, sin_signed)
            out[k] = self._pool(k, x, w, layer_norm)
            if on_layer is not None:
                on_layer(k)
        return out

    @torch.inference_mode()
    def pooled_exiting(
        self, tokens: torch.Tensor, weights: torch.Tensor, layer_norm: str, rule: ExitRule, depth: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(exit layer (B,), pooled vector at it (B, E) float32)``: ``pooled`` run block by block, each
        row leaving when ``rule`` says so (every row still running leaves at ``depth``, default ``L``);
        the rows that leave are dropped from the batch (hidden states, pooling weights, mask), so later
        blocks run on the survivors only. A row's vector is what ``pooled(..., depth=k)[k]`` gives it."""
        depth = check_depth(depth, self.num_layers)
        B, T = tokens.shape
        x, mask = self._embed(tokens)
        w = weights.unsqueeze(1).to(torch.float32)  # (B, 1, T)
        survivors = Survivors(B, self.embed_dim, depth, rule, tokens.device)
        cos, sin_signed = self._rotary(T)
        for k in range(depth + 1):
            if k > 0:
                x = self._block(x, self.layers[k - 1], mask, cos, sin_signed)
            keep = survivors.leave(k, self._pool(k, x, w, layer_norm))
            if survivors.done:
                break
            if keep is not None:
                x, w = x[keep], w[keep]
                mask = None if mask is None else mask[keep]
        return survivors.layer, survivors.out

    def _embed(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Layer 0 ``(B, T, E)`` and SDPA's boolean key mask ``(B, 1, 1, T)`` (True: may be attended to; None: no padding)."""
        padding = tokens.eq(self.padding_idx)  # (B, T)
        x = self.embed_scale * F.embedding(tokens, self.embed_tokens)  # (B, T, E)
        if self.token_dropout:  # as fair-esm: rescale by the training mask ratio over the observed one
            is_mask = tokens == self.mask_idx
            x = x.masked_fill(is_mask.unsqueeze(-1), 0.0)
            observed = is_mask.sum(-1).to(x.dtype) / (~padding).sum(-1)
            x = x * (1 - 0.15 * 0.8) / (1 - observed)[:, None, None]
        x = x * (1 - padding.unsqueeze(-1).type_as(x))
        mask = (~padding)[:, None, None, :] if bool(padding.any()) else None
        return x, mask

    def _pool(self, k: int, hidden: torch.Tensor, w: torch.Tensor, layer_norm: str) -> torch.Tensor:
        """``(B, E)`` float32: the ``w``-weighted sum over positions of layer ``k``'s state, normed per the convention."""
        if (k == self.num_layers and self.norm_last) or layer_norm == "final":
            hidden = F.layer_norm(hidden, (self.embed_dim,), *self.ln_after)
        return torch.bmm(w, hidden.to(torch.float32)).squeeze(1)

    def _block(self, x: torch.Tensor, p: dict, mask: torch.Tensor | None, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
        """One pre-norm transformer block on ``x`` (B, T, E); ``x`` itself is left as it was (callers keep it).

        CPU float32 runs ``_block_onednn`` where it can (``matmul == "onednn"``); int8, bfloat16 and
        float16 run ``_block_linear``. Otherwise float32 writes the QKV projection and the
        feed-forward's hidden layer into buffers the encoder keeps (``_workspace``) and accumulates
        the residuals in the matmuls (beta = 1): a
        fresh (B*T, 4E) tensor per block costs page faults and a bias copy that took about a tenth
        of a CPU forward (benchmarks/fp32_levers.py). Only the order of the bias and residual
        additions differs from ``x + linear(...)`` (rounding, about 1e-7 relative).
        """
        if self.matmul == "linear":
            return self._block_linear(x, p, mask, cos, sin_signed)
        if self.matmul == "onednn":
            return self._block_onednn(x, p, mask, cos, sin_signed)
        B, T, E = x.shape
        H, D = self.heads, self.head_dim
        N = B * T
        h = F.layer_norm(x, (E,), *p["ln1"]).view(N, E)
        qkv = torch.addmm(p["qkv_b"], h, p["qkv_w"].t(), out=self._workspace("qkv", (N, 3 * E)))
        qkv = qkv.view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)  # (3, B, H, T, D)
        qk = qkv[:2]
        qk = torch.addcmul(qk * cos, torch.roll(qk, D // 2, dims=-1), sin_signed)
        attn = F.scaled_dot_product_attention(qk[0], qk[1], qkv[2], attn_mask=mask)  # (B, H, T, D)
        # x + (attn W^T + b) as one GEMM accumulating onto a copy of x (beta = 1), then the bias.
        x = torch.addmm(x.reshape(N, E), attn.transpose(1, 2).reshape(N, E), p["out_w"].t()).add_(p["out_b"])
        h = F.layer_norm(x, (E,), *p["ln2"])
        hidden = torch.addmm(p["fc1_b"], h, p["fc1_w"].t(), out=self._workspace("fc1", (N, p["fc1_w"].shape[0])))
        torch.ops.aten.gelu_(hidden)
        return x.addmm_(hidden, p["fc2_w"].t()).add_(p["fc2_b"]).view(B, T, E)

    def _block_onednn(self, x: torch.Tensor, p: dict, mask: torch.Tensor | None, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
        """``_block`` with oneDNN's matmul over prepacked weights, GELU and the residual adds fused into
        it (``mkldnn::_linear_pointwise``, what inductor's CPU freezing emits): on an AVX-512 EPYC it ran
        the forward's weight matmuls 1.1-1.2x faster than MKL's ``addmm`` (benchmarks/fp32_levers.py)."""
        B, T, E = x.shape
        H, D = self.heads, self.head_dim
        N = B * T
        linear, linear_add = torch.ops.mkldnn._linear_pointwise, torch.ops.mkldnn._linear_pointwise.binary
        h = F.layer_norm(x, (E,), *p["ln1"]).view(N, E)
        qkv = linear(h, p["qkv_packed"], p["qkv_b"], "none", [], "").view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)  # (3, B, H, T, D)
        qk = qkv[:2]
        qk = torch.addcmul(qk * cos, torch.roll(qk, D // 2, dims=-1), sin_signed)
        attn = F.scaled_dot_product_attention(qk[0], qk[1], qkv[2], attn_mask=mask)  # (B, H, T, D)
        x = linear_add(attn.transpose(1, 2).reshape(N, E), x.reshape(N, E), p["out_packed"], p["out_b"], "add")  # x + attn W^T + b
        hidden = linear(F.layer_norm(x, (E,), *p["ln2"]), p["fc1_packed"], p["fc1_b"], "gelu", [], "none")  # exact (erf) GELU
        return linear_add(hidden, x, p["fc2_packed"], p["fc2_b"], "add").view(B, T, E)

    def _workspace(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """A buffer of ``shape`` that lives as long as the encoder (grown, never shrunk), for one
        intermediate of ``_block`` that is dead before the next block writes it."""
        size = shape[0] * shape[1]
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < size:
            buffer = self._buffers[name] = torch.empty(size, dtype=self.dtype, device=self.device)
        return buffer[:size].view(shape)

    def _block_linear(self, x: torch.Tensor, p: dict, mask: torch.Tensor | None, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
        """``_block`` with one linear op per projection (``_linear``): int8, bfloat16, float16."""
        B, T, E = x.shape
        H, D = self.heads, self.head_dim
        linear = self._linear
        h = F.layer_norm(x, (E,), *p["ln1"])
        qkv = linear(h, p, "qkv").view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)  # (3, B, H, T, D)
        qk = qkv[:2]
        qk = torch.addcmul(qk * cos, torch.roll(qk, D // 2, dims=-1), sin_signed)
        attn = F.scaled_dot_product_attention(qk[0], qk[1], qkv[2], attn_mask=mask)  # (B, H, T, D)
        x = x + linear(attn.transpose(1, 2).reshape(B, T, E), p, "out")
        h = F.layer_norm(x, (E,), *p["ln2"])
        return x + linear(F.gelu(linear(h, p, "fc1")), p, "fc2")

    def _linear(self, x: torch.Tensor, p: dict, name: str) -> torch.Tensor:
        if name in p:
            return precisions.linear_int8(x, p[name], self._reduce_range)
        return F.linear(x, p[f"{name}_w"], p[f"{name}_b"])


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


def make_encoder(loaded, device: str, precision: str, norm_last: bool = True) -> Encoder:
    """The encoder for a loaded model of either backend: ``FastEncoder`` when the model is an ESM2
    (its model module fills ``Esm2Weights``), else the model's own forward (``generic.HookedEncoder``).

    ``norm_last=False`` leaves the final norm off the last layer under the ``raw`` convention: a model
    cut after block ``k`` of a deeper one (``plmexit export``) then gives block ``k``'s raw output, as
    the deeper model's raw layer ``k`` is.

    ``precision`` is resolved for ``device`` first (``precision.resolve``): one the device does not
    compute natively runs as float32, logged; the encoder's ``precision`` and ``resolved`` say what ran."""
    from plmexit.embedding.generic import HookedEncoder

    resolved = precisions.resolve_and_log(precision, device)
    if loaded.esm2_weights() is not None:
        encoder = FastEncoder(loaded, device, resolved.ran, norm_last)
    else:
        encoder = HookedEncoder(loaded, device, resolved.ran, norm_last)
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
    encoder = encoder or make_encoder(loaded, settings.device, settings.precision)
    specials = encoder.tokens.specials
    unique, inverse = np.unique(np.asarray(sequences, dtype=object), return_inverse=True)
    owners = _group_positions(inverse.reshape(-1), len(unique))
    pieces = _make_pieces(unique, settings)
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
    pieces = _make_pieces(unique, settings)
    return [
        tuple(t.to(settings.device) for t in _batch_tensors(encoder, unique, pieces, batch))
        for batch in token_batches(pieces.length, settings.max_tokens, encoder.tokens.specials)
    ]


def _batch_tensors(encoder: Encoder, unique, pieces: _Pieces, batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
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


def _pooled_splitting_on_oom(encoder: Encoder, unique, pieces: _Pieces, batch: np.ndarray, settings: EmbedSettings) -> np.ndarray:
    """Pooled ``(L + 1, len(batch), E)`` for one batch; a batch that runs out of device memory is
    split in halves and retried, down to single sequences, so one long sequence does not fail a job."""
    tokens, weights = _batch_tensors(encoder, unique, pieces, batch)
    try:
        return _forward_pooled(encoder, tokens.to(settings.device), weights.to(settings.device), settings.layer_norm)
    except torch.OutOfMemoryError:
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


def _group_positions(inverse: np.ndarray, n_unique: int) -> list[np.ndarray]:
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(n_unique + 1))
    return [order[bounds[i] : bounds[i + 1]] for i in range(n_unique)]
