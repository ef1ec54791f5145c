"""ProteinGym substitution assays for the supervised benchmark: reference table, mutants, fold schemes, merge scores and per-variant files.

Invariant: every variant's sequence is ``target_seq`` of its assay in the reference table with
its ``mutant`` applied (``A24C`` or ``A24C:G30D``, 1-based), and every wild-type residue a mutant
names is checked against ``target_seq``; a sequence given in the file must equal it. Folds come
from the assay file's column of the scheme when it has one; else plmexit builds them (see
``make_folds``) and every output names the scheme with ``BUILT_SUFFIX`` (``fold_modulo_5_built``),
because built folds are not ProteinGym's published folds for every assay.
"""

from __future__ import annotations

import csv
import logging
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from plmexit.data.tasks import TaskSpec, parse_folds, read_csv_text
from plmexit.errors import InputError

log = logging.getLogger(__name__)

FOLD_SCHEMES = ("fold_random_5", "fold_modulo_5", "fold_contiguous_5")
# Schemes whose test folds hold out whole mutated positions (defined for single substitutions).
POSITION_SCHEMES = ("fold_modulo_5", "fold_contiguous_5")
N_FOLDS = 5
# Appended to a scheme's name wherever plmexit built the folds itself (task info, merge CSV), so
# no output passes built folds off as ProteinGym's published ones.
BUILT_SUFFIX = "_built"
SCORE_COLUMNS = ("DMS_score", "score")  # ProteinGym's name, and the `mutant,score` re-exports'
SEQUENCE_COLUMNS = ("mutated_sequence", "sequence")
REFERENCE_FILTERS = {"selection_type": "coarse_selection_type", "max_length": "seq_len", "max_variants": "DMS_total_number_mutants"}
# One substitution as ProteinGym writes it: from-residue, 1-based position, to-residue (ASCII digits:
# ProteinGym's ``isnumeric`` test would also pass other scripts' digits, which no assay holds).
_MUTATION = re.compile(r"^([A-Z])([0-9]+)([A-Z])$")
# The residues ProteinGym's DMS_file_cleanup keeps on either side of a mutant and get_mutated_sequence
# accepts as a to-residue (AA_vocab in proteingym/utils/scoring_utils.py and data_utils.py).
AA_VOCAB = "ACDEFGHIKLMNPQRSTVWY"


# --- reference table (the choose_assays checkpoint reads it when assays are chosen by filters) ---


def read_reference(path: str | Path) -> dict[str, dict[str, str]]:
    """``DMS_substitutions.csv`` as ``{DMS_id: row}``."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a readable ProteinGym reference table ({exc})") from None
    needed = {"DMS_id", "target_seq", *REFERENCE_FILTERS.values()}
    if not rows or not needed <= set(rows[0]):
        raise InputError(f"{path}: not ProteinGym's DMS_substitutions.csv (needs columns {', '.join(sorted(needed))})")
    return {row["DMS_id"]: row for row in rows}


def select_assays(reference: dict[str, dict[str, str]], selection_types=None, max_length=None, max_variants=None) -> list[str]:
    """DMS_ids passing the filters, in the reference table's order."""
    chosen = []
    for dms_id, row in reference.items():
        if selection_types and row["coarse_selection_type"] not in selection_types:
            continue
        if max_length is not None and int(row["seq_len"]) > max_length:
            continue
        if max_variants is not None and int(row["DMS_total_number_mutants"]) > max_variants:
            continue
        chosen.append(dms_id)
    return chosen


# --- one assay ----------------------------------------------------------------------------------


