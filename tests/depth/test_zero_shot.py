"""Zero-shot scores per layer: ProteinGym's ESM loop at the last layer, batching, long-target windows, calibration, tables."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from plmexit.data import proteingym
from plmexit.depth import metrics, reference, zero_shot
from plmexit.depth.heads import FairEsmMaskedLM
from plmexit.errors import EmbedError, InputError
from plmexit.models import families

BLAT = "BLAT_ECOLX_Stiffler_2015"


@pytest.fixture(scope="module")
def blat_subset(shared_data, tmp_path_factory):
    """60 real single substitutions of BLAT_ECOLX (every fourth row: several share a position) and
    12 double mutants made of them, as an assay file, with the real reference table."""
    root = shared_data / "proteingym"
    raw = pd.read_csv(root / "cv_folds_singles_substitutions" / f"{BLAT}.csv")
    singles = raw.iloc[:240:4]
    doubles = pd.DataFrame({
        "mutant": [f"{a}:{b}" for a, b in zip(singles["mutant"].iloc[:12], singles["mutant"].iloc[30:42])],
        "DMS_score": np.linspace(-2, 1, 12), "DMS_score_bin": [0, 1] * 6,
    })
    doubles = doubles[[len({int(m[1:-1]) for m in d.split(":")}) == 2 for d in doubles["mutant"]]]
    assay = pd.concat([singles[["mutant", "DMS_score", "DMS_score_bin"]], doubles], ignore_index=True)
    path = tmp_path_factory.mktemp("assay") / f"{BLAT}.csv"
    assay.to_csv(path, index=False)
    return path, root / "reference_files" / "DMS_substitutions.csv"


@pytest.fixture(scope="module")
def proteingym_loop(tiny_loaded, blat_subset):
    """ProteinGym's own scores of the subset (``plmexit.depth.reference``): masked and wild-type marginals."""
    table, target, _ = proteingym.read_zero_shot_assay(*blat_subset, BLAT)
    mutants = list(table["mutant"])
    masked = reference.proteingym_scores(tiny_loaded, target, mutants, "masked-marginals", reference.mutated_token_positions(mutants))
    return np.array(masked), np.array(reference.proteingym_scores(tiny_loaded, target, mutants, "wt-marginals"))


def test_last_layer_scores_equal_proteingyms_loop(tiny_loaded, blat_subset, proteingym_loop):
    path, ref = blat_subset
    table, target, mutations = proteingym.read_zero_shot_assay(path, ref, BLAT)
    assert any(":" in m for m in table["mutant"])
    lm = FairEsmMaskedLM(tiny_loaded)
    plan = zero_shot.plan_scoring(target, mutations, lm.max_residues)
    assert not plan.windowed and plan.wt_windows == [(0, len(target) + 2)]  # BLAT (286 residues) fits: ProteinGym's input exactly
    index = zero_shot.index_mutations(mutations, plan, lm.residue_ids)
    expected_masked, expected_wild = proteingym_loop
    L = lm.num_layers
    for batch_size in (7, 64):  # several batches, and one
        masked = zero_shot.variant_scores(zero_shot.masked_marginal_log_probs(lm, target, plan, batch_size), index)
        np.testing.assert_allclose(masked[L], expected_masked, rtol=0, atol=1e-5)
    wild = zero_shot.variant_scores(zero_shot.wt_marginal_log_probs(lm, target, plan), index)
    np.testing.assert_allclose(wild[L], expected_wild, rtol=0, atol=1e-5)
    # every layer, batched or one position per forward, through the same lens
    one = zero_shot.variant_scores(zero_shot.masked_marginal_log_probs(lm, target, plan, 1), index)
    np.testing.assert_allclose(masked, one, rtol=0, atol=1e-5)
    assert not np.allclose(masked[0], masked[L])


def test_fused_engine_scores_equal_the_loop_to_rounding(tiny_loaded, blat_subset, proteingym_loop):
    path, ref = blat_subset
    table, target, mutations = proteingym.read_zero_shot_assay(path, ref, BLAT)
    lm = FairEsmMaskedLM(tiny_loaded, engine="fused")
    plan = zero_shot.plan_scoring(target, mutations, lm.max_residues)
    masked = zero_shot.variant_scores(zero_shot.masked_marginal_log_probs(lm, target, plan), zero_shot.index_mutations(mutations, plan, lm.residue_ids))
    np.testing.assert_allclose(masked[-1], proteingym_loop[0], rtol=0, atol=1e-4)


