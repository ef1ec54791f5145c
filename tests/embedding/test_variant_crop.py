"""Variant sets longer than the model's window: one crop over the mutations, never a silent cut.

A synthetic 120-residue target, embedded with ``truncate=40`` by the tiny model, stands for a
ProteinGym target longer than ESM2's 1022 residues whose mutations all lie past the window.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plmexit.cli import main
from plmexit.data.tasks import TASK_COLUMNS
from plmexit.embedding import crops, engine, inputs, store
from plmexit.embedding.options import EmbedSettings
from plmexit.errors import EmbedError
from plmexit.pipeline import model_steps, probe_steps
from plmexit.probing import metrics, options, ridge

RESIDUES = "ACDEFGHIKLMNPQRSTVWY"
LENGTH, WINDOW = 120, 40


def variant_table(path: Path, positions, seed: int = 0, shared: tuple[int, str] | None = None, length: int = LENGTH) -> Path:
    """Single substitutions of one random target at 0-based ``positions`` (ids ``A61C`` as
    ProteinGym's), plus the substitution ``shared`` (0-based position, residue) in every variant."""
    rng = np.random.default_rng(seed)
    target = "".join(rng.choice(list(RESIDUES), size=length))
    ids, sequences = [], []
    for p in positions:
        new = rng.choice([r for r in RESIDUES if r != target[p] and (shared is None or p != shared[0])])
        residues = list(target)
        residues[p] = new
        mutant = f"{target[p]}{p + 1}{new}"
        if shared is not None:
            residues[shared[0]] = shared[1]
            mutant = f"{target[shared[0]]}{shared[0] + 1}{shared[1]}:{mutant}"
        ids.append(mutant)
        sequences.append("".join(residues))
    n = len(sequences)
    table = pd.DataFrame({"id": ids, "sequence": sequences, "label": rng.normal(size=n).round(4), "fold": np.arange(n) % 5})
    table[TASK_COLUMNS].to_csv(path, sep="\t", index=False)
    return path


@pytest.fixture
def manifest(tmp_path, tiny_model, tiny_model_sha256) -> Path:
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"id": "tiny", "name": tiny_model.stem, "source": "checkpoint", "checkpoint": str(tiny_model), "sha256": tiny_model_sha256}))
    return path


def embedded(loaded, sequences: list[str], settings: EmbedSettings) -> np.ndarray:
    """``(L + 1, N, E)`` from ``engine.embed_pooled``, rows in input order."""
    out = np.empty((loaded.num_layers + 1, len(sequences), loaded.embed_dim), dtype=np.float32)
    for index, block in engine.embed_pooled(loaded, sequences, settings):
        out[:, index] = block
    return out


def all_layers(path: Path) -> np.ndarray:
    info = store.read_info(path)
    return np.stack([store.read_layer(path, k) for k in range(info.n_layers + 1)])


# --- choosing the crop ---------------------------------------------------------------------------


def sequences_mutated_at(*positions, length: int = LENGTH) -> list[str]:
    target = "A" * length
    return [target] + [target[:p] + "C" + target[p + 1 :] for p in positions]


@pytest.mark.parametrize(
    ("positions", "expected"),
    [
        ((80, 95), (68, 108, False)),  # span 80..95 centred: start (80 + 96 - 40) // 2
        ((119,), (80, 120, False)),  # centred past the end, moved back inside the target
        ((2,), (0, 40, False)),  # centred before the start, moved forward
        ((50, 110), (50, 111, True)),  # wider than the window: exactly the span, as windows
        ((), (0, 40, False)),  # nothing differs: the first window (ids are then checked against it)
    ],
)
def test_the_crop_covers_the_mutated_span(positions, expected):
    crop = crops.variant_crop(sequences_mutated_at(*positions), EmbedSettings(truncate=WINDOW, overlap=8), "t.tsv")

    assert (crop.start, crop.stop, crop.windowed) == expected
    assert all(crop.covers(p) for p in positions)
    assert crop.n_mutated == len(positions)


def test_a_target_that_fits_and_window_mode_keep_the_whole_target():
    short = crops.variant_crop(sequences_mutated_at(3, length=30), EmbedSettings(truncate=WINDOW), "t.tsv")
    window = crops.variant_crop(sequences_mutated_at(100), EmbedSettings(long_sequences="window", window=WINDOW, overlap=8), "t.tsv")

    assert (short.start, short.stop, short.windowed) == (0, 30, False)
    assert (window.start, window.stop, window.windowed, window.settings(EmbedSettings(long_sequences="window", window=WINDOW, overlap=8)).window) == (
        0, LENGTH, True, WINDOW,
    )