def read_assay(spec: TaskSpec) -> tuple[pd.DataFrame, str]:
    """One assay under one fold scheme, as a reader's table (see ``plmexit.data.tasks``).

    The table's ``attrs["fold_scheme"]`` is the scheme's name as outputs give it: the scheme
    itself when the file has its column, else the scheme with ``BUILT_SUFFIX``.
    """
    if spec.reference is None or spec.dms_id is None or spec.fold_scheme not in FOLD_SCHEMES:
        raise InputError(f"task {spec.name!r}: a ProteinGym task needs a reference table, a DMS_id and a fold scheme ({', '.join(FOLD_SCHEMES)})")
    reference = read_reference(spec.reference)
    if spec.dms_id not in reference:
        raise InputError(f"{spec.reference}: no assay {spec.dms_id!r}; check the DMS_id against the reference table's DMS_id column")
    target = reference[spec.dms_id]["target_seq"]
    raw = read_csv_text(spec.path, spec.path)
    score = next((c for c in SCORE_COLUMNS if c in raw.columns), None)
    if "mutant" not in raw.columns or score is None:
        raise InputError(f"{spec.path}: a ProteinGym assay needs columns mutant and DMS_score (or score); found {', '.join(raw.columns)}")
    rows = np.arange(len(raw)) + 2
    mutants = [parse_mutant(m, target, spec.path, r, spec.dms_id) for m, r in zip(raw["mutant"], rows)]
    sequences = [apply_mutant(target, m) for m in mutants]
    given = next((c for c in SEQUENCE_COLUMNS if c in raw.columns), None)
    if given is not None:
        differ = np.flatnonzero(raw[given].str.strip().to_numpy() != np.array(sequences, dtype=object))
        if differ.size:
            i = differ[0]
            raise InputError(
                f"{spec.path}: row {rows[i]} ({raw['mutant'].iat[i]}): {given} is not target_seq of {spec.dms_id} with the mutant applied; "
                "is the reference table the assay's version?"
            )
    if spec.fold_scheme in raw.columns:
        folds = parse_folds(raw[spec.fold_scheme], spec.path, spec.fold_scheme, rows, allowed=range(N_FOLDS))
        scheme = spec.fold_scheme
        split = f"{scheme} from {spec.path.name}"
    else:
        folds = make_folds(mutants, spec.fold_scheme, spec.seed, spec.path)
        scheme = spec.fold_scheme + BUILT_SUFFIX
        split = f"{scheme}: {spec.fold_scheme} made by plmexit, not ProteinGym's published column" + (
            f" (seed {spec.seed})" if spec.fold_scheme == "fold_random_5" else ""
        )
        log.info("task %s: %s has no %s column; %s", spec.name, spec.path, spec.fold_scheme, split)
    table = pd.DataFrame(
        {"id": raw["mutant"].str.strip().to_numpy(), "sequence": sequences, "label": raw[score].to_numpy(), "fold": folds,
         "where": [f"{spec.path}: row {r}" for r in rows]}
    )
    table.attrs["fold_scheme"] = scheme
    return table, split


def parse_mutant(text: str, target: str, path: Path, row: int, dms_id: str) -> list[tuple[str, int, str]]:
    """``A24C:G30D`` as ``[(A, 24, C), (G, 30, D)]``, checked as ProteinGym checks a mutant.

    ProteinGym's ``DMS_file_cleanup`` (``proteingym/utils/data_utils.py``) keeps a mutant only when
    every ``:``-separated part is a from-residue in ``AA_VOCAB``, a number and a to-residue in
    ``AA_VOCAB``, the position lies in ``target_seq`` and the from-residue is ``target_seq``'s there;
    ``get_mutated_sequence`` asserts the from-residue and the to-residue again. Each of those is an
    ``InputError`` here (ProteinGym drops such rows silently). Also an error, though ProteinGym's code
    would take it: a position named twice in one mutant (``A24C:A24D`` says position 24 becomes two
    residues; ``A24C:C24D`` contradicts itself). Taken as ProteinGym takes them: a synonymous
    mutant (``A24A``), leading zeros (``A024C`` is position 24), and spaces around the whole mutant.
    """
    mutations = []
    named: dict[int, str] = {}
    for part in text.strip().split(":"):
        match = _MUTATION.match(part)
        if match is None:
            raise InputError(f"{path}: row {row}: mutant {text!r} is not ProteinGym's form (e.g. A24C or A24C:G30D); fix or drop the row")
        wild, position, new = match[1], int(match[2]), match[3]
        for side, residue in (("from", wild), ("to", new)):
            if residue not in AA_VOCAB:
                raise InputError(
                    f"{path}: row {row}: mutant {text!r} has {side}-residue {residue} in {part}, not one of the 20 amino acids {AA_VOCAB} "
                    "ProteinGym scores; fix or drop the row"
                )
        if not 1 <= position <= len(target):
            raise InputError(f"{path}: row {row}: mutant {text!r} names position {position}, but target_seq of {dms_id} has {len(target)} residues")
        if position in named:
            raise InputError(
                f"{path}: row {row}: mutant {text!r} names position {position} twice ({named[position]} and {part}); "
                "a mutant gives each position one substitution: fix or drop the row"
            )
        named[position] = part
        if target[position - 1] != wild:
            raise InputError(
                f"{path}: row {row}: mutant {text!r} says position {position} is {wild}, but target_seq of {dms_id} has "
                f"{target[position - 1]} there; the assay and the reference table disagree"
            )
        mutations.append((wild, position, new))
    return mutations


