"""Per-layer pooled embeddings through a model's own forward: any transformers encoder, or fair-esm's ESM2.

Invariant: hidden state ``k`` is what enters the first block (``k = 0``) or leaves block ``k``, the
raw residual stream, exactly what transformers returns as ``hidden_states[k]`` for ``k < L`` (and
fair-esm as ``representations[k]``); plmexit applies the family's final norm itself (to layer ``L``,
and to every layer under the ``final`` convention), so both conventions mean the same for every
family whatever the model does with its last state. Forward hooks on the blocks pool each state on
the device as it is produced (no list of ``L + 1`` full hidden states is ever held), and stop the
forward after block ``depth`` so a timed shallow run really is shallow. For an exiting forward the
same hooks cut the batch: a block's output hook drops the rows that leave, and every block's input
hook cuts the batch-sized tensors the model passes it (attention masks, position biases) to the
survivors (``embedding.exiting.Survivors.shrink``), so no family needs code of its own. Tested
equal to the model's own ``output_hidden_states=True`` forward, one sequence at a time, within
1e-5 in fp32. ``FairEsmHookedEncoder`` is the same over fair-esm's ESM2 module (its blocks pass
``(T, B, E)`` states), the ``embed.engine: reference`` path for fair-esm checkpoints, tested equal
to ``FastEncoder`` and to fair-esm's ``scripts/extract.py`` within 1e-5 in fp32.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from plmexit.embedding import precision as precisions
from plmexit.embedding.exiting import ExitRule, Survivors
from plmexit.embedding.options import check_depth

PRECISIONS = precisions.DTYPES
# Rotary embeddings whose ``inv_freq`` buffer is kept float32 at every precision: transformers' ESM
# (its forward computes the angles in float32 and casts cos and sin to the states' dtype) and
# fair-esm's (``FairEsmHookedEncoder`` casts its float32 tables to the working precision itself).
FLOAT32_ROTARY = ("transformers.models.esm.modeling_esm.EsmRotaryEmbedding", "esm.rotary_embedding.RotaryEmbedding")


class _Stop(Exception):
    """Raised from a block hook to end the forward after the requested depth."""


class HookedEncoder:
    """The model's own forward (SDPA attention where transformers supports it), pooled per block.

    ``loaded`` gives ``module`` (the transformers encoder), ``blocks`` (the block modules in order;
    a module shared by several layers, as in ALBERT, is listed once per use), ``final_norm`` (a module,
    or None for post-norm families whose every block output is already normalised), ``tokens``,
    ``num_layers``, ``embed_dim``. The module is moved to ``device`` and ``precision`` in place
    (int8: float32, then every ``nn.Linear`` but the attention output projections swapped in place
    for ``precision.Int8Linear``, so the block modules the hooks sit on stay the same objects).
    """

    engine = "the model's own transformers forward, each block's output pooled on the device by forward hooks"
    # Whether the forward is ended after block L too (True where what follows the blocks, such as
    # fair-esm's LM head, is no part of any layer's state; transformers encoders run to their end).
    stop_after_last = False

    def __init__(self, loaded, device: str, precision: str, norm_last: bool = True):
        self.norm_last = norm_last
        self.precision = precision
        self.dtype = PRECISIONS[precision]
        self.device = device
        # Rotary frequencies stay float32 whatever the precision, as in FastEncoder: cast to bfloat16 they
        # would turn position p's angle p * f into p * round(f), off by up to 0.4% of it (radians at p ~ 1000).
        rotary = {
            m: m.inv_freq.detach().to(device=device, dtype=torch.float32)
            for m in loaded.module.modules() if f"{type(m).__module__}.{type(m).__qualname__}" in FLOAT32_ROTARY
        }
        self.module = loaded.module.to(device=device, dtype=self.dtype).eval()
        for module, inv_freq in rotary.items():
            module.inv_freq = inv_freq
        self.rotary = list(rotary)
        if precision == "int8":
            if device != "cpu":
                raise ValueError(f"precision int8 runs on the CPU only, not on {device}")
            precisions.quantize_module(self.module)
        self.blocks = list(loaded.blocks)
        self.final_norm = loaded.final_norm
        self.tokens = loaded.tokens
        self.num_layers = loaded.num_layers
        self.embed_dim = loaded.embed_dim

    @torch.inference_mode()
    def pooled(self, tokens: torch.Tensor, weights: torch.Tensor, layer_norm: str, depth: int | None = None, on_layer=None) -> torch.Tensor:
        """``(depth + 1, B, E)`` float32: per layer, the sum over positions of ``weights`` (B, T) times
        the hidden state, the final norm on layer ``L`` (and on every layer, for ``final``);
        ``on_layer(k)`` as soon as layer ``k`` is pooled (``encoder.LayerDone``)."""
        depth = check_depth(depth, self.num_layers)
        B = tokens.shape[0]
        w = weights.unsqueeze(1).to(torch.float32)  # (B, 1, T)
        out = torch.empty((depth + 1, B, self.embed_dim), dtype=torch.float32, device=tokens.device)
        done = [0]  # blocks finished

        def pool(k: int, hidden: torch.Tensor) -> None:
            out[k] = self._pool(k, hidden, w, layer_norm)
            if on_layer is not None:
                on_layer(k)

        def before_first(module, args, kwargs):
            if done[0] == 0:
                pool(0, args[0] if args else kwargs["hidden_states"])
                if depth == 0:
                    raise _Stop

        def after(module, args, kwargs, output):
            done[0] += 1
            pool(done[0], output[0] if isinstance(output, tuple) else output)
            if done[0] == depth and (depth < self.num_layers or self.stop_after_last):
                raise _Stop

        handles = [self.blocks[0].register_forward_pre_hook(before_first, with_kwargs=True)]
        handles += [m.register_forward_hook(after, with_kwargs=True) for m in {id(m): m for m in self.blocks}.values()]
        self._run(tokens, handles)
        if done[0] != depth:
            raise RuntimeError(f"the model ran {done[0]} blocks, expected {depth}; its block list does not match its forward")
        return out

    def _pool(self, k: int, hidden: torch.Tensor, w: torch.Tensor, layer_norm: str) -> torch.Tensor:
        """``(B, E)`` float32: the ``w``-weighted sum over positions of layer ``k``'s state, normed per the convention."""
        hidden = self._batch_first(hidden)
        if self.final_norm is not None and ((k == self.num_layers and self.norm_last) or layer_norm == "final"):
            hidden = self.final_norm(hidden)
        return torch.bmm(w, hidden.to(torch.float32)).squeeze(1)

    def _batch_first(self, hidden: torch.Tensor) -> torch.Tensor:
        """A block's state as ``(B, T, E)`` (transformers' blocks pass it so)."""
        return hidden

    def _forward(self, tokens: torch.Tensor) -> None:
        self.module(input_ids=tokens, attention_mask=tokens.ne(self.tokens.padding_idx).to(torch.int64))

    def _shrink_inputs(self, survivors: Survivors, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """A block's arguments cut to the rows still running."""
        return survivors.shrink(args), survivors.shrink(kwargs)

    def _shrink_output(self, survivors: Survivors, output):
        """A block's output cut to the rows still running."""
        return survivors.shrink(output)

    def _run(self, tokens: torch.Tensor, handles: list) -> None:
        """The model's own forward with ``handles``' hooks in place (a hook may end it early with ``_Stop``); the hooks removed after."""
        try:
            self._forward(tokens)
        except _Stop:
            pass
        finally:
            for handle in handles:
                handle.remove()

    @torch.inference_mode()
    def pooled_exiting(
        self, tokens: torch.Tensor, weights: torch.Tensor, layer_norm: str, rule: ExitRule, depth: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(exit layer (B,), pooled vector at it (B, E) float32)``, rows dropped from the batch as they leave
        (see ``FastEncoder.pooled_exiting``)."""
        depth = check_depth(depth, self.num_layers)
        B = tokens.shape[0]
        state = {"w": weights.unsqueeze(1).to(torch.float32), "done": 0}  # (B, 1, T) pooling weights of the survivors
        survivors = Survivors(B, self.embed_dim, depth, rule, tokens.device)

        def leave(k: int, hidden: torch.Tensor):
            keep = survivors.leave(k, self._pool(k, hidden, state["w"], layer_norm))
            if survivors.done:
                raise _Stop
            if keep is not None:
                state["w"] = state["w"][keep]
            return keep

        def before(module, args, kwargs):
            if state["done"] == 0:
                leave(0, args[0] if args else kwargs["hidden_states"])
            return self._shrink_inputs(survivors, args, kwargs)

        def after(module, args, kwargs, output):
            state["done"] += 1
            hidden = output[0] if isinstance(output, tuple) else output
            keep = leave(state["done"], hidden)
            return output if keep is None else self._shrink_output(survivors, output)

        handles = [m.register_forward_pre_hook(before, with_kwargs=True) for m in {id(m): m for m in self.blocks}.values()]
        handles += [m.register_forward_hook(after, with_kwargs=True) for m in {id(m): m for m in self.blocks}.values()]
        self._run(tokens, handles)
        if not survivors.done:
            raise RuntimeError(f"the model ran {state['done']} blocks and {len(survivors.rows)} rows never left; its block list does not match its forward")
        return survivors.layer, survivors.out


class FairEsmHookedEncoder(HookedEncoder):
    """fair-esm's own ESM2 forward (``ESM2.forward``, its ``TransformerLayer`` modules, as
    ``scripts/extract.py`` runs them), each block's output pooled by the same hooks: the reference
    engine for fair-esm checkpoints. fair-esm's blocks take and return ``(T, B, E)`` states; its
    final norm is ``emb_layer_norm_after``. The forward ends after block ``depth`` (after the last
    block too: the LM head computes no layer's state), so ``representations`` are never collected
    and the timed forward is the encoder's."""

    engine = "fair-esm's own ESM2 forward (its modules, as scripts/extract.py runs them), each block's output pooled on the device by forward hooks"
    stop_after_last = True

    def __init__(self, loaded, device: str, precision: str, norm_last: bool = True):
        model = loaded.model
        parts = SimpleNamespace(
            module=model, blocks=list(model.layers), final_norm=model.emb_layer_norm_after, tokens=loaded.tokens,
            num_layers=model.num_layers, embed_dim=model.embed_dim,
        )
        super().__init__(parts, device, precision, norm_last)

    def _batch_first(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden.transpose(0, 1)  # (T, B, E) -> (B, T, E)

    def _forward(self, tokens: torch.Tensor) -> None:
        if self.dtype != torch.float32:
            self._rotary_tables(tokens.shape[1], tokens.device)
        self.module(tokens, repr_layers=[])  # fair-esm derives the padding mask from the tokens itself

    def _rotary_tables(self, length: int, device) -> None:
        """fair-esm's cached cos and sin tables for ``length`` positions, computed in float32 from the float32
        frequencies and cast to the working precision (as ``FastEncoder._rotary``): fair-esm would compute
        them in its buffer's dtype, and in bfloat16 positions past 256 are not whole numbers apart. Its
        forward finds them cached for this length and device and uses them as they are."""
        for rotary in self.rotary:
            cos, sin = rotary._update_cos_sin_tables(torch.empty((1, length, 0), device=device), seq_dimension=1)
            rotary._cos_cached, rotary._sin_cached = cos.to(self.dtype), sin.to(self.dtype)

    def _shrink_states(self, survivors: Survivors, hidden: torch.Tensor) -> torch.Tensor:
        return survivors.shrink(hidden.transpose(0, 1)).transpose(0, 1)

    def _shrink_inputs(self, survivors: Survivors, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        # args: the (T, B, E) state; kwargs: self_attn_padding_mask (B, T) or None, need_head_weights
        return (self._shrink_states(survivors, args[0]), *args[1:]), survivors.shrink(kwargs)

    def _shrink_output(self, survivors: Survivors, output):
        state, attention = output  # the attention weights (B, T, T) are dropped by ESM2.forward unless asked for
        return self._shrink_states(survivors, state), attention
