"""The task table, what every reader shares, and the readers of your own CSV and FASTA files.

Invariant: a task table has exactly the columns of ``TASK_COLUMNS``: ``id`` (unique str),
``sequence`` (upper-case residues the ESM alphabet knows), ``label`` (float for regression, str
for classification) and ``fold`` (int; rows with fold ``f`` are the test part of evaluation fold
``f``, rows with fold ``-1`` are only ever trained on). A reader returns those columns plus
``where`` (file and row, for messages) and its split; ``plmexit.data.loading`` validates and
folds the result. Everything downstream (embedding, probes) reads the table and nothing else, so
a new input format is one reader and one entry in ``plmexit.data.formats``. This module knows
nothing of torch.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from Bio import SeqIO

from plmexit.atomic import atomic_path
from plmexit.errors import InputError, one_line

log = logging.getLogger(__name__)

TASK_COLUMNS = ["id", "sequence", "label", "fold"]
TRAIN_ONLY_FOLD = -1
TEST_FOLD = 0
# Multi-label tasks keep a row's labels as one string: the sorted class names joined by this.
LABEL_SEPARATOR = ";"
# Residues the ESM-1b/ESM2 alphabet has tokens for: the 20 standard amino acids plus the
# ambiguity and rare codes X, B, U, Z, O. Anything else would silently become <unk>.
STANDARD_RESIDUES = frozenset("ACDEFGHIKLMNPQRSTVWY")
AMBIGUOUS_RESIDUES = frozenset("XBUZO")
ESM_RESIDUES = STANDARD_RESIDUES | AMBIGUOUS_RESIDUES


@dataclass(frozen=True)
class TaskSpec:
    """How to read one task; mirrors one entry of the config's ``tasks`` list.

    ``path`` is the main file of every format; the other paths belong to the formats named in
    their comments. ``test_path`` (with ``test_labels_path`` for DeepSol) gives an official
    train/test split; without it the task is cross-validated.
    """

    name: str
    format: str  # a kind of plmexit.data.formats.FORMATS
    path: Path
    type: str  # one of TASK_TYPES
    sequence_column: str = "sequence"
    label_column: str = "label"
    id_column: str | None = None
    fold_column: str | None = None
    label_regex: str | None = None
    test_path: Path | None = None  # csv, fasta, deeploc, deepsol
    labels_path: Path | None = None  # deepsol: *_tgt aligned with path (*_src)
    test_labels_path: Path | None = None  # deepsol
    annotations: Path | None = None  # deepfri_ec: the annotation TSV
    ids_path: Path | None = None  # deepfri_ec: chains to use (one id a line)
    test_ids_path: Path | None = None  # deepfri_ec: chains that form the test part
    reference: Path | None = None  # proteingym: DMS_substitutions.csv
    dms_id: str | None = None  # proteingym
    fold_scheme: str | None = None  # proteingym: fold_random_5, fold_modulo_5 or fold_contiguous_5
    split: str | None = None  # flip: split name inside splits.zip (e.g. three_vs_rest)
    localization: str = "location"  # deeploc: location (10 classes) or membrane (M vs S)
    max_sequences: int | None = None
    min_class_size: int = 0
    cv_folds: int = 5
    seed: int = 0
    folds: str | None = None  # cross-validated tasks: random or homology (plmexit.data.homology); None: the format's default_folds
    homology_identity: float | None = None  # folds homology: MMseqs2's --min-seq-id; None: plmexit.data.homology.DEFAULT_IDENTITY


def read_csv_task(spec: TaskSpec) -> tuple[pd.DataFrame, str | None]:
    table = _read_csv_file(spec, spec.path, fold_column=spec.fold_column)
    if spec.test_path is None:
        return table, (f"fold column {spec.fold_column!r} of {spec.path.name}" if spec.fold_column else None)
    if spec.fold_column:
        raise InputError(f"task {spec.name!r}: give either fold_column or test_path, not both")
    return train_test(table, _read_csv_file(spec, spec.test_path, fold_column=None), spec)


def read_csv_text(source, path: Path) -> pd.DataFrame:
    """A CSV file (or an open handle on one, ``path`` naming it) with every cell as text, as readers take it."""
    try:
        return pd.read_csv(source, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: not a readable CSV file ({exc})") from None


def _read_csv_file(spec: TaskSpec, path: Path, fold_column: str | None) -> pd.DataFrame:
    raw = read_csv_text(path, path)
    wanted = {
        "sequence_column": spec.sequence_column,
        "label_column": spec.label_column,
        "id_column": spec.id_column,
        "fold_column": fold_column,
    }
    for key, column in wanted.items():
        if column is not None and column not in raw.columns:
            raise InputError(
                f"{path}: column {column!r} not found (columns: {', '.join(raw.columns)}); "
                f"set tasks.{spec.name}.{key} to one of them"
            )
    # Row numbers as a person sees them in an editor: line 1 is the header.
    rows = np.arange(len(raw)) + 2
    prefix = "row" if path == spec.path else "test_row"  # default ids stay unique across a train and a test file
    ids = raw[spec.id_column] if spec.id_column else pd.Series([f"{prefix}{r}" for r in rows])
    table = pd.DataFrame({"id": ids.to_numpy(), "sequence": raw[spec.sequence_column].to_numpy(), "label": raw[spec.label_column].to_numpy()})
    table["fold"] = parse_folds(raw[fold_column], path, fold_column, rows) if fold_column else TRAIN_ONLY_FOLD
    table["where"] = [f"{path}: row {r}" for r in rows]
    return table


def read_fasta_task(spec: TaskSpec) -> tuple[pd.DataFrame, str | None]:
    if not spec.label_regex:
        raise InputError(f"task {spec.name!r}: a FASTA task needs tasks.{spec.name}.label_regex")
    try:
        pattern = re.compile(spec.label_regex)
    except re.error as exc:
        raise InputError(f"task {spec.name!r}: label_regex '{spec.label_regex}' is not a valid regular expression ({exc})") from None
    group = "label" if "label" in pattern.groupindex else 1
    if pattern.groups == 0:
        raise InputError(f"task {spec.name!r}: label_regex '{spec.label_regex}' has no capture group; wrap the label in (?P<label>...)")

    def label_of(path, number, record):
        match = pattern.search(record.description)
        if match is None or match.group(group) is None:
            raise InputError(
                f"{path}: record {number} ({record.id}): header '{record.description}' does not match "
                f"label_regex '{spec.label_regex}'; fix tasks.{spec.name}.label_regex"
            )
        return match.group(group)

    table = read_fasta_records(spec.path, label_of)
    if spec.test_path is None:
        return table, None
    return train_test(table, read_fasta_records(spec.test_path, label_of), spec)


def read_fasta_records(path: Path, label_of) -> pd.DataFrame:
    """A FASTA file as a reader's table; ``label_of(path, number, record)`` returns a label or None (row dropped)."""
    ids, sequences, labels, where = [], [], [], []
    number = 0
    try:
        with open(path) as handle:
            for number, record in enumerate(SeqIO.parse(handle, "fasta"), start=1):
                label = label_of(path, number, record)
                if label is None:
                    continue
                ids.append(record.id)
                sequences.append(str(record.seq))
                labels.append(label)
                where.append(f"{path}: record {number}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a FASTA file ({one_line(exc, 200)})") from None
    if number == 0:
        raise InputError(f"{path}: no FASTA records found; is it a FASTA file?")
    return pd.DataFrame({"id": ids, "sequence": sequences, "label": labels, "fold": TRAIN_ONLY_FOLD, "where": where})


