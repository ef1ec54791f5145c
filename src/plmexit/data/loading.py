"""Load a task: read it with its format's reader, then validate, deduplicate, subsample and fold it.

Invariant: every task table leaves here with exactly ``TASK_COLUMNS``, ids unique, sequences in
the ESM alphabet, labels parsed for the task type, and folds assigned (the official split, the
file's folds, or seeded cross-validation of sequences or, with homology folds, of whole MMseqs2
clusters: ``plmexit.data.homology``). The readers (``plmexit.data.tasks`` for csv and
fasta, ``datasets``, ``proteingym``) only read; this module sits above them, so no reader imports it.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold

from plmexit.data import homology
from plmexit.data.formats import FILE_FIELDS, FORMATS, TASK_TYPES
from plmexit.data.tasks import (
    AMBIGUOUS_RESIDUES,
    ESM_RESIDUES,
    TASK_COLUMNS,
    TRAIN_ONLY_FOLD,
    TaskSpec,
    split_labels,
)
from plmexit.errors import InputError

log = logging.getLogger(__name__)


def load_task(spec: TaskSpec) -> pd.DataFrame:
    """Read, validate, subsample and fold-assign a task as described by ``spec``.

    The returned table's ``attrs["split"]`` says how it is evaluated (the official split, the
    file's fold column, or seeded cross-validation).
    """
    if spec.type not in TASK_TYPES:
        raise InputError(f"task {spec.name!r}: type {spec.type!r} is not one of {', '.join(TASK_TYPES)}")
    if spec.format not in FORMATS:
        raise InputError(f"task {spec.name!r}: format {spec.format!r} is not one of {', '.join(FORMATS)}")
    for key in ("path", *FILE_FIELDS):
        path = getattr(spec, key)
        if path is not None and not Path(path).is_file():
            raise InputError(f"task {spec.name!r}: file {path} does not exist; fix tasks.{spec.name}.{key}")
    module, function = FORMATS[spec.format].reader.split(":")
    raw, split = getattr(importlib.import_module(module), function)(spec)
    table = _finish_table(raw, spec)
    table = _subsample(table, spec)
    if spec.type == "classification":
        table = _drop_rare_classes(table, spec)
    folds = _fold_method(spec, split)
    clustering = clusters = None
    if split is None and folds == "homology":
        table["fold"], clustering = _homology_folds(table, spec)
        clusters = dict(zip(table["id"], table.pop("cluster").tolist()))
        split = (
            f"{spec.cv_folds}-fold cross-validation by MMseqs2 clusters at {clustering.min_seq_id:g} identity"
            + (" (stratified)" if spec.type != "regression" else "") + f", seed {spec.seed}"
        )
    elif split is None:
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
    # Homology folds: how the sequences were clustered, and each id's cluster (the gain's bootstrap resamples clusters).
    table.attrs["folds"] = folds
    table.attrs["clustering"] = clustering.to_json() if clustering else None
    table.attrs["clusters"] = clusters
    return table


def _fold_method(spec: TaskSpec, split: str | None) -> str | None:
    """How a cross-validated task is folded: the task's ``folds``, else its format's default; None for a fixed split."""
    if split is not None:
        for key in ("folds", "homology_identity"):
            if getattr(spec, key) is not None:
                raise InputError(f"task {spec.name!r}: {key} applies to cross-validated tasks, but this one is split by {split}; remove tasks.{spec.name}.{key}")
        return None
    folds = spec.folds or FORMATS[spec.format].default_folds
    if folds not in homology.FOLD_METHODS:
        raise InputError(f"task {spec.name!r}: folds {folds!r} is not one of {', '.join(homology.FOLD_METHODS)}; fix tasks.{spec.name}.folds")
    if folds != "homology" and spec.homology_identity is not None:
        raise InputError(f"task {spec.name!r}: homology_identity applies to folds: homology, but the task's folds are {folds}; remove it or set folds: homology")
    return folds


def _homology_folds(table: pd.DataFrame, spec: TaskSpec) -> tuple[np.ndarray, homology.Clustering]:
    """Folds of whole MMseqs2 clusters, stratified by class where possible; the table gains a ``cluster`` column."""
    identity = homology.DEFAULT_IDENTITY if spec.homology_identity is None else spec.homology_identity
    table["cluster"], clustering = homology.cluster_sequences(table["sequence"], identity)
    labels = _stratification_labels(table, spec.type) if spec.type != "regression" else None
    folds = homology.assign_cluster_folds(table["cluster"].to_numpy(), labels, spec.cv_folds, spec.seed)
    log.info(
        "task %s: %d sequences in %d MMseqs2 clusters at %g identity (largest %d, %d singletons), whole clusters in %d folds",
        spec.name, len(table), clustering.n_clusters, identity, clustering.largest_cluster, clustering.singletons, spec.cv_folds,
    )
    return folds, clustering


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
