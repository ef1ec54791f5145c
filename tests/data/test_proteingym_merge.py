"""ProteinGym's supervised merge numbers: one Spearman and one MSE per assay and scheme, pooled over
every variant's out-of-fold prediction, on targets standardised by each fold's training rows, as
ProteinGym's ``proteingym/merge_supervised.py`` computes them from ProteinNPT's prediction files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from plmexit.cli import main
from plmexit.data import proteingym
from plmexit.errors import InputError
from plmexit.pipeline import select_steps
from plmexit.probing import metrics, ridge, tables
from plmexit.settings import DEFAULT_RIDGE_ALPHAS

from probe_tables import hand_selection

# Hand example: 4 variants, 2 folds. Fold 0 trains on c, d (labels 2, 6: mean 4, population sd 2);
# fold 1 on a, b (labels 1, 3: mean 2, sd 1).
IDS, LABELS, FOLDS = ["a", "b", "c", "d"], [1.0, 3.0, 2.0, 6.0], [0, 0, 1, 1]
FINAL = [2.0, 4.0, 1.0, 4.0]  # predictions of the final layer's probes
# Standardised: labels -1.5, -0.5 | 0, 4 and predictions -1, 0 | -1, 2. Ranks 1, 2, 3, 4 against
# 1.5, 3, 1.5, 4 give rho = 3 / sqrt(5 * 4.5) = 2 / sqrt(10); squared errors 0.25, 0.25, 1, 4.
FINAL_SPEARMAN, FINAL_MSE = 2 / np.sqrt(10), 5.5 / 4
# Fold 0 chose layer 0, which predicts a, b as 5, 3: standardised 0.5, -0.5. With fold 1's rows
# as above, predictions rank 3, 2, 1, 4 against labels' 1, 2, 3, 4: rho = 1 / sqrt(5 * 5) = 0.2;
# squared errors 4, 0, 1, 4.
LAYER0_FOLD0 = [5.0, 3.0]
SELECTED_SPEARMAN, SELECTED_MSE = 0.2, 9 / 4


def test_merge_scores_by_hand():
    spearman, mse = proteingym.merge_scores(LABELS, FINAL, FOLDS, LABELS, FOLDS)

    assert spearman == pytest.approx(FINAL_SPEARMAN, abs=1e-12)
    assert mse == pytest.approx(FINAL_MSE, abs=1e-12)


def test_merge_scores_are_not_the_mean_over_folds_nor_raw():
    """The old merge file averaged per-fold Spearmans (here 1.0: each fold's two points agree) and
    took MSE in raw units (here 1.75); pooling raw values would give yet another Spearman."""
    spearman, mse = proteingym.merge_scores(LABELS, FINAL, FOLDS, LABELS, FOLDS)
    per_fold = [metrics.spearman(np.array(LABELS)[f], np.array(FINAL)[f]) for f in ([0, 1], [2, 3])]

    assert np.mean(per_fold) == pytest.approx(1.0) and spearman != pytest.approx(1.0)
    assert metrics.METRICS["regression"]["mse"](LABELS, FINAL) == pytest.approx(1.75) and mse != pytest.approx(1.75)
    assert metrics.spearman(np.array(LABELS), np.array(FINAL)) != pytest.approx(spearman)


def merge_supervised_reference(dms: pd.DataFrame, fold_predictions: list[pd.DataFrame]) -> tuple[float, float]:
    """ProteinGym's pipeline re-implemented as its own code writes it (commits in docs/results.md).

    ProteinNPT ``get_train_val_test_data`` / ``preprocess_training_targets`` /
    ``preprocess_test_targets``: per test fold, the training split's ``np.nanmean`` and
    ``np.nanstd`` standardise training and test targets; the model (here: the raw prediction
    mapped the same way) predicts in that scale; each fold's ``labels_fitness`` and
    ``predictions_fitness`` are written, then concatenated. ``merge_supervised.py``: left-merge
    onto the DMS file by ``mutated_sequence`` (scores deduplicated by groupby mean), then
    ``Series.corr(method="spearman")`` and ``((t - p) ** 2).mean()`` over all rows at once.
    """
    outputs = []
    for k, predicted in enumerate(fold_predictions):
        train = dms[dms["fold"] != k]
        test = dms[dms["fold"] == k]
        mean, std = np.nanmean(train["DMS_score"]), np.nanstd(np.array(train["DMS_score"]))
        outputs.append(pd.DataFrame({
            "mutated_sequence": test["mutated_sequence"].to_numpy(),
            "labels_fitness": ((test["DMS_score"] - mean) / std).to_numpy(),
            "predictions_fitness": (predicted["prediction"].to_numpy() - mean) / std,
        }))
    df_scores = pd.concat(outputs).rename(columns={"labels_fitness": "normalized_targets", "predictions_fitness": "model_predictions"})
    df_scores = df_scores.groupby("mutated_sequence", as_index=False).mean().reset_index(drop=True)
    all_model_scores = pd.merge(dms, df_scores, on="mutated_sequence", how="left")
    spearman = all_model_scores["normalized_targets"].corr(all_model_scores["model_predictions"], method="spearman")
    mse = ((all_model_scores["normalized_targets"] - all_model_scores["model_predictions"]) ** 2).mean()
    return spearman, mse


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merge_scores_equal_merge_supervised_on_random_folds(seed):
    rng = np.random.default_rng(seed)
    n = 83
    dms = pd.DataFrame({
        "mutated_sequence": [f"seq{i}" for i in range(n)],
        # Rounded, so labels and predictions both have ties, which rank as averages on both sides.
        "DMS_score": np.round(rng.normal(3.0, 2.0, n), 1),
        "fold": rng.integers(0, 5, n),
    })
    raw = np.round(dms["DMS_score"].to_numpy() * 0.4 + rng.normal(0, 1.5, n) + 1.0, 1)
    fold_predictions = [pd.DataFrame({"prediction": raw[dms["fold"].to_numpy() == k]}) for k in range(5)]

    expected = merge_supervised_reference(dms, fold_predictions)
    ours = proteingym.merge_scores(dms["DMS_score"], raw, dms["fold"], dms["DMS_score"], dms["fold"])

    assert ours == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("width", [6, 120], ids=["primal", "dual"])
def test_standardising_afterwards_equals_training_on_standardised_targets(width):
    """What ``merge_scores`` relies on: the ridge probe is affine-equivariant in its targets,
    penalty choice included, so ProteinNPT's standardised-target predictions are ours mapped."""
    rng = np.random.default_rng(width)
    X = rng.normal(size=(60, width)) * rng.uniform(0.5, 3.0, width) + rng.normal(size=width)
    y = X[:, :3].sum(axis=1) * 2.0 + rng.normal(0, 1.0, 60) + 7.0
    folds = np.repeat(np.arange(5), 12)
    raw = ridge.ridge_folds(X, y, folds, DEFAULT_RIDGE_ALPHAS, metrics.spearman)

    for fit in raw:
        train = y[folds != fit.fold]
        mean, std = train.mean(), train.std()
        standardised = ridge.ridge_folds(X, (y - mean) / std, folds, DEFAULT_RIDGE_ALPHAS, metrics.spearman)[fit.fold]
        assert standardised.hyperparameter == fit.hyperparameter
        np.testing.assert_allclose(standardised.predictions, (fit.predictions - mean) / std, rtol=1e-9, atol=1e-9)


def test_constant_training_labels_are_an_error():
    with pytest.raises(InputError, match=r"fold 0 has no training rows with distinct labels"):
        proteingym.merge_scores([1.0], [1.0], [0], [1.0, 2.0, 2.0], [0, 1, 1])


# --- files: the step and the command --------------------------------------------------------------


def write_hand_example(tmp_path, scheme: str = "fold_modulo_5") -> tuple:
    """Selection, predictions (layers 0 and 1, 1 final) and task table of the hand example."""
    task = f"TOY.{scheme}"
    table = pd.DataFrame({"id": IDS, "sequence": ["MRVL", "MKAL", "MKVA", "MKVW"], "label": LABELS, "fold": FOLDS})
    table.to_csv(tmp_path / "task.tsv", sep="\t", index=False)
    layer0 = [*LAYER0_FOLD0, 0.0, 0.0]  # fold 1 never uses layer 0
    rows = [("m", task, layer, fold, i, label, p) for layer, values in ((0, layer0), (1, FINAL))
            for i, label, fold, p in zip(IDS, LABELS, FOLDS, values)]
    pd.DataFrame(rows, columns=tables.PREDICTION_COLUMNS).to_csv(tmp_path / "p.tsv.gz", sep="\t", index=False, compression="gzip")
    selection = hand_selection("m", task, 1, [0, 1], model_name="esm2_t6_8M_UR50D", dms_id="TOY", fold_scheme=scheme,
                               task_info={"dms_id": "TOY", "fold_scheme": scheme})
    (tmp_path / "sel.json").write_text(json.dumps(selection))
    return tmp_path / "sel.json", tmp_path / "p.tsv.gz", tmp_path / "task.tsv"


def test_summarize_proteingym_pools_each_layer_choice(tmp_path):
    selection, predictions, table = write_hand_example(tmp_path, "fold_modulo_5_built")

    written = select_steps.summarize_proteingym([selection], [predictions], [table], tmp_path / "merge.csv")

    on_disk = pd.read_csv(tmp_path / "merge.csv")
    assert on_disk.iloc[:, :3].values.tolist() == written.iloc[:, :3].values.tolist()
    np.testing.assert_allclose(on_disk[["Spearman", "MSE"]], written[["Spearman", "MSE"]], rtol=1e-6)  # written to 6 digits
    assert list(written.columns) == ["DMS_id", "model_name", "fold_variable_name", "Spearman", "MSE"]
    (final, selected) = written.to_dict("records")
    assert final["model_name"] == "esm2_t6_8M_UR50D@final" and selected["model_name"] == "esm2_t6_8M_UR50D@selected"
    assert final["fold_variable_name"] == selected["fold_variable_name"] == "fold_modulo_5_built"
    assert (final["Spearman"], final["MSE"]) == pytest.approx((FINAL_SPEARMAN, FINAL_MSE), abs=1e-12)
    assert (selected["Spearman"], selected["MSE"]) == pytest.approx((SELECTED_SPEARMAN, SELECTED_MSE), abs=1e-12)


def test_a_no_signal_task_has_a_selected_row_without_a_score(tmp_path):
    selection, predictions, table = write_hand_example(tmp_path)
    data = json.loads(selection.read_text())
    data.update(status="no_signal", folds=[{**f, "layer": None} for f in data["folds"]])
    selection.write_text(json.dumps(data))

    final, selected = select_steps.summarize_proteingym([selection], [predictions], [table], tmp_path / "merge.csv").to_dict("records")

    assert (final["Spearman"], final["MSE"]) == pytest.approx((FINAL_SPEARMAN, FINAL_MSE), abs=1e-12)
    assert selected["model_name"] == "esm2_t6_8M_UR50D@selected" and np.isnan(selected["Spearman"]) and np.isnan(selected["MSE"])


def test_summarize_proteingym_rejects_a_task_table_of_another_scheme(tmp_path):
    selection, predictions, table = write_hand_example(tmp_path)
    pd.read_csv(table, sep="\t").assign(fold=[0, 1, 0, 1]).to_csv(tmp_path / "other.tsv", sep="\t", index=False)

    with pytest.raises(InputError, match=r"p\.tsv\.gz with .*other\.tsv: the final layers' predictions \(4 rows\) do not give each of the task table's 4 test rows once, in its fold"):
        select_steps.summarize_proteingym([selection], [predictions], [tmp_path / "other.tsv"], tmp_path / "merge.csv")
    assert not (tmp_path / "merge.csv").exists()


def test_summarize_proteingym_rejects_a_non_proteingym_selection(tmp_path):
    selection, predictions, table = write_hand_example(tmp_path)
    data = json.loads(selection.read_text())
    (tmp_path / "sel2.json").write_text(json.dumps({**data, "task_info": {"dms_id": None}, "dms_id": None, "fold_scheme": None}))

    with pytest.raises(InputError, match=r"sel2\.json: not a ProteinGym task's selection"):
        select_steps.summarize_proteingym([tmp_path / "sel2.json"], [predictions], [table], tmp_path / "merge.csv")


def test_cli_summarize_proteingym(tmp_path, capsys):
    selection, predictions, table = write_hand_example(tmp_path)
    out = tmp_path / "merge.csv"

    code = main(["summarize-proteingym", str(selection), "--predictions", str(predictions), "--task-tables", str(table),
                 "--out", str(out)])

    assert code == 0, capsys.readouterr().err
    written = pd.read_csv(out)
    assert written[["DMS_id", "model_name", "fold_variable_name"]].values.tolist() == [
        ["TOY", "esm2_t6_8M_UR50D@final", "fold_modulo_5"], ["TOY", "esm2_t6_8M_UR50D@selected", "fold_modulo_5"],
    ]
    np.testing.assert_allclose(written[["Spearman", "MSE"]].to_numpy(), [[FINAL_SPEARMAN, FINAL_MSE], [SELECTED_SPEARMAN, SELECTED_MSE]], atol=1e-6)

    # A predictions file of another (model, task) is one line naming both files, and nothing is written.
    out.unlink()
    pd.read_csv(predictions, sep="\t").assign(task="OTHER").to_csv(tmp_path / "q.tsv.gz", sep="\t", index=False, compression="gzip")
    code = main(["summarize-proteingym", str(selection), "--predictions", str(tmp_path / "q.tsv.gz"), "--task-tables", str(table), "--out", str(out)])
    err = capsys.readouterr().err.splitlines()
    assert code == 1 and len(err) == 1 and "q.tsv.gz" in err[0] and "sel.json is m/TOY.fold_modulo_5" in err[0]
    assert not out.exists()

    code = main(["summarize-proteingym", str(selection), str(selection), "--predictions", str(predictions), "--task-tables", str(table), "--out", str(out)])
    assert code == 1 and "2 selections, 1 predictions files and 1 task tables" in capsys.readouterr().err


# --- per-variant files: ProteinGym's own merge script on them gives the same numbers -----------------


def merge_supervised_script(dms_dir, model_scores_location, reference: pd.DataFrame, models: dict, cv_schemes) -> pd.DataFrame:
    """``proteingym/merge_supervised.py`` (OATML-Markslab/ProteinGym bb685245f8f4) as written, its argparse
    and progress bars left out: for each scheme and assay, the DMS file left-merged with every model's
    ``{model_scores_location}/{scheme}/{location}/{DMS_id}.csv`` on the model's key (deduplicated by a
    groupby mean), the first model's label column as ``normalized_targets``, then one pandas Spearman
    and one MSE; rows ``DMS_id, model_name, fold_variable_name, Spearman, MSE``."""
    df_merged = pd.DataFrame(columns=["DMS_id", "model_name", "fold_variable_name", "Spearman", "MSE"])
    for cv_scheme in cv_schemes:
        df_spearman = reference[["DMS_id"]].copy()
        df_mse = reference[["DMS_id"]].copy()
        df_spearman[list(models)] = None
        df_mse[list(models)] = None
        for DMS_id in reference["DMS_id"]:
            DMS_filename = reference.loc[reference["DMS_id"] == DMS_id, "DMS_filename"].values[0]
            full_DMS_path = dms_dir / DMS_filename
            if not full_DMS_path.exists():
                continue
            DMS_file = pd.read_csv(full_DMS_path)
            if "mutated_sequence" not in DMS_file:
                DMS_file["mutated_sequence"] = DMS_file["mutant"]
            all_model_scores = DMS_file
            for model in models:
                mutant_merge_key = models[model]["key"]
                model_score_name = models[model]["input_score_name"]
                model_prediction_name = "_".join([model, "predictions"])
                label_name = models[model]["label_name"]
                score_path = model_scores_location / cv_scheme / models[model]["location"] / f"{DMS_id}.csv"
                if not score_path.exists():
                    continue
                df_scores = pd.read_csv(score_path)
                vars_to_keep = [mutant_merge_key, model_score_name]
                if "normalized_targets" not in all_model_scores:
                    df_scores = df_scores.rename(columns={label_name: "normalized_targets"})
                    vars_to_keep.append("normalized_targets")
                df_scores = df_scores[vars_to_keep]
                df_scores = df_scores.rename(columns={model_score_name: model_prediction_name})
                df_scores = df_scores.groupby(mutant_merge_key, as_index=False).mean().reset_index(drop=True)
                set_of_mutants_before_merge = set(all_model_scores[mutant_merge_key])
                all_model_scores = pd.merge(all_model_scores, df_scores, on=mutant_merge_key, how="left")
                set_of_mutants_after_merge = set(all_model_scores[mutant_merge_key])
                assert len(set_of_mutants_after_merge) == len(all_model_scores)
                assert set_of_mutants_after_merge == set_of_mutants_before_merge
                spearman = all_model_scores["normalized_targets"].corr(all_model_scores[model_prediction_name], method="spearman")
                mse = ((all_model_scores["normalized_targets"] - all_model_scores[model_prediction_name]) ** 2).mean()
                df_spearman.loc[df_spearman["DMS_id"] == DMS_id, model] = spearman
                df_mse.loc[df_mse["DMS_id"] == DMS_id, model] = mse
        df_spearman = df_spearman.melt(id_vars=["DMS_id"], var_name="model_name", value_name="Spearman")
        df_mse = df_mse.melt(id_vars=["DMS_id"], var_name="model_name", value_name="MSE")
        df = pd.merge(df_spearman, df_mse, on=["DMS_id", "model_name"])
        df["fold_variable_name"] = cv_scheme
        df_merged = pd.concat([df_merged, df])
    return df_merged.sort_values(by=["DMS_id", "model_name", "fold_variable_name"]).reset_index(drop=True)


def proteingym_config_entry(model_name: str) -> dict:
    """What a ProteinGym user adds to ``config.json``'s ``model_list_supervised_substitutions_DMS`` (docs/results.md)."""
    return {"input_score_name": "predictions_fitness", "label_name": "labels_fitness", "location": model_name, "key": "mutated_sequence",
            "model_type": "Sequence Embedding"}


def write_random_task(tmp_path, seed: int, n: int = 97, scheme: str = "fold_random_5", dms_id: str = "TOY_RANDOM") -> tuple:
    """A ProteinGym-like task of ``n`` variants (ties in labels and predictions), 4 layers, each fold choosing its own."""
    rng = np.random.default_rng(seed)
    target = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), 60))
    mutants = [f"{target[p]}{p + 1}{a}" for p, a in zip(rng.choice(60, n), rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), n))]
    mutants = list(dict.fromkeys(m for m in mutants if m[0] != m[-1]))
    sequences = [target[: int(m[1:-1]) - 1] + m[-1] + target[int(m[1:-1]):] for m in mutants]
    n = len(mutants)
    labels = np.round(rng.normal(0.0, 1.0, n), 1)
    folds = rng.integers(0, 5, n)
    task = f"{dms_id}.{scheme}"
    table = pd.DataFrame({"id": mutants, "sequence": sequences, "label": labels, "fold": folds})
    table.to_csv(tmp_path / f"{task}.tsv", sep="\t", index=False)
    rows = [("m", task, layer, fold, i, label, float(np.round(label * 0.3 * layer + rng.normal(0, 1), 2)))
            for layer in range(4) for i, label, fold in zip(mutants, labels, folds)]
    pd.DataFrame(rows, columns=tables.PREDICTION_COLUMNS).to_csv(tmp_path / f"{task}.p.tsv.gz", sep="\t", index=False, compression="gzip")
    chosen = [int(c) for c in rng.integers(0, 4, 5)]
    selection = hand_selection("m", task, 3, chosen, model_name="esm2_t6_8M_UR50D", dms_id=dms_id, fold_scheme=scheme,
                               task_info={"dms_id": dms_id, "fold_scheme": scheme})
    (tmp_path / f"{task}.json").write_text(json.dumps(selection))
    dms = pd.DataFrame({"mutant": mutants, "mutated_sequence": sequences, "DMS_score": labels, scheme: folds})
    (tmp_path / "DMS").mkdir(exist_ok=True)
    dms.to_csv(tmp_path / "DMS" / f"{dms_id}.csv", index=False)
    return tmp_path / f"{task}.json", tmp_path / f"{task}.p.tsv.gz", tmp_path / f"{task}.tsv"


