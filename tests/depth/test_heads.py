"""The MaskedLM view of fair-esm's ESM2: states, final norm and head reproduce the model's own forward."""

import numpy as np
import pytest
import torch

from plmexit.depth.heads import FairEsmMaskedLM, lens_logits
from plmexit.models import families


def masked_batch(lm):
    tokens = lm.encode(["MKTAYIAKQRQISFVKSHFSRQ", "ACDEFGHIKLMNPQ", "WY"])  # padded rows
    tokens[0, 3] = tokens[1, 5] = tokens[1, 6] = lm.mask_id
    return tokens


def test_exact_engine_lens_at_the_last_layer_is_the_models_own_logits(tiny_loaded):
    lm = FairEsmMaskedLM(tiny_loaded)
    tokens = masked_batch(lm)
    L = lm.num_layers
    with torch.inference_mode():
        states = list(lm.layer_states(tokens))
        own = tiny_loaded.model(tokens, repr_layers=list(range(L + 1)))
        lens = lens_logits(lm, states[L])
        normed = lm.final_norm(states[L])
    assert len(states) == L + 1
    assert torch.equal(lens, own["logits"])
    # fair-esm's representations: raw states below L, the final-normed state at L
    for k in range(L):
        assert torch.equal(states[k], own["representations"][k])
    assert torch.equal(normed, own["representations"][L])


