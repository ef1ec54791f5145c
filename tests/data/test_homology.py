"""Homology folds: MMseqs2 clusters of a tiny FASTA with known near-duplicates, whole clusters per fold,
what the task info records, the EC default, and MMseqs2 missing or failing as one line."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import yaml

from plmexit.cli import main
from plmexit.data import homology
from plmexit.data.formats import DEFAULT_HOMOLOGY_IDENTITY, FORMATS
from plmexit.data.loading import load_task
from plmexit.data.tasks import TaskSpec
from plmexit.errors import InputError, ToolError
from plmexit.pipeline.task_steps import prepare_task

from system_programs import require
from workflow_runs import REPO

AMINO = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
FAMILIES, MEMBERS, LENGTH = 8, 3, 120


@pytest.fixture(scope="module")
def mmseqs():
    require(("mmseqs2",), ("mmseqs",), "homology folds (MMseqs2)")


_CLUSTERINGS: dict[tuple, tuple] = {}


@pytest.fixture
def clustered_once(mmseqs, monkeypatch):
    """MMseqs2 run once per input and identity in this module, its result reused: a run costs seconds even
    on 24 sequences. For tests whose subject is what is done with the clusters; that two runs on one input
    agree is test_near_duplicates_form_one_cluster_and_one_fold's, which runs it twice."""
    real = homology.cluster_sequences

    def cluster_sequences(sequences, identity=DEFAULT_HOMOLOGY_IDENTITY):
        key = (tuple(sequences), identity)
        if key not in _CLUSTERINGS:
            _CLUSTERINGS[key] = real(sequences, identity)
        clusters, clustering = _CLUSTERINGS[key]
        return clusters.copy(), clustering

    monkeypatch.setattr(homology, "cluster_sequences", cluster_sequences)


def families(seed: int = 0) -> list[tuple[str, str, int]]:
    """(id, sequence, family): ``FAMILIES`` unrelated random sequences, each with ``MEMBERS - 1`` near-duplicates
    (3 of 120 residues changed, 97.5% identity), interleaved so that a family's members are not neighbours."""
    rng = np.random.default_rng(seed)
    rows = []
    for family in range(FAMILIES):
        base = rng.choice(AMINO, LENGTH)
        for member in range(MEMBERS):
            sequence = base.copy()
            if member:
                sequence[rng.choice(LENGTH, 3, replace=False)] = rng.choice(AMINO, 3)
            rows.append((f"f{family}m{member}", "".join(sequence), family))
    return sorted(rows, key=lambda row: (int(row[0].split("m")[1]), row[2]))


def write_fasta(path, rows, label=lambda family: "a" if family % 2 else "b"):
    path.write_text("".join(f">{identifier} class={label(family)}\n{sequence}\n" for identifier, sequence, family in rows))
    return path


def fasta_spec(path, **overrides) -> TaskSpec:
    settings = dict(name="toy", format="fasta", path=path, type="classification", label_regex=r"class=(\w+)", cv_folds=3, folds="homology")
    return TaskSpec(**{**settings, **overrides})


def test_near_duplicates_form_one_cluster_and_one_fold(tmp_path, mmseqs):
    rows = families()
    clusters, clustering = homology.cluster_sequences([s for _, s, _ in rows])
    _CLUSTERINGS.setdefault((tuple(s for _, s, _ in rows), DEFAULT_HOMOLOGY_IDENTITY), (clusters.copy(), clustering))  # for clustered_once

    family = np.array([f for _, _, f in rows])
    # Exactly the families: members of a family together, different families apart.
    assert pd.crosstab(clusters, family).astype(bool).sum(axis=1).eq(1).all()
    assert len(set(clusters)) == FAMILIES and clustering.n_clusters == FAMILIES and clustering.largest_cluster == MEMBERS
    assert clusters[0] == 0 and list(dict.fromkeys(clusters)) == list(range(FAMILIES))  # numbered by first member

    table = load_task(fasta_spec(write_fasta(tmp_path / "toy.fasta", rows)))
    folds = table.set_index("id")["fold"]
    for f in range(FAMILIES):
        assert folds[[f"f{f}m{m}" for m in range(MEMBERS)]].nunique() == 1, f"family {f} split across folds"
    assert sorted(folds.unique()) == [0, 1, 2]
    assert table.attrs["split"] == "3-fold cross-validation by MMseqs2 clusters at 0.3 identity (stratified), seed 0"
    assert table.attrs["clusters"] == {i: int(c) for (i, _, _), c in zip(rows, clusters)}

    # Random folds (today's default elsewhere) do split families: what homology folds prevent.
    random = load_task(fasta_spec(tmp_path / "toy.fasta", folds="random")).set_index("id")["fold"]
    assert any(random[[f"f{f}m{m}" for m in range(MEMBERS)]].nunique() > 1 for f in range(FAMILIES))