def train_test(train: pd.DataFrame, test: pd.DataFrame, spec: TaskSpec) -> tuple[pd.DataFrame, str]:
    """The reader's table and split of a train file and a test file (``spec.path``, ``spec.test_path``).

    Rows of the training file are only trained on; the test file is the one evaluation fold.
    """
    table = pd.concat([train.assign(fold=TRAIN_ONLY_FOLD), test.assign(fold=TEST_FOLD)], ignore_index=True)
    return table, f"train {spec.path.name} / test {spec.test_path.name}"


def parse_folds(values: pd.Series, path: Path, column: str, rows: np.ndarray, allowed: range | None = None) -> np.ndarray:
    """Integer fold ids from a text column; ``allowed`` restricts them (ProteinGym: 0-4)."""
    values = values.str.strip()
    folds = pd.to_numeric(values, errors="coerce")
    bad = folds.isna().to_numpy() | (folds.to_numpy() % 1 != 0) | (folds.to_numpy() < 0)
    if allowed is not None:
        bad |= ~np.isin(folds.to_numpy(), list(allowed))
    bad = np.flatnonzero(bad)
    if bad.size:
        expected = f"one of {allowed.start}-{allowed.stop - 1}" if allowed is not None else "a non-negative integer"
        raise InputError(
            f"{path}: row {rows[bad[0]]}: fold {values.iloc[bad[0]]!r} in column {column!r} "
            f"is not {expected}; fix the file or the fold_column setting"
        )
    return folds.to_numpy(dtype=int)


def split_labels(label: str) -> list[str]:
    """The classes of one multi-label row."""
    return label.split(LABEL_SEPARATOR)


def write_task_table(table: pd.DataFrame, path: str | Path) -> None:
    """Write a normalised task table as TSV, atomically."""
    with atomic_path(path) as tmp:
        table[TASK_COLUMNS].to_csv(tmp, sep="\t", index=False)


def read_task_table(path: str | Path, task_type: str | None = None) -> pd.DataFrame:
    """Read a table written by ``write_task_table``; labels are floats for regression, else str."""
    path = Path(path)
    try:
        table = pd.read_csv(path, sep="\t", dtype={"id": str, "sequence": str, "label": str, "fold": int}, keep_default_na=False)
    except (FileNotFoundError, pd.errors.ParserError, ValueError) as exc:
        raise InputError(f"{path}: not a task table written by `plmexit prepare` ({exc}); rerun prepare") from None
    if list(table.columns) != TASK_COLUMNS:
        raise InputError(f"{path}: columns {list(table.columns)} are not {TASK_COLUMNS}; rerun `plmexit prepare`")
    if task_type == "regression":
        table["label"] = table["label"].astype(float)
    return table


def sequences_sha256(ids, sequences) -> str:
    """Hash of the (id, sequence) pairs in order: what an embedding store was made from."""
    digest = hashlib.sha256()
    for identifier, sequence in zip(ids, sequences):
        digest.update(f"{identifier}\t{sequence}\n".encode())
    return digest.hexdigest()
