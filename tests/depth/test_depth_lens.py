"""Logit lens, block skipping and exit layers, checked against fair-esm's own forward."""

import copy

import numpy as np
import pytest
import torch

from plmexit.depth import lens
from plmexit.depth.heads import FairEsmMaskedLM
from plmexit.errors import InputError

RESIDUES = list("ACDEFGHIKLMNPQRSTVWY")


@pytest.fixture(scope="module")
def sequences():
    rng = np.random.default_rng(0)
    return ["".join(rng.choice(RESIDUES, n)) for n in (25, 40, 60, 33, 70, 18)]


def test_mask_sample_is_seeded_and_masks_a_fraction(sequences):
    ids = [f"s{i}" for i in range(len(sequences))]
    a = lens.mask_sample(ids, sequences + sequences[:2], 4, 0.15, 7, 1022)  # duplicates are sampled once
    b = lens.mask_sample(ids + ["x", "y"], sequences + sequences[:2], 4, 0.15, 7, 1022)
    assert a.ids == b.ids and all(np.array_equal(x, y) for x, y in zip(a.masked, b.masked))
    assert len(set(a.residues)) == 4
    for residues, masked in zip(a.residues, a.masked):
        assert len(masked) == max(1, round(0.15 * len(residues))) and len(set(masked)) == len(masked)
    cropped = lens.mask_sample(["long"], ["A" * 50], 1, 0.15, 0, 20)
    assert cropped.n_cropped == 1 and len(cropped.residues[0]) == 20 and cropped.info()["n_cropped"] == 1
    with pytest.raises(InputError, match="--mask-fraction 1.5 must be between 0 and 1"):
        lens.mask_sample(ids, sequences, 2, 1.5, 0, 1022)


def test_exit_layer_is_where_the_top1_settles_for_good():
    top1 = np.array([[1, 2, 3, 3], [2, 2, 1, 3], [1, 2, 1, 3], [2, 2, 1, 3]])  # rows: layers 0..3; last row is final
    assert lens.exit_layers(top1).tolist() == [3, 0, 1, 0]


def test_lens_tables_match_fair_esms_forward(tiny_loaded, sequences):
    lm = FairEsmMaskedLM(tiny_loaded)
    sample = lens.mask_sample([f"s{i}" for i in range(len(sequences))], sequences, 6, 0.2, 1, 1022)
    result = lens.analyse(lm, sample, max_tokens=150)  # several batches
    L = lm.num_layers
    table = result.lens.set_index(["lens", "layer", "metric"])["value"]
    assert table[("final_norm", L, "kl_to_final")] == 0.0 and table[("final_norm", L, "top1_agreement")] == 1.0

    # the same numbers from fair-esm's own forward, one sequence at a time
    model, alphabet = tiny_loaded.model, tiny_loaded.alphabet
    kl, agree, correct, entropy = np.zeros(L + 1), np.zeros(L + 1), np.zeros(L + 1), np.zeros(L + 1)
    n = 0
    with torch.no_grad():
        for residues, masked in zip(sample.residues, sample.masked):
            tokens = alphabet.get_batch_converter()([("s", residues)])[2]
            tokens[0, masked + 1] = alphabet.mask_idx
            out = model(tokens, repr_layers=list(range(L + 1)))
            final = torch.log_softmax(out["logits"][0, masked + 1], -1)
            for k in range(L + 1):
                state = out["representations"][k][0, masked + 1]
                lp = torch.log_softmax(model.lm_head(state if k == L else model.emb_layer_norm_after(state)), -1)
                kl[k] += float((final.exp() * (final - lp)).sum())
                agree[k] += float((lp.argmax(-1) == final.argmax(-1)).sum())
                correct[k] += sum(int(t) == alphabet.get_idx(residues[p]) for t, p in zip(lp.argmax(-1), masked))
                entropy[k] += float(-(lp.exp() * lp).sum())
            n += len(masked)
    for k in range(L + 1):
        assert table[("final_norm", k, "kl_to_final")] == pytest.approx(kl[k] / n, abs=1e-5)
        assert table[("final_norm", k, "top1_agreement")] == pytest.approx(agree[k] / n)
        assert table[("final_norm", k, "top1_accuracy")] == pytest.approx(correct[k] / n)
        assert table[("final_norm", k, "entropy")] == pytest.approx(entropy[k] / n, abs=1e-5)
        assert table[("final_norm", k, "n_positions")] == n
    assert table[("raw", L, "kl_to_final")] > 0  # without the final norm the last layer is not the output

    exits = result.exit
    assert exits["n_positions"].sum() == n and exits["cumulative_fraction"].iloc[-1] == pytest.approx(1.0)
    agreement = [table[("final_norm", k, "top1_agreement")] for k in range(L + 1)]
    assert result.summary["shallowest_agreeing_layer_final_norm"] == next(k for k, a in enumerate(agreement) if a >= 0.9)
    # an exited position agrees at every later layer, so the exit CDF never exceeds the agreement
    assert all(c <= a + 1e-12 for c, a in zip(exits["cumulative_fraction"], agreement))


