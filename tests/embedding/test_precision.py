"""Compute precisions: what runs where (falling back to float32 with a logged reason, and the store
saying what ran), int8's deviation from fp32 per layer, and, on a real assay, that no precision
moves probe scores, the deployed layer or the gain beyond fold-to-fold noise
(``probing.agreement``; the full comparison is ``benchmarks/precision_science.py``)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from test_embed import SEQUENCES, collect, reference_embeddings
from test_embed_task import write_task
from threadpoolctl import threadpool_limits

from plmexit.data import proteingym
from plmexit.data.datasets import DEEPLOC_HEADER, DEEPLOC_MEMBRANE
from plmexit.data.loading import assign_folds
from plmexit.embedding import engine, fast_esm2, generic, store
from plmexit.embedding import precision as precisions
from plmexit.embedding.options import EmbedSettings
from plmexit.models import families
from plmexit.models import manifest as model_manifest
from plmexit.pipeline import model_steps
from plmexit.probing import agreement, probes, tables
from plmexit.probing.folds import DEPLOY_FOLD

# int8 (per-channel weights, per-batch activations, attention output projections float32) measured
# at most 1.1% of a pooled vector's largest component on a random ESM2-35M architecture (1.5% with
# every linear layer int8; esm-cpp int8 1.3-1.4%: benchmarks/results/int8_choice_*.json) and on
# the 2-layer test model (0.8%); 2.5e-2 leaves about 2x headroom. Through a transformers model's own
# forward (the same int8 linear layers) the tiny random models measured 0.03% (BERT) to 2.4% (T5).
INT8_RTOL = 2.5e-2
INT8_GENERIC_RTOL = 4e-2


def relative_error_per_layer(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    return (np.abs(actual - expected) / np.abs(expected).max(axis=-1, keepdims=True)).max(axis=(1, 2))


# --- what runs where -----------------------------------------------------------------------------


@pytest.mark.parametrize(("requested", "flags", "ran"), [
    ("float32", frozenset(), "float32"),
    ("bfloat16", frozenset({"avx512_bf16"}), "bfloat16"),
    ("bfloat16", frozenset({"amx_bf16"}), "bfloat16"),
    ("bfloat16", frozenset({"avx2"}), "float32"),
    ("float16", frozenset({"avx512_bf16"}), "float32"),
    ("float16", frozenset({"avx512_fp16"}), "float16"),
    ("int8", frozenset({"avx2"}), "int8"),
])
def test_a_reduced_precision_runs_on_a_cpu_only_where_it_is_native(requested, flags, ran):
    resolved = precisions.resolve(requested, "cpu", flags)

    assert (resolved.requested, resolved.ran) == (requested, ran)
    assert bool(resolved.reason) == (ran != requested)


def test_int8_is_cpu_only():
    resolved = precisions.resolve("int8", "cuda:0")
    assert resolved.ran == "float32" and "CPU-only" in resolved.reason


def test_unknown_precision():
    with pytest.raises(ValueError, match=r"unknown precision 'int4'; use one of float32, bfloat16, float16, int8"):
        precisions.resolve("int4", "cpu")


def test_the_store_records_what_ran_not_what_was_asked(tmp_path, tiny_model, tiny_model_sha256, monkeypatch, caplog):
    manifest = tmp_path / "model.json"
    manifest.write_text(json.dumps({"id": "tiny", "name": tiny_model.stem, "source": "checkpoint", "checkpoint": str(tiny_model), "sha256": tiny_model_sha256}))
    task = write_task(tmp_path / "task.csv", 12)
    monkeypatch.setattr(precisions, "cpu_flags", lambda: frozenset({"avx2"}))  # a CPU without bf16

    with caplog.at_level("WARNING"):
        model_steps.embed_task(manifest, task, tmp_path / "bf16.h5", EmbedSettings(precision="bfloat16"), "float32")
    model_steps.embed_task(manifest, task, tmp_path / "fp32.h5", EmbedSettings(), "float32")

    attrs = store.read_info(tmp_path / "bf16.h5").attrs
    assert (attrs["precision"], attrs["precision_requested"]) == ("float32", "bfloat16")
    assert "avx512_bf16" in attrs["precision_fallback_reason"]
    assert "embed.precision bfloat16 on cpu: running float32 instead" in caplog.text
    np.testing.assert_array_equal(store.read_layer(tmp_path / "bf16.h5", 2), store.read_layer(tmp_path / "fp32.h5", 2))


@pytest.mark.parametrize("precision", ["bfloat16", "int8"])
def test_a_precision_that_moves_the_science_says_so(monkeypatch, caplog, precision):
    monkeypatch.setattr(precisions, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    with caplog.at_level("WARNING"):
        assert precisions.resolve_and_log(precision, "cpu").ran == precision
    assert f"embed.precision {precision}: on variant sets" in caplog.text and "use float32 for ProteinGym-style tasks" in caplog.text
    assert ("on DeepLoc (membrane vs soluble) it also moved the deployed layer" in caplog.text) == (precision == "int8")


# --- int8: deviation from fp32 per layer ---------------------------------------------------------


def test_int8_stays_within_its_stated_deviation_at_every_layer(tiny_loaded, tiny_model):
    reference = reference_embeddings(tiny_model, SEQUENCES)
    encoder = engine.make_encoder(tiny_loaded, "cpu", "int8")
    assert encoder.precision == "int8" and encoder.resolved.reason == ""

    embedded, _ = collect(engine.embed_pooled(tiny_loaded, SEQUENCES, EmbedSettings(precision="int8", max_tokens=30), encoder=encoder), len(SEQUENCES))

    per_layer = relative_error_per_layer(embedded, reference)
    assert per_layer[0] < 1e-6  # the token embedding is not quantised
    assert np.all(per_layer[1:] <= INT8_RTOL) and np.all(per_layer[1:] > 1e-5)  # it really ran in int8


@pytest.mark.parametrize("family", families.HUB_TEST_MODEL_FAMILIES)
def test_int8_reaches_the_generic_encoder(tiny_hub_models, tiny_hub_loaded, family):
    """transformers models: every ``nn.Linear`` but the attention output projections becomes an int8 linear, hooks still pool each block."""
    settings = EmbedSettings(max_tokens=64)
    expected, _ = collect(engine.embed_pooled(tiny_hub_loaded[family], SEQUENCES, settings), len(SEQUENCES))
    loaded = model_manifest.load(model_manifest.resolve(path=tiny_hub_models[family]))  # a fresh copy: the encoder quantises it
    encoder = generic.HookedEncoder(loaded, "cpu", "int8")
    kept = [name for name, m in encoder.module.named_modules() if type(m) is torch.nn.Linear]
    assert kept and all(precisions.keeps_float32(name) for name in kept)  # one per block, found by name in every family
    assert len(kept) == len({id(b) for b in loaded.blocks}) and any(isinstance(m, precisions.Int8Linear) for m in encoder.module.modules())

    actual, _ = collect(engine.embed_pooled(loaded, SEQUENCES, settings, encoder=encoder), len(SEQUENCES))

    per_layer = relative_error_per_layer(actual, expected)
    assert np.all(per_layer <= INT8_GENERIC_RTOL) and per_layer.max() > 1e-5


# --- the science: probe results on a real assay --------------------------------------------------


def test_agreement_calls_a_tie_a_tie_and_a_move_a_move():
    def table(scores):  # scores[layer][fold] -> a probe table with deploy-fold inner scores = mean test score
        rows = [("m", "t", k, f, "spearman", v) for k, row in enumerate(scores) for f, v in enumerate(row)]
        rows += [("m", "t", k, f, "inner_spearman", v) for k, row in enumerate(scores) for f, v in enumerate(row)]
        rows += [("m", "t", k, DEPLOY_FOLD, "inner_spearman", float(np.mean(row))) for k, row in enumerate(scores)]
        return pd.DataFrame(rows, columns=tables.PROBE_COLUMNS)

    reference = [[0.10, 0.12, 0.08], [0.50, 0.40, 0.60], [0.48, 0.42, 0.57], [0.30, 0.31, 0.29]]  # deploys layer 1
    tie = [[0.10, 0.12, 0.08], [0.49, 0.40, 0.59], [0.50, 0.41, 0.60], [0.30, 0.31, 0.29]]  # deploys layer 2, tied with 1
    moved = [[0.10, 0.12, 0.08], [0.20, 0.22, 0.18], [0.48, 0.42, 0.57], [0.30, 0.31, 0.29]]  # layer 1 lost 0.3
    deeper = [[0.10, 0.12, 0.08], [0.50, 0.40, 0.60], [0.48, 0.42, 0.57], [0.62, 0.52, 0.72]]  # deploys layer 3

    same = agreement.compare(table(reference), table(tie), "spearman")
    other = agreement.compare(table(reference), table(moved), "spearman")
    elsewhere = agreement.compare(table(reference), table(deeper), "spearman")

    assert same["reference_deployed_layer"] == 1 and same["reference_tied_layers"] == [1, 2]
    assert same["deployed_layer"] == 2 and same["unchanged"]
    assert not other["checks"]["layer_scores_within_noise"] and not other["unchanged"]
    assert elsewhere["deployed_layer"] == 3 and not elsewhere["checks"]["deployed_layer_tied"]


# A few-second slice of a real assay: every variant of BLAT_ECOLX at positions 24..38 (about 280), cut to residues 1..45.
BLAT_POSITIONS, BLAT_RESIDUES = (24, 38), 45


@pytest.fixture(scope="module")
def blat(shared_data) -> pd.DataFrame:
    table = pd.read_csv(shared_data / "proteingym" / "cv_folds_singles_substitutions" / "BLAT_ECOLX_Stiffler_2015.csv")
    table["position"] = [proteingym.mutated_positions(m)[0] for m in table["mutant"]]
    table = table[table["position"].between(*BLAT_POSITIONS)].reset_index(drop=True)
    table["mutated_sequence"] = table["mutated_sequence"].str[:BLAT_RESIDUES]
    return table


def blat_probe_table(loaded, blat: pd.DataFrame, precision: str) -> pd.DataFrame:
    """The probe table of the BLAT slice from ``precision`` embeddings, under the modulo scheme (as the pipeline probes it)."""
    sequences = blat["mutated_sequence"].tolist()
    y, folds, positions = blat["DMS_score"].to_numpy(), blat["fold_modulo_5"].to_numpy(), blat["position"].to_numpy()
    settings = probes.ProbeSettings("regression", "spearman", inner_split="modulo")
    return probe_table(loaded, "blat", sequences, y, folds, settings, precision, positions)


def probe_table(loaded, task: str, sequences: list[str], y, folds, settings, precision: str, positions=None) -> pd.DataFrame:
    """Every layer's fold metrics from ``precision`` embeddings (that precision even where embed would fall back)."""
    encoder = fast_esm2.FastEncoder(loaded, "cpu", precision)
    X, _ = collect(engine.embed_pooled(loaded, sequences, EmbedSettings(max_tokens=2000), encoder=encoder), len(sequences))
    with threadpool_limits(1, user_api="blas"):  # as plmexit probe: small logistic fits are many times slower on a threaded BLAS
        rows = [("m", task, k, f, metric, v) for k in range(X.shape[0]) for f, metric, v in
                probes.fold_metrics(probes.probe_layer(X[k], y, folds, settings, positions), y, settings)]
    return pd.DataFrame(rows, columns=tables.PROBE_COLUMNS)