@pytest.mark.parametrize("seed", [0, 1])
def test_proteingyms_merge_script_on_the_variant_files_gives_plmexits_numbers(tmp_path, seed):
    schemes = ("fold_random_5", "fold_modulo_5")
    written = [write_random_task(tmp_path, seed + 10 * i, scheme=scheme, dms_id=f"TOY_{i}") for i, scheme in enumerate(schemes)]
    selections, predictions, task_tables = (list(files) for files in zip(*written))

    ours = select_steps.summarize_proteingym(selections, predictions, task_tables, tmp_path / "merge.csv", variants_out=tmp_path / "variants")

    reference = pd.DataFrame({"DMS_id": ["TOY_0", "TOY_1", "NOT_RUN"], "DMS_filename": ["TOY_0.csv", "TOY_1.csv", "NOT_RUN.csv"]})
    models = {name: proteingym_config_entry(name) for name in ("esm2_t6_8M_UR50D@final", "esm2_t6_8M_UR50D@selected")}
    theirs = merge_supervised_script(tmp_path / "DMS", tmp_path / "variants", reference, models, ("fold_random_5", "fold_modulo_5", "fold_contiguous_5"))
    theirs = theirs.dropna(subset=["Spearman"]).astype({"Spearman": float, "MSE": float})

    assert len(ours) == len(theirs) == 4
    merged = ours.merge(theirs, on=["DMS_id", "model_name", "fold_variable_name"], suffixes=("", "_proteingym"))
    assert len(merged) == 4
    np.testing.assert_allclose(merged["Spearman"], merged["Spearman_proteingym"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(merged["MSE"], merged["MSE_proteingym"], rtol=0, atol=1e-12)
    variant = pd.read_csv(tmp_path / "variants" / "fold_random_5" / "esm2_t6_8M_UR50D@selected" / "TOY_0.csv")
    assert list(variant.columns) == proteingym.VARIANT_COLUMNS
    table = pd.read_csv(task_tables[0], sep="\t")
    assert variant["mutant"].tolist() == table["id"].tolist() and variant["fold"].tolist() == table["fold"].tolist()


def test_the_variant_files_of_the_hand_example(tmp_path):
    selection, predictions, table = write_hand_example(tmp_path)

    select_steps.summarize_proteingym([selection], [predictions], [table], tmp_path / "merge.csv", variants_out=tmp_path / "variants")

    final = pd.read_csv(tmp_path / "variants" / "fold_modulo_5" / "esm2_t6_8M_UR50D@final" / "TOY.csv")
    # Standardised as the hand example says: labels -1.5, -0.5 | 0, 4; final predictions -1, 0 | -1, 2.
    assert final.to_dict("list") == {
        "mutant": IDS, "mutated_sequence": ["MRVL", "MKAL", "MKVA", "MKVW"], "fold": FOLDS,
        "labels_fitness": [-1.5, -0.5, 0.0, 4.0], "predictions_fitness": [-1.0, 0.0, -1.0, 2.0],
    }
    selected = pd.read_csv(tmp_path / "variants" / "fold_modulo_5" / "esm2_t6_8M_UR50D@selected" / "TOY.csv")
    assert selected["predictions_fitness"].tolist() == [0.5, -0.5, -1.0, 2.0]


def test_a_no_signal_task_writes_no_selected_file(tmp_path):
    selection, predictions, table = write_hand_example(tmp_path)
    data = json.loads(selection.read_text())
    data.update(status="no_signal", folds=[{**f, "layer": None} for f in data["folds"]])
    selection.write_text(json.dumps(data))

    select_steps.summarize_proteingym([selection], [predictions], [table], tmp_path / "merge.csv", variants_out=tmp_path / "variants")

    assert sorted(str(p.relative_to(tmp_path / "variants")) for p in (tmp_path / "variants").rglob("*.csv")) == ["fold_modulo_5/esm2_t6_8M_UR50D@final/TOY.csv"]
