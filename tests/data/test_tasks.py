"""Task readers: exact tables from tiny files, fold assignment, and every input error by its message."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plmexit.data.loading import assign_folds, load_task
from plmexit.data.tasks import TASK_COLUMNS, TaskSpec, read_task_table, sequences_sha256, write_task_table
from plmexit.errors import InputError

TINY_CSV = """\
name,seq,score,split
a,ACDE,0.5,0
b,MKV,1.5,1
c,WYYX,-2,0
d,GGG,3e-1,1
"""

DEEPLOC_CLASSES = {
    "Nucleus", "Cytoplasm", "Extracellular", "Mitochondrion", "Cell.membrane",
    "Endoplasmic.reticulum", "Plastid", "Golgi.apparatus", "Lysosome/Vacuole", "Peroxisome",
}


def csv_spec(path: Path, **overrides) -> TaskSpec:
    settings = dict(
        name="toy", format="csv", path=path, type="regression", sequence_column="seq",
        label_column="score", id_column="name", fold_column="split",
    )
    settings.update(overrides)
    return TaskSpec(**settings)


def fasta_spec(path: Path, **overrides) -> TaskSpec:
    settings = dict(name="loc", format="fasta", path=path, type="classification", label_regex=r"^\S+\s+(\S+)", cv_folds=2)
    settings.update(overrides)
    return TaskSpec(**settings)


def labelled_csv(labels: list, seed: int = 0) -> str:
    """A CSV with one random 5- to 12-residue sequence per label (ids s0, s1, ...)."""
    rng = np.random.default_rng(seed)
    residues = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    lines = ["name,seq,score"]
    for i, label in enumerate(labels):
        lines.append(f"s{i},{''.join(rng.choice(residues, size=rng.integers(5, 13)))},{label}")
    return "\n".join(lines) + "\n"


# --- CSV ---------------------------------------------------------------------------------------


def test_csv_with_id_and_fold_columns_gives_the_exact_table(write_file):
    table = load_task(csv_spec(write_file("toy.csv", TINY_CSV)))

    assert list(table.columns) == TASK_COLUMNS
    assert table.to_dict("list") == {
        "id": ["a", "b", "c", "d"],
        "sequence": ["ACDE", "MKV", "WYYX", "GGG"],
        "label": [0.5, 1.5, -2.0, 0.3],
        "fold": [0, 1, 0, 1],
    }
    assert table["label"].dtype == np.float64
    assert np.issubdtype(table["fold"].dtype, np.integer)


def test_csv_without_id_column_uses_editor_line_numbers(write_file):
    table = load_task(csv_spec(write_file("toy.csv", TINY_CSV), id_column=None))

    assert list(table["id"]) == ["row2", "row3", "row4", "row5"]


def test_csv_classification_labels_stay_strings(write_file):
    path = write_file("toy.csv", "sequence,label,split\nACD,NA,0\nMKV,1,1\nGGG,None,0\n")

    table = load_task(TaskSpec(name="toy", format="csv", path=path, type="classification", fold_column="split"))

    assert list(table["label"]) == ["NA", "1", "None"]


def test_surrounding_whitespace_in_labels_and_folds_is_ignored(write_file):
    path = write_file("toy.csv", "seq,score,split\nACD, 2.5 , 1\n")

    table = load_task(csv_spec(path, id_column=None))

    assert table.to_dict("list") == {"id": ["row2"], "sequence": ["ACD"], "label": [2.5], "fold": [1]}


# --- FASTA -------------------------------------------------------------------------------------

TINY_FASTA = """\
>P1 Nucleus-S extra words
MKV
>P2 Cytoplasm-M
ACDEF
GHIK
>P3 Nucleus-U
WYYX
>P4 Cytoplasm-S
GGGA
"""


@pytest.mark.parametrize(
    "regex",
    [
        pytest.param(r"^(?P<acc>\S+)\s+(?P<label>\S+)-[MSU]", id="named-group-wins-over-group-1"),
        pytest.param(r"^\S+\s+(\S+)-[MSU]", id="group-1"),
    ],
)
def test_fasta_label_regex(write_file, regex):
    table = load_task(fasta_spec(write_file("loc.fasta", TINY_FASTA), label_regex=regex))

    assert table[["id", "sequence", "label"]].to_dict("list") == {
        "id": ["P1", "P2", "P3", "P4"],
        "sequence": ["MKV", "ACDEFGHIK", "WYYX", "GGGA"],
        "label": ["Nucleus", "Cytoplasm", "Nucleus", "Cytoplasm"],
    }
    assert sorted(table["fold"]) == [0, 0, 1, 1]


def test_fasta_regression_labels_are_numbers(write_file):
    path = write_file("dms.fasta", ">v1 score=0.25\nMKV\n>v2 score=-1e-3\nACD\n")

    table = load_task(fasta_spec(path, type="regression", label_regex=r"score=(\S+)"))

    assert list(table["label"]) == [0.25, -0.001]


# --- subsampling, folds, rare classes ----------------------------------------------------------


def test_subsample_is_seeded_and_keeps_file_order(write_file):
    path = write_file("many.csv", labelled_csv(list(range(40))))
    spec = csv_spec(path, fold_column=None, max_sequences=10, seed=3)

    first, again = load_task(spec), load_task(spec)
    other_seed = load_task(replace(spec, seed=4))

    pd.testing.assert_frame_equal(first, again)
    assert len(first) == 10
    numbers = [int(i[1:]) for i in first["id"]]
    assert numbers == sorted(numbers)
    assert set(first["id"]) <= {f"s{i}" for i in range(40)}
    assert list(other_seed["id"]) != list(first["id"])


def test_max_sequences_above_the_row_count_keeps_everything(write_file):
    table = load_task(csv_spec(write_file("toy.csv", TINY_CSV), max_sequences=100))

    assert list(table["id"]) == ["a", "b", "c", "d"]


def test_classification_folds_are_stratified_when_every_class_fills_every_fold(write_file):
    labels = ["A"] * 10 + ["B"] * 10 + ["C"] * 10
    path = write_file("cls.csv", labelled_csv(labels))

    table = load_task(csv_spec(path, type="classification", fold_column=None, cv_folds=5, seed=1))

    assert set(table["fold"]) == {0, 1, 2, 3, 4}
    for fold in range(5):
        assert Counter(table.loc[table.fold == fold, "label"]) == {"A": 2, "B": 2, "C": 2}


def test_classes_smaller_than_the_fold_count_still_put_every_row_in_one_fold():
    labels = np.array(["A"] * 12 + ["B"] * 2)  # B cannot appear in all 5 folds

    folds = assign_folds(labels, "classification", n_folds=5, seed=0)

    assert folds.shape == (14,)
    assert set(folds) == {0, 1, 2, 3, 4}
    sizes = Counter(folds).values()
    assert max(sizes) - min(sizes) <= 1
    np.testing.assert_array_equal(folds, assign_folds(labels, "classification", n_folds=5, seed=0))


def test_regression_fold_assignment_is_balanced_seeded_and_total():
    labels = np.linspace(0, 1, 23)

    folds = assign_folds(labels, "regression", n_folds=5, seed=7)

    assert folds.shape == (23,)
    assert sorted(Counter(folds).values()) == [4, 4, 5, 5, 5]
    np.testing.assert_array_equal(folds, assign_folds(labels, "regression", n_folds=5, seed=7))
    assert not np.array_equal(folds, assign_folds(labels, "regression", n_folds=5, seed=8))


def test_min_class_size_drops_rare_classes(write_file):
    labels = ["A"] * 6 + ["rare"] * 2 + ["B"] * 6
    path = write_file("cls.csv", labelled_csv(labels))

    table = load_task(csv_spec(path, type="classification", fold_column=None, cv_folds=3, min_class_size=3))

    assert Counter(table["label"]) == {"A": 6, "B": 6}
    assert list(table["id"]) == [f"s{i}" for i in range(6)] + [f"s{i}" for i in range(8, 14)]


def test_min_class_size_leaving_one_class_is_an_error(write_file):
    path = write_file("cls.csv", labelled_csv(["A"] * 6 + ["B"] * 2))

    with pytest.raises(InputError, match=r"fewer than 2 classes left after min_class_size=3"):
        load_task(csv_spec(path, type="classification", fold_column=None, cv_folds=2, min_class_size=3))


# --- failures ----------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"file .*nope\.csv does not exist; fix tasks\.toy\.path"):
        load_task(csv_spec(tmp_path / "nope.csv"))


@pytest.mark.parametrize("key", ["sequence_column", "label_column", "id_column", "fold_column"])
def test_missing_column_names_the_column_and_the_config_key(write_file, key):
    path = write_file("toy.csv", TINY_CSV)

    with pytest.raises(InputError, match=rf"toy\.csv: column 'absent' not found \(columns: name, seq, score, split\); set tasks\.toy\.{key}"):
        load_task(csv_spec(path, **{key: "absent"}))


def test_unreadable_csv(write_file):
    path = write_file("bad.csv", b"seq,score\n\xff\xfe\xfa,1\n")

    with pytest.raises(InputError, match=r"bad\.csv: not a readable CSV file"):
        load_task(csv_spec(path, id_column=None, fold_column=None))


def test_empty_sequence(write_file):
    path = write_file("toy.csv", "name,seq,score,split\na,ACD,1,0\nb,,2,1\n")

    with pytest.raises(InputError, match=r"toy\.csv: row 3 \(b\): sequence is empty"):
        load_task(csv_spec(path))


@pytest.mark.parametrize(
    ("sequence", "shown", "fix"),
    [("MkV", "k", "upper-case the residues"), ("acde", "acde", "upper-case"), ("MKV*", r"\*", "stop codons, gaps and J have no ESM token"),
     ("MKJV", "J", "J have no ESM token"), ("MK1V2", "12", "remove or replace"), ("MK V", " ", "remove"), ("MK-V", "-", "gaps")],
)
def test_characters_outside_the_esm_alphabet(write_file, sequence, shown, fix):
    path = write_file("toy.csv", f"name,seq,score,split\na,ACD,1,0\nb,{sequence},2,1\n")

    with pytest.raises(InputError, match=rf"toy\.csv: row 3 \(b\): sequence has characters '{shown}' outside the ESM alphabet .*{fix}"):
        load_task(csv_spec(path))


def test_ambiguous_residues_have_esm_tokens_and_are_counted(write_file, caplog):
    path = write_file("toy.csv", "name,seq,score,split\na,ACX,1,0\nb,MBV,2,1\nc,MZU,2,1\nd,MOV,2,0\ne,MKV,1,0\n")

    table = load_task(csv_spec(path))

    assert table["sequence"].tolist() == ["ACX", "MBV", "MZU", "MOV", "MKV"]
    assert "task toy: 4 sequences contain the ambiguous or rare residues X, B, U, Z or O" in caplog.text


def test_same_id_with_another_label_is_an_error_and_verbatim_repeats_are_dropped(write_file, caplog):
    conflicting = write_file("toy.csv", "name,seq,score,split\na,ACD,1,0\nb,MKV,2,1\na,ACD,3,0\n")
    with pytest.raises(InputError, match=r"toy\.csv: row 4: id 'a' occurs more than once, with another label or split than at .*toy\.csv: row 2"):
        load_task(csv_spec(conflicting))

    repeated = write_file("rep.csv", "name,seq,score,split\na,ACD,1,0\nb,MKV,2,1\na,ACD,1,0\n")
    assert load_task(csv_spec(repeated))["id"].tolist() == ["a", "b"]
    assert "dropped 1 rows that repeat an earlier row verbatim" in caplog.text


def test_duplicate_ids(write_file):
    path = write_file("toy.csv", "name,seq,score,split\na,ACD,1,0\nb,MKV,2,1\na,GGG,3,0\n")

    with pytest.raises(InputError, match=r"toy\.csv: row 4: id 'a' occurs more than once"):
        load_task(csv_spec(path))


def test_missing_label(write_file):
    path = write_file("toy.csv", "name,seq,score,split\na,ACD,1,0\nb,MKV,,1\nc,GGG, ,0\n")

    with pytest.raises(InputError, match=r"toy\.csv: row 3: label is missing \(2 rows in all\)"):
        load_task(csv_spec(path))


@pytest.mark.parametrize("label", ["high", "nan", "inf", "1,5"])
def test_non_numeric_regression_label(write_file, label):
    path = write_file("toy.csv", f'name,seq,score,split\na,ACD,1,0\nb,MKV,"{label}",1\n')

    with pytest.raises(InputError, match=rf"row 3: label '{label}' is not a finite number, but task 'toy' is a regression"):
        load_task(csv_spec(path))


@pytest.mark.parametrize("fold", ["x", "-2", "1.5", "", "-1"])
def test_bad_fold_value(write_file, fold):
    path = write_file("toy.csv", f"name,seq,score,split\na,ACD,1,0\nb,MKV,2,{fold}\n")

    with pytest.raises(InputError, match=rf"row 3: fold '{re.escape(fold)}' in column 'split' is not a non-negative integer"):
        load_task(csv_spec(path))


def test_unknown_task_type_and_format(write_file):
    path = write_file("toy.csv", TINY_CSV)

    with pytest.raises(InputError, match=r"type 'ranking' is not one of regression, classification"):
        load_task(csv_spec(path, type="ranking"))
    with pytest.raises(InputError, match=r"format 'tsv' is not one of csv, fasta, proteingym, deeploc, deepfri_ec, deepsol, flip"):
        load_task(csv_spec(path, format="tsv"))


def test_fewer_rows_than_cv_folds_is_an_input_error(write_file):
    path = write_file("toy.csv", TINY_CSV)

    with pytest.raises(InputError, match=r"4 sequences cannot be split into 5 folds"):
        load_task(csv_spec(path, fold_column=None, cv_folds=5))


def test_a_single_cv_fold_is_an_input_error(write_file):
    path = write_file("toy.csv", TINY_CSV)

    with pytest.raises(InputError, match=r"cv_folds"):
        load_task(csv_spec(path, fold_column=None, cv_folds=1))


def test_fasta_header_not_matching_the_regex(write_file):
    path = write_file("loc.fasta", TINY_FASTA.replace(">P2 Cytoplasm-M", ">P2 Cytoplasm"))

    with pytest.raises(InputError, match=r"loc\.fasta: record 2 \(P2\): header 'P2 Cytoplasm' does not match label_regex .*; fix tasks\.loc\.label_regex"):
        load_task(fasta_spec(path, label_regex=r"^\S+\s+(\S+)-[MSU]"))


def test_fasta_optional_group_that_did_not_match(write_file):
    path = write_file("loc.fasta", TINY_FASTA)

    with pytest.raises(InputError, match=r"record 1 \(P1\): header .* does not match"):
        load_task(fasta_spec(path, label_regex=r"^\S+\s+(?:(Golgi)|\S+)"))


def test_fasta_regex_without_a_group(write_file):
    path = write_file("loc.fasta", TINY_FASTA)

    regex = r"^\S+"

    with pytest.raises(InputError, match=re.escape(f"label_regex '{regex}' has no capture group; wrap the label in (?P<label>...)")):
        load_task(fasta_spec(path, label_regex=regex))


def test_fasta_invalid_regex_and_missing_regex(write_file):
    path = write_file("loc.fasta", TINY_FASTA)

    with pytest.raises(InputError, match=r"label_regex '\(' is not a valid regular expression"):
        load_task(fasta_spec(path, label_regex="("))
    with pytest.raises(InputError, match=r"a FASTA task needs tasks\.loc\.label_regex"):
        load_task(fasta_spec(path, label_regex=None))


def test_fasta_with_no_records(write_file):
    path = write_file("empty.fasta", "")

    with pytest.raises(InputError, match=r"empty\.fasta: no FASTA records found"):
        load_task(fasta_spec(path))


def test_text_that_is_not_fasta_is_an_input_error(write_file):
    path = write_file("table.fasta", TINY_CSV)

    with pytest.raises(InputError, match=r"table\.fasta"):
        load_task(fasta_spec(path))


def test_fasta_empty_sequence_and_bad_characters(write_file):
    with pytest.raises(InputError, match=r"record 2 \(P2\): sequence is empty"):
        load_task(fasta_spec(write_file("a.fasta", ">P1 x\nMKV\n>P2 y\n>P3 z\nAC\n")))
    with pytest.raises(InputError, match=r"record 1 \(P1\): sequence has characters 'k'"):
        load_task(fasta_spec(write_file("b.fasta", ">P1 x\nMkV\n")))


def test_fasta_duplicate_ids(write_file):
    with pytest.raises(InputError, match=r"record 3: id 'P1' occurs more than once"):
        load_task(fasta_spec(write_file("a.fasta", ">P1 x\nMKV\n>P2 y\nAC\n>P1 z\nGG\n")))


def test_fasta_non_numeric_regression_label(write_file):
    path = write_file("dms.fasta", ">v1 score=0.25\nMKV\n>v2 score=high\nACD\n")

    with pytest.raises(InputError, match=r"record 2: label 'high' is not a finite number"):
        load_task(fasta_spec(path, type="regression", label_regex=r"score=(\S+)"))


# --- task table files --------------------------------------------------------------------------


def test_task_table_round_trip_regression(write_file, tmp_path):
    table = load_task(csv_spec(write_file("toy.csv", TINY_CSV)))
    table.loc[0, "label"] = 0.1 + 0.2  # not representable in short decimal form

    write_task_table(table, tmp_path / "out" / "toy.tsv")
    back = read_task_table(tmp_path / "out" / "toy.tsv", "regression")

    assert back.to_dict("list") == table.to_dict("list")
    assert back["label"].dtype == np.float64
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["toy.tsv"]


def test_task_table_round_trip_keeps_classification_labels_as_text(tmp_path):
    table = pd.DataFrame({"id": ["1", "007"], "sequence": ["ACD", "MKV"], "label": ["NA", "1.0"], "fold": [0, -1]})

    write_task_table(table, tmp_path / "t.tsv")
    back = read_task_table(tmp_path / "t.tsv", "classification")

    assert back.to_dict("list") == table.to_dict("list")


def test_read_task_table_failures(write_file, tmp_path):
    with pytest.raises(InputError, match=r"missing\.tsv: not a task table written by `plmexit prepare`"):
        read_task_table(tmp_path / "missing.tsv")
    with pytest.raises(InputError, match=r"cols\.tsv: columns \['id', 'sequence', 'label'\] are not"):
        read_task_table(write_file("cols.tsv", "id\tsequence\tlabel\na\tACD\t1\n"))
    with pytest.raises(InputError, match=r"folds\.tsv: not a task table"):
        read_task_table(write_file("folds.tsv", "id\tsequence\tlabel\tfold\na\tACD\t1\tx\n"))


def test_sequences_sha256_is_exact_and_tracks_every_change():
    digest = sequences_sha256(["a", "b"], ["ACDE", "MKV"])

    assert digest == hashlib.sha256(b"a\tACDE\nb\tMKV\n").hexdigest()
    assert sequences_sha256(["a", "b"], ["ACDE", "MKI"]) != digest
    assert sequences_sha256(["b", "a"], ["MKV", "ACDE"]) != digest
    assert sequences_sha256(["a", "c"], ["ACDE", "MKV"]) != digest
    assert sequences_sha256(pd.Series(["a", "b"]), pd.Series(["ACDE", "MKV"])) == digest


# --- real data ---------------------------------------------------------------------------------


def test_proteingym_blat_regression_with_published_folds(shared_data):
    path = shared_data / "proteingym" / "cv_folds_singles_substitutions" / "BLAT_ECOLX_Stiffler_2015.csv"
    spec = TaskSpec(
        name="blat", format="csv", path=path, type="regression", sequence_column="mutated_sequence",
        label_column="DMS_score", id_column="mutant", fold_column="fold_random_5", max_sequences=50, seed=0,
    )

    table = load_task(spec)

    assert list(table.columns) == TASK_COLUMNS
    assert len(table) == 50 and table["id"].is_unique
    assert set(table["fold"]) <= {0, 1, 2, 3, 4}
    assert table["label"].dtype == np.float64 and np.isfinite(table["label"]).all()
    assert (table["sequence"].str.len() == 286).all()
    for mutant, sequence in zip(table["id"], table["sequence"]):
        position, new = int(mutant[1:-1]), mutant[-1]  # e.g. H24C, 1-based
        assert sequence[position - 1] == new
    pd.testing.assert_frame_equal(table, load_task(spec))
    source = pd.read_csv(path).set_index("mutant")
    np.testing.assert_array_equal(table["label"], source.loc[table["id"], "DMS_score"])
    np.testing.assert_array_equal(table["fold"], source.loc[table["id"], "fold_random_5"])


def test_deeploc_test_set_has_ten_classes(shared_data):
    spec = TaskSpec(
        name="deeploc", format="fasta", path=shared_data / "deeploc" / "deeploc_test_set.fasta",
        type="classification", label_regex=r"^\S+\s+(?P<label>\S+)-[MSU]", cv_folds=5,
    )

    table = load_task(spec)

    assert len(table) == 2768 and table["id"].is_unique
    assert set(table["label"]) == DEEPLOC_CLASSES
    assert set(table["fold"]) == {0, 1, 2, 3, 4}
    assert table.loc[0, ["id", "label"]].tolist() == ["Q9H400", "Cell.membrane"]
