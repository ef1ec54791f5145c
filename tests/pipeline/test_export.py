"""`plmexit export` and `plmexit predict`: the shipped model computes the probe's very features, and the shipped
probe its very predictions, on a tiny random model and tiny tasks run through the real CLI chain."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import esm
import numpy as np
import pandas as pd
import pytest
import torch
from test_cli import assert_one_error_line, run

from plmexit.cli import main
from plmexit.data import tasks
from plmexit.embedding import store
from plmexit.models import fair_esm
from plmexit.pipeline import export_steps
from plmexit.probing import folds, probes, tables
from plmexit.reporting.card import render_card

RESIDUES = np.array(list("ACDEFGHIKLMNPQRSTVWY"))


def _task_csv(path: Path, task_type: str, n: int = 30, seed: int = 0) -> Path:
    """``n`` random sequences with learnable labels of ``task_type`` (from the fraction of K and R, and of D and E)."""
    rng = np.random.default_rng(seed)
    lines = ["name,sequence,label"]
    for i in range(n):
        sequence = "".join(rng.choice(RESIDUES, size=rng.integers(8, 25)))
        charge = (sequence.count("K") + sequence.count("R")) / len(sequence)
        acid = (sequence.count("D") + sequence.count("E")) / len(sequence)
        if task_type == "regression":
            label = f"{charge:.6f}"
        elif task_type == "classification":
            label = "low" if i % 3 == 0 else "mid" if i % 3 == 1 else "high"
        else:
            label = ";".join(["basic"] * (i % 2 == 0) + ["acidic"] * (i % 3 != 1) + ["other"] * (acid + charge < 0.1)) or "none"
        lines.append(f"v{i},{sequence},{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


METRIC = {"regression": "spearman", "classification": "accuracy", "multilabel": "fmax"}


def _chain(base: Path, model: Path, task_type: str, layer_norm: str, source: str = "--checkpoint") -> dict[str, Path]:
    """prepare, embed (float32), cost, probe and select one tiny task through the CLI; the files, by name."""
    base.mkdir(parents=True)
    f = {name: base / name for name in ("model.json", "task.tsv", "info.json", "store.h5", "cost.json", "probes.tsv", "predictions.tsv.gz", "selection.json")}
    csv = _task_csv(base / "task.csv", task_type)
    steps = [
        ["fetch-model", "--id", "tiny", source, model, "--out", f["model.json"]],
        ["prepare", "--name", "toy", "--format", "csv", "--path", csv, "--type", task_type, "--id-column", "name", "--cv-folds", 3,
         "--out", f["task.tsv"], "--info-out", f["info.json"]],
        ["embed", "--model", f["model.json"], "--task", f["task.tsv"], "--out", f["store.h5"], "--device", "cpu", "--dtype", "float32",
         "--layer-norm", layer_norm, "--truncate", 20, "--max-tokens", 200, "--no-progress"],
        ["cost", "--model", f["model.json"], "--task", f["task.tsv"], "--out", f["cost.json"], "--device", "cpu", "--layer-norm", layer_norm,
         "--truncate", 20, "--sample-sequences", 2, "--repeats", 1],
        ["probe", "--embeddings", f["store.h5"], "--task", f["task.tsv"], "--type", task_type, "--metric", METRIC[task_type],
         "--model-id", "tiny", "--task-name", "toy", "--alphas", "1,10,100", "--cs", "0.01,1,100", "--out", f["probes.tsv"],
         "--predictions", f["predictions.tsv.gz"]],
        ["select", "--probes", f["probes.tsv"], "--predictions", f["predictions.tsv.gz"], "--cost", f["cost.json"], "--task-info", f["info.json"],
         "--type", task_type, "--metric", METRIC[task_type], "--bootstrap", 20, "--out", f["selection.json"]],
    ]
    for argv in steps:
        assert main([str(a) for a in argv]) == 0, argv[0]
    return f


def _deploy_at(files: dict[str, Path], layer: int) -> Path:
    """A copy of the selection that deploys ``layer``, with that layer's deploy-fold hyperparameter from the probe table."""
    selection = json.loads(files["selection.json"].read_text())
    table = pd.read_csv(files["probes.tsv"], sep="\t")
    row = table[(table.layer == layer) & (table.fold == folds.DEPLOY_FOLD) & (table.metric == probes.HYPERPARAMETER)]
    selection.update(deployed_layer=layer, deployed_hyperparameter=float(row["value"].iloc[0]))
    path = files["selection.json"].with_name(f"selection_layer{layer}.json")
    path.write_text(json.dumps(selection))
    return path


