"""ProteinGym's ESM scoring loop, re-implemented as written (tests and benchmarks only).

Invariant: this follows ``proteingym/baselines/esm/compute_fitness.py`` of
github.com/OATML-Markslab/ProteinGym at commit bb685245f8f4bb95a5b54b470396c23826cd6284 (the
``wt-marginals`` and ``masked-marginals`` branches of ``main`` for a non-MSA model, and
``label_row``) step by step: fair-esm's batch converter, fair-esm's own ``model(tokens)["logits"]``
(or ``logits``, e.g. a layer's lens in its place), one masked position per forward,
``offset_idx = 1`` (the reference table has no ``start_idx``). A target longer than the model
(``batch_tokens.size(1) > model_window``) takes ProteinGym's long-sequence branches:
``masked-marginals`` with ``--scoring-window optimal`` (``get_optimal_window`` of
``proteingym/utils/scoring_utils.py``, copied below), ``wt-marginals`` with ``--scoring-window
overlapping`` (ESM-1b's script; its ``optimal`` default runs the whole sequence unwindowed). ProteinGym
writes both for ``model_window = 1024``; ``overlapping_literals`` gives its overlapping loop's
numbers as fractions of ``model_window`` (exactly its literals at 1024, tested), so a tiny model can
be checked with a small window. Deliberate differences: ProteinGym masks every token position (BOS
and EOS included) and ``label_row`` reads only the mutated ones; ``positions`` limits the loop to
those, which changes no score and saves the forwards whose output is never read; tensors stay on
the model's device rather than ``.cuda()``.

``transformers_scores`` is the same loop written against a transformers masked LM instead of
fair-esm: the model's own tokenizer (residues separated by spaces for Rostlab's BERT-style
tokenizers, as their model cards do), the model's own ``model(input_ids=..., attention_mask=...).logits``,
and ``label_row`` reading token ids from the tokenizer; every family puts one CLS/BOS token first,
so ``label_row``'s ``1 + idx`` holds as written (targets that fit only).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch

from plmexit.models import families
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


def get_optimal_window(mutation_position_relative, seq_len_wo_special, model_window):
    """``proteingym/utils/scoring_utils.py``'s ``get_optimal_window``, verbatim."""
    half_model_window = model_window // 2
    if seq_len_wo_special <= model_window:
        return [0,seq_len_wo_special]
    elif mutation_position_relative < half_model_window:
        return [0,model_window]
    elif mutation_position_relative >= seq_len_wo_special - half_model_window:
        return [seq_len_wo_special - model_window, seq_len_wo_special]
    else:
        return [max(0,mutation_position_relative-half_model_window), min(seq_len_wo_special,mutation_position_relative+half_model_window)]


