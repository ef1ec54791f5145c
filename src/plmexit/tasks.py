"""Read labelled sequence files into one normalised task table.

Invariant: every reader returns a ``pandas.DataFrame`` with exactly the columns of
``TASK_COLUMNS``: ``id`` (unique str), ``sequence`` (upper-case residues the ESM alphabet knows),
``label`` (float for regression, str for classification) and ``fold`` (int; rows with fold ``f``
are the test part of evaluation fold ``f``, rows with fold ``-1`` are only ever trained on).
Everything downstream (embedding, probes) reads this table and nothing else, so a new input
format is one new reader here. This module knows nothing of torch.
"""

from __future__ import annotations

import hashlib
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from Bio import SeqIO
from sklearn.model_selection import KFold, StratifiedKFold

from plmexit.atomic import atomic_path
from plmexit.errors import InputError, one_line

log = logging.getLogger(__name__)

TASK_COLUMNS = ["id", "sequence", "label", "fold"]
TASK_TYPES = ("regression", "classification")
TRAIN_ONLY_FOLD = -1
# Residues the ESM-1b/ESM2 alphabet has tokens for: the 20 standard amino acids plus the
# ambiguity and rare codes X, B, U, Z, O. Anything else would silently become <unk>.
ESM_RESIDUES = frozenset("ACDEFGHIKLMNPQRSTVWYXBUZO")


@dataclass(frozen=True)
class TaskSpec:
    """How to read one task; mirrors the ``tasks.<name>`` block of the config."""

    name: str
    format: str  # "csv" or "fasta"
    path: Path
    type: str  # "regression" or "classification"
    sequence_column: str = "sequence"
    label_column: str = "label"
    id_column: str | None = None
    fold_column: str | None = None
    label_regex: str | None = None
    max_sequences: int | None = None
    min_class_size: int = 0
    cv_folds: int = 5
    seed: int = 0


def load_task(spec: TaskSpec) -> pd.DataFrame:
    """Read, validate, subsample and fold-assign a task as described by ``spec``."""
    if spec.type not in TASK_TYPES:
        raise InputError(f"task {spec.name!r}: type {spec.type!r} is not one of {', '.join(TASK_TYPES)}")
    if not spec.path.is_file():
        raise InputError(f"task {spec.name!r}: file {spec.path} does not exist; fix tasks.{spec.name}.path")
    if spec.format == "csv":
        table = _read_csv(spec)
    elif spec.format == "fasta":
        table = _read_fasta(spec)
    else:
        raise InputError(f"task {spec.name!r}: format {spec.format!r} is not 'csv' or 'fasta'")
    table = _subsample(table, spec)
    if spec.type == "classification":
        table = _drop_rare_classes(table, spec)
    if spec.fold_column is None:
        table["fold"] = assign_folds(table["label"].to_numpy(), spec.type, spec.cv_folds, spec.seed)
    if (table["fold"] >= 0).sum() == 0:
        raise InputError(f"task {spec.name!r}: no row is in a test fold; check tasks.{spec.name}.fold_column")
    log.info("task %s: %d sequences, %d folds", spec.name, len(table), table.loc[table.fold >= 0, "fold"].nunique())
    return table[TASK_COLUMNS].reset_index(drop=True)