@pytest.fixture(scope="module")
def blat_float32(tiny_loaded, blat) -> pd.DataFrame:
    return blat_probe_table(tiny_loaded, blat, "float32")


@pytest.mark.parametrize("precision", ["bfloat16", "float16", "int8"])
def test_no_precision_moves_probe_results_on_a_real_assay(tiny_loaded, blat, blat_float32, precision):
    """fp32 and ``precision`` embeddings of a real assay (tiny random ESM2): scores per layer,
    deployed layer and gain agree within fold noise (``probing.agreement``). On this 45-residue
    slice a substitution moves a pooled vector by about 2% of its scale, well above every
    precision's rounding; on the whole 286-residue target (0.35%) bf16 and int8 do move the
    results (benchmarks/precision_science.py), which is why they warn."""
    result = agreement.compare(blat_float32, blat_probe_table(tiny_loaded, blat, precision), "spearman")

    assert result["unchanged"], result["checks"]


# A few-second slice of a real whole-protein task: 80 DeepLoc proteins (a seeded draw of its membrane-bound
# and soluble ones), cut to their first 60 residues, membrane vs soluble.
DEEPLOC_PROTEINS, DEEPLOC_RESIDUES = 80, 60


@pytest.fixture(scope="module")
def deeploc(shared_data) -> pd.DataFrame:
    rows = []
    for block in (shared_data / "deeploc" / "deeploc_our_val_set.fasta").read_text().split(">")[1:]:
        header, *lines = block.strip().splitlines()
        membrane = DEEPLOC_MEMBRANE.get(DEEPLOC_HEADER.match(header)["membrane"])
        if membrane is not None:
            rows.append((membrane, "".join(lines)[:DEEPLOC_RESIDUES]))
    table = pd.DataFrame(rows, columns=["membrane", "sequence"])
    table = table.iloc[np.sort(np.random.default_rng(0).choice(len(table), DEEPLOC_PROTEINS, replace=False))].reset_index(drop=True)
    table["fold"] = assign_folds(table["membrane"].to_numpy(), "classification", 5, 0)
    return table


def deeploc_probe_table(loaded, deeploc: pd.DataFrame, precision: str) -> pd.DataFrame:
    sequences, y, folds = deeploc["sequence"].tolist(), deeploc["membrane"].to_numpy(), deeploc["fold"].to_numpy()
    return probe_table(loaded, "deeploc", sequences, y, folds, probes.ProbeSettings("classification", "accuracy"), precision)


@pytest.fixture(scope="module")
def deeploc_float32(tiny_loaded, deeploc) -> pd.DataFrame:
    return deeploc_probe_table(tiny_loaded, deeploc, "float32")


@pytest.mark.parametrize("precision", ["bfloat16", "float16", "int8"])
def test_no_precision_moves_probe_results_on_deeploc(tiny_loaded, deeploc, deeploc_float32, precision):
    """Whole proteins differ by far more than any precision's rounding, so membrane-vs-soluble probe
    scores, deployed layer and gain agree with fp32's within fold noise (as on the quick DeepLoc run
    of benchmarks/precision_science.py)."""
    result = agreement.compare(deeploc_float32, deeploc_probe_table(tiny_loaded, deeploc, precision), "accuracy")

    assert result["unchanged"], result["checks"]
