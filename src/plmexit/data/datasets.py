"""Readers of the standard protein benchmarks in their official formats: DeepLoc, DeepFRI EC, DeepSol, FLIP.

Invariant: each reader returns a reader's table (``id, sequence, label, fold, where``; labels
as text, ``where`` locating the row for error messages) and the split it carries: a description
when the files define the test part (fold ``0``; training rows fold ``-1``), or ``None`` when the
task is cross-validated. Label parsing, sequence checks and fold assignment are shared and live
in ``plmexit.data.tasks``. This module knows nothing of torch.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from plmexit.data.tasks import LABEL_SEPARATOR, TEST_FOLD, TRAIN_ONLY_FOLD, TaskSpec, read_csv_text, read_fasta_records, train_test
from plmexit.errors import InputError

log = logging.getLogger(__name__)

# DeepLoc 1.0 header: ">ACCESSION Location-M|S|U [test]"; the location may itself hold a hyphen
# (Cytoplasm-Nucleus), so the membrane flag is the last hyphen-separated part.
DEEPLOC_HEADER = re.compile(r"^(?P<id>\S+)\s+(?P<location>\S+)-(?P<membrane>[MSU])(?:\s+(?P<flag>\S+))?\s*$")
DEEPLOC_LABELS = ("location", "membrane")
DEEPLOC_MEMBRANE = {"M": "membrane", "S": "soluble"}
DEEPSOL_LABELS = {"0": "insoluble", "1": "soluble"}
FLIP_COLUMNS = ("sequence", "target", "set", "validation")


# --- DeepLoc ------------------------------------------------------------------------------------


def read_deeploc(spec: TaskSpec) -> tuple[pd.DataFrame, str | None]:
    """DeepLoc 1.0 FASTA: 10-class location, or membrane-bound vs soluble (``U`` dropped, counted).

    With ``test_path`` the two files are the split. A single file whose headers flag some records
    ``test`` (DeepLoc's own ``deeploc_data.fasta``) is split by that flag; otherwise it is
    cross-validated.
    """
    if spec.localization not in DEEPLOC_LABELS:
        raise InputError(f"task {spec.name!r}: labels {spec.localization!r} is not one of {', '.join(DEEPLOC_LABELS)}")
    flags: dict[str, bool] = {}
    dropped = [0]

    def label_of(path, number, record):
        match = DEEPLOC_HEADER.match(record.description)
        if match is None or match["flag"] not in (None, "test", "new_test_set"):
            raise InputError(
                f"{path}: record {number} ({record.id}): header '{record.description}' is not DeepLoc's "
                "'ACCESSION Location-M|S|U [test]'; is this a DeepLoc 1.0 FASTA file?"
            )
        flags[record.id] = match["flag"] is not None
        if spec.localization == "location":
            return match["location"]
        if match["membrane"] == "U":
            dropped[0] += 1
            return None
        return DEEPLOC_MEMBRANE[match["membrane"]]

    table = read_fasta_records(spec.path, label_of)
    split = None
    if spec.test_path is not None:
        table, split = train_test(table, read_fasta_records(spec.test_path, label_of), spec)
    else:
        flagged = np.array([flags[i] for i in table["id"]], dtype=bool)
        if 0 < flagged.sum() < len(flagged):
            table["fold"] = np.where(flagged, TEST_FOLD, TRAIN_ONLY_FOLD)
            split = f"DeepLoc's test flag in {spec.path.name}"
    if dropped[0]:
        log.warning("task %s: dropped %d proteins of unknown membrane association (U)", spec.name, dropped[0])
    return table, split


# --- DeepSol ------------------------------------------------------------------------------------


def read_deepsol(spec: TaskSpec) -> tuple[pd.DataFrame, str | None]:
    """DeepSol's line-aligned ``*_src`` (one sequence a line) and ``*_tgt`` (0 insoluble, 1 soluble)."""
    if spec.labels_path is None:
        raise InputError(f"task {spec.name!r}: a DeepSol task needs tasks.{spec.name}.labels_path (the *_tgt file next to {spec.path.name})")
    table = _deepsol_pair(spec.path, spec.labels_path, "")
    if spec.test_path is None:
        return table, None
    if spec.test_labels_path is None:
        raise InputError(f"task {spec.name!r}: test_path needs tasks.{spec.name}.test_labels_path (the *_tgt file next to {spec.test_path.name})")
    return train_test(table, _deepsol_pair(spec.test_path, spec.test_labels_path, "test_"), spec)


def _deepsol_pair(src: Path, tgt: Path, prefix: str) -> pd.DataFrame:
    sequences, labels = _lines(src), _lines(tgt)
    if len(sequences) != len(labels):
        raise InputError(f"{src} has {len(sequences)} lines but {tgt} has {len(labels)}; the sequence and label files must be line-aligned")
    for number, label in enumerate(labels, start=1):
        if label not in DEEPSOL_LABELS:
            raise InputError(f"{tgt}: line {number}: label {label!r} is not 0 (insoluble) or 1 (soluble); fix the file")
    lines = np.arange(1, len(sequences) + 1)
    return pd.DataFrame(
        {
            "id": [f"{prefix}line{n}" for n in lines],
            "sequence": sequences,
            "label": [DEEPSOL_LABELS[x] for x in labels],
            "fold": TRAIN_ONLY_FOLD,
            "where": [f"{src}: line {n}" for n in lines],
        }
    )


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text file ({exc})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":  # the final newline ends the last line, it does not start a new one
        lines.pop()
    return [line.strip() for line in lines]


# --- FLIP ---------------------------------------------------------------------------------------


def read_flip(spec: TaskSpec) -> tuple[pd.DataFrame, str]:
    """A FLIP split (``sequence, target, set, validation``), from FLIP's ``splits.zip`` or one CSV.

    ``set`` is FLIP's train/test split. FLIP's validation rows are part of its training set;
    plmexit chooses layers and hyperparameters by its own inner cross-validation on the
    training rows, so they are trained on like every other training row.
    """
    if zipfile.is_zipfile(spec.path):
        if not spec.split:
            raise InputError(f"task {spec.name!r}: {spec.path} is a zip of FLIP splits; name one with tasks.{spec.name}.split")
        with zipfile.ZipFile(spec.path) as archive:
            members = {Path(m).stem: m for m in archive.namelist() if m.endswith(".csv") and not Path(m).name.startswith(".")}
            if spec.split not in members:
                raise InputError(f"{spec.path}: no split {spec.split!r} (splits: {', '.join(sorted(members))}); fix tasks.{spec.name}.split")
            source, raw = f"{spec.path}:{members[spec.split]}", read_csv_text(io.BytesIO(archive.read(members[spec.split])), spec.path)
        name = spec.split
    else:
        source, raw, name = str(spec.path), read_csv_text(spec.path, spec.path), spec.path.stem
    missing = [c for c in FLIP_COLUMNS if c not in raw.columns]
    if missing:
        raise InputError(f"{source}: columns {', '.join(missing)} missing (columns: {', '.join(raw.columns)}); is this a FLIP split CSV?")
    rows = np.arange(len(raw)) + 2
    sets = raw["set"].str.strip().str.lower()
    bad = np.flatnonzero(~sets.isin(["train", "test"]).to_numpy())
    if bad.size:
        raise InputError(f"{source}: row {rows[bad[0]]}: set {raw['set'].iat[bad[0]]!r} is not train or test; fix the file")
    table = pd.DataFrame(
        {
            "id": [f"{name}_row{r}" for r in rows],
            "sequence": raw["sequence"].str.strip().to_numpy(),
            "label": raw["target"].to_numpy(),
            "fold": np.where(sets == "test", TEST_FOLD, TRAIN_ONLY_FOLD),
            "where": [f"{source}: row {r}" for r in rows],
        }
    )
    return table, f"FLIP {name} train/test"


# --- DeepFRI EC ---------------------------------------------------------------------------------


def read_deepfri_ec(spec: TaskSpec) -> tuple[pd.DataFrame, str | None]:
    """DeepFRI nrPDB-EC: chains of a FASTA file labelled with the top-level EC classes of their EC numbers.

    A chain may carry several classes (multi-label; ``label`` holds them sorted, joined by
    ``;``). ``ids_path`` restricts the task to the listed chains; ``test_ids_path`` names the
    chains of the test part, all other chains are trained on. Without it the task is
    cross-validated.
    """
    if spec.annotations is None:
        raise InputError(f"task {spec.name!r}: a DeepFRI EC task needs tasks.{spec.name}.annotations (nrPDB-EC_*_annot.tsv)")
    annotations = read_ec_annotations(spec.annotations)
    wanted = _id_list(spec.ids_path) if spec.ids_path else None
    test_ids = _id_list(spec.test_ids_path) if spec.test_ids_path else None
    seen: set[str] = set()

    def label_of(path, number, record):
        if wanted is not None and record.id not in wanted:
            return None
        seen.add(record.id)
        if record.id not in annotations:
            raise InputError(f"{path}: record {number} ({record.id}): chain has no line in {spec.annotations}; is it the matching annotation file?")
        if not annotations[record.id]:
            raise InputError(f"{spec.annotations}: chain {record.id} has no EC number; drop it from {path} or the id list")
        return LABEL_SEPARATOR.join(sorted({ec.split(".")[0] for ec in annotations[record.id]}))

    table = read_fasta_records(spec.path, label_of)
    for listed, name in ((wanted, "ids_path"), (test_ids, "test_ids_path")):
        absent = sorted((listed or set()) - seen) if name == "ids_path" else sorted((listed or set()) - set(table["id"]))
        if absent:
            raise InputError(f"{getattr(spec, name)}: chain {absent[0]} ({len(absent)} in all) is not in {spec.path}; fix tasks.{spec.name}.{name}")
    if test_ids is None:
        return table, None
    table["fold"] = np.where(table["id"].isin(test_ids), TEST_FOLD, TRAIN_ONLY_FOLD)
    return table, f"test chains of {spec.test_ids_path.name}"


def read_ec_annotations(path: Path) -> dict[str, list[str]]:
    """DeepFRI's annotation TSV: ``### EC-numbers``, the term list, ``### PDB-chain<TAB>EC-numbers``, then one chain a line."""
    lines = _lines(path)
    if len(lines) < 3 or not lines[0].startswith("### EC-numbers") or not lines[2].startswith("### PDB-chain"):
        raise InputError(f"{path}: not a DeepFRI EC annotation file (expected '### EC-numbers', the EC list, '### PDB-chain<TAB>EC-numbers')")
    terms = set(lines[1].split("\t"))
    found: dict[str, list[str]] = {}
    for number, line in enumerate(lines[3:], start=4):
        if not line:
            continue
        chain, _, ecs = line.partition("\t")
        numbers = [ec.strip() for ec in ecs.split(",") if ec.strip()]
        unknown = [ec for ec in numbers if ec not in terms]
        if unknown:
            raise InputError(f"{path}: line {number}: EC number {unknown[0]!r} of chain {chain} is not in the file's EC list (line 2)")
        found[chain] = numbers
    return found


def _id_list(path: Path) -> set[str]:
    return {line for line in _lines(path) if line}

