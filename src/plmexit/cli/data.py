"""Stage: data (fetch-data, fetch-archive, stage-assay, choose-assays, prepare)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plmexit.cli.common import add_inputs, dispatch
from plmexit.settings import ArchiveSettings, PrepareSettings, fraction_above_zero, positive_int


def register(subparsers) -> None:
    # Light modules only: every plmexit process builds this parser.
    from plmexit.data.formats import DEFAULT_HOMOLOGY_IDENTITY, FOLD_METHODS, FORMATS, TASK_TYPES
    from plmexit.pipeline.planning import FOLD_SCHEMES

    p = subparsers.add_parser("fetch-data", help="download a pinned data file (or take a local copy), sha256-verified")
    p.add_argument("--file", required=True, help="pinned file key, e.g. deeploc/deeploc_test_set.fasta")
    p.add_argument("--out", required=True, help="where to put it")
    p.add_argument("--local-dir", help="directory of pre-staged copies laid out by key (nothing is downloaded)")
    p.add_argument("--base-url", help="mirror laid out by key, used instead of the file's GitHub source")

    from plmexit.data.sources import PROTEINGYM_ARCHIVES

    p = subparsers.add_parser(
        "fetch-archive", help="download one of ProteinGym's released archives (or copy a local one), sha256-verified or its hash recorded on first use",
    )
    p.add_argument("--archive", required=True, choices=list(PROTEINGYM_ARCHIVES), help="which archive (its published file's stem)")
    ArchiveSettings.add_arguments(p)
    p.add_argument("--out", required=True, help="where to put the zip")
    p.add_argument("--info-out", required=True, help="JSON to write: the archive's source, sha256 and who pins it")

    p = subparsers.add_parser("stage-assay", help="take one assay out of a fetched ProteinGym archive, checked against the reference table")
    add_inputs(p, "archive", "archive_info", "reference")
    p.add_argument("--dms-id", required=True, help="the assay's DMS_id in the reference table")
    p.add_argument("--out", required=True, help="the assay CSV to write (the archive's bytes)")
    p.add_argument("--info-out", required=True, help="JSON to write: the staged file's sha256, the archive it came from, the checks it passed")

    p = subparsers.add_parser("choose-assays", help="list the ProteinGym assays (DMS_ids) of the reference table that pass filters")
    add_inputs(p, "reference")
    p.add_argument("--selection-type", action="append", help="keep assays of this coarse_selection_type (repeat for several)")
    p.add_argument("--max-length", type=positive_int, help="keep assays whose target (seq_len) is at most this long")
    p.add_argument("--max-variants", type=positive_int, help="keep assays with at most this many variants (DMS_total_number_mutants)")
    p.add_argument("--out", required=True, help="text file: the chosen DMS_ids, one per line")

    p = subparsers.add_parser("prepare", help="read a task's files (CSV, FASTA or a benchmark's format) into a validated task table (TSV)")
    p.add_argument("--name", required=True, help="task name (used in messages)")
    p.add_argument("--format", choices=list(FORMATS), required=True, help="input format: your own csv or fasta file, or a benchmark's official format")
    p.add_argument("--path", required=True, help="main input file (a DeepSol *_src file, a FLIP splits.zip, a ProteinGym assay CSV, ...)")
    p.add_argument("--test-path", help="separate test file (csv, fasta, deeploc, deepsol): the official train/test split")
    p.add_argument("--labels-path", help="deepsol: the *_tgt labels aligned with --path")
    p.add_argument("--test-labels-path", help="deepsol: the *_tgt labels aligned with --test-path")
    p.add_argument("--annotations", help="deepfri_ec: annotation TSV (nrPDB-EC_*_annot.tsv)")
    p.add_argument("--ids-path", help="deepfri_ec: use only the chains listed here")
    p.add_argument("--test-ids-path", help="deepfri_ec: chains of the test part (the others are trained on)")
    p.add_argument("--reference", help="proteingym: DMS_substitutions.csv")
    p.add_argument("--dms-id", help="proteingym: the assay's DMS_id in the reference table")
    p.add_argument("--fold-scheme", choices=list(FOLD_SCHEMES), help="proteingym: cross-validation scheme")
    p.add_argument("--split", help="flip: split name inside splits.zip (e.g. three_vs_rest)")
    p.add_argument("--labels", choices=["location", "membrane"], default="location", help="deeploc: 10-class location or membrane-bound vs soluble")
    p.add_argument("--type", choices=list(TASK_TYPES), required=True, help="task type: regression (numeric labels), classification (one class per row) or multilabel (classes joined by ;)")
    p.add_argument("--sequence-column", default="sequence", help="CSV column with sequences")
    p.add_argument("--label-column", default="label", help="CSV column with labels")
    p.add_argument("--id-column", help="CSV column with unique ids (default: row numbers)")
    p.add_argument("--fold-column", help="CSV column with integer fold ids (default: seeded k-fold)")
    p.add_argument("--label-regex", help="FASTA: regular expression on the header whose group 'label' (or group 1) is the label")
    p.add_argument("--max-sequences", type=positive_int, help="subsample to at most this many sequences (seeded)")
    p.add_argument("--min-class-size", type=int, default=0, help="classification: drop classes with fewer members (logged)")
    PrepareSettings.add_arguments(p)
    p.add_argument(
        "--folds", choices=list(FOLD_METHODS),
        help="cross-validated tasks: random (seeded k-fold) or homology (whole MMseqs2 sequence clusters per fold; needs mmseqs); "
        "default: the format's (homology for deepfri_ec, random for the others)",
    )
    p.add_argument("--homology-identity", type=fraction_above_zero, help=f"--folds homology: MMseqs2's minimum sequence identity within a cluster (default {DEFAULT_HOMOLOGY_IDENTITY})")
    p.add_argument("--out", required=True, help="task table TSV to write")
    p.add_argument("--provenance", help="proteingym: the JSON stage-assay wrote for --path (copied into the task info)")
    p.add_argument("--info-out", required=True, help="JSON to write: how the task is split, its files' sha256, and its ProteinGym assay and scheme")


def run_fetch_data(args: argparse.Namespace) -> None:
    from plmexit.pipeline.task_steps import fetch_data

    fetch_data(key=args.file, out=args.out, local_dir=args.local_dir, base_url=args.base_url)


def run_fetch_archive(args: argparse.Namespace) -> None:
    from plmexit.pipeline.task_steps import fetch_archive

    fetched = fetch_archive(archive=args.archive, settings=ArchiveSettings.from_args(args), out=args.out, info_out=args.info_out)
    if fetched.warning:
        print(f"warning: {fetched.warning}", file=sys.stderr)


def run_stage_assay(args: argparse.Namespace) -> None:
    from plmexit.pipeline.task_steps import stage_assay

    stage_assay(archive=args.archive, archive_info=args.archive_info, reference=args.reference, dms_id=args.dms_id, out=args.out, info_out=args.info_out)


def run_choose_assays(args: argparse.Namespace) -> None:
    from plmexit.pipeline.task_steps import choose_assays

    choose_assays(
        reference=args.reference, out=args.out, selection_types=args.selection_type, max_length=args.max_length, max_variants=args.max_variants,
    )


def run_prepare(args: argparse.Namespace) -> None:
    from plmexit.data.formats import FILE_FIELDS
    from plmexit.data.tasks import TaskSpec
    from plmexit.pipeline.task_steps import prepare_task

    paths = {key: Path(getattr(args, key)) for key in FILE_FIELDS if getattr(args, key)}
    folds = PrepareSettings.from_args(args)
    spec = TaskSpec(
        name=args.name, format=args.format, path=Path(args.path), type=args.type,
        sequence_column=args.sequence_column, label_column=args.label_column, id_column=args.id_column,
        fold_column=args.fold_column, label_regex=args.label_regex, dms_id=args.dms_id, fold_scheme=args.fold_scheme,
        split=args.split, localization=args.labels, max_sequences=args.max_sequences,
        min_class_size=args.min_class_size, cv_folds=folds.cv_folds, seed=folds.seed, folds=args.folds,
        homology_identity=args.homology_identity, **paths,
    )
    prepare_task(spec=spec, out=args.out, info_out=args.info_out, provenance=args.provenance)


COMMANDS = {
    "fetch-data": run_fetch_data, "fetch-archive": run_fetch_archive, "stage-assay": run_stage_assay, "choose-assays": run_choose_assays,
    "prepare": run_prepare,
}


def run(args: argparse.Namespace) -> None:
    dispatch(COMMANDS, args)