def test_whole_clusters_stratified_balanced_and_seeded():
    clusters = np.repeat(np.arange(12), [5, 4, 3, 3, 2, 2, 2, 1, 1, 1, 1, 1])
    labels = np.where(np.arange(len(clusters)) % 3 == 0, "x", "y")

    for labels_or_none in (labels, None):
        folds = homology.assign_cluster_folds(clusters, labels_or_none, 3, seed=4)
        assert pd.DataFrame({"c": clusters, "f": folds}).groupby("c")["f"].nunique().eq(1).all()
        assert sorted(np.unique(folds)) == [0, 1, 2]
        assert np.array_equal(folds, homology.assign_cluster_folds(clusters, labels_or_none, 3, seed=4))
    # Without labels, GroupKFold's largest-first filling: 26 sequences into folds of 9, 9 and 8.
    assert sorted(np.bincount(homology.assign_cluster_folds(clusters, None, 3, seed=4))) == [8, 9, 9]
    seeds = {tuple(homology.assign_cluster_folds(clusters, labels, 3, seed=s)) for s in range(6)}
    assert len(seeds) > 1  # the seed chooses among the assignments

    with pytest.raises(InputError, match=r"7 sequences form 2 MMseqs2 clusters, fewer than 3 folds; lower probe.cv_folds, raise the task's homology_identity, or set folds: random"):
        homology.assign_cluster_folds(np.array([0, 0, 0, 0, 1, 1, 1]), None, 3, seed=0)


def test_folds_are_deterministic_under_a_seed(tmp_path, clustered_once):
    path = write_fasta(tmp_path / "toy.fasta", families())
    first, again = load_task(fasta_spec(path, seed=3)), load_task(fasta_spec(path, seed=3))
    # MMseqs2's own determinism: test_near_duplicates_form_one_cluster_and_one_fold; the seed's effect: test_whole_clusters_stratified_balanced_and_seeded
    assert first["fold"].tolist() == again["fold"].tolist()


def test_the_task_info_records_the_clustering(tmp_path, clustered_once):
    path = write_fasta(tmp_path / "toy.fasta", families())
    prepare_task(fasta_spec(path, homology_identity=0.5), tmp_path / "toy.tsv", tmp_path / "toy.json")

    info = json.loads((tmp_path / "toy.json").read_text())
    assert info["folds"] == "homology"
    clustering = info["clustering"]
    assert clustering["mmseqs_version"] and clustering.pop("mmseqs_version") == homology._run(["mmseqs", "version"], "version").strip()
    assert clustering == {
        "method": "mmseqs easy-cluster", "min_seq_id": 0.5, "coverage": 0.8, "cov_mode": 0, "cluster_mode": 1,
        "n_sequences": FAMILIES * MEMBERS, "n_clusters": FAMILIES, "largest_cluster": MEMBERS, "singletons": 0,
    }
    assert info["clusters"]["f3m0"] == info["clusters"]["f3m2"] != info["clusters"]["f4m0"]
    table = pd.read_csv(tmp_path / "toy.tsv", sep="\t")
    assert list(table.columns) == ["id", "sequence", "label", "fold"]  # the task table itself is unchanged

    prepare_task(fasta_spec(path, folds="random"), tmp_path / "r.tsv", tmp_path / "r.json")
    info = json.loads((tmp_path / "r.json").read_text())
    assert (info["folds"], info["clustering"], info["clusters"]) == ("random", None, None)


def test_deepfri_ec_defaults_to_homology_folds_and_the_others_to_random(tmp_path, clustered_once):
    assert {kind: f.default_folds for kind, f in FORMATS.items()} == {
        "csv": "random", "fasta": "random", "proteingym": "random", "deeploc": "random", "deepfri_ec": "homology", "deepsol": "random", "flip": "random",
    }
    rows = families()
    fasta = tmp_path / "ec.fasta"
    fasta.write_text("".join(f">{i}\n{s}\n" for i, s, _ in rows))
    annotations = tmp_path / "annot.tsv"
    annotations.write_text("### EC-numbers\n1.1.1.1\t2.7.7.7\n### PDB-chain\tEC-numbers\n" + "".join(f"{i}\t{'1.1.1.1' if f % 2 else '2.7.7.7'}\n" for i, _, f in rows))
    spec = TaskSpec(name="ec", format="deepfri_ec", type="multilabel", path=fasta, annotations=annotations, cv_folds=3)

    table = load_task(spec)
    assert table.attrs["folds"] == "homology" and table.attrs["clustering"]["min_seq_id"] == DEFAULT_HOMOLOGY_IDENTITY
    assert "by MMseqs2 clusters at 0.3 identity" in table.attrs["split"]
    assert load_task(replace(spec, folds="random")).attrs["clustering"] is None
    # A task with a test part has no folds to make: setting them is an error, the default is not.
    test_ids = tmp_path / "test.txt"
    test_ids.write_text("f0m0\nf1m0\n")
    assert load_task(replace(spec, test_ids_path=test_ids)).attrs["folds"] is None
    with pytest.raises(InputError, match=r"task 'ec': folds applies to cross-validated tasks, but this one is split by test chains of test.txt; remove tasks.ec.folds"):
        load_task(replace(spec, test_ids_path=test_ids, folds="homology"))
    with pytest.raises(InputError, match=r"task 'ec': homology_identity applies to folds: homology, but the task's folds are random"):
        load_task(replace(spec, folds="random", homology_identity=0.5))


