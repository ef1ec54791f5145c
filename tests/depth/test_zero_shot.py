"""Zero-shot scores per layer: ProteinGym's ESM loop at the last layer, batching, crops, calibration, tables."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from plmexit.data import proteingym
from plmexit.depth import metrics, reference, zero_shot
from plmexit.depth.heads import FairEsmMaskedLM
from plmexit.errors import EmbedError, InputError

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
    assert plan.contexts == [(0, len(target))]  # BLAT (286 residues) fits: ProteinGym's input exactly
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


def test_a_long_target_is_scored_through_the_variant_crop(tiny_loaded, monkeypatch):
    lm = FairEsmMaskedLM(tiny_loaded)
    rng = np.random.default_rng(1)
    target = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), 120))
    mutations = [[(target[p - 1], p, "W" if target[p - 1] != "W" else "A")] for p in (50, 55, 61, 70)]
    plan = zero_shot.plan_scoring(target, mutations, 40)
    assert plan.contexts == [(39, 79)] and not plan.crop.windowed  # a 40-residue window centred on 0-based 49..69
    # the crop's scores are the scores of the cropped target with the positions moved
    index = zero_shot.index_mutations(mutations, plan, lm.residue_ids)
    cropped = [[(w, p - 39, m) for w, p, m in v] for v in mutations]
    crop_plan = zero_shot.plan_scoring(target[39:79], cropped, 40)
    np.testing.assert_array_equal(
        zero_shot.variant_scores(zero_shot.masked_marginal_log_probs(lm, target, plan), index),
        zero_shot.variant_scores(zero_shot.masked_marginal_log_probs(lm, target[39:79], crop_plan), zero_shot.index_mutations(cropped, crop_plan, lm.residue_ids)),
    )
    # a span wider than the window: overlapping windows, each position in the window where it is most central
    wide = [[(target[p - 1], p, "W" if target[p - 1] != "W" else "A")] for p in (3, 30, 60, 90, 118)]
    plan = zero_shot.plan_scoring(target, wide, 40, overlap=10)
    assert plan.crop.windowed and all(stop - start == 40 for start, stop in plan.contexts)
    for p, c in zip(plan.positions, plan.context_of):
        start, stop = plan.contexts[c]
        assert start <= p < stop
        assert min(p - start, stop - 1 - p) == max(min(p - s, t - 1 - p) for s, t in plan.contexts)
    # each position's log-probabilities are those of its window read as a target of its own
    wild = zero_shot.wt_marginal_log_probs(lm, target, plan)
    masked = zero_shot.masked_marginal_log_probs(lm, target, plan, 2)
    for i, (p, c) in enumerate(zip(plan.positions, plan.context_of)):
        start, stop = plan.contexts[c]
        alone = zero_shot.ScoringPlan(plan.crop, np.array([p - start]), [(0, stop - start)], np.array([0]))
        np.testing.assert_allclose(wild[:, i], zero_shot.wt_marginal_log_probs(lm, target[start:stop], alone)[:, 0], atol=1e-6)
        np.testing.assert_allclose(masked[:, i], zero_shot.masked_marginal_log_probs(lm, target[start:stop], alone)[:, 0], atol=1e-6)


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

    def small_device(lm, wild, positions):
        if len(positions) > 3:
            raise torch.OutOfMemoryError("pretend")
        return real(lm, wild, positions)

    monkeypatch.setattr(zero_shot, "_masked_batch", small_device)
    np.testing.assert_allclose(zero_shot.masked_marginal_log_probs(lm, target, plan, 6), expected, atol=1e-6)
    assert "retrying with 3" in caplog.text and "retrying with 1" not in caplog.text

    def no_device(lm, wild, positions):
        raise torch.OutOfMemoryError("pretend")

    monkeypatch.setattr(zero_shot, "_masked_batch", no_device)
    with pytest.raises(EmbedError, match="one masked copy of 33 residues does not fit"):
        zero_shot.masked_marginal_log_probs(lm, target, plan, 4)


@pytest.mark.parametrize("family", ["esm", "bert", "albert", "esmc"])
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
    assert plan.contexts == [(0, len(target))]
    index = zero_shot.index_mutations(mutations, plan, lm.residue_ids)
    masked = zero_shot.variant_scores(zero_shot.masked_marginal_log_probs(lm, target, plan, batch_size=4), index)[-1]
    wild = zero_shot.variant_scores(zero_shot.wt_marginal_log_probs(lm, target, plan), index)[-1]
    positions = reference.mutated_token_positions(mutants)
    np.testing.assert_allclose(masked, reference.transformers_scores(model, tokenizer, target, mutants, "masked-marginals", positions), rtol=0, atol=1e-5)
    np.testing.assert_allclose(wild, reference.transformers_scores(model, tokenizer, target, mutants, "wt-marginals"), rtol=0, atol=1e-5)
    assert np.ptp(masked) > 0 and not np.allclose(masked, wild)
