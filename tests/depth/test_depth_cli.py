"""`plmexit lens` and `plmexit zero-shot` end to end on a tiny model: outputs, their columns, error lines."""

import json

import numpy as np
import pandas as pd
import pytest

from plmexit.cli import main
from plmexit.data import tasks
from plmexit.models import fair_esm, families
from plmexit.models import manifest as model_manifest

BLAT = "BLAT_ECOLX_Stiffler_2015"


@pytest.fixture(scope="module")
def manifest(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("manifest") / "tiny.json"
    model_manifest.write_manifest({"id": "tiny", **fair_esm.resolve_model(checkpoint=tiny_model)}, path)
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_zero_shot_writes_the_long_table_proteingyms_csv_and_info(capsys, tmp_path, manifest, shared_data, tiny_model):
    root = shared_data / "proteingym"
    assay = tmp_path / f"{BLAT}.csv"
    pd.read_csv(root / "cv_folds_singles_substitutions" / f"{BLAT}.csv").iloc[:300:3].to_csv(assay, index=False)
    out = {name: tmp_path / name for name in ("long.tsv", "pg.csv", "info.json")}
    code, err = run(
        capsys, "zero-shot", "--model", manifest, "--assay", assay, "--reference", root / "reference_files" / "DMS_substitutions.csv",
        "--dms-id", BLAT, "--calibration-fraction", "0.25", "--seed", "1", "--device", "cpu", "--threads", "1",
        "--out-long", out["long.tsv"], "--out-proteingym", out["pg.csv"], "--info-out", out["info.json"],
    )
    assert code == 0, err
    long = pd.read_csv(out["long.tsv"], sep="\t")
    assert list(long.columns) == ["model", "dms_id", "layer", "method", "subset", "metric", "value"] and set(long["model"]) == {"tiny"}
    assert set(long["method"]) == {"masked_marginal", "wt_marginal", "dola", "dola_calibrated", "dola_jsd_calibrated", "sled_calibrated"}
    csv = pd.read_csv(out["pg.csv"])
    assert len(csv) == 100 and f"{tiny_model.stem}@L2:masked_marginal" in csv.columns and csv["plmexit_calibration"].sum() == 25
    info = json.loads(out["info.json"].read_text())
    assert not info["scoring"]["windowed"] and info["scoring"]["wt_marginal_windows"] == [[0, 288]] and info["engine"] == "exact" and "dola_premature_layer" in info["calibration"]
    spearman = long[(long["method"] == "masked_marginal") & (long["layer"] == 2) & (long["subset"] == "all") & (long["metric"] == "spearman")]["value"].item()
    assert spearman == pytest.approx(csv[["DMS_score", f"{tiny_model.stem}@L2:masked_marginal"]].corr(method="spearman").iloc[0, 1], abs=1e-6)

    code, err = run(
        capsys, "zero-shot", "--model", manifest, "--assay", assay, "--reference", root / "reference_files" / "DMS_substitutions.csv",
        "--dms-id", "NOT_AN_ASSAY", "--out-long", out["long.tsv"], "--out-proteingym", out["pg.csv"], "--info-out", out["info.json"],
    )
    assert code == 1 and err.count("\n") == 1 and "no assay 'NOT_AN_ASSAY'" in err


def test_lens_writes_its_three_tables_and_info(capsys, tmp_path, manifest):
    rng = np.random.default_rng(0)
    sequences = ["".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), n)) for n in (20, 35, 50, 28)]
    task = tmp_path / "task.tsv"
    tasks.write_task_table(pd.DataFrame({"id": ["a", "b", "c", "d"], "sequence": sequences, "label": ["x"] * 4, "fold": [0, 1, 0, 1]}), task)
    out = {name: tmp_path / name for name in ("lens.tsv", "skip.tsv", "exit.tsv", "info.json")}
    code, err = run(
        capsys, "lens", "--model", manifest, "--task", task, "--task-name", "toy", "--sample", "3", "--seed", "5",
        "--device", "cpu", "--out", out["lens.tsv"], "--skip-out", out["skip.tsv"], "--exit-out", out["exit.tsv"], "--info-out", out["info.json"],
    )
    assert code == 0, err
    assert list(pd.read_csv(out["lens.tsv"], sep="\t").columns) == ["model", "task", "lens", "layer", "metric", "value"]
    assert list(pd.read_csv(out["skip.tsv"], sep="\t").columns) == ["model", "task", "block", "layer", "metric", "value"]
    assert list(pd.read_csv(out["exit.tsv"], sep="\t").columns) == ["model", "task", "layer", "n_positions", "fraction", "cumulative_fraction"]
    info = json.loads(out["info.json"].read_text())
    assert info["n_sequences"] == 3 and info["seed"] == 5 and info["shallowest_agreeing_layer_final_norm"] is not None

    code, err = run(
        capsys, "lens", "--model", manifest, "--task", task, "--task-name", "toy", "--mask-fraction", "0",
        "--out", out["lens.tsv"], "--skip-out", out["skip.tsv"], "--exit-out", out["exit.tsv"], "--info-out", out["info.json"],
    )
    assert code == 1 and err.count("\n") == 1 and "--mask-fraction 0.0 must be between 0 and 1" in err


