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
from collections import Counter
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
TASK_TYPES = ("regression", "classification", "multilabel")
FORMATS = ("csv", "fasta", "proteingym", "deeploc", "deepfri_ec", "deepsol", "flip")
TRAIN_ONLY_FOLD = -1
TEST_FOLD = 0
# Multi-label tasks keep a row's labels as one string: the sorted class names joined by this.
LABEL_SEPARATOR = ";"
# Residues the ESM-1b/ESM2 alphabet has tokens for: the 20 standard amino acids plus the
# ambiguity and rare codes X, B, U, Z, O. Anything else would silently become <unk>.
STANDARD_RESIDUES = frozenset("ACDEFGHIKLMNPQRSTVWY")
AMBIGUOUS_RESIDUES = frozenset("XBUZO")
ESM_RESIDUES = STANDARD_RESIDUES | AMBIGUOUS_RESIDUES


# TaskSpec's optional file fields, besides ``path`` (the main file every format has).
FILE_FIELDS = ("test_path", "labels_path", "test_labels_path", "annotations", "ids_path", "test_ids_path", "reference")


@dataclass(frozen=True)
class TaskSpec:
    """How to read one task; mirrors one entry of the config's ``tasks`` list.

    ``path`` is the main file of every format; the other paths belong to the formats named in
    their comments. ``test_path`` (with ``test_labels_path`` for DeepSol) gives an official
    train/test split; without it the task is cross-validated.
    """

    name: str
    format: str  # one of FORMATS
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


def load_task(spec: TaskSpec) -> pd.DataFrame:
    """Read, validate, subsample and fold-assign a task as described by ``spec``.

    The returned table's ``attrs["split"]`` says how it is evaluated (the official split, the
    file's fold column, or seeded cross-validation); ``attrs["fold_scheme"]`` is a ProteinGym
    task's scheme as outputs name it (``*_built`` when plmexit built the folds), else None.
    """
    from plmexit.data import (
        datasets,
        proteingym,  # readers of the benchmark formats
    )

    if spec.type not in TASK_TYPES:
        raise InputError(f"task {spec.name!r}: type {spec.type!r} is not one of {', '.join(TASK_TYPES)}")
    readers = {
        "csv": _read_csv, "fasta": _read_fasta, "proteingym": proteingym.read_assay, "deeploc": datasets.read_deeploc,
        "deepfri_ec": datasets.read_deepfri_ec, "deepsol": datasets.read_deepsol, "flip": datasets.read_flip,
    }
    if spec.format not in readers:
        raise InputError(f"task {spec.name!r}: format {spec.format!r} is not one of {', '.join(FORMATS)}")
    for key in ("path", *FILE_FIELDS):
        path = getattr(spec, key)
        if path is not None and not Path(path).is_file():
            raise InputError(f"task {spec.name!r}: file {path} does not exist; fix tasks.{spec.name}.{key}")
    raw, split = readers[spec.format](spec)
    table = _finish_table(raw, spec)
    table = _subsample(table, spec)
    if spec.type == "classification":
        table = _drop_rare_classes(table, spec)
    if split is None:
        table["fold"] = assign_folds(_stratification_labels(table, spec.type), spec.type, spec.cv_folds, spec.seed)
        split = f"{spec.cv_folds}-fold cross-validation" + (" (stratified)" if spec.type != "regression" else "") + f", seed {spec.seed}"
    elif spec.type != "regression" and (table["fold"] == TRAIN_ONLY_FOLD).any():
        _check_test_labels_seen(table, spec)
    if (table["fold"] >= 0).sum() == 0:
        raise InputError(f"task {spec.name!r}: no row is in a test fold; check tasks.{spec.name}.fold_column")
    log.info("task %s: %d sequences, %d folds (%s)", spec.name, len(table), table.loc[table.fold >= 0, "fold"].nunique(), split)
    table = table[TASK_COLUMNS].reset_index(drop=True)
    table.attrs["split"] = split
    # A ProteinGym reader says whether it read the scheme's folds or built them (``*_built``).
    table.attrs["fold_scheme"] = raw.attrs.get("fold_scheme", spec.fold_scheme)
    return table


def _finish_table(raw: pd.DataFrame, spec: TaskSpec) -> pd.DataFrame:
    """Parse labels and check sequences and ids of a reader's table (columns of TASK_COLUMNS plus ``where``).

    ``where`` locates each row for error messages (``file: row 3``). Rows repeated verbatim
    (same id, sequence and label) are dropped, counted and logged; an id with two different
    sequences or labels is an error.
    """
    table = raw.reset_index(drop=True).copy()
    table["label"] = _parse_labels(table, spec)
    _check_sequences(table, spec)
    return _deduplicate(table, spec)


def _read_csv(spec: TaskSpec) -> tuple[pd.DataFrame, str | None]:
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


def _read_fasta(spec: TaskSpec) -> tuple[pd.DataFrame, str | None]:
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


