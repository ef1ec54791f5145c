"""A masked language model seen layer by layer: the residual stream, the final norm and the LM head.

Invariant: every depth diagnostic reads a model only through ``MaskedLM``: ``layer_states`` yields
the residual stream after the embedding (state 0) and after each block (states ``1..L``), state
``L`` *before* the final layer norm; ``final_norm`` then ``head`` turn any state into logits, so
``head(final_norm(state L))`` is the model's own output (the logit lens at ``k = L``; tested bit
for bit against fair-esm's ``ESM2.forward`` and transformers' ``EsmForMaskedLM``,
``BertForMaskedLM``, ``AlbertForMaskedLM`` and ``EsmcForMaskedLM``). Residue ``i`` of row ``b``
sits at token ``offset + i``. A backend is one more class with these members; nothing else in
``plmexit.depth`` knows which model it runs.
"""

from __future__ import annotations

from typing import Iterator, Protocol

import torch
import torch.nn.functional as F

from plmexit.embedding.fast_esm2 import FastEncoder
from plmexit.embedding.options import ESM2_MAX_RESIDUES
from plmexit.models import families
from plmexit.models.fair_esm import LoadedModel

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
ENGINES = {
    "exact": "fair-esm's own modules: the lens at L is the model's logits bit for bit",
    "fused": "plmexit's fused forward (FastEncoder): faster, equal to fair-esm's to fp32 rounding",
}