def test_variants_of_unequal_length_are_an_error():
    with pytest.raises(EmbedError, match=r"^t.tsv: row 3 has 119 residues but row 1 has 120; .* drop --variant-crop"):
        crops.variant_crop(sequences_mutated_at(5) + ["A" * 119], EmbedSettings(truncate=WINDOW), "t.tsv")


# --- embedding through the crop ------------------------------------------------------------------


def test_mutations_past_the_window_are_embedded_through_one_crop(tmp_path, manifest, tiny_loaded):
    task = variant_table(tmp_path / "assay.tsv", positions=range(70, 100))
    settings = EmbedSettings(truncate=WINDOW, overlap=8)

    model_steps.embed_task(manifest, task, tmp_path / "cut.h5", settings, "float32")  # the old way: the first 40 residues
    model_steps.embed_task(manifest, task, tmp_path / "crop.h5", settings, "float32", variant_crop=True)
    model_steps.embed_task(manifest, task, tmp_path / "s0.h5", settings, "float32", shard=0, shards=2, variant_crop=True)
    model_steps.embed_task(manifest, task, tmp_path / "s1.h5", settings, "float32", shard=1, shards=2, variant_crop=True)

    cut, cropped = all_layers(tmp_path / "cut.h5"), all_layers(tmp_path / "crop.h5")
    assert np.ptp(cut, axis=1).max() == 0  # every variant identical: what the crop fixes
    assert len({cropped[-1, i].tobytes() for i in range(cropped.shape[1])}) == cropped.shape[1]  # all variants differ at layer L
    table = pd.read_csv(task, sep="\t")
    direct = embedded(tiny_loaded, [s[65:105] for s in table["sequence"]], settings)
    np.testing.assert_array_equal(cropped, direct)  # = the cropped sequences embedded directly (70..99 centred: 65..104)
    attrs = store.read_info(tmp_path / "crop.h5").attrs
    assert (attrs["variant_crop"], attrs["crop_start"], attrs["crop_stop"], attrs["crop_windowed"], attrs["n_mutated_positions"]) == (True, 65, 105, False, 30)
    assert attrs["truncation"].startswith("every variant embedded through the same crop, residues 66..105 (1-based, inclusive) of the 120-residue target")
    assert attrs["n_truncated"] == 30
    # Every shard computes the crop over the whole table, so the shards gather into the same store.
    probe_steps.gather_embeddings([tmp_path / "s0.h5", tmp_path / "s1.h5"], tmp_path / "gathered.h5")
    np.testing.assert_array_equal(all_layers(tmp_path / "gathered.h5"), cropped)
    assert store.read_info(tmp_path / "gathered.h5").attrs["crop_start"] == 65


def test_a_span_wider_than_the_window_is_embedded_as_windows_over_it(tmp_path, manifest, tiny_loaded):
    task = variant_table(tmp_path / "assay.tsv", positions=range(50, 111, 4))
    settings = EmbedSettings(truncate=WINDOW, overlap=8)

    model_steps.embed_task(manifest, task, tmp_path / "crop.h5", settings, "float32", variant_crop=True)

    table = pd.read_csv(task, sep="\t")
    windows = EmbedSettings(truncate=WINDOW, long_sequences="window", window=WINDOW, overlap=8)
    direct = embedded(tiny_loaded, [s[50:111] for s in table["sequence"]], windows)
    np.testing.assert_allclose(all_layers(tmp_path / "crop.h5"), direct, rtol=1e-5, atol=1e-6)
    attrs = store.read_info(tmp_path / "crop.h5").attrs
    assert (attrs["crop_start"], attrs["crop_stop"], attrs["crop_windowed"], attrs["crop_window"], attrs["crop_overlap"]) == (50, 111, True, 40, 8)
    assert "as windows of 40 overlapping by 8" in attrs["truncation"]