def _export(files: dict[str, Path], task_type: str, layer: int, out: Path) -> Path:
    argv = ["export", "--model", files["model.json"], "--embeddings", files["store.h5"], "--task", files["task.tsv"],
            "--selection", _deploy_at(files, layer), "--cost", files["cost.json"], "--type", task_type, "--out", out]
    assert main([str(a) for a in argv]) == 0
    return out


@pytest.fixture(scope="module")
def chains(tmp_path_factory, tiny_model):
    """Finished chains by (task type, layer-norm convention), built on first use."""
    built: dict[tuple[str, str], dict[str, Path]] = {}

    def get(task_type: str, layer_norm: str) -> dict[str, Path]:
        if (task_type, layer_norm) not in built:
            built[task_type, layer_norm] = _chain(tmp_path_factory.mktemp(f"{task_type}_{layer_norm}") / "run", tiny_model, task_type, layer_norm)
        return built[task_type, layer_norm]

    return get


@pytest.mark.parametrize("layer_norm", ["raw", "final"])
def test_the_exported_models_pooled_output_is_the_stores_layer(chains, tmp_path, layer_norm):
    files = chains("regression", layer_norm)
    table = tasks.read_task_table(files["task.tsv"])
    info = store.read_info(files["store.h5"])
    for layer in range(info.n_layers + 1):
        out = _export(files, "regression", layer, tmp_path / f"export{layer}")
        card, _ = export_steps.read_export(out)
        loaded = export_steps.load_exported_model(out, card, "cpu")
        assert loaded.num_layers == max(layer, 1) and card["feature"]["layer_norm"] == layer_norm
        settings = export_steps.recorded_settings(info.attrs, files["store.h5"])
        features = export_steps.exported_features(loaded, list(table["sequence"]), settings, layer, info.n_layers)
        np.testing.assert_allclose(features, store.read_layer(files["store.h5"], layer), rtol=1e-5, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"export{k}" for k in range(info.n_layers + 1)]  # no temporary siblings


@pytest.mark.parametrize("layer_norm", ["raw", "final"])
def test_fair_esms_own_loader_reads_the_export_and_the_cards_recipe_gives_the_feature(chains, tmp_path, layer_norm):
    files = chains("regression", layer_norm)
    out = _export(files, "regression", 1, tmp_path / "export")
    card = json.loads((out / "card.json").read_text())
    with torch.serialization.safe_globals([argparse.Namespace]):  # torch >= 2.6 loads weights only by default, as the card says
        model, alphabet = esm.pretrained.load_model_and_alphabet_local(str(out / card["model"]["file"]))
    model.eval()
    assert model.num_layers == 1 and card["feature"]["is_exported_models_last_output"] == (layer_norm == "final")
    if layer_norm == "raw":  # as the card's snippet says
        model.emb_layer_norm_after = torch.nn.Identity()
    sequence = tasks.read_task_table(files["task.tsv"])["sequence"][0][:20]
    with torch.no_grad():
        h = model(alphabet.get_batch_converter()([("p", sequence)])[2], repr_layers=[1])["representations"][1][0, 1:-1]
    np.testing.assert_allclose(h.mean(0).numpy(), store.read_layer(files["store.h5"], 1)[0], rtol=1e-5, atol=1e-5)
    readme = (out / "README.md").read_text()
    assert "emb_layer_norm_after = torch.nn.Identity()" in readme if layer_norm == "raw" else "Identity" not in readme
    # plmexit's safe loader reads it too, and the source is untouched.
    assert fair_esm.load_model(out / card["model"]["file"], card["model"]["sha256"]).num_layers == 1