def test_the_schema_and_the_planner_pass_folds_to_prepare():
    from plmexit.pipeline.planning import Plan

    task = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())["properties"]["tasks"]["items"]["properties"]
    assert task["folds"]["enum"] == list(homology.FOLD_METHODS)
    # No schema default (it depends on the kind); the descriptions state the registry's defaults.
    assert "default" not in task["folds"] and "default" not in task["homology_identity"]
    assert "Default homology for deepfri_ec, random for the others" in task["folds"]["description"]
    assert f"(default {DEFAULT_HOMOLOGY_IDENTITY})" in task["homology_identity"]["description"]

    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    entry = next(t for t in config["tasks"] if t["id"] == "ec")
    entry.update(folds="homology", homology_identity=0.4)
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"), set_default=True)
    assert all("folds" not in t for t in config["tasks"] if t["id"] != "ec")  # no default is written into other entries
    flags = Plan(config).task_option_flags("ec")
    assert "--folds homology --homology-identity 0.4" in flags


def test_a_missing_mmseqs_is_one_line(tmp_path, monkeypatch, capsys):
    path = write_fasta(tmp_path / "toy.fasta", families())
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ToolError, match=r"^folds: homology needs MMseqs2, but the program 'mmseqs' is not on PATH; install it \(Debian/Ubuntu: apt-get install mmseqs2"):
        load_task(fasta_spec(path))

    code = main(["prepare", "--name", "toy", "--format", "fasta", "--path", str(path), "--type", "classification",
                 "--label-regex", r"class=(\w+)", "--folds", "homology", "--cv-folds", "3", "--out", str(tmp_path / "t.tsv"), "--info-out", str(tmp_path / "t.json")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "apt-get install mmseqs2" in err
    assert not (tmp_path / "t.tsv").exists()


def test_a_failing_mmseqs_is_one_line(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "mmseqs"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nif [ "$1" = version ]; then echo 14-7e284; exit 0; fi\necho "Error: out of memory\n  in prefilter" >&2\nexit 3\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(ToolError, match=r"^MMseqs2 failed \(clustering 24 sequences, exit 3\): Error: out of memory in prefilter; fix what it says \(`\S+ easy-cluster -h` lists its options\) or set the task's folds: random$"):
        homology.cluster_sequences([s for _, s, _ in families()])


def test_select_resamples_clusters_under_homology_folds(tmp_path, clustered_once, tiny_model, tiny_model_sha256, capsys):
    from plmexit.pipeline.reading import read_predictions
    from plmexit.probing import choice

    path = write_fasta(tmp_path / "toy.fasta", families())
    t = tmp_path
    steps = [
        ["fetch-model", "--id", "tiny", "--checkpoint", tiny_model, "--sha256", tiny_model_sha256, "--out", t / "model.json"],
        ["prepare", "--name", "toy", "--format", "fasta", "--path", path, "--type", "classification", "--label-regex", r"class=(\w+)",
         "--folds", "homology", "--cv-folds", 3, "--out", t / "toy.tsv", "--info-out", t / "toy.json"],
        ["embed", "--model", t / "model.json", "--task", t / "toy.tsv", "--out", t / "toy.h5", "--device", "cpu", "--dtype", "float32", "--no-progress"],
        ["cost", "--model", t / "model.json", "--task", t / "toy.tsv", "--out", t / "cost.json", "--device", "cpu", "--sample-sequences", 4, "--repeats", 1],
        ["probe", "--embeddings", t / "toy.h5", "--task", t / "toy.tsv", "--type", "classification", "--metric", "accuracy", "--model-id", "tiny",
         "--task-name", "toy", "--cs", "0.1,1", "--out", t / "probes.tsv", "--predictions", t / "predictions.tsv.gz"],
        ["select", "--probes", t / "probes.tsv", "--predictions", t / "predictions.tsv.gz", "--cost", t / "cost.json", "--task-info", t / "toy.json",
         "--type", "classification", "--metric", "accuracy", "--bootstrap", 200, "--seed", 2, "--out", t / "selection.json"],
    ]
    for argv in steps:
        assert main([str(a) for a in argv]) == 0, (argv[0], capsys.readouterr().err)

    selection = json.loads((t / "selection.json").read_text())
    info = json.loads((t / "toy.json").read_text())
    assert selection["bootstrap"]["unit"] == "MMseqs2 sequence clusters, paired within folds; probes not refitted, layers not re-chosen"
    assert "clusters" not in selection["task_info"] and selection["task_info"]["clustering"]["n_clusters"] == FAMILIES
    predictions = read_predictions(t / "predictions.tsv.gz", "classification")
    by_cluster = choice.bootstrap_gain(predictions, selection, "classification", 200, 2, clusters=info["clusters"])
    assert [selection["gain_ci_low"], selection["gain_ci_high"]] == list(by_cluster)