def _parse_labels(table: pd.DataFrame, spec: TaskSpec) -> np.ndarray:
    text = np.asarray([str(v).strip() for v in table["label"]], dtype=object)
    missing = np.flatnonzero(text == "")
    if missing.size:
        unit = table["where"].iat[missing[0]].rsplit(" ", 2)[-2]
        raise InputError(f"{table['where'].iat[missing[0]]}: label is missing ({missing.size} {unit}s in all); remove them or fill the label")
    if spec.type != "regression":
        return text
    numbers = pd.to_numeric(pd.Series(text), errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(numbers))
    if bad.size:
        raise InputError(
            f"{table['where'].iat[bad[0]]}: label {text[bad[0]]!r} is not a finite number, "
            f"but task {spec.name!r} is a regression; fix the value or set type: classification"
        )
    return numbers


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


def _check_sequences(table: pd.DataFrame, spec: TaskSpec) -> None:
    ambiguous = 0
    for i, sequence in enumerate(table["sequence"]):
        place = f"{table['where'].iat[i]} ({table['id'].iat[i]})"
        if not sequence:
            raise InputError(f"{place}: sequence is empty")
        unknown = set(sequence) - ESM_RESIDUES
        if unknown:
            hint = "upper-case the residues" if any(c.islower() for c in unknown) else "remove or replace them (stop codons, gaps and J have no ESM token)"
            raise InputError(
                f"{place}: sequence has characters {''.join(sorted(unknown))!r} outside the ESM alphabet "
                f"(upper-case amino-acid codes); {hint}"
            )
        ambiguous += not AMBIGUOUS_RESIDUES.isdisjoint(sequence)
    if ambiguous:
        # ESM2 has tokens for X, B, U, Z and O and was trained with them, so such sequences are
        # embedded as they are; the count is the field's usual disclosure.
        log.warning("task %s: %d sequences contain the ambiguous or rare residues X, B, U, Z or O; embedded with ESM's own tokens", spec.name, ambiguous)


def _deduplicate(table: pd.DataFrame, spec: TaskSpec) -> pd.DataFrame:
    labels = table["label"].astype(str)
    repeated = table.assign(_label=labels).duplicated(["id", "sequence", "_label", "fold"], keep="first").to_numpy()
    if repeated.any():
        log.warning("task %s: dropped %d rows that repeat an earlier row verbatim (same id, sequence and label)", spec.name, int(repeated.sum()))
        table = table[~repeated].reset_index(drop=True)
    duplicated = table["id"].duplicated(keep=False).to_numpy()
    if duplicated.any():
        rows = np.flatnonzero(duplicated & table["id"].duplicated(keep="first").to_numpy())
        i = int(rows[0])
        first = int(np.flatnonzero(table["id"].to_numpy() == table["id"].iat[i])[0])
        what = "sequence" if table["sequence"].iat[i] != table["sequence"].iat[first] else "label or split"
        raise InputError(
            f"{table['where'].iat[i]}: id {table['id'].iat[i]!r} occurs more than once, with another {what} than at "
            f"{table['where'].iat[first]}; ids must be unique (set tasks.{spec.name}.id_column to a unique column, or fix the file)"
        )
    return table


def _subsample(table: pd.DataFrame, spec: TaskSpec) -> pd.DataFrame:
    if spec.max_sequences is None or len(table) <= spec.max_sequences:
        return table
    rng = np.random.default_rng(spec.seed)
    keep = np.sort(rng.choice(len(table), size=spec.max_sequences, replace=False))
    log.info("task %s: subsampled %d of %d sequences (seed %d)", spec.name, spec.max_sequences, len(table), spec.seed)
    return table.iloc[keep].reset_index(drop=True)


def _drop_rare_classes(table: pd.DataFrame, spec: TaskSpec) -> pd.DataFrame:
    # With a train/test split a class needs training members, so only those are counted.
    train = table["fold"] == TRAIN_ONLY_FOLD
    counts = table.loc[train if train.any() and not train.all() else slice(None), "label"].value_counts()
    counts = counts.reindex(table["label"].unique(), fill_value=0)
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


def split_labels(label: str) -> list[str]:
    """The classes of one multi-label row."""
    return label.split(LABEL_SEPARATOR)


def _classes(labels, task_type: str) -> list[set[str]]:
    return [set(split_labels(x)) if task_type == "multilabel" else {x} for x in labels]


def _check_test_labels_seen(table: pd.DataFrame, spec: TaskSpec) -> None:
    """A class in the test part that no training row has cannot be predicted: an error, not a silent zero."""
    train = table["fold"].to_numpy() < 0
    seen = set().union(*_classes(table.loc[train, "label"], spec.type))
    test = table.loc[~train]
    for where, identifier, classes in zip(test["where"], test["id"], _classes(test["label"], spec.type)):
        unseen = classes - seen
        if unseen:
            raise InputError(
                f"{where} ({identifier}): class {sorted(unseen)[0]!r} never occurs in the training part, "
                "so no probe can predict it; drop those rows, add training examples, or use cross-validation"
            )


def _stratification_labels(table: pd.DataFrame, task_type: str) -> np.ndarray:
    """Labels to stratify folds by; a multi-label row counts as its rarest class."""
    if task_type != "multilabel":
        return table["label"].to_numpy()
    sets = [split_labels(x) for x in table["label"]]
    counts = Counter(c for s in sets for c in s)
    return np.array([min(s, key=lambda c: (counts[c], c)) for s in sets], dtype=object)


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
    if task_type != "regression" and counts.max() >= n_folds:
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