def _stored(files: dict[str, Path], task_type: str) -> pd.DataFrame:
    from plmexit.pipeline.reading import read_predictions

    return read_predictions(files["predictions.tsv.gz"], task_type)


@pytest.mark.parametrize(("task_type", "layer_norm"), [("regression", "raw"), ("classification", "final"), ("multilabel", "raw")])
def test_predict_reproduces_the_probe_steps_test_predictions(chains, tmp_path, capsys, task_type, layer_norm):
    files = chains(task_type, layer_norm)
    layer = 1  # an intermediate layer: under raw, the export's last block must not be normed
    out = _export(files, task_type, layer, tmp_path / "export")
    table = tasks.read_task_table(files["task.tsv"], task_type)
    probe_table = pd.read_csv(files["probes.tsv"], sep="\t")

    # The shipped probe is the deploy fold's: refitted on every row at the hyperparameter that fold chose.
    shipped = json.loads((out / "probe.json").read_text())
    deploy = probe_table[(probe_table.layer == layer) & (probe_table.fold == folds.DEPLOY_FOLD) & (probe_table.metric == probes.HYPERPARAMETER)]
    assert shipped["hyperparameter"]["value"] == deploy["value"].iloc[0] and shipped["n_training_rows"] == len(table)

    # Each fold's probe, shipped the same way, predicts that fold's test rows as the probe step did.
    stored = _stored(files, task_type)
    labels = table["label"].to_numpy()
    classes = tables.classes_of(labels) if task_type == "multilabel" else None
    y = tables.indicator(labels, classes) if classes else labels
    X = store.read_layer(files["store.h5"], layer)
    for fold in folds.evaluation_folds(table["fold"].to_numpy()):
        train, test = table["fold"].to_numpy() != fold, table[table.fold == fold]
        chosen = probe_table[(probe_table.layer == layer) & (probe_table.fold == fold) & (probe_table.metric == probes.HYPERPARAMETER)]
        probe = probes.refit_probe(X[train], y[train], task_type, float(chosen["value"].iloc[0]), classes)
        (out / "probe.json").write_text(json.dumps(probe.to_dict()))
        test[["id", "sequence"]].to_csv(tmp_path / "input.csv", index=False)
        code, _, err = run(capsys, "predict", "--export", out, "--input", tmp_path / "input.csv", "--out", tmp_path / "predicted.csv", "--device", "cpu")
        assert code == 0, err
        predicted = pd.read_csv(tmp_path / "predicted.csv", dtype={"id": str, "prediction": str} if task_type != "regression" else {"id": str})
        expected = stored[(stored.layer == layer) & (stored.fold == fold)].set_index("id").loc[predicted["id"]]
        assert list(predicted["id"]) == list(test["id"])
        if task_type == "regression":
            np.testing.assert_allclose(predicted["prediction"], expected["prediction"], rtol=1e-5, atol=1e-6)
        elif task_type == "classification":
            assert list(predicted["prediction"]) == list(expected["prediction"])
            assert np.allclose(predicted[[f"p_{c}" for c in probe.classes]].sum(axis=1), 1.0)
        else:
            scores = predicted[[f"p_{c}" for c in classes]].to_numpy()
            np.testing.assert_allclose(scores, np.stack(expected["prediction"].to_list()), rtol=1e-4, atol=1e-6)  # stored with 6 digits


