"""The fused ESM2 encoder: fair-esm's ESM2 forward rewritten for inference, over ESM2 weights from either backend.

Invariant: ``FastEncoder.pooled`` equals fair-esm's ``scripts/extract.py`` (``reference.reference_pooled``)
within 1e-5 relative in fp32: every difference from fair-esm's modules (fused QKV projection,
fused attention, oneDNN matmuls over prepacked weights on CPU float32, pooling on the device)
changes nothing beyond rounding. Reduced precisions (bfloat16, float16, int8) run as given, within
their stated tolerances (``precision``).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from plmexit.embedding import precision as precisions
from plmexit.embedding.encoder import LayerDone
from plmexit.embedding.exiting import ExitRule, Survivors
from plmexit.embedding.options import check_depth

log = logging.getLogger(__name__)

PRECISIONS = precisions.DTYPES

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

    ``precision`` is run as given (``engine.make_encoder`` first resolves what the device supports). int8:
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