def test_a_mutation_outside_the_crop_is_an_error(tmp_path, manifest):
    # Every variant also carries Q5X: the variants never differ there, so the crop over where they
    # differ (past residue 70) leaves it out; the mutant ids say it is there.
    task = variant_table(tmp_path / "assay.tsv", positions=range(70, 100), shared=(4, "W"))

    with pytest.raises(EmbedError, match=rf"^{re.escape(str(task))}: row 1 \(\w5W:\w71\w\) mutates position 5, outside residues 66..105 that are embedded; "):
        model_steps.embed_task(manifest, task, tmp_path / "crop.h5", EmbedSettings(truncate=WINDOW, overlap=8), "float32", variant_crop=True)
    assert not (tmp_path / "crop.h5").exists()


def test_every_mutant_id_is_checked_against_the_crop_not_only_those_before_a_non_mutant(caplog):
    crop = crops.VariantCrop(LENGTH, 65, 105, 30, False, WINDOW, 8)
    caplog.set_level(logging.INFO, logger=inputs.log.name)
    inputs.check_crop_covers(crop, ["A70C", "WT", "p3", "G80D:K71W"], "t.tsv")  # inside: no error
    assert "2 of 4 ids are not ProteinGym mutants (first 'WT')" in caplog.text
    for ids in (["WT", "A70C", "A5W"], ["A70C", "_wt", "G80D:A5W"], ["p1", "p2", "A5W"]):
        with pytest.raises(EmbedError, match=rf"^t\.tsv: row 3 \({re.escape(ids[2])}\) mutates position 5, outside residues 66..105"):
            inputs.check_crop_covers(crop, ids, "t.tsv")


def test_the_cli_names_the_assay_and_position_in_one_line(tmp_path, manifest, capsys):
    task = variant_table(tmp_path / "assay.tsv", positions=range(70, 100), shared=(4, "W"))

    code = main(["embed", "--model", str(manifest), "--task", str(task), "--out", str(tmp_path / "crop.h5"), "--device", "cpu",
                 "--truncate", "40", "--overlap", "8", "--variant-crop", "--no-progress"])

    err = capsys.readouterr().err.splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith(f"plmexit embed: error: {task}: row 1 (") and "mutates position 5, outside residues 66..105" in err[0]


def test_cost_counts_and_times_the_cropped_sequences(tmp_path, manifest):
    task = variant_table(tmp_path / "assay.tsv", positions=range(70, 100))

    result = model_steps.measure_cost(manifest, task, tmp_path / "cost.json", EmbedSettings(truncate=WINDOW, overlap=8), 4, 1, 0, variant_crop=True)

    assert (result["n_sequences"], result["tokens"], result["sample_tokens"]) == (30, 30 * (40 + 2), 4 * (40 + 2))
    assert (result["crop_start"], result["crop_stop"]) == (65, 105)
    assert result["truncation"].startswith("every variant embedded through the same crop")


# --- precision -----------------------------------------------------------------------------------


def test_probe_predictions_from_the_variant_store_equal_fp32_ones_on_a_long_target(tmp_path, manifest, tiny_loaded):
    # 300 residues, no crop: a single substitution moves the pooled vector by about 1/300.
    task = variant_table(tmp_path / "assay.tsv", positions=range(0, 300, 3), length=300)
    settings = EmbedSettings(truncate=1022)
    model_steps.embed_task(manifest, task, tmp_path / "variants.h5", settings, "float32", variant_crop=True)  # as the planner stores them
    model_steps.embed_task(manifest, task, tmp_path / "half.h5", settings, "float16", variant_crop=True)  # embed.dtype's default
    table = pd.read_csv(task, sep="\t")
    fp32 = embedded(tiny_loaded, list(table["sequence"]), settings)
    y, folds = table["label"].to_numpy(), table["fold"].to_numpy()

    def predictions(X):
        return np.concatenate([fit.predictions for fit in ridge.ridge_folds(X, y, folds, options.DEFAULT_RIDGE_ALPHAS, metrics.spearman)])

    for layer in (1, 2):
        direct = predictions(fp32[layer])
        # Tolerance: float64 ridge on identical float32 inputs; only summation order may differ.
        np.testing.assert_allclose(predictions(store.read_layer(tmp_path / "variants.h5", layer)), direct, rtol=1e-9, atol=1e-12)
        # The float16 store moves them by far more: why variant sets are not stored in embed.dtype.
        assert np.abs(predictions(store.read_layer(tmp_path / "half.h5", layer)) - direct).max() > 1e-3