def test_skipping_the_last_block_is_the_lens_of_the_layer_before(tiny_loaded, sequences):
    lm = FairEsmMaskedLM(tiny_loaded)
    sample = lens.mask_sample([f"s{i}" for i in range(len(sequences))], sequences, 3, 0.15, 2, 1022)
    result = lens.analyse(lm, sample)
    L = lm.num_layers
    skip = result.skip.set_index(["block", "layer", "metric"])["value"]
    lens_kl = result.lens.set_index(["lens", "layer", "metric"])["value"][("final_norm", L - 1, "kl_to_final")]
    assert skip[(L, L, "final_kl_mean")] == pytest.approx(lens_kl, rel=1e-6)
    assert skip[(L, L, "final_kl_max")] >= skip[(L, L, "final_kl_mean")]
    assert sorted(result.skip.loc[result.skip["block"] == 1, "layer"].unique()) == list(range(1, L + 1))
    assert (result.skip.loc[result.skip["metric"] == "hidden_relative_change", "value"] > 0).all()
    assert lens.analyse(lm, sample, skip_blocks=False).skip.empty


def test_layer_0s_lens_at_masked_positions_is_constant_and_the_final_norms_bias_sets_it(tiny_loaded, sequences):
    """Token dropout zeroes a masked position's state 0, so its lens is ``head(0)`` raw and
    ``head(bias)`` through the final norm: equal only while the bias is zero."""
    from plmexit.depth.heads import lens_logits

    loaded = copy.deepcopy(tiny_loaded)  # the session's model stays as it is
    lm = FairEsmMaskedLM(loaded)
    sample = lens.mask_sample([f"s{i}" for i in range(len(sequences))], sequences, 2, 0.3, 4, 1022)
    tokens = lm.encode(sample.residues[:1])
    columns = torch.as_tensor(sample.masked[0] + lm.offset)
    tokens[0, columns] = lm.mask_id
    norm = loaded.model.emb_layer_norm_after
    with torch.no_grad():
        state0 = next(lm.layer_states(tokens))[0, columns]
        assert torch.count_nonzero(state0) == 0 and torch.count_nonzero(norm.bias) == 0  # a fresh model's norm has a zero bias
        torch.testing.assert_close(lens_logits(lm, state0, norm=True), lens_logits(lm, state0, norm=False), rtol=0, atol=0)
        unbiased = lens.analyse(lm, sample, skip_blocks=False).lens.set_index(["lens", "layer", "metric"])["value"]
        norm.bias.copy_(torch.linspace(-2, 2, norm.bias.numel()))
        normed, raw = lens_logits(lm, state0, norm=True), lens_logits(lm, state0, norm=False)
        torch.testing.assert_close(normed, lm.head(norm.bias).expand_as(normed))  # head(bias) at every masked position
        torch.testing.assert_close(raw, lm.head(torch.zeros_like(norm.bias)).expand_as(raw))  # head(0)
        assert (normed - raw).abs().max() > 0.1
        biased = lens.analyse(lm, sample, skip_blocks=False).lens.set_index(["lens", "layer", "metric"])["value"]
    assert unbiased[("final_norm", 0, "kl_to_final")] == pytest.approx(unbiased[("raw", 0, "kl_to_final")], abs=1e-6)
    assert abs(biased[("final_norm", 0, "kl_to_final")] - biased[("raw", 0, "kl_to_final")]) > 1e-3