class MaskedLM(Protocol):
    """What the depth diagnostics need from a model with a masked-LM head."""

    name: str
    num_layers: int  # L: blocks; states are 0..L
    max_residues: int  # residues one forward may hold (special tokens excluded)
    offset: int  # token index of residue 0 (1: one leading BOS / CLS token)
    mask_id: int
    residue_ids: dict[str, int]  # token id of each of the 20 amino acids

    def encode(self, residues: list[str]) -> torch.Tensor:
        """(B, T) int64 tokens on the model's device: special tokens, residues, padding."""

    def layer_states(self, tokens: torch.Tensor, skip: int | None = None) -> Iterator[torch.Tensor]:
        """States 0..L, each (B, T, E); with ``skip = i`` (1..L) block ``i`` is left out, so state
        ``i`` equals state ``i - 1`` (the residual stream passes through)."""

    def final_norm(self, hidden: torch.Tensor) -> torch.Tensor:
        """The norm the model applies after its last block (identity for post-norm models)."""

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The masked-LM head: (..., E) -> (..., V) logits."""


def lens_logits(lm: MaskedLM, hidden: torch.Tensor, norm: bool = True) -> torch.Tensor:
    """The logit lens: the model's own head on a state, with the final norm first (the standard
    lens) or without it."""
    return lm.head(lm.final_norm(hidden) if norm else hidden)


class FairEsmMaskedLM:
    """fair-esm's ESM2 as a ``MaskedLM``.

    ``engine="exact"`` (default) calls fair-esm's own ``TransformerLayer`` modules in fair-esm's
    (T, B, E) layout, so the lens at ``L`` equals ``model(tokens)["logits"]`` bit for bit and
    batched masked marginals equal ProteinGym's loop to about 4e-6 (35M architecture).
    ``engine="fused"`` runs the blocks through ``plmexit.embedding.fast_esm2.FastEncoder`` (fused QKV,
    ``scaled_dot_product_attention``, no (B, H, T, T) scores in memory): faster, equal to fair-esm's
    forward only to fp32 rounding (log-probabilities differ by up to about 1e-4 on a 12-layer
    model). Both apply fair-esm's token-dropout rescaling of the embeddings (by the observed mask
    ratio) as ``ESM2.forward`` does, in training and inference alike. (The fused engine calls
    ``FastEncoder._block`` and ``_rotary``; a public per-layer generator there would be cleaner.)
    """

    offset = 1  # BOS

    def __init__(self, loaded: LoadedModel, device: str = "cpu", engine: str = "exact"):
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
        self.loaded = loaded
        self.model = loaded.model.to(device).eval()
        self.device = device
        self.fused = engine == "fused"
        self.name = loaded.name
        self.num_layers = loaded.num_layers
        self.max_residues = ESM2_MAX_RESIDUES
        alphabet = loaded.alphabet
        self.alphabet = alphabet
        self.mask_id = alphabet.mask_idx
        self.padding_id = alphabet.padding_idx
        self.residue_ids = {aa: alphabet.get_idx(aa) for aa in AMINO_ACIDS}
        self._encoder = FastEncoder(loaded, device, "float32") if self.fused else None

    def encode(self, residues: list[str]) -> torch.Tensor:
        """BOS + residues + EOS, padded, as fair-esm's batch converter lays them out."""
        T = max(len(r) for r in residues) + 2
        tokens = torch.full((len(residues), T), self.padding_id, dtype=torch.int64)
        for row, sequence in enumerate(residues):
            tokens[row, 0] = self.alphabet.cls_idx
            tokens[row, 1 : len(sequence) + 1] = torch.tensor(self.alphabet.encode(sequence), dtype=torch.int64)
            tokens[row, len(sequence) + 1] = self.alphabet.eos_idx
        return tokens.to(self.device)

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """``ESM2.forward`` up to the first block, line for line (B, T, E)."""
        model = self.model
        padding_mask = tokens.eq(model.padding_idx)
        x = model.embed_scale * model.embed_tokens(tokens)
        if model.token_dropout:
            x.masked_fill_((tokens == model.mask_idx).unsqueeze(-1), 0.0)
            mask_ratio_train = 0.15 * 0.8
            src_lengths = (~padding_mask).sum(-1)
            mask_ratio_observed = (tokens == model.mask_idx).sum(-1).to(x.dtype) / src_lengths
            x = x * (1 - mask_ratio_train) / (1 - mask_ratio_observed)[:, None, None]
        return x * (1 - padding_mask.unsqueeze(-1).type_as(x))

    def layer_states(self, tokens: torch.Tensor, skip: int | None = None) -> Iterator[torch.Tensor]:
        if skip is not None and not 1 <= skip <= self.num_layers:
            raise ValueError(f"skip must be a block in 1..{self.num_layers}, got {skip}")
        padding = tokens.eq(self.padding_id)
        x = self._embed(tokens)
        yield x
        if self.fused:
            encoder = self._encoder
            mask = (~padding)[:, None, None, :] if bool(padding.any()) else None
            cos, sin_signed = encoder._rotary(tokens.shape[1])
            for k, block in enumerate(encoder.layers, start=1):
                if k != skip:
                    x = encoder._block(x, block, mask, cos, sin_signed)
                yield x
            return
        x = x.transpose(0, 1)  # (T, B, E), fair-esm's layout
        padding_mask = padding if bool(padding.any()) else None
        for k, layer in enumerate(self.model.layers, start=1):
            if k != skip:
                x, _ = layer(x, self_attn_padding_mask=padding_mask, need_head_weights=False)
            yield x.transpose(0, 1)

    def final_norm(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.emb_layer_norm_after(hidden)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(hidden)


class TransformersMaskedLM:
    """A transformers masked LM (``EsmForMaskedLM``, ``BertForMaskedLM``, ``AlbertForMaskedLM``,
    ``EsmcForMaskedLM``) as a ``MaskedLM``.

    Duck-typed on the model object (this module never imports transformers): states are read by
    hooks during the model's own forward, so the lens at ``L`` is ``model(...).logits`` exactly.
    State 0 is what enters the first block (after ALBERT's embedding projection); state ``k`` is
    what the ``k``-th block application returns, counted over every application, so each of
    ALBERT's applications of one shared layer is its own state, and skipping block ``i`` (a hook
    returning the block's input as its output) skips only the ``i``-th application. ``tokenizer``
    is the model's own (a callable that adds the leading CLS/BOS token).
    """

    offset = 1

    def __init__(self, model, tokenizer, name: str, device: str = "cpu"):
        # Where the parts sit, by config.model_type (plmexit.models.families: encoder, blocks, final norm, head).
        entry = families.for_model_type(model.config.model_type)
        if entry is None or entry.name not in families.MASKED_LM_FAMILIES:
            raise ValueError(f"transformers model type {model.config.model_type!r} has no masked-LM mapping here; known: {', '.join(families.MASKED_LM_FAMILIES)}")
        encoder = families.attribute(model, entry.masked_lm.encoder)
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.name = name
        self.spaced = entry.spaced
        self._blocks = families.run_order_blocks(encoder, entry.name)
        self._norm = families.attribute(encoder, entry.final_norm) if entry.final_norm else None
        self._head = families.attribute(model, entry.masked_lm.head)
        self.num_layers = len(self._blocks)
        # ESM2 was trained on at most 1022 residues (rotary positions set no limit); ESM-C on
        # max_position_embeddings tokens (2048); BERT-style models on their absolute positions.
        self.max_residues = entry.max_residues or model.config.max_position_embeddings - 2
        self.mask_id = tokenizer.mask_token_id
        self.padding_id = tokenizer.pad_token_id
        # Each residue as the tokenizer encodes it (a sentencepiece vocabulary may hold "▁A", not "A").
        self.residue_ids = {}
        for aa in AMINO_ACIDS:
            found = tokenizer(aa, add_special_tokens=False)["input_ids"]
            if len(found) != 1:
                raise ValueError(f"tokenizer of {name}: residue {aa!r} is {len(found)} tokens, expected one; not a per-residue protein tokenizer")
            self.residue_ids[aa] = found[0]

    def encode(self, residues: list[str]) -> torch.Tensor:
        text = [" ".join(r) for r in residues] if self.spaced else list(residues)
        tokens = self.tokenizer(text, padding=True, return_tensors="pt")["input_ids"]
        # Residue i must sit at token offset + i: one token per residue, one special token before.
        lengths = tokens.ne(self.padding_id).sum(dim=1).tolist()
        if lengths != [len(r) + 2 for r in residues]:
            raise ValueError(f"tokenizer of {self.name}: sequences became {lengths} tokens, expected one per residue plus two special tokens")
        return tokens.to(self.device)

    def layer_states(self, tokens: torch.Tensor, skip: int | None = None) -> Iterator[torch.Tensor]:
        if skip is not None and not 1 <= skip <= self.num_layers:
            raise ValueError(f"skip must be a block in 1..{self.num_layers}, got {skip}")
        states: list[torch.Tensor] = []

        def before(module, args, kwargs):
            if not states:
                states.append(args[0] if args else kwargs["hidden_states"])

        def after(module, args, kwargs, output):
            if len(states) == skip:  # this application is block `skip`: its input passes through
                hidden = args[0] if args else kwargs["hidden_states"]
                output = (hidden, *output[1:]) if isinstance(output, tuple) else hidden
            states.append(output[0] if isinstance(output, tuple) else output)
            return output

        unique = list({id(m): m for m in self._blocks}.values())
        hooks = []
        try:
            hooks += [m.register_forward_pre_hook(before, with_kwargs=True) for m in unique]
            hooks += [m.register_forward_hook(after, with_kwargs=True) for m in unique]
            self.model(input_ids=tokens, attention_mask=tokens.ne(self.padding_id).long())
        finally:
            for hook in hooks:
                hook.remove()
        if len(states) != self.num_layers + 1:
            raise RuntimeError(f"the model ran {len(states) - 1} blocks, expected {self.num_layers}; its block list does not match its forward")
        yield from states

    def final_norm(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._norm(hidden) if self._norm is not None else hidden

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._head(hidden)


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """float32 log-softmax over the vocabulary."""
    return F.log_softmax(logits.float(), dim=-1)