def test_proteingyms_window_rules_at_its_own_1024_tokens():
    """plmexit's windows are ProteinGym's: ``get_optimal_window`` as copied in ``reference``, and the
    ``overlapping`` loop's weights and numbers, written out here with ProteinGym's literals."""
    literal = np.ones(1024)
    for i in range(1, 257):
        literal[i] = 1 / (1 + math.exp(-(i - 128) / 16))
    for i in range(1022 - 256, 1023):
        literal[i] = 1 / (1 + math.exp((i - 1022 + 128) / 16))
    np.testing.assert_array_equal(zero_shot.overlap_weights(1024), literal)
    assert vars(reference.overlapping_literals(1024)) == {"last": 1022, "ramp": 256, "midpoint": 128, "scale": 16, "step": 511, "half": 512}
    assert zero_shot.overlap_constants(1024) == {"ramp": 256, "midpoint": 128, "scale": 16, "step": 511, "half": 512}
    for tokens, window in ((1302, 1024), (2002, 1024), (5000, 1024), (2002, 64), (300, 64), (64, 64), (65, 64), (101, 33)):
        for i in range(tokens):
            assert list(zero_shot.optimal_window(i, tokens, window)) == reference.get_optimal_window(i, tokens, window)
    # 2,002 tokens: the first and last 1024 meet with a 46-token overlap, under 511, so a central window is added
    assert zero_shot.overlapping_windows(2002, 1024) == [(0, 1024), (978, 2002), (489, 1513)]
    assert zero_shot.overlapping_windows(1302, 1024) == [(0, 1024), (278, 1302)]


def _mutant(target, position, rng):
    new = rng.choice([a for a in "ACDEFGHIKLMNPQRSTVWY" if a != target[position - 1]])
    return f"{target[position - 1]}{position}{new}"