def mutated_positions(mutant: str) -> tuple[int, ...]:
    """1-based positions a mutant string names (``A24C:G30D`` -> ``(24, 30)``), without a reference.

    For ids of ProteinGym task tables, whose mutants ``read_assay`` already checked.
    """
    positions = []
    for part in str(mutant).strip().split(":"):
        match = _MUTATION.match(part)
        if match is None:
            raise InputError(f"id {mutant!r} is not a ProteinGym mutant (e.g. A24C or A24C:G30D)")
        positions.append(int(match[2]))
    return tuple(positions)


def apply_mutant(target: str, mutations: list[tuple[str, int, str]]) -> str:
    residues = list(target)
    for _, position, new in mutations:
        residues[position - 1] = new
    return "".join(residues)


def make_folds(mutants: list[list[tuple[str, int, str]]], scheme: str, seed: int, path: Path) -> np.ndarray:
    """Folds for an assay whose file has no column for ``scheme``, built from its mutants.

    random: each variant gets an independent uniform fold in 0-4 (seeded here; ProteinGym's
    published folds used its own seed, so built random folds are not the published ones);
    modulo: a variant's fold is its mutated position mod 5; contiguous: the sorted distinct
    mutated positions are cut into 5 consecutive blocks, the first ``n mod 5`` one position
    longer. Modulo and contiguous are defined for single substitutions only.

    These rules reproduce the published columns of BLAT_ECOLX_Stiffler_2015 exactly (tested), but
    not those of every assay (tested): RASK_HUMAN_Weng_2022_binding-DARPin_K55 numbers its modulo
    folds by the rank of the position among the mutated positions (built: 0% of rows agree), and
    the contiguous blocks of DNJA1_HUMAN_Rocklin_2023_2LO1 and TCRG1_MOUSE_Tsuboyama_2023_1E0L
    follow the order positions first appear in the file (built: 17% and 24% agree). Outputs
    therefore name built schemes with ``BUILT_SUFFIX``.
    """
    if scheme == "fold_random_5":
        return np.random.RandomState(seed).randint(0, N_FOLDS, len(mutants))
    if any(len(m) != 1 for m in mutants):
        raise InputError(f"{path}: {scheme} is defined for single substitutions only, and this assay has multiple mutants; use fold_random_5")
    positions = np.array([m[0][1] for m in mutants])
    distinct = np.unique(positions)
    if len(distinct) < N_FOLDS:
        raise InputError(f"{path}: only {len(distinct)} mutated positions, fewer than {N_FOLDS} folds; {scheme} needs at least {N_FOLDS}")
    if scheme == "fold_modulo_5":
        return positions % N_FOLDS
    size, extra = divmod(len(distinct), N_FOLDS)
    blocks = np.concatenate([[f] * (size + (f < extra)) for f in range(N_FOLDS)])
    fold_of = dict(zip(distinct, blocks))
    return np.array([fold_of[p] for p in positions], dtype=int)


# --- ProteinGym's merge format ------------------------------------------------------------------

MERGE_COLUMNS = ["DMS_id", "model_name", "fold_variable_name", "Spearman", "MSE"]


def merge_scores(label, prediction, fold, task_label, task_fold) -> tuple[float, float]:
    """Spearman and MSE of one assay and scheme as ProteinGym's ``merge_supervised.py`` computes them.

    ProteinNPT's training (``proteinnpt/utils/data_utils.py``, which ProteinGym's supervised
    baselines use) standardises the targets of each test fold with the mean and population
    standard deviation (``np.nanmean``, ``np.nanstd``) of that fold's training rows, applies the
    same map to the test labels, and writes labels and predictions in that scale;
    ``merge_supervised.py`` then pools every variant's out-of-fold row and computes ONE Spearman
    (``Series.corr(method="spearman")``) and one MSE (``((labels - predictions) ** 2).mean()``).
    Here each row's label and prediction are standardised with its own fold's training statistics,
    then pooled the same way. Fold ``k``'s training rows are all other folds, ProteinNPT's split
    without a validation fold (``--use_validation_set`` unset, as its ``train_subs.sh`` runs it).
    Labels are checked finite when the task is read and ridge predictions are finite, so no row
    is dropped (pandas' ``corr`` would drop NaN pairs; here a NaN would surface as NaN). Neither number is the mean of per-fold scores, and since each fold
    has its own map, the Spearman is not that of the pooled raw values either.

    Standardising afterwards equals training on standardised targets: plmexit's ridge probe fits
    standardised features with an unpenalised intercept, so its coefficients are linear in the
    centred targets and its intercept is their mean; targets ``(y - m) / s`` therefore give
    predictions ``(p - m) / s``, leave-one-out predictions alike, and the ridge penalty chosen on
    them (by Spearman, invariant under that map) is the same one (tested).

    Parameters
    ----------
    label, prediction, fold : array-like, shape (n,)
        One row per variant: its raw score, the prediction of its test fold's probe, that fold.
    task_label, task_fold : array-like, shape (N,)
        Every row of the task table; fold ``k``'s training rows are those with ``task_fold != k``.

    Returns
    -------
    (spearman, mse)
        Spearman is NaN when either side is constant, as pandas gives it.
    """
    truth, predicted = standardise(label, prediction, fold, task_label, task_fold)
    return pooled_scores(truth, predicted)


