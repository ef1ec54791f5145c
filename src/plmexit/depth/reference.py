"""ProteinGym's ESM scoring loop, re-implemented as written (tests and benchmarks only).

Invariant: this follows ``proteingym/baselines/esm/compute_fitness.py`` of
github.com/OATML-Markslab/ProteinGym at commit bb685245f8f4bb95a5b54b470396c23826cd6284 (the
``wt-marginals`` and ``masked-marginals`` branches of ``main`` for a non-MSA model, and
``label_row``), for targets that fit the model (``batch_tokens.size(1) <= 1024``, where ProteinGym
uses no window): fair-esm's batch converter, fair-esm's own ``model(tokens)["logits"]``, one
masked position per forward, ``offset_idx = 1`` (the reference table has no ``start_idx``).
One deliberate difference: ProteinGym masks every token position (BOS and EOS included) and
``label_row`` reads only the mutated ones; ``positions`` limits the loop to those, which changes no
score and saves the forwards whose output is never read.

``transformers_scores`` is the same loop written against a transformers masked LM instead of
fair-esm: the model's own tokenizer (residues separated by spaces for Rostlab's BERT-style
tokenizers, as their model cards do), the model's own ``model(input_ids=..., attention_mask=...).logits``,
and ``label_row`` reading token ids from the tokenizer; every family puts one CLS/BOS token first,
so ``label_row``'s ``1 + idx`` holds as written.
"""

from __future__ import annotations

import numpy as np
import torch

from plmexit.models.fair_esm import LoadedModel


def label_row(row, sequence, token_probs, alphabet, offset_idx):
    """ProteinGym's ``label_row``, verbatim but for the ``assert`` (a ``ValueError`` here)."""
    score = 0
    for mutation in row.split(":"):
        wt, idx, mt = mutation[0], int(mutation[1:-1]) - offset_idx, mutation[-1]
        if sequence[idx] != wt:
            raise ValueError("The listed wildtype does not match the provided sequence")

        wt_encoded, mt_encoded = alphabet.get_idx(wt), alphabet.get_idx(mt)

        # add 1 for BOS
        score += (token_probs[0, 1 + idx, mt_encoded] - token_probs[0, 1 + idx, wt_encoded]).item()
    return score


@torch.no_grad()
def proteingym_scores(loaded: LoadedModel, sequence: str, mutants: list[str], strategy: str, positions=None, offset_idx: int = 1) -> list[float]:
    """Scores of ``mutants`` by ``strategy`` (``wt-marginals`` or ``masked-marginals``) as
    compute_fitness.py computes them; ``positions`` (token indices) limits the masked loop."""
    model, alphabet = loaded.model, loaded.alphabet
    batch_converter = alphabet.get_batch_converter()
    data = [("protein1", sequence)]
    _, _, batch_tokens = batch_converter(data)
    if batch_tokens.size(1) > 1024:
        raise ValueError("the reference loop covers targets without ProteinGym's long-sequence windows (at most 1022 residues)")
    device = next(model.parameters()).device
    if strategy == "wt-marginals":
        token_probs = torch.log_softmax(model(batch_tokens.to(device))["logits"], dim=-1)
    elif strategy == "masked-marginals":
        loop = range(batch_tokens.size(1)) if positions is None else sorted(positions)
        token_probs = torch.full((1, batch_tokens.size(1), len(alphabet)), float("nan"))
        for i in loop:
            batch_tokens_masked = batch_tokens.clone()
            batch_tokens_masked[0, i] = alphabet.mask_idx
            probs = torch.log_softmax(model(batch_tokens_masked.to(device))["logits"], dim=-1)
            token_probs[0, i] = probs[0, i].cpu()
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    token_probs = token_probs.cpu()
    return [label_row(m, sequence, token_probs, alphabet, offset_idx) for m in mutants]


def mutated_token_positions(mutants: list[str], offset_idx: int = 1) -> np.ndarray:
    """Token indices (BOS is token 0) of the positions the mutants name."""
    return np.unique([int(m[1:-1]) - offset_idx + 1 for mutant in mutants for m in mutant.split(":")])


# Model types whose tokenizers take residues separated by spaces (Rostlab's ProtBert and ProtAlbert model cards).
SPACED_MODEL_TYPES = ("bert", "albert")


class TokenizerAlphabet:
    """``label_row``'s ``alphabet.get_idx`` over a transformers tokenizer."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def get_idx(self, token: str) -> int:
        return self.tokenizer.convert_tokens_to_ids(token)


@torch.no_grad()
def transformers_scores(model, tokenizer, sequence: str, mutants: list[str], strategy: str, positions=None, offset_idx: int = 1) -> list[float]:
    """``proteingym_scores`` with a transformers masked LM (``EsmForMaskedLM``, ``BertForMaskedLM``,
    ``AlbertForMaskedLM``, ``EsmcForMaskedLM``) and its own tokenizer in place of fair-esm's."""
    text = " ".join(sequence) if model.config.model_type in SPACED_MODEL_TYPES else sequence
    batch_tokens = tokenizer([text], return_tensors="pt")["input_ids"]
    if batch_tokens[0, 0].item() != tokenizer.cls_token_id or batch_tokens.size(1) != len(sequence) + 2:
        raise ValueError("the reference loop needs one token per residue between one leading CLS/BOS and one trailing token")
    device = next(model.parameters()).device
    attention_mask = torch.ones_like(batch_tokens).to(device)
    if strategy == "wt-marginals":
        token_probs = torch.log_softmax(model(input_ids=batch_tokens.to(device), attention_mask=attention_mask).logits, dim=-1)
    elif strategy == "masked-marginals":
        loop = range(batch_tokens.size(1)) if positions is None else sorted(positions)
        token_probs = torch.full((1, batch_tokens.size(1), model.config.vocab_size), float("nan"))
        for i in loop:
            batch_tokens_masked = batch_tokens.clone()
            batch_tokens_masked[0, i] = tokenizer.mask_token_id
            probs = torch.log_softmax(model(input_ids=batch_tokens_masked.to(device), attention_mask=attention_mask).logits, dim=-1)
            token_probs[0, i] = probs[0, i].cpu()
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    token_probs = token_probs.cpu()
    alphabet = TokenizerAlphabet(tokenizer)
    return [label_row(m, sequence, token_probs, alphabet, offset_idx) for m in mutants]