# Many short windows, and ProteinGym's 1024-token window over 2,002 tokens: its first and last windows and the
# central one added where they overlap too little (two windows alone, as at 1,300 residues, are the same code
# path and are covered by test_proteingyms_window_rules_at_its_own_1024_tokens: its windows at 1,302 tokens).
@pytest.mark.parametrize("length, window", [(2000, 64), (2000, 1024)])
def test_a_long_target_is_scored_through_proteingyms_windows_at_every_layer(tiny_loaded, length, window):
    """On a target longer than the model, every layer's masked and wild-type marginals equal
    ``reference.proteingym_scores``, ProteinGym's loop transcribed step by step with the layer's
    lens in place of the logits (``--scoring-window optimal`` and ``overlapping``): positions
    at both ends and on either side of the half-window boundaries, and a triple mutant whose span
    is wider than the window."""
    rng = np.random.default_rng(length + window)
    target = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), length))
    half, tokens = window // 2, length + 2
    # token i is residue i (1-based): the first window holds tokens < half, the last tokens >= tokens - half
    positions = [1, 2, half - 1, half, half + 1, length // 2, tokens - half - 2, tokens - half - 1, tokens - half, length - 1, length]
    mutants = [_mutant(target, p, rng) for p in positions]
    mutants += [":".join(_mutant(target, p, rng) for p in (5, length // 2 + 3, length - 4)), ":".join(_mutant(target, p, rng) for p in (half + 7, half + 9))]
    mutations = [proteingym.parse_mutant(m, target, "synthetic.csv", 2, "synthetic") for m in mutants]
    lm = FairEsmMaskedLM(tiny_loaded)
    lm.max_residues = window - 2
    plan = zero_shot.plan_scoring(target, mutations, lm.max_residues)
    assert plan.windowed and plan.info()["model_window_tokens"] == window and plan.info()["target_tokens"] == tokens
    assert all(stop - start in (window, 2 * half) for start, stop in plan.masked_windows)
    assert plan.masked_windows[0].tolist() == [0, window] and plan.masked_windows[-1].tolist() == [tokens - window, tokens]
    index = zero_shot.index_mutations(mutations, plan, lm.residue_ids)
    masked = zero_shot.variant_scores(zero_shot.masked_marginal_log_probs(lm, target, plan, 7), index)
    wild = zero_shot.variant_scores(zero_shot.wt_marginal_log_probs(lm, target, plan, 3), index)
    np.testing.assert_allclose(zero_shot.variant_scores(zero_shot.masked_marginal_log_probs(lm, target, plan, 1), index), masked, rtol=0, atol=1e-5)
    np.testing.assert_allclose(zero_shot.variant_scores(zero_shot.wt_marginal_log_probs(lm, target, plan, 1), index), wild, rtol=0, atol=1e-5)
    token_positions = reference.mutated_token_positions(mutants)
    for k in range(lm.num_layers + 1):
        logits = reference.lens_logits_fn(tiny_loaded.model, k)
        expected = reference.proteingym_scores(tiny_loaded, target, mutants, "masked-marginals", token_positions, model_window=window, logits=logits)
        np.testing.assert_allclose(masked[k], expected, rtol=0, atol=1e-5)
        expected = reference.proteingym_scores(tiny_loaded, target, mutants, "wt-marginals", model_window=window, logits=logits)
        np.testing.assert_allclose(wild[k], expected, rtol=0, atol=1e-5)
    # the whole target read at once (no window) gives other numbers: the windows are what differs
    whole = zero_shot.plan_scoring(target, mutations, length)
    assert not whole.windowed
    assert not np.allclose(zero_shot.variant_scores(zero_shot.masked_marginal_log_probs(lm, target, whole, 7), index), masked, atol=1e-3)


def test_calibrated_methods_choose_on_the_calibration_subset_only(tiny_loaded, blat_subset):
    path, ref = blat_subset
    table, target, mutations = proteingym.read_zero_shot_assay(path, ref, BLAT)
    lm = FairEsmMaskedLM(tiny_loaded)
    truth = table["DMS_score"].to_numpy()
    scores, _ = zero_shot.score_variants(lm, target, mutations, truth, calibration_fraction=0.4, seed=3)
    calibration = scores.calibration
    assert calibration.sum() == round(0.4 * len(truth))
    L = lm.num_layers
    for j in range(L):
        np.testing.assert_array_equal(scores.columns[("dola", j)], scores.columns[("masked_marginal", L)] - scores.columns[("masked_marginal", j)])
    chosen = scores.choices["dola_premature_layer"]
    rho = [metrics.spearman(truth[calibration], scores.columns[("dola", j)][calibration]) for j in range(L)]
    assert chosen == int(np.argmax(rho)) and ("dola_calibrated", chosen) in scores.columns
    assert np.isclose(sum(scores.choices["sled_weights"]), 1.0)
    best = scores.choices["best_layer"]["masked_marginal"]
    calibration_rho = [metrics.spearman(truth[calibration], scores.columns[("masked_marginal", k)][calibration]) for k in range(L + 1)]
    assert best["layer"] == int(np.argmax(calibration_rho))
    assert best["held_out_spearman"] == pytest.approx(metrics.spearman(truth[~calibration], scores.columns[("masked_marginal", best["layer"])][~calibration]))
    # DoLa's per-position choice: the bucket layer furthest from the final layer by Jensen-Shannon divergence
    assert scores.choices["dola_jsd_bucket"] in ("lower", "upper") and ("dola_jsd_calibrated", L) in scores.columns
    plan = zero_shot.plan_scoring(target, mutations, lm.max_residues)
    masked = zero_shot.masked_marginal_log_probs(lm, target, plan)
    layers = zero_shot.dola_buckets(L)[scores.choices["dola_jsd_bucket"]]
    premature = zero_shot.jsd_premature_layers(masked, layers)
    for i in range(len(plan.positions)):
        p_final = np.exp(masked[L, i].astype(float))
        divergence = [jensenshannon(p_final, np.exp(masked[j, i].astype(float))) ** 2 for j in layers]
        assert premature[i] == layers[int(np.argmax(divergence))]
    expected = []
    for variant in mutations:
        total = 0.0
        for w, p, m in variant:
            i = int(np.searchsorted(plan.positions, p - 1))
            j = premature[i]
            total += (masked[L, i, lm.residue_ids[m]] - masked[j, i, lm.residue_ids[m]]) - (masked[L, i, lm.residue_ids[w]] - masked[j, i, lm.residue_ids[w]])
        expected.append(total)
    np.testing.assert_allclose(scores.columns[("dola_jsd_calibrated", L)], expected, atol=1e-5)
    # the held-out scores do not enter any choice
    shuffled = truth.copy()
    shuffled[~calibration] = np.random.default_rng(0).permutation(shuffled[~calibration])
    again, _ = zero_shot.score_variants(lm, target, mutations, shuffled, calibration_fraction=0.4, seed=3)
    def chosen(choices):
        return {**{k: v for k, v in choices.items() if k != "best_layer"}, "best_layer": {m: b["layer"] for m, b in choices["best_layer"].items()}}

    assert chosen(again.choices) == chosen(scores.choices)
    with pytest.raises(InputError, match="both need at least 20"):
        zero_shot.score_variants(lm, target, mutations, truth, calibration_fraction=0.1, seed=3)


def test_tables_long_and_proteingym_layouts(tiny_loaded, blat_subset):
    path, ref = blat_subset
    table, target, mutations = proteingym.read_zero_shot_assay(path, ref, BLAT)
    lm = FairEsmMaskedLM(tiny_loaded)
    truth, binary = table["DMS_score"].to_numpy(), table["DMS_score_bin"].to_numpy()
    scores, _ = zero_shot.score_variants(lm, target, mutations, truth, calibration_fraction=0.3, seed=0)
    long = zero_shot.metrics_table(scores, truth, binary)
    assert set(long["metric"]) == {"spearman", "ndcg", "top_recall", "auc", "mcc", "n_variants"}
    assert set(long.loc[long["method"] == "sled_calibrated", "subset"]) == {"held_out"}
    row = long[(long["method"] == "masked_marginal") & (long["layer"] == 2) & (long["subset"] == "all") & (long["metric"] == "spearman")]
    assert row["value"].item() == pytest.approx(metrics.spearman(truth, scores.columns[("masked_marginal", 2)]))
    csv = zero_shot.proteingym_table(table, scores, "tiny", lm.num_layers)
    chosen = scores.choices["dola_premature_layer"]
    assert list(csv.columns[:5]) == ["mutant", "mutated_sequence", "DMS_score", "DMS_score_bin", "plmexit_calibration"]
    assert {"tiny@L0:masked_marginal", "tiny@L2:wt_marginal", f"tiny@L2-L{chosen}:dola", "tiny@L0-L2:sled", "tiny@L2-jsd:dola"} <= set(csv.columns)
    assert csv["plmexit_calibration"].sum() == scores.calibration.sum()


def test_reading_an_assay_checks_wild_types_and_scores(write_file, shared_data):
    ref = shared_data / "proteingym" / "reference_files" / "DMS_substitutions.csv"
    with pytest.raises(InputError, match="row 2: mutant 'A24C' says position 24 is A"):
        proteingym.read_zero_shot_assay(write_file("a.csv", "mutant,DMS_score\nA24C,0.5\n"), ref, BLAT)
    with pytest.raises(InputError, match="row 3: DMS_score 'x' is not a number"):
        proteingym.read_zero_shot_assay(write_file("b.csv", "mutant,DMS_score\nH24C,0.5\nH24Y,x\n"), ref, BLAT)
    with pytest.raises(InputError, match="no assay 'NOPE'"):
        proteingym.read_zero_shot_assay(write_file("c.csv", "mutant,DMS_score\nH24C,0.5\n"), ref, "NOPE")


def test_no_calibration_means_no_dola_or_sled_choice(tiny_loaded, blat_subset):
    table, target, mutations = proteingym.read_zero_shot_assay(*blat_subset, BLAT)
    lm = FairEsmMaskedLM(tiny_loaded)
    scores, _ = zero_shot.score_variants(lm, target, mutations, table["DMS_score"].to_numpy(), calibration_fraction=0.0)
    assert not scores.calibration.any() and "dola_premature_layer" not in scores.choices
    assert {m for m, _ in scores.columns} == {"masked_marginal", "wt_marginal", "dola"}
    long = zero_shot.metrics_table(scores, table["DMS_score"].to_numpy(), None)
    assert set(long["subset"]) == {"all"} and "auc" not in set(long["metric"])
    with pytest.raises(InputError, match="residues must be among the 20 amino acids"):
        zero_shot.index_mutations([[("A", 1, "X")]], zero_shot.plan_scoring("A" * 5, [[("A", 1, "X")]], 1022), lm.residue_ids)


def test_out_of_memory_halves_the_batch(tiny_loaded, monkeypatch, caplog):
    lm = FairEsmMaskedLM(tiny_loaded)
    target = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"
    mutations = [[(target[p - 1], p, "W")] for p in (2, 5, 9, 14, 20, 27)]
    plan = zero_shot.plan_scoring(target, mutations, lm.max_residues)
    expected = zero_shot.masked_marginal_log_probs(lm, target, plan, 6)
    real = zero_shot._masked_batch

    def small_device(lm, whole, positions, windows):
        if len(positions) > 3:
            raise torch.OutOfMemoryError("pretend")
        return real(lm, whole, positions, windows)

    monkeypatch.setattr(zero_shot, "_masked_batch", small_device)
    np.testing.assert_allclose(zero_shot.masked_marginal_log_probs(lm, target, plan, 6), expected, atol=1e-6)
    assert "retrying with 3" in caplog.text and "retrying with 1" not in caplog.text

    def no_device(lm, whole, positions, windows):
        raise torch.OutOfMemoryError("pretend")

    monkeypatch.setattr(zero_shot, "_masked_batch", no_device)
    with pytest.raises(EmbedError, match="one masked copy of 35 tokens does not fit"):
        zero_shot.masked_marginal_log_probs(lm, target, plan, 4)


@pytest.mark.parametrize("family", families.MASKED_LM_FAMILIES)
def test_transformers_heads_last_layer_scores_equal_proteingyms_loop_on_their_own_forward(hub_heads, blat_subset, family):
    """ProteinGym's ESM loop written against the transformers model's own forward and tokenizer
    (``reference.transformers_scores``) against plmexit's batched lens at L, on real BLAT variants."""
    from plmexit.depth.heads import TransformersMaskedLM

    model, tokenizer = hub_heads[family]
    table, target, mutations = proteingym.read_zero_shot_assay(*blat_subset, BLAT)
    keep = list(range(8)) + [i for i, m in enumerate(table["mutant"]) if ":" in m][:2]  # a handful: singles and doubles
    mutants, mutations = [table["mutant"].iloc[i] for i in keep], [mutations[i] for i in keep]
    lm = TransformersMaskedLM(model, tokenizer, family)
    plan = zero_shot.plan_scoring(target, mutations, lm.max_residues)
    assert not plan.windowed and plan.wt_windows == [(0, len(target) + 2)]
    index = zero_shot.index_mutations(mutations, plan, lm.residue_ids)
    masked = zero_shot.variant_scores(zero_shot.masked_marginal_log_probs(lm, target, plan, batch_size=4), index)[-1]
    wild = zero_shot.variant_scores(zero_shot.wt_marginal_log_probs(lm, target, plan), index)[-1]
    positions = reference.mutated_token_positions(mutants)
    np.testing.assert_allclose(masked, reference.transformers_scores(model, tokenizer, target, mutants, "masked-marginals", positions), rtol=0, atol=1e-5)
    np.testing.assert_allclose(wild, reference.transformers_scores(model, tokenizer, target, mutants, "wt-marginals"), rtol=0, atol=1e-5)
    assert np.ptp(masked) > 0 and not np.allclose(masked, wild)


def test_a_transformers_esm_reads_a_long_target_through_proteingyms_windows(hub_heads):
    """The windows are cut from the model's own tokens, so a transformers masked LM reads them as
    fair-esm's does: ``EsmForMaskedLM`` (fair-esm's vocabulary) against ProteinGym's loop run on its
    own forward, last layer, a 300-residue target and a 64-token window."""
    from types import SimpleNamespace

    import esm

    from plmexit.depth.heads import TransformersMaskedLM

    model, tokenizer = hub_heads["esm"]
    rng = np.random.default_rng(5)
    target = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), 300))
    mutants = [_mutant(target, p, rng) for p in (1, 31, 32, 150, 269, 270, 300)] + [":".join(_mutant(target, p, rng) for p in (3, 150, 298))]
    mutations = [proteingym.parse_mutant(m, target, "synthetic.csv", 2, "synthetic") for m in mutants]
    lm = TransformersMaskedLM(model, tokenizer, "esm")
    lm.max_residues = 62
    plan = zero_shot.plan_scoring(target, mutations, lm.max_residues)
    index = zero_shot.index_mutations(mutations, plan, lm.residue_ids)
    masked = zero_shot.variant_scores(zero_shot.masked_marginal_log_probs(lm, target, plan, 4), index)[-1]
    wild = zero_shot.variant_scores(zero_shot.wt_marginal_log_probs(lm, target, plan, 4), index)[-1]
    loaded = SimpleNamespace(model=model, alphabet=esm.data.Alphabet.from_architecture("ESM-1b"))
    assert all(tokenizer.convert_tokens_to_ids(t) == loaded.alphabet.get_idx(t) for t in ("<cls>", "<eos>", "<mask>", *"ACDEFGHIKLMNPQRSTVWY"))

    def logits(tokens):
        return model(input_ids=tokens, attention_mask=torch.ones_like(tokens)).logits

    positions = reference.mutated_token_positions(mutants)
    np.testing.assert_allclose(masked, reference.proteingym_scores(loaded, target, mutants, "masked-marginals", positions, model_window=64, logits=logits), atol=1e-5)
    np.testing.assert_allclose(wild, reference.proteingym_scores(loaded, target, mutants, "wt-marginals", model_window=64, logits=logits), atol=1e-5)