def _read_csv(spec: TaskSpec) -> pd.DataFrame:
    try:
        raw = pd.read_csv(spec.path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{spec.path}: not a readable CSV file ({exc})") from None
    wanted = {
        "sequence_column": spec.sequence_column,
        "label_column": spec.label_column,
        "id_column": spec.id_column,
        "fold_column": spec.fold_column,
    }
    for key, column in wanted.items():
        if column is not None and column not in raw.columns:
            raise InputError(
                f"{spec.path}: column {column!r} not found (columns: {', '.join(raw.columns)}); "
                f"set tasks.{spec.name}.{key} to one of them"
            )
    # Row numbers as a person sees them in an editor: line 1 is the header.
    rows = np.arange(len(raw)) + 2
    ids = raw[spec.id_column] if spec.id_column else pd.Series([f"row{r}" for r in rows])
    table = pd.DataFrame({"id": ids.to_numpy(), "sequence": raw[spec.sequence_column].to_numpy()})
    table["label"] = _parse_labels(raw[spec.label_column].to_numpy(), spec, rows, "row")
    table["fold"] = _parse_folds(raw, spec, rows) if spec.fold_column else TRAIN_ONLY_FOLD
    _check_sequences(table, spec, rows, "row")
    return table


def _read_fasta(spec: TaskSpec) -> pd.DataFrame:
    if not spec.label_regex:
        raise InputError(f"task {spec.name!r}: a FASTA task needs tasks.{spec.name}.label_regex")
    try:
        pattern = re.compile(spec.label_regex)
    except re.error as exc:
        raise InputError(f"task {spec.name!r}: label_regex '{spec.label_regex}' is not a valid regular expression ({exc})") from None
    group = "label" if "label" in pattern.groupindex else 1
    if pattern.groups == 0:
        raise InputError(f"task {spec.name!r}: label_regex '{spec.label_regex}' has no capture group; wrap the label in (?P<label>...)")
    ids, sequences, labels = [], [], []
    try:
        with open(spec.path) as handle:
            for number, record in enumerate(SeqIO.parse(handle, "fasta"), start=1):
                match = pattern.search(record.description)
                if match is None or match.group(group) is None:
                    raise InputError(
                        f"{spec.path}: record {number} ({record.id}): header '{record.description}' does not match "
                        f"label_regex '{spec.label_regex}'; fix tasks.{spec.name}.label_regex"
                    )
                ids.append(record.id)
                sequences.append(str(record.seq))
                labels.append(match.group(group))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{spec.path}: not a FASTA file ({one_line(exc, 200)})") from None
    if not ids:
        raise InputError(f"{spec.path}: no FASTA records found; is it a FASTA file?")
    records = np.arange(1, len(ids) + 1)
    table = pd.DataFrame({"id": ids, "sequence": sequences})
    table["label"] = _parse_labels(np.asarray(labels, dtype=object), spec, records, "record")
    table["fold"] = TRAIN_ONLY_FOLD
    _check_sequences(table, spec, records, "record")
    return table


def _parse_labels(values: np.ndarray, spec: TaskSpec, rows: np.ndarray, unit: str) -> np.ndarray:
    text = np.asarray([str(v).strip() for v in values], dtype=object)
    missing = np.flatnonzero(text == "")
    if missing.size:
        raise InputError(f"{spec.path}: {unit} {rows[missing[0]]}: label is missing ({missing.size} {unit}s in all); remove them or fill the label")
    if spec.type == "classification":
        return text
    numbers = pd.to_numeric(pd.Series(text), errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(numbers))
    if bad.size:
        raise InputError(
            f"{spec.path}: {unit} {rows[bad[0]]}: label {text[bad[0]]!r} is not a finite number, "
            f"but task {spec.name!r} is a regression; fix the value or set type: classification"
        )
    return numbers


def _parse_folds(raw: pd.DataFrame, spec: TaskSpec, rows: np.ndarray) -> np.ndarray:
    values = raw[spec.fold_column].str.strip()
    folds = pd.to_numeric(values, errors="coerce")
    bad = np.flatnonzero(folds.isna().to_numpy() | (folds.to_numpy() % 1 != 0) | (folds.to_numpy() < 0))
    if bad.size:
        raise InputError(
            f"{spec.path}: row {rows[bad[0]]}: fold {values.iloc[bad[0]]!r} in column {spec.fold_column!r} "
            "is not a non-negative integer; fix the file or the fold_column setting"
        )
    return folds.to_numpy(dtype=int)


def _check_sequences(table: pd.DataFrame, spec: TaskSpec, rows: np.ndarray, unit: str) -> None:
    for i, sequence in enumerate(table["sequence"]):
        if not sequence:
            raise InputError(f"{spec.path}: {unit} {rows[i]} ({table['id'].iat[i]}): sequence is empty")
        unknown = set(sequence) - ESM_RESIDUES
        if unknown:
            raise InputError(
                f"{spec.path}: {unit} {rows[i]} ({table['id'].iat[i]}): sequence has characters "
                f"{''.join(sorted(unknown))!r} outside the ESM alphabet (upper-case amino-acid codes); clean the sequence"
            )
    duplicated = table["id"].duplicated(keep="first").to_numpy()
    if duplicated.any():
        i = int(np.flatnonzero(duplicated)[0])
        raise InputError(
            f"{spec.path}: {unit} {rows[i]}: id {table['id'].iat[i]!r} occurs more than once; "
            f"ids must be unique (set tasks.{spec.name}.id_column to a unique column)"
        )


def _subsample(table: pd.DataFrame, spec: TaskSpec) -> pd.DataFrame:
    if spec.max_sequences is None or len(table) <= spec.max_sequences:
        return table
    rng = np.random.default_rng(spec.seed)
    keep = np.sort(rng.choice(len(table), size=spec.max_sequences, replace=False))
    log.info("task %s: subsampled %d of %d sequences (seed %d)", spec.name, spec.max_sequences, len(table), spec.seed)
    return table.iloc[keep].reset_index(drop=True)


def _drop_rare_classes(table: pd.DataFrame, spec: TaskSpec) -> pd.DataFrame:
    counts = table["label"].value_counts()
    rare = counts[counts < spec.min_class_size]
    if rare.empty:
        return table
    log.warning(
        "task %s: dropped %d sequences of %d classes with fewer than %d members (min_class_size): %s",
        spec.name, int(rare.sum()), len(rare), spec.min_class_size, ", ".join(f"{k}={v}" for k, v in rare.items()),
    )
    kept = table[~table["label"].isin(rare.index)].reset_index(drop=True)
    if kept["label"].nunique() < 2:
        raise InputError(f"task {spec.name!r}: fewer than 2 classes left after min_class_size={spec.min_class_size}; lower it or raise max_sequences")
    return kept


def assign_folds(labels: np.ndarray, task_type: str, n_folds: int, seed: int) -> np.ndarray:
    """Seeded k-fold assignment, stratified by class for classification."""
    folds = np.empty(len(labels), dtype=int)
    if n_folds < 2:
        raise InputError(f"cv_folds is {n_folds}; cross-validation needs at least 2 folds")
    if len(labels) < n_folds:
        raise InputError(f"{len(labels)} sequences cannot be split into {n_folds} folds; lower probe.cv_folds or add sequences")
    splitter = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    counts = pd.Series(labels).value_counts()
    # StratifiedKFold needs one class with at least n_folds members; below that nothing can be stratified.
    if task_type == "classification" and counts.max() >= n_folds:
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        if counts.min() < n_folds:
            log.warning(
                "class %r has %d members, fewer than %d folds, so it is missing from some test folds "
                "(set min_class_size to %d to drop such classes)", counts.idxmin(), counts.min(), n_folds, n_folds,
            )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")  # logged above
        for fold, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
            folds[test] = fold
    return folds


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
