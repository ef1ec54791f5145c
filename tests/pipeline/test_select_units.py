"""`plmexit select` on a ProteinGym assay: the gain's interval resamples mutated positions under every
fold scheme, and the smallest test fold is counted in positions, the unit the interval resamples."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from plmexit.pipeline import select_steps
from plmexit.probing import choice, probes, tables

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
SETTINGS = probes.ProbeSettings("regression", "spearman", ridge_alphas=(1.0, 100.0))


def _select(tmp_path, fold_scheme: str | None, n_positions: int = 15, per_position: int = 6) -> dict:
    """A planted assay of ``n_positions`` x ``per_position`` single substitutions in five random folds, probed at layers 0..2, selected."""
    rng = np.random.default_rng(0)
    positions = np.repeat(np.arange(1, n_positions + 1), per_position)
    ids = [f"M{p}{AMINO_ACIDS[k]}" for p, k in zip(positions, np.tile(np.arange(per_position), n_positions))]
    y = rng.normal(size=n_positions)[positions - 1] + 0.5 * rng.normal(size=len(ids))
    folds = rng.permutation(np.arange(len(ids)) % 5)
    rows, predictions = [], []
    for layer in range(3):
        X = rng.normal(size=(len(ids), 4))
        X[:, 0] += y if layer == 1 else 0.0
        fits = probes.probe_layer(X, y, folds, SETTINGS)
        rows.extend(("m", "a", layer, fold, metric, value) for fold, metric, value in probes.fold_metrics(fits, y, SETTINGS))
        predictions.extend(pd.DataFrame(dict(zip(tables.PREDICTION_COLUMNS, ("m", "a", layer, fit.fold, np.array(ids)[fit.test], y[fit.test], fit.predictions))))
                           for fit in fits)
    pd.DataFrame(rows, columns=tables.PROBE_COLUMNS).to_csv(tmp_path / "probes.tsv", sep="\t", index=False)
    pd.concat(predictions).to_csv(tmp_path / "predictions.tsv.gz", sep="\t", index=False, compression="gzip")
    (tmp_path / "cost.json").write_text(json.dumps({"model": "m", "model_name": "m", "n_layers": 2, "flops": [0, 1, 2], "seconds": [0.0, 1.0, 2.0],
                                                    "layer_norm": "raw", "n_truncated": 0}))
    (tmp_path / "info.json").write_text(json.dumps({"split": "five folds", "n_sequences": len(ids), "dms_id": "TOY" if fold_scheme else None,
                                                    "fold_scheme": fold_scheme}))
    return select_steps.select_task(tmp_path / "probes.tsv", tmp_path / "predictions.tsv.gz", tmp_path / "cost.json", tmp_path / "info.json",
                                    "regression", "spearman", 0.0, 50, 0, tmp_path / "selection.json")


@pytest.mark.parametrize("fold_scheme", ["fold_random_5", "fold_random_5_built", "fold_modulo_5", "fold_contiguous_5_built"])
def test_a_proteingym_assay_resamples_and_counts_mutated_positions_under_every_scheme(tmp_path, fold_scheme):
    selection = _select(tmp_path, fold_scheme)

    predictions = pd.read_csv(tmp_path / "predictions.tsv.gz", sep="\t")
    final = predictions[predictions.layer == 2]
    positions = final.groupby("fold")["id"].agg(lambda ids: ids.str[1:-1].nunique())
    assert selection.test_unit == "positions" and selection.bootstrap.unit.startswith("mutated positions")
    assert selection.min_test_fold_size == positions.min() < final.groupby("fold").size().min()
    # 18 variants but fewer than MIN_TEST_FOLD_ITEMS positions in the smallest fold: too few units to tell.
    assert final.groupby("fold").size().min() < choice.MIN_TEST_FOLD_ITEMS and selection.verdict == "too_little_data"
    assert json.loads((tmp_path / "selection.json").read_text())["test_unit"] == "positions"


def test_enough_variants_on_too_few_positions_is_too_little_data(tmp_path):
    """Each test fold holds about 24 variants (above MIN_TEST_FOLD_ITEMS) on at most 8 positions: counted as variants
    (before) the verdict came from the interval; counted as positions, the unit the interval resamples, it is too little data."""
    selection = _select(tmp_path, "fold_random_5", n_positions=8, per_position=15)

    assert selection.test_unit == "positions" and selection.min_test_fold_size <= 8
    assert selection.verdict == "too_little_data"


def test_a_task_without_positions_counts_items(tmp_path):
    selection = _select(tmp_path, None)

    assert selection.test_unit == "items" and selection.bootstrap.unit.startswith("test items")
    assert selection.min_test_fold_size == 18  # 90 rows in five folds of 18