def test_fused_engine_equals_the_models_logits_to_rounding(tiny_loaded):
    lm = FairEsmMaskedLM(tiny_loaded, engine="fused")
    tokens = masked_batch(lm)
    with torch.inference_mode():
        states = list(lm.layer_states(tokens))
        own = tiny_loaded.model(tokens)["logits"]
        lens = lens_logits(lm, states[-1])
    residues = tokens.ne(tiny_loaded.alphabet.padding_idx)
    torch.testing.assert_close(lens[residues], own[residues], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("engine", ["exact", "fused"])
def test_skipping_a_block_passes_the_residual_stream_through(tiny_loaded, engine):
    lm = FairEsmMaskedLM(tiny_loaded, engine=engine)
    tokens = masked_batch(lm)
    with torch.inference_mode():
        full = list(lm.layer_states(tokens))
        skipped = list(lm.layer_states(tokens, skip=1))
    assert torch.equal(skipped[0], full[0]) and torch.equal(skipped[1], full[0])
    assert not torch.allclose(skipped[2], full[2])
    with pytest.raises(ValueError, match="skip must be a block in 1..2"):
        next(lm.layer_states(tokens, skip=3))
    with pytest.raises(ValueError, match="unknown engine"):
        FairEsmMaskedLM(tiny_loaded, engine="turbo")


def test_encode_lays_out_tokens_as_fair_esms_batch_converter(tiny_loaded):
    lm = FairEsmMaskedLM(tiny_loaded)
    sequences = ["MKTAY", "AC"]
    _, _, expected = tiny_loaded.alphabet.get_batch_converter()([("a", sequences[0]), ("b", sequences[1])])
    assert torch.equal(lm.encode(sequences), expected)
    assert lm.offset == 1 and set(lm.residue_ids) == set("ACDEFGHIKLMNPQRSTVWY")


@pytest.fixture(scope="module")
def tiny_transformers_esm(tmp_path_factory):
    """A random 2-layer transformers EsmForMaskedLM with ESM2's vocabulary and its own tokenizer."""
    from transformers import EsmConfig, EsmForMaskedLM, EsmTokenizer

    vocab = tmp_path_factory.mktemp("hf_esm") / "vocab.txt"
    tokens = ["<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWCXBUZO.-", "<null_1>", "<mask>"]
    vocab.write_text("\n".join(tokens) + "\n")
    tokenizer = EsmTokenizer(str(vocab))
    torch.manual_seed(0)
    config = EsmConfig(
        vocab_size=len(tokens), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, position_embedding_type="rotary",
        token_dropout=True, mask_token_id=tokenizer.mask_token_id, pad_token_id=tokenizer.pad_token_id, emb_layer_norm_before=False,
        max_position_embeddings=1026,
    )
    return EsmForMaskedLM(config).eval(), tokenizer


def test_transformers_esm_lens_at_the_last_layer_is_its_own_logits(tiny_transformers_esm):
    from plmexit.depth.heads import TransformersMaskedLM

    model, tokenizer = tiny_transformers_esm
    lm = TransformersMaskedLM(model, tokenizer, "tiny_hf")
    tokens = masked_batch(lm)
    attention = tokens.ne(tokenizer.pad_token_id).long()
    with torch.inference_mode():
        states = list(lm.layer_states(tokens))
        own = model(input_ids=tokens, attention_mask=attention, output_hidden_states=True)
        lens = lens_logits(lm, states[-1])
        skipped = list(lm.layer_states(tokens, skip=2))
    assert len(states) == 3 and torch.equal(lens, own.logits)
    for k in range(2):
        assert torch.equal(states[k], own.hidden_states[k])
    assert torch.equal(skipped[2], states[1]) and torch.equal(skipped[1], states[1])
    assert lm.offset == 1 and tokens[0, 0].item() == tokenizer.cls_token_id


def test_transformers_esm_zero_shot_equals_a_one_position_loop(tiny_transformers_esm):
    from plmexit.depth import zero_shot
    from plmexit.depth.heads import TransformersMaskedLM

    model, tokenizer = tiny_transformers_esm
    lm = TransformersMaskedLM(model, tokenizer, "tiny_hf")
    target = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"
    mutations = [[("K", 2, "A")], [("Y", 5, "W"), ("Q", 11, "E")], [("F", 14, "L")], [("K", 2, "R")]]
    plan = zero_shot.plan_scoring(target, mutations, lm.max_residues)
    scores = zero_shot.variant_scores(zero_shot.masked_marginal_log_probs(lm, target, plan, 3), zero_shot.index_mutations(mutations, plan, lm.residue_ids))
    # compute_fitness.py's masked-marginals loop, with the transformers model's own logits
    wild = tokenizer([target], return_tensors="pt")["input_ids"]
    expected = []
    with torch.no_grad():
        for variant in mutations:
            score = 0.0
            for w, p, m in variant:
                masked = wild.clone()
                masked[0, p] = tokenizer.mask_token_id
                lp = torch.log_softmax(model(input_ids=masked).logits, dim=-1)[0, p]
                score += (lp[tokenizer.convert_tokens_to_ids(m)] - lp[tokenizer.convert_tokens_to_ids(w)]).item()
            expected.append(score)
    np.testing.assert_allclose(scores[-1], expected, rtol=0, atol=1e-5)


def test_transformers_bert_lens_at_the_last_layer_is_its_own_logits(tmp_path):
    """ProtBert's layout: a post-norm BERT (no final norm), residues separated by spaces."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    from plmexit.depth.heads import TransformersMaskedLM

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"LAGVESIKRDTPNQFYMHCWXUBZO"]) + "\n")
    tokenizer = BertTokenizer(str(vocab), do_lower_case=False)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    model = BertForMaskedLM(config).eval()
    lm = TransformersMaskedLM(model, tokenizer, "tiny_bert")
    tokens = lm.encode(["MKTAYIAK", "ACD"])
    assert tokens[0, 1].item() == tokenizer.convert_tokens_to_ids("M") and lm.max_residues == 62
    tokens[0, 3] = lm.mask_id
    with torch.inference_mode():
        states = list(lm.layer_states(tokens))
        own = model(input_ids=tokens, attention_mask=tokens.ne(tokenizer.pad_token_id).long()).logits
        lens = lens_logits(lm, states[-1])
    assert len(states) == 3 and torch.equal(lm.final_norm(states[-1]), states[-1]) and torch.equal(lens, own)



@pytest.mark.parametrize("family", families.MASKED_LM_FAMILIES)  # every family with a head (hub_heads)
def test_every_head_family_lens_at_the_last_layer_is_its_own_logits_and_skipping_passes_through(hub_heads, family):
    from plmexit.depth.heads import TransformersMaskedLM

    model, tokenizer = hub_heads[family]
    assert type(model).__name__ == {"esm": "EsmForMaskedLM", "bert": "BertForMaskedLM", "albert": "AlbertForMaskedLM", "esmc": "EsmcForMaskedLM"}[family]
    lm = TransformersMaskedLM(model, tokenizer, f"tiny_{family}")
    tokens = masked_batch(lm)
    assert lm.num_layers == 2 and tokens[0, 0].item() == tokenizer.cls_token_id and tokens[0, 1].item() == lm.residue_ids["M"]
    with torch.inference_mode():
        states = list(lm.layer_states(tokens))
        own = model(input_ids=tokens, attention_mask=tokens.ne(tokenizer.pad_token_id).long(), output_hidden_states=True)
        lens = lens_logits(lm, states[-1])
        skipped = {i: list(lm.layer_states(tokens, skip=i)) for i in (1, 2)}
    assert len(states) == 3 and torch.equal(lens, own.logits)
    assert torch.equal(skipped[1][1], states[0]) and torch.equal(skipped[2][2], skipped[2][1]) and torch.equal(skipped[2][1], states[1])
    assert not torch.allclose(skipped[1][2], states[2])
    if family == "albert":
        # One shared layer applied twice: skipping application 1 leaves application 2, which maps state 0 to state 1.
        assert lm._blocks[0] is lm._blocks[1] and torch.equal(skipped[1][2], states[1])
    with pytest.raises(ValueError, match="skip must be a block in 1..2"):
        next(lm.layer_states(tokens, skip=3))
