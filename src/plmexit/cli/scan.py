"""Stage: scan (a CSV and a model, no config: the whole workflow, its answer printed)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from plmexit.settings import positive_int


def register(subparsers) -> None:
    from plmexit.data.formats import TASK_TYPES

    p = subparsers.add_parser(
        "scan", help="no config: probe every layer of a model on one label of a CSV through the whole workflow, print the layer to deploy",
        description=(
            "Writes RESULTS/config.yaml (one csv task, one model), runs the workflow on it with Snakemake on this machine, and prints "
            "its closing lines: the deployed layer of the task, its held-out score against the final layer's, the gain's interval, "
            "the forward time saved and the verdict. Run it in the directory the results should go under."
        ),
    )
    p.add_argument("data", metavar="DATA.csv", help="CSV file, one row per protein: a sequence column and the label column")
    p.add_argument("--model", required=True, help=(
        "a fair-esm ESM2 release (esm2_t6_8M_UR50D), a fair-esm checkpoint file, a transformers model directory, "
        "or a hub model pinned as ORG/NAME@COMMIT (as a config's models entry names it)"
    ))
    p.add_argument("--label", default="label", help="column holding the label (default label)")
    p.add_argument("--type", choices=list(TASK_TYPES), help="task type (default: regression when every label is a number, else classification)")
    p.add_argument("--sequence-column", default="sequence", help="column holding the amino-acid sequence (default sequence)")
    p.add_argument("--id-column", help="column of unique ids (default: row numbers)")
    p.add_argument("--results", help="results directory, config.yaml written there (default results/scan/DATA, DATA the CSV's name without .csv)")
    p.add_argument("--export", metavar="DIR", help="also export the deployed layer there: the model cut after it, the refitted probe and a model card (docs/export.md)")
    p.add_argument("--cores", type=positive_int, default=os.cpu_count() or 1, help="CPU cores Snakemake may use (default all)")


@contextlib.contextmanager
def stdout_to_stderr():
    """Whatever the run writes to stdout (Snakemake, and the jobs it starts, which share the file descriptor) goes to
    stderr, so that scan's stdout is its answer alone."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def run(args: argparse.Namespace) -> None:
    from plmexit.pipeline.scan_steps import scan

    results = args.results or str(Path("results") / "scan" / Path(args.data).stem)
    with stdout_to_stderr():
        lines = scan(
            data=args.data, label=args.label, model=args.model, results=results, cores=args.cores, task_type=args.type,
            sequence_column=args.sequence_column, id_column=args.id_column, export=args.export,
        )
    print("\n".join(lines))
    if args.export:
        print(f"plmexit: exported to {args.export}/ (plmexit predict --export {args.export} --input new.fasta --out predictions.csv)")