@pytest.mark.parametrize("task_type", ["regression", "classification", "multilabel"])
def test_the_shipped_probe_of_a_train_test_split_never_fits_a_test_row(chains, tmp_path, task_type):
    """With an official test file (its rows fold 0, the training file's fold -1) the shipped probe is
    fitted on the training file's rows only (``folds.deploy_rows``), as the deploy fold was."""
    files = chains(task_type, "raw")
    table = tasks.read_task_table(files["task.tsv"])
    table["fold"] = np.where(np.arange(len(table)) < 12, tasks.TEST_FOLD, tasks.TRAIN_ONLY_FOLD)
    split = tmp_path / "split.tsv"
    table.to_csv(split, sep="\t", index=False)  # same ids and sequences: the store still matches
    argv = ["export", "--model", files["model.json"], "--embeddings", files["store.h5"], "--task", split,
            "--selection", _deploy_at(files, 1), "--cost", files["cost.json"], "--type", task_type, "--out", tmp_path / "export"]
    assert main([str(a) for a in argv]) == 0

    card, shipped = export_steps.read_export(tmp_path / "export")
    labels = tasks.read_task_table(split, task_type)["label"].to_numpy()
    classes = tables.classes_of(labels) if task_type == "multilabel" else None
    y = tables.indicator(labels, classes) if classes else labels
    train = table["fold"].to_numpy() == tasks.TRAIN_ONLY_FOLD
    expected = probes.refit_probe(store.read_layer(files["store.h5"], 1)[train], y[train], task_type, shipped.hyperparameter, classes)
    assert shipped.n_training_rows == card["task"]["n_training_rows"] == train.sum() == len(table) - 12
    np.testing.assert_allclose(np.asarray(shipped.weights), np.asarray(expected.weights), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(np.asarray(shipped.intercept), np.asarray(expected.intercept), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(("family", "layer_norm"), [("t5", "raw"), ("t5", "final"), ("esm", "raw"), ("albert", "raw"), ("esmc", "final")])
def test_a_transformers_export_is_a_cut_directory_whose_features_are_the_stores(tiny_hub_models, tmp_path, capsys, family, layer_norm):
    """The model a user ships comes in the format it came in: a transformers directory with fewer
    layers, loaded by transformers itself, whose pooled features are the store's at every layer and
    whose shipped probe predicts as the probe step does."""
    import transformers

    files = _chain(tmp_path / "run", tiny_hub_models[family], "regression", layer_norm, source="--path")
    table = tasks.read_task_table(files["task.tsv"])
    info = store.read_info(files["store.h5"])
    for layer in range(info.n_layers + 1):
        out = _export(files, "regression", layer, tmp_path / f"export{layer}")
        card, _ = export_steps.read_export(out)
        assert (card["model"]["format"], card["model"]["family"], card["source_model"]["family"]) == ("transformers", family, family)
        config = json.loads((out / "model" / "config.json").read_text())
        assert config.get("num_hidden_layers", config.get("num_layers")) == max(layer, 1)
        # transformers itself loads the cut directory, and (but for ALBERT's shared blocks) it holds fewer weights than the source.
        cls = getattr(transformers, card["model"]["model_class"])
        size = sum(p.numel() for p in cls.from_pretrained(out / "model", use_safetensors=True).parameters())
        source = sum(p.numel() for p in cls.from_pretrained(tiny_hub_models[family], use_safetensors=True).parameters())
        assert size < source if family != "albert" and max(layer, 1) < info.n_layers else size == source
        loaded = export_steps.load_exported_model(out, card, "cpu")
        settings = export_steps.recorded_settings(info.attrs, files["store.h5"])
        features = export_steps.exported_features(loaded, list(table["sequence"]), settings, layer, info.n_layers)
        np.testing.assert_allclose(features, store.read_layer(files["store.h5"], layer), rtol=1e-5, atol=1e-5)
    assert "transformers" in (tmp_path / "export1" / "README.md").read_text()

    # The deploy fold's probe at layer 1, through predict on every row: the same as applying it to the store's layer.
    code, _, err = run(capsys, "predict", "--export", tmp_path / "export1", "--input", files["task.tsv"].with_name("task.csv"),
                       "--out", tmp_path / "p.csv", "--device", "cpu")
    assert code == 0, err
    shipped = export_steps.read_export(tmp_path / "export1")[1]
    np.testing.assert_allclose(pd.read_csv(tmp_path / "p.csv")["prediction"], shipped.predict(store.read_layer(files["store.h5"], 1)), rtol=1e-5, atol=1e-6)


def test_predict_reads_fasta_and_writes_one_row_per_sequence(chains, tmp_path, capsys):
    files = chains("regression", "raw")
    out = _export(files, "regression", 2, tmp_path / "export")
    (tmp_path / "new.fasta").write_text(">a some protein\nMKTAYIAKQRQISFVKSHFSRQ\n>b\nMKK\n>c\nMKK\n")
    code, _, err = run(capsys, "predict", "--export", out, "--input", tmp_path / "new.fasta", "--out", tmp_path / "p.csv", "--device", "cpu")
    assert code == 0, err
    predicted = pd.read_csv(tmp_path / "p.csv")
    assert list(predicted.columns) == ["id", "prediction"] and list(predicted["id"]) == ["a", "b", "c"]
    assert predicted["prediction"][1] == predicted["prediction"][2]


def test_predict_embeds_with_the_engine_the_store_was_made_with(chains, tmp_path, capsys):
    """The card records ``embed.engine``; predict runs that engine, here fair-esm's own forward on a model cut after
    block 1 of 2 under ``raw`` (its last layer left un-normed, as the source's layer 1 was): the fast engine's predictions."""
    files = chains("regression", "raw")
    out = _export(files, "regression", 1, tmp_path / "export")
    card = json.loads((out / "card.json").read_text())
    assert card["embedding"]["engine"] == "fast"
    predictions = {}
    for engine in ("fast", "reference"):
        card["embedding"]["engine"] = engine
        (out / "card.json").write_text(json.dumps(card))
        code, _, err = run(capsys, "predict", "--export", out, "--input", files["task.tsv"].with_name("task.csv"), "--out", tmp_path / f"{engine}.csv", "--device", "cpu")
        assert code == 0, err
        predictions[engine] = pd.read_csv(tmp_path / f"{engine}.csv")["prediction"].to_numpy()
    np.testing.assert_allclose(predictions["reference"], predictions["fast"], rtol=1e-5, atol=1e-6)
    shipped = export_steps.read_export(out)[1]
    np.testing.assert_allclose(predictions["reference"], shipped.predict(store.read_layer(files["store.h5"], 1)), rtol=1e-5, atol=1e-6)


def test_the_card_says_what_was_shipped(chains, tmp_path):
    files = chains("regression", "raw")
    out = _export(files, "regression", 1, tmp_path / "export")
    card = json.loads((out / "card.json").read_text())
    selection = json.loads(files["selection.json"].read_text())
    cost = json.loads(files["cost.json"].read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted(["README.md", "card.json", "probe.json", card["model"]["file"], card["model"]["contact_regression_file"]])
    assert card["model"]["file"].startswith("esm2") and card["model"]["blocks"] == 1
    assert (card["deployed_layer"], card["final_layer"], card["source_model"]["sha256"]) == (1, 2, json.loads(files["model.json"].read_text())["sha256"])
    assert card["scores"]["nested_score"] == selection["nested_score"] and card["scores"]["gain_ci_low"] == selection["gain_ci_low"]
    assert card["compute"]["flops_deployed"] == cost["flops"][1] and card["compute"]["flops_saved"] == 0.5
    assert card["embedding"]["truncate"] == 20
    readme = (out / "README.md").read_text()
    for text in ("plmexit predict --export", "load_model_and_alphabet_local", "Deployed layer: **1** of 2", card["source_model"]["sha256"], "`raw`"):
        assert text in readme


def test_the_card_of_a_homology_folded_task_says_its_scores_are_of_sequences_without_a_trained_homolog(chains, tmp_path):
    files = dict(chains("regression", "raw"))
    selection = json.loads(files["selection.json"].read_text())
    clustering = {"method": "mmseqs easy-cluster", "mmseqs_version": "14-7e284", "min_seq_id": 0.3, "coverage": 0.8, "cov_mode": 0, "cluster_mode": 1,
                  "n_sequences": 30, "n_clusters": 21, "largest_cluster": 4, "singletons": 15}
    selection["task_info"] = {**selection["task_info"], "folds": "homology", "clustering": clustering}
    files["selection.json"] = tmp_path / "selection.json"
    files["selection.json"].write_text(json.dumps(selection))
    out = _export(files, "regression", 1, tmp_path / "export")

    assert json.loads((out / "card.json").read_text())["scores"]["clustering"] == clustering
    assert ("- Folds: whole MMseqs2 clusters (0.3 identity, 0.8 coverage of both sequences; 21 clusters, the largest 4): no test sequence has "
            "a homolog at that identity in its fold's training rows, and the interval resamples whole clusters.") in (out / "README.md").read_text()
    plain = _export(chains("regression", "raw"), "regression", 1, tmp_path / "plain")
    assert "MMseqs2" not in (plain / "README.md").read_text()


def test_an_export_of_the_selection_as_it_stands(chains, tmp_path):
    files = chains("classification", "final")
    selection = json.loads(files["selection.json"].read_text())
    argv = ["export", "--model", files["model.json"], "--embeddings", files["store.h5"], "--task", files["task.tsv"],
            "--selection", files["selection.json"], "--cost", files["cost.json"], "--type", "classification", "--out", tmp_path / "export"]
    assert main([str(a) for a in argv]) == 0
    card, probe = export_steps.read_export(tmp_path / "export")
    assert card["deployed_layer"] == selection["deployed_layer"] and probe.hyperparameter == selection["deployed_hyperparameter"]
    assert card["compute"]["flops_saved"] == pytest.approx(selection["deployed_compute_saved"])
    assert probe.classes == ["high", "low", "mid"] and probe.link == "softmax"


@pytest.mark.parametrize(("attrs", "expected"), [
    ({"layer_norm": "raw", "long_sequences": "window", "window": 100, "overlap": 10, "max_tokens": 500, "precision": "bfloat16"},
     {"long_sequences": "window", "window": 100, "overlap": 10, "max_tokens": 500, "precision": "bfloat16"}),
    ({"layer_norm": "final", "long_sequences": "truncate", "truncation": "truncated to the first 300 residues"}, {"truncate": 300, "engine": "fast"}),
    ({"layer_norm": "raw", "long_sequences": "truncate", "truncate": 50, "embed_engine": "reference"}, {"engine": "reference"}),
])
def test_the_recorded_settings_of_a_store(attrs, expected):
    settings = export_steps.recorded_settings(attrs, "store.h5")
    assert {key: getattr(settings, key) for key in expected} == expected and settings.layer_norm == attrs["layer_norm"]


def test_a_store_cut_through_a_variant_crop_cannot_be_shipped():
    attrs = {"layer_norm": "raw", "long_sequences": "truncate", "truncate": 50, "variant_crop": True, "crop_start": 10, "crop_stop": 60, "n_truncated": 8}
    with pytest.raises(export_steps.StoreError, match=r"store.h5: embedded through one variant crop \(residues 11..60\)"):
        export_steps.recorded_settings(attrs, "store.h5")


# --- expected errors ---------------------------------------------------------------------------


def test_predict_errors_are_one_line(chains, tmp_path, capsys):
    files = chains("regression", "raw")
    out = _export(files, "regression", 1, tmp_path / "export")
    capsys.readouterr()  # the export's log
    (tmp_path / "in.csv").write_text("id,sequence\na,MKV\n")

    code, _, err = run(capsys, "predict", "--export", tmp_path / "nowhere", "--input", tmp_path / "in.csv", "--out", tmp_path / "p.csv", "--device", "cpu")
    assert code == 1
    assert_one_error_line(err, "predict", tmp_path / "nowhere", "does not exist")

    (tmp_path / "bare").mkdir()
    code, _, err = run(capsys, "predict", "--export", tmp_path / "bare", "--input", tmp_path / "in.csv", "--out", tmp_path / "p.csv", "--device", "cpu")
    assert code == 1
    assert_one_error_line(err, "predict", tmp_path / "bare" / "card.json", "plmexit export")

    code, _, err = run(capsys, "predict", "--export", out, "--input", tmp_path / "missing.fasta", "--out", tmp_path / "p.csv", "--device", "cpu")
    assert code == 1
    assert_one_error_line(err, "predict", tmp_path / "missing.fasta", "does not exist")

    (tmp_path / "bad.csv").write_text("id,sequence\na,MKV*\n")
    code, _, err = run(capsys, "predict", "--export", out, "--input", tmp_path / "bad.csv", "--out", tmp_path / "p.csv", "--device", "cpu")
    assert code == 1
    assert_one_error_line(err, "predict", tmp_path / "bad.csv", "row 2", "'*'")

    card = json.loads((out / "card.json").read_text())
    (out / card["model"]["file"]).write_bytes(b"tampered")
    code, _, err = run(capsys, "predict", "--export", out, "--input", tmp_path / "in.csv", "--out", tmp_path / "p.csv", "--device", "cpu")
    assert code == 1
    assert_one_error_line(err, "predict", card["model"]["file"], "sha256")
    assert not (tmp_path / "p.csv").exists()


def test_export_errors_are_one_line(chains, tmp_path, capsys):
    files = chains("regression", "raw")
    selection = json.loads(files["selection.json"].read_text())
    (tmp_path / "far.json").write_text(json.dumps({**selection, "deployed_layer": 5}))
    base = ["export", "--model", files["model.json"], "--embeddings", files["store.h5"], "--task", files["task.tsv"], "--cost", files["cost.json"],
            "--type", "regression", "--out", tmp_path / "export"]

    code, _, err = run(capsys, *base, "--selection", tmp_path / "far.json")
    assert code == 1
    assert_one_error_line(err, "export", tmp_path / "far.json", "deployed layer 5 of 2")

    code, _, err = run(capsys, *base, "--selection", tmp_path / "none.json")
    assert code == 1
    assert_one_error_line(err, "export", tmp_path / "none.json", "`plmexit select`")

    (tmp_path / "other.json").write_text(json.dumps({**selection, "model": "other"}))
    code, _, err = run(capsys, *base, "--selection", tmp_path / "other.json")
    assert code == 1
    assert_one_error_line(err, "export", tmp_path / "other.json", "'other'", "one model's manifest, store and selection")

    (tmp_path / "nosignal.json").write_text(json.dumps({**selection, "status": "no_signal", "deployed_layer": None}))
    code, _, err = run(capsys, *base, "--selection", tmp_path / "nosignal.json")
    assert code == 1
    assert_one_error_line(err, "export", "no deployed layer")
    assert not (tmp_path / "export").exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_truncating_to_more_blocks_than_the_model_has_is_an_error(tiny_model, tmp_path):
    with pytest.raises(fair_esm.ModelError, match=r"cannot keep 3 blocks of a model with 2 \(keep 1..2\)"):
        fair_esm.truncate_checkpoint(tiny_model, None, 3, tmp_path / "esm2_x.pt")
    with pytest.raises(fair_esm.ModelError, match="must start with 'esm2'"):
        fair_esm.truncate_checkpoint(tiny_model, None, 1, tmp_path / "model.pt")
    assert list(tmp_path.iterdir()) == []


def test_the_card_says_what_the_layer_had_to_beat_and_claims_no_saving_below_chance(chains, tmp_path):
    files = chains("regression", "raw")
    card = json.loads((_export(files, "regression", 1, tmp_path / "export") / "card.json").read_text())
    assert card["scores"]["chance_score"] is None and "Baselines" not in render_card(card)  # a selection without baselines
    card["scores"].update({
        "chance_score": 0.0, "baseline_features": "onehot", "baseline_score": 0.21, "final_gain_over_chance": 0.05,
        "final_gain_over_chance_ci_low": -0.02, "final_gain_over_chance_ci_high": 0.12, "final_gain_over_baseline": -0.16,
        "final_gain_over_baseline_ci_low": -0.25, "final_gain_over_baseline_ci_high": -0.07, "nested_gain_over_chance": 0.03,
        "nested_gain_over_chance_ci_low": -0.04, "nested_gain_over_chance_ci_high": 0.1, "verdict": "not_above_chance",
    })
    text = render_card(card)
    assert ("- Baselines (same folds, inner selection and metric): chance 0, onehot probe 0.21; the final layer's gain over chance "
            "0.05 [-0.02, 0.12], over the onehot probe -0.16 [-0.25, -0.07]; the nested selection's over chance 0.03 [-0.04, 0.1]") in text
    assert "Verdict: no layer beats chance" in text and "not a saving, since no layer beats chance." in text