def overlapping_literals(model_window: int) -> SimpleNamespace:
    """The numbers of ProteinGym's ``overlapping`` loop, written there for a 1024-token window, as
    fractions of ``model_window``: at 1024, ``last`` 1022, ``ramp`` 256, ``midpoint`` 128, ``scale``
    16, ``step`` 511, ``half`` 512."""
    return SimpleNamespace(last=model_window - 2, ramp=model_window // 4, midpoint=model_window // 8, scale=model_window / 64,
                           step=model_window // 2 - 1, half=model_window // 2)


def lens_logits_fn(model, layer: int):
    """``logits`` for ``proteingym_scores``: fair-esm's forward read at ``layer``, through the final
    norm (fair-esm's representation of the last layer already has it) and the LM head."""
    def logits(tokens):
        state = model(tokens, repr_layers=[layer])["representations"][layer]
        return model.lm_head(state if layer == model.num_layers else model.emb_layer_norm_after(state))
    return logits


@torch.no_grad()
def proteingym_scores(loaded: LoadedModel, sequence: str, mutants: list[str], strategy: str, positions=None, offset_idx: int = 1,
                      model_window: int = 1024, logits=None) -> list[float]:
    """Scores of ``mutants`` by ``strategy`` (``wt-marginals`` or ``masked-marginals``) as
    compute_fitness.py computes them; ``positions`` (token indices) limits the masked loop;
    ``logits(tokens)`` replaces ``model(tokens)["logits"]``."""
    model, alphabet = loaded.model, loaded.alphabet
    device = next(model.parameters()).device
    if logits is None:
        def logits(tokens):
            return model(tokens)["logits"]
    batch_converter = alphabet.get_batch_converter()
    data = [("protein1", sequence)]
    _, _, batch_tokens = batch_converter(data)
    if strategy == "wt-marginals":
        if batch_tokens.size(1) > model_window:  # args.scoring_window == "overlapping"
            c = overlapping_literals(model_window)
            batch_size, seq_len = batch_tokens.shape #seq_len includes BOS and EOS
            token_probs = torch.zeros((batch_size,seq_len,len(alphabet))).to(device) # Note: batch_size = 1 (need to keep batch dimension to score with model though)
            token_weights = torch.zeros((batch_size,seq_len)).to(device)
            weights = torch.ones(model_window).to(device) # 1 for 256≤i<1022-256
            for i in range(1,c.ramp+1):
                weights[i] = 1 / (1 + math.exp(-(i-c.midpoint)/c.scale))
            for i in range(c.last-c.ramp,c.last+1):
                weights[i] = 1 / (1 + math.exp((i-c.last+c.midpoint)/c.scale))
            start_left_window = 0
            end_left_window = model_window - 1 #First window is indexed [0-1023]
            start_right_window = (batch_tokens.size(1) - 1) - model_window + 1 #Last index is len-1
            end_right_window = batch_tokens.size(1) - 1
            while True:
                # Left window update
                left_window_probs = torch.log_softmax(logits(batch_tokens[:,start_left_window:end_left_window+1].to(device)), dim=-1)
                token_probs[:,start_left_window:end_left_window+1] += left_window_probs * weights.view(-1,1)
                token_weights[:,start_left_window:end_left_window+1] += weights
                # Right window update
                right_window_probs = torch.log_softmax(logits(batch_tokens[:,start_right_window:end_right_window+1].to(device)), dim=-1)
                token_probs[:,start_right_window:end_right_window+1] += right_window_probs * weights.view(-1,1)
                token_weights[:,start_right_window:end_right_window+1] += weights
                if end_left_window > start_right_window:
                    #overlap between windows in that last scoring so we break from the loop
                    break
                start_left_window+=c.step
                end_left_window+=c.step
                start_right_window-=c.step
                end_right_window-=c.step
            #If central overlap not wide engouh, we add one more window at the center
            final_overlap = end_left_window - start_right_window + 1
            if final_overlap < c.step:
                start_central_window = int(seq_len / 2) - c.half
                end_central_window = start_central_window + model_window - 1
                central_window_probs = torch.log_softmax(logits(batch_tokens[:,start_central_window:end_central_window+1].to(device)), dim=-1)
                token_probs[:,start_central_window:end_central_window+1] += central_window_probs * weights.view(-1,1)
                token_weights[:,start_central_window:end_central_window+1] += weights
            #Weight normalization
            token_probs = token_probs / token_weights.view(-1,1) #Add 1 to broadcast
        else:
            token_probs = torch.log_softmax(logits(batch_tokens.to(device)), dim=-1)
    elif strategy == "masked-marginals":
        loop = range(batch_tokens.size(1)) if positions is None else sorted(positions)
        token_probs = torch.full((1, batch_tokens.size(1), len(alphabet)), float("nan"))
        for i in loop:
            batch_tokens_masked = batch_tokens.clone()
            batch_tokens_masked[0, i] = alphabet.mask_idx
            if batch_tokens.size(1) > model_window:  # args.scoring_window == "optimal"
                large_batch_tokens_masked=batch_tokens_masked.clone()
                start, end = get_optimal_window(mutation_position_relative=i, seq_len_wo_special=len(sequence)+2, model_window=model_window)
                batch_tokens_masked = large_batch_tokens_masked[:,start:end]
            else:
                start=0
            probs = torch.log_softmax(logits(batch_tokens_masked.to(device)), dim=-1)
            token_probs[0, i] = probs[0, i-start].cpu()
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    token_probs = token_probs.cpu()
    return [label_row(m, sequence, token_probs, alphabet, offset_idx) for m in mutants]


def mutated_token_positions(mutants: list[str], offset_idx: int = 1) -> np.ndarray:
    """Token indices (BOS is token 0) of the positions the mutants name."""
    return np.unique([int(m[1:-1]) - offset_idx + 1 for mutant in mutants for m in mutant.split(":")])


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
    family = families.for_model_type(model.config.model_type)
    text = " ".join(sequence) if family is not None and family.spaced else sequence  # Rostlab's tokenizers
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