@pytest.mark.parametrize("family", families.MASKED_LM_FAMILIES)
def test_a_transformers_masked_lm_runs_lens_and_zero_shot_and_a_headless_family_is_refused(capsys, tmp_path, tiny_hub_models, shared_data, family):
    path = tmp_path / f"{family}.json"
    model_manifest.write_manifest({"id": f"{family}_hf", **model_manifest.resolve(path=tiny_hub_models[family])}, path)
    tasks.write_task_table(pd.DataFrame({"id": ["a", "b"], "sequence": ["MKTAYIAKQR", "MKKLLPTAAAG"], "label": [0.0, 1.0], "fold": [0, 1]}), tmp_path / "t.tsv")
    out = {n: tmp_path / n for n in ("l.tsv", "s.tsv", "e.tsv", "i.json")}
    code, err = run(
        capsys, "lens", "--model", path, "--task", tmp_path / "t.tsv", "--task-name", "t", "--device", "cpu",
        "--out", out["l.tsv"], "--skip-out", out["s.tsv"], "--exit-out", out["e.tsv"], "--info-out", out["i.json"],
    )
    assert code == 0, err
    lens = pd.read_csv(out["l.tsv"], sep="\t")
    final = lens[(lens.lens == "final_norm") & (lens.layer == lens.layer.max())].set_index("metric")["value"]
    assert set(lens["model"]) == {f"{family}_hf"} and final["kl_to_final"] == pytest.approx(0.0, abs=1e-6) and final["top1_agreement"] == 1.0
    info = json.loads(out["i.json"].read_text())
    assert info["model_family"] == family and "transformers_version" in info and "fair_esm_version" not in info

    root = shared_data / "proteingym"
    assay = tmp_path / f"{BLAT}.csv"
    pd.read_csv(root / "cv_folds_singles_substitutions" / f"{BLAT}.csv").iloc[:60:3].to_csv(assay, index=False)
    code, err = run(
        capsys, "zero-shot", "--model", path, "--assay", assay, "--reference", root / "reference_files" / "DMS_substitutions.csv",
        "--dms-id", BLAT, "--calibration-fraction", "0", "--device", "cpu", "--threads", "1",
        "--out-long", tmp_path / "z.tsv", "--out-proteingym", tmp_path / "z.csv", "--info-out", tmp_path / "z.json",
    )
    assert code == 0, err
    assert {"masked_marginal", "wt_marginal"} <= set(pd.read_csv(tmp_path / "z.tsv", sep="\t")["method"])


def test_a_transformers_model_without_a_head_plmexit_reads_is_refused_in_one_line(capsys, tmp_path, tiny_hub_models):
    path = tmp_path / "t5.json"
    model_manifest.write_manifest({"id": "t5_hf", **model_manifest.resolve(path=tiny_hub_models["t5"])}, path)
    tasks.write_task_table(pd.DataFrame({"id": ["a"], "sequence": ["MKTAYIAKQR"], "label": [0.0], "fold": [0]}), tmp_path / "t.tsv")
    code, err = run(
        capsys, "lens", "--model", path, "--task", tmp_path / "t.tsv", "--task-name", "t", "--device", "cpu",
        "--out", tmp_path / "l.tsv", "--skip-out", tmp_path / "s.tsv", "--exit-out", tmp_path / "e.tsv", "--info-out", tmp_path / "i.json",
    )
    assert code == 1 and len(err.strip().splitlines()) == 1 and "a t5 model; the depth diagnostics read the masked-LM head of esm, bert" in err
    assert str(path) in err and not (tmp_path / "l.tsv").exists()