def standardise(label, prediction, fold, task_label, task_fold) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predictions in ProteinNPT's scale: each row's by its fold's training mean and population SD (see ``merge_scores``)."""
    label, prediction, fold = (np.asarray(a, dtype=float) for a in (label, prediction, fold))
    task_label, task_fold = np.asarray(task_label, dtype=float), np.asarray(task_fold)
    mean, std = np.empty(len(label)), np.empty(len(label))
    for k in np.unique(fold):
        train = task_label[task_fold != k]
        if len(train) == 0 or np.std(train) == 0:
            raise InputError(f"fold {int(k)} has no training rows with distinct labels to standardise its targets by")
        rows = fold == k
        mean[rows], std[rows] = np.mean(train), np.std(train)
    return (label - mean) / std, (prediction - mean) / std


def pooled_scores(truth, predicted) -> tuple[float, float]:
    """One Spearman and one MSE over every pooled row, as ``merge_supervised.py`` computes them (see ``merge_scores``)."""
    truth, predicted = np.asarray(truth, dtype=float), np.asarray(predicted, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant side gives NaN, which is the answer, not a problem
        rho = spearmanr(truth, predicted).statistic
    return float(rho), float(np.mean((truth - predicted) ** 2))


# Per-variant prediction files in ProteinNPT's output columns, which ProteinGym's config.json names for
# its supervised baselines (input_score_name predictions_fitness, label_name labels_fitness, key
# mutated_sequence); ``fold`` is the variant's test fold.
VARIANT_COLUMNS = ["mutant", "mutated_sequence", "fold", "labels_fitness", "predictions_fitness"]
LAYER_CHOICES = ("final", "selected")


def supervised_variants(
    final_layer: int, fold_layers: dict[int, int | None], has_signal: bool, predictions: pd.DataFrame, task_table: pd.DataFrame,
) -> dict[str, pd.DataFrame]:
    """Every variant's out-of-fold prediction of one assay and scheme, by layer choice (``final``, ``selected``).

    ``final`` scores every variant by the final layer's probe of its fold, ``selected`` by the
    probe of the layer its own fold chose (nested, training rows only); labels and predictions are
    in ProteinNPT's scale (``standardise``), in ``VARIANT_COLUMNS``, rows in the task table's order.
    ``selected`` is left out where no layer could be chosen (status ``no_signal``).

    Parameters
    ----------
    final_layer : int
        The final layer ``L``.
    fold_layers : dict
        Each evaluation fold's chosen layer (the selection's ``folds``).
    has_signal : bool
        False where no layer could be chosen.
    predictions : DataFrame
        The task's predictions table (``plmexit probe``): layer, fold, id, label, prediction.
    task_table : DataFrame
        The task table the probes were fitted on (id, sequence, label, fold).
    """
    test = task_table[task_table["fold"] >= 0]
    files = {}
    for suffix in LAYER_CHOICES if has_signal else LAYER_CHOICES[:1]:
        parts = []
        for fold, chosen in fold_layers.items():
            if fold < 0:  # a train-only (deploy) choice has no test rows to score
                continue
            layer = final_layer if suffix == "final" else chosen
            parts.append(predictions[(predictions["fold"] == fold) & (predictions["layer"] == layer)])
        pooled = pd.concat(parts)
        if len(pooled) != len(test) or not pooled["id"].is_unique or not (pooled.set_index("id")["fold"].reindex(test["id"]).to_numpy() == test["fold"].to_numpy()).all():
            raise InputError(
                f"the {suffix} layers' predictions ({len(pooled)} rows) do not give each of the task table's {len(test)} test rows once, "
                "in its fold; pass the task table and predictions of the same task"
            )
        prediction = pooled.set_index("id")["prediction"].reindex(test["id"]).to_numpy()
        truth, predicted = standardise(test["label"], prediction, test["fold"], task_table["label"], task_table["fold"])
        files[suffix] = pd.DataFrame(
            {"mutant": test["id"].to_numpy(), "mutated_sequence": test["sequence"].to_numpy(), "fold": test["fold"].to_numpy(),
             "labels_fitness": truth, "predictions_fitness": predicted}, columns=VARIANT_COLUMNS,
        )
    return files


def supervised_rows(dms_id: str, fold_scheme: str, model_name: str, variants: dict[str, pd.DataFrame]) -> list[dict]:
    """Rows of ProteinGym's supervised merge format for one assay and scheme: the final and the selected layer.

    Each row's Spearman and MSE pool the variants of its ``supervised_variants`` file (``pooled_scores``),
    as ``merge_supervised.py`` pools ProteinNPT's files; ``model_name`` is the model's own name,
    ``@final`` and ``@selected`` appended. A choice without variants (``no_signal``) has no score
    rather than a made-up one.
    """
    rows = []
    for suffix in LAYER_CHOICES:
        names = {"DMS_id": dms_id, "model_name": f"{model_name}@{suffix}", "fold_variable_name": fold_scheme}
        scores = pooled_scores(variants[suffix]["labels_fitness"], variants[suffix]["predictions_fitness"]) if suffix in variants else (float("nan"),) * 2
        rows.append({**names, "Spearman": scores[0], "MSE": scores[1]})
    return rows


# --- zero-shot scoring (plmexit zero-shot) -------------------------------------------------------


def read_zero_shot_assay(path: str | Path, reference: str | Path, dms_id: str) -> tuple[pd.DataFrame, str, list[list[tuple[str, int, str]]]]:
    """An assay for zero-shot scoring: ``(table, target_seq, mutations)``.

    ``table`` has ``mutant``, ``mutated_sequence`` (the target with the mutant applied, checked
    against the file's when it has one), ``DMS_score`` as float and, when the file has it,
    ``DMS_score_bin`` as int; ``mutations`` holds each row's ``(wild, position, new)`` triples
    (1-based positions of ``target_seq``; ProteinGym's reference table has no ``start_idx``, so
    its ESM scoring offset is 1).
    """
    path = Path(path)
    rows = read_reference(reference)
    if dms_id not in rows:
        raise InputError(f"{reference}: no assay {dms_id!r}; check --dms-id against the reference table's DMS_id column")
    target = rows[dms_id]["target_seq"]
    raw = read_csv_text(path, path)
    score = next((c for c in SCORE_COLUMNS if c in raw.columns), None)
    if "mutant" not in raw.columns or score is None:
        raise InputError(f"{path}: a ProteinGym assay needs columns mutant and DMS_score (or score); found {', '.join(raw.columns)}")
    raw = raw.rename(columns={score: "DMS_score"})
    if raw.empty:
        raise InputError(f"{path}: the assay has no variants")
    line = np.arange(len(raw)) + 2
    mutations = [parse_mutant(m, target, path, r, dms_id) for m, r in zip(raw["mutant"], line)]
    sequences = [apply_mutant(target, m) for m in mutations]
    if "mutated_sequence" in raw.columns:
        differ = np.flatnonzero(raw["mutated_sequence"].str.strip().to_numpy() != np.array(sequences, dtype=object))
        if differ.size:
            i = differ[0]
            raise InputError(
                f"{path}: row {line[i]} ({raw['mutant'].iat[i]}): mutated_sequence is not target_seq of {dms_id} with the mutant applied; "
                "is the reference table the assay's version?"
            )
    table = pd.DataFrame({"mutant": raw["mutant"].str.strip().to_numpy(), "mutated_sequence": sequences})
    for column, kind in (("DMS_score", float), ("DMS_score_bin", int)):
        if column not in raw.columns:
            continue
        values = pd.to_numeric(raw[column], errors="coerce")
        bad = np.flatnonzero(~np.isfinite(values.to_numpy(dtype=float)))
        if bad.size:
            raise InputError(f"{path}: row {line[bad[0]]}: {column} {raw[column].iat[bad[0]]!r} is not a number; fix or drop the row")
        table[column] = values.to_numpy().astype(kind)
    return table, target, mutations
