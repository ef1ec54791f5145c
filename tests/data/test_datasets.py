"""Benchmark readers (DeepLoc, DeepSol, FLIP, DeepFRI EC): exact tables from tiny files in the
official formats, the real files, and every input error by its message."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from plmexit.data.loading import load_task
from plmexit.data.tasks import TASK_COLUMNS, TaskSpec
from plmexit.errors import InputError

DEEPLOC = """\
>P1 Nucleus-S
MKVLA
>P2 Cytoplasm-Nucleus-U
MKVLAA
>P3 Nucleus-M test
MKVLAAA
>P4 Nucleus-M
MKVLAAAA
"""


def deeploc_spec(path, **overrides) -> TaskSpec:
    return TaskSpec(**{"name": "loc", "format": "deeploc", "path": path, "type": "classification", "cv_folds": 2, **overrides})


def test_deeploc_locations_and_the_test_flag(write_file):
    table = load_task(deeploc_spec(write_file("loc.fasta", DEEPLOC)))

    assert list(table.columns) == TASK_COLUMNS
    assert table[["id", "label", "fold"]].values.tolist() == [
        ["P1", "Nucleus", -1], ["P2", "Cytoplasm-Nucleus", -1], ["P3", "Nucleus", 0], ["P4", "Nucleus", -1],
    ]
    assert table.attrs["split"] == "DeepLoc's test flag in loc.fasta"


def test_deeploc_membrane_drops_unknown(write_file, caplog):
    table = load_task(deeploc_spec(write_file("loc.fasta", DEEPLOC), localization="membrane"))

    assert table[["id", "label"]].values.tolist() == [["P1", "soluble"], ["P3", "membrane"], ["P4", "membrane"]]
    assert "dropped 1 proteins of unknown membrane association (U)" in caplog.text


def test_deeploc_train_and_test_files(write_file):
    train = write_file("train.fasta", ">A Nucleus-S\nMKV\n>B Cytoplasm-S\nMKVV\n>C Nucleus-M\nMKVVV\n")
    test = write_file("test.fasta", ">D Nucleus-S test\nMKL\n")

    table = load_task(deeploc_spec(train, test_path=test))

    assert table[["id", "fold"]].values.tolist() == [["A", -1], ["B", -1], ["C", -1], ["D", 0]]
    assert table.attrs["split"] == "train train.fasta / test test.fasta"


def test_deeploc_single_file_without_flags_is_cross_validated(write_file):
    path = write_file("loc.fasta", "".join(f">P{i} {'Nucleus' if i % 2 else 'Cytoplasm'}-S\nMKV{'A' * i}\n" for i in range(8)))

    table = load_task(deeploc_spec(path))

    assert sorted(table["fold"].tolist()) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert table.attrs["split"] == "2-fold cross-validation (stratified), seed 0"


def test_deeploc_errors(write_file):
    with pytest.raises(InputError, match=r"loc\.fasta: record 1 \(P1\): header 'P1 Nucleus' is not DeepLoc's 'ACCESSION Location-M\|S\|U \[test\]'"):
        load_task(deeploc_spec(write_file("loc.fasta", ">P1 Nucleus\nMKV\n")))
    train = write_file("train.fasta", ">A Nucleus-S\nMKV\n>B Nucleus-S\nMKVV\n")
    test = write_file("test.fasta", ">D Nucleus-S\nMKL\n>E Peroxisome-S\nMKLL\n")
    with pytest.raises(InputError, match=r"test\.fasta: record 2 \(E\): class 'Peroxisome' never occurs in the training part"):
        load_task(deeploc_spec(train, test_path=test))


def test_deeploc_real_files(shared_data):
    spec = deeploc_spec(shared_data / "deeploc" / "deeploc_our_val_set.fasta", test_path=shared_data / "deeploc" / "deeploc_test_set.fasta", cv_folds=5)

    table = load_task(spec)

    assert len(table) == 1678 + 2768 and table["id"].is_unique
    assert (table["fold"] == 0).sum() == 2768 and (table["fold"] == -1).sum() == 1678
    assert table.loc[table.fold == 0, "label"].nunique() == 10
    assert table["label"].nunique() == 11  # the validation split's extra Cytoplasm-Nucleus class is trained on only
    assert table["sequence"].str.len().max() == 13100  # truncated later, at embedding

    membrane = load_task(deeploc_spec(shared_data / "deeploc" / "deeploc_test_set.fasta", localization="membrane", cv_folds=5))
    assert set(membrane["label"]) == {"membrane", "soluble"} and 0 < len(membrane) < 2768


# --- DeepSol ------------------------------------------------------------------------------------


def deepsol_spec(src, tgt, **overrides) -> TaskSpec:
    return TaskSpec(**{"name": "sol", "format": "deepsol", "path": src, "labels_path": tgt, "type": "classification", "cv_folds": 2, **overrides})


def test_deepsol_line_aligned_files(write_file):
    src, tgt = write_file("val_src", "MKV\nMKVL\nMKVLA\nMKVLAA\n"), write_file("val_tgt", "0\n1\n1\n0\n")
    test_src, test_tgt = write_file("test_src", "MQQ\n"), write_file("test_tgt", "1\n")

    table = load_task(deepsol_spec(src, tgt, test_path=test_src, test_labels_path=test_tgt))

    assert table.values.tolist() == [
        ["line1", "MKV", "insoluble", -1], ["line2", "MKVL", "soluble", -1], ["line3", "MKVLA", "soluble", -1],
        ["line4", "MKVLAA", "insoluble", -1], ["test_line1", "MQQ", "soluble", 0],
    ]
    assert table.attrs["split"] == "train val_src / test test_src"


@pytest.mark.parametrize(
    "src, tgt, message",
    [
        ("MKV\nMKVL\n", "0\n", r"val_src has 2 lines but .*val_tgt has 1; the sequence and label files must be line-aligned"),
        ("MKV\nMKVL\n", "0\n2\n", r"val_tgt: line 2: label '2' is not 0 \(insoluble\) or 1 \(soluble\)"),
        ("MKV\n\n", "0\n1\n", r"val_src: line 2 \(line2\): sequence is empty"),
        ("MKV\nMK*V\n", "0\n1\n", r"val_src: line 2 \(line2\): sequence has characters '\*' outside the ESM alphabet"),
    ],
)
def test_deepsol_errors(write_file, src, tgt, message):
    with pytest.raises(InputError, match=message):
        load_task(deepsol_spec(write_file("val_src", src), write_file("val_tgt", tgt)))


def test_deepsol_needs_its_label_file(write_file):
    with pytest.raises(InputError, match=r"a DeepSol task needs tasks\.sol\.labels_path"):
        load_task(TaskSpec(name="sol", format="deepsol", path=write_file("val_src", "MKV\n"), type="classification"))


def test_deepsol_real_files(shared_data):
    table = load_task(deepsol_spec(shared_data / "deepsol" / "val_src", shared_data / "deepsol" / "val_tgt", cv_folds=5))

    assert len(table) == 6942
    assert table["label"].value_counts().to_dict() == {"insoluble": 4045, "soluble": 2897}


# --- FLIP ---------------------------------------------------------------------------------------

FLIP_CSV = "sequence,target,set,validation\nMKVA,1.5,train,\nMKVC,0.5,train,True\nMKVD,-0.25,test,\n"


def flip_zip(write_file, csv_text: str = FLIP_CSV) -> object:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("splits/", "")
        archive.writestr("splits/two_vs_rest.csv", csv_text)
        archive.writestr("splits/.DS_Store", b"\0")
    return write_file("splits.zip", buffer.getvalue())


def test_flip_split_from_the_zip(write_file):
    table = load_task(TaskSpec(name="gb1", format="flip", path=flip_zip(write_file), split="two_vs_rest", type="regression"))

    assert table.values.tolist() == [
        ["two_vs_rest_row2", "MKVA", 1.5, -1], ["two_vs_rest_row3", "MKVC", 0.5, -1], ["two_vs_rest_row4", "MKVD", -0.25, 0],
    ]
    assert table.attrs["split"] == "FLIP two_vs_rest train/test"


def test_flip_errors(write_file):
    path = flip_zip(write_file)
    with pytest.raises(InputError, match=r"splits\.zip: no split 'three_vs_rest' \(splits: two_vs_rest\); fix tasks\.gb1\.split"):
        load_task(TaskSpec(name="gb1", format="flip", path=path, split="three_vs_rest", type="regression"))
    with pytest.raises(InputError, match=r"is a zip of FLIP splits; name one with tasks\.gb1\.split"):
        load_task(TaskSpec(name="gb1", format="flip", path=path, type="regression"))
    bad = write_file("bad.csv", FLIP_CSV.replace("test,", "holdout,"))
    with pytest.raises(InputError, match=r"bad\.csv: row 4: set 'holdout' is not train or test"):
        load_task(TaskSpec(name="gb1", format="flip", path=bad, type="regression"))
    nan = write_file("nan.csv", FLIP_CSV.replace("0.5,", "n/a,"))
    with pytest.raises(InputError, match=r"nan\.csv: row 3: label 'n/a' is not a finite number"):
        load_task(TaskSpec(name="gb1", format="flip", path=nan, type="regression"))


def test_flip_real_zip(shared_data):
    table = load_task(TaskSpec(name="gb1", format="flip", path=shared_data / "flip_gb1" / "splits.zip", split="three_vs_rest", type="regression"))

    assert len(table) == 8733 and (table["fold"] == -1).sum() == 2990
    assert (table["sequence"].str.len() == 265).all()


# --- DeepFRI EC ---------------------------------------------------------------------------------

ANNOT = "### EC-numbers\n1.1.1.1\t2.7.1.-\t3.4.21.4\n### PDB-chain\tEC-numbers\nA-1\t1.1.1.1\nB-1\t2.7.1.-,3.4.21.4\nC-1\t2.7.1.-\nD-1\t3.4.21.4,3.4.21.4\n"
CHAINS = ">A-1 nrPDB\nMKVA\n>B-1 nrPDB\nMKVC\n>C-1 nrPDB\nMKVD\n>D-1 nrPDB\nMKVE\n>E-1 nrPDB\nMKVF\n"


def ec_spec(write_file, **overrides) -> TaskSpec:
    settings = {"name": "ec", "format": "deepfri_ec", "path": write_file("seq.fasta", CHAINS), "annotations": write_file("annot.tsv", ANNOT),
                "ids_path": write_file("ids.txt", "A-1\nB-1\nC-1\nD-1\n"), "type": "multilabel", "cv_folds": 2}
    # The reader's tests: random folds (homology folds, deepfri_ec's default, are tested in test_homology.py); none with a test part.
    settings["folds"] = None if "test_ids_path" in overrides else "random"
    return TaskSpec(**{**settings, **overrides})


def test_deepfri_ec_top_level_classes_multilabel(write_file):
    table = load_task(ec_spec(write_file))

    assert table[["id", "label"]].values.tolist() == [["A-1", "1"], ["B-1", "2;3"], ["C-1", "2"], ["D-1", "3"]]
    assert sorted(table["fold"]) == [0, 0, 1, 1]

    split = load_task(ec_spec(write_file, test_ids_path=write_file("test.txt", "D-1\n")))
    assert split["fold"].tolist() == [-1, -1, -1, 0]
    assert split.attrs["split"] == "test chains of test.txt"


def test_deepfri_ec_errors(write_file):
    with pytest.raises(InputError, match=r"seq\.fasta: record 5 \(E-1\): chain has no line in .*annot\.tsv"):
        load_task(ec_spec(write_file, ids_path=None))
    with pytest.raises(InputError, match=r"other_ids\.txt: chain Z-9 \(1 in all\) is not in .*seq\.fasta; fix tasks\.ec\.ids_path"):
        load_task(ec_spec(write_file, ids_path=write_file("other_ids.txt", "A-1\nZ-9\n")))
    with pytest.raises(InputError, match=r"bad_annot\.tsv: line 4: EC number '9\.9\.9\.9' of chain A-1 is not in the file's EC list"):
        load_task(ec_spec(write_file, annotations=write_file("bad_annot.tsv", ANNOT.replace("A-1\t1.1.1.1", "A-1\t9.9.9.9"))))
    with pytest.raises(InputError, match=r"plain\.tsv: not a DeepFRI EC annotation file"):
        load_task(ec_spec(write_file, annotations=write_file("plain.tsv", "PDB-chain\tEC\n")))
    unseen = ec_spec(write_file, ids_path=None, path=write_file("s.fasta", CHAINS.replace(">E-1 nrPDB\nMKVF\n", "")),
                     test_ids_path=write_file("test.txt", "A-1\n"))
    with pytest.raises(InputError, match=r"s\.fasta: record 1 \(A-1\): class '1' never occurs in the training part"):
        load_task(unseen)


def test_deepfri_ec_real_test_chains(shared_data):
    root = shared_data / "deepfri_ec"
    spec = TaskSpec(name="ec", format="deepfri_ec", path=root / "nrPDB-EC_2020.04_test_sequences.fasta",
                    annotations=root / "nrPDB-EC_2020.04_annot.tsv", ids_path=root / "nrPDB-EC_2020.04_test.txt", type="multilabel", folds="random")

    table = load_task(spec)

    assert len(table) == 1919 and "4UDF-1B" not in set(table["id"])
    counts = {c: sum(c in x.split(";") for x in table["label"]) for c in "1234567"}
    # PROVENANCE.md's counts, which include the FASTA's extra chain 4UDF-1B (classes 2 and 3), not in the test list.
    assert counts == {"1": 246, "2": 823, "3": 670, "4": 138, "5": 113, "6": 74, "7": 29}
    assert sum(";" in x for x in table["label"]) == 166  # 167 with 4UDF-1B
    assert set(np.unique(table["fold"])) == {0, 1, 2, 3, 4}
