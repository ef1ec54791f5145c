"""The MaskedLM view of fair-esm's ESM2: states, final norm and head reproduce the model's own forward."""

import pytest
import torch

from plmexit.depth.heads import FairEsmMaskedLM, lens_logits


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
