"""Stage: probe and select (probe, select, summarize, summarize-proteingym)."""

from __future__ import annotations

import argparse
from pathlib import Path

from plmexit.cli.common import add_depth_curves, add_inputs, add_task_type, dispatch
from plmexit.errors import InputError
from plmexit.settings import INNER_SPLITS, ProbeGrid, SelectSettings, positive_int


def register(subparsers) -> None:
    p = subparsers.add_parser("probe", help="fit linear probes at every layer and fold; write a long TSV")
    add_inputs(p, "embeddings", "task", "model_id", "task_name", model_id="as its store records it")
    add_task_type(p)
    p.add_argument("--metric", required=True, help="metric the layer is selected by (spearman; accuracy, macro_f1 or mcc; fmax, micro_f1 or macro_f1)")
    ProbeGrid.add_arguments(p)
    p.add_argument(
        "--inner-split", choices=list(INNER_SPLITS), default="loo",
        help="how a regression probe's training part is split to choose alpha and score the layer: loo, exact leave-one-out over "
        "variants (default; for random folds); modulo or contiguous, --inner-folds folds of whole mutated positions by that "
        "ProteinGym scheme's rule (ids must be single-substitution mutants)",
    )
    p.add_argument("--out", required=True, help="probe TSV to write")
    p.add_argument("--predictions", required=True, help="gzipped TSV of every test prediction to write")
    p.add_argument("--threads", type=positive_int, default=1, help="layers probed at once, one process and one BLAS thread each (default 1)")
    p.add_argument(
        "--baseline-features", choices=["onehot", "composition"],
        help="also fit the chance predictor and a probe on these features (onehot: the variant's one-hot, for variant sets; "
        "composition: amino-acid composition and length) through the same folds; needs --baselines-out and --baseline-predictions",
    )
    p.add_argument("--baselines-out", help="baseline TSV to write (as the probe TSV, with a baseline column for the layer)")
    p.add_argument("--baseline-predictions", help="gzipped TSV of every baseline test prediction to write")

    p = subparsers.add_parser("select", help="choose the layer from inner (training-only) scores; write JSON")
    add_inputs(
        p, "probes", "predictions", "cost", predictions="for the gain's interval",
        cost="time per depth; the embedding's layer-norm convention and truncation count",
    )
    p.add_argument("--task-info", required=True, help="task info JSON from prepare (how the task is split)")
    add_task_type(p)
    p.add_argument("--metric", required=True, help="metric to select by")
    SelectSettings.add_arguments(p)
    p.add_argument("--out", required=True, help="selection JSON to write")
    p.add_argument("--baselines", help="baseline TSV from probe --baselines-out (scores the baselines and the final layer's gain over each)")
    p.add_argument("--baseline-predictions", help="baseline predictions from probe --baseline-predictions (for those gains' intervals)")
    p.add_argument("--figure", help="PNG to write as well: the task's figure (as plot draws it) from the selection just written")
    add_depth_curves(p, when="with --figure: ")

    p = subparsers.add_parser("summarize", help="gather selections into best_layers.tsv (or a cluster batch's best layers)")
    p.add_argument("selections", nargs="+", help="selection JSON files")
    p.add_argument("--out", required=True, help="best_layers TSV to write")
    p.add_argument("--across-out", help="per-model across-task TSV to write (default: none)")
    SelectSettings.add_arguments(p, only=("bootstrap", "seed"))

    p = subparsers.add_parser(
        "summarize-proteingym",
        help="ProteinGym supervised merge CSV (final and selected layer): Spearman and MSE pooled over out-of-fold predictions, as merge_supervised.py",
    )
    p.add_argument("selections", nargs="+", help="selection JSON files of ProteinGym tasks")
    p.add_argument("--predictions", nargs="+", required=True, help="each selection's predictions file from probe (same order)")
    p.add_argument("--task-tables", nargs="+", required=True, help="each selection's task table from prepare (same order): its folds' training rows")
    p.add_argument("--out", required=True, help="CSV to write")
    p.add_argument(
        "--variants-out",
        help="directory to write: every variant's out-of-fold prediction, {fold scheme}/{model_name}@{final,selected}/{DMS_id}.csv, as ProteinGym's merge_supervised.py reads them",
    )


def run_probe(args: argparse.Namespace) -> None:
    from plmexit.pipeline.probe_steps import probe_task
    from plmexit.probing.probes import ProbeSettings

    grid = ProbeGrid.from_args(args)
    settings = ProbeSettings(
        task_type=args.type, selection_metric=args.metric, ridge_alphas=grid.ridge_alphas, logistic_cs=grid.logistic_cs,
        inner_folds=grid.inner_folds, seed=grid.seed, inner_split=args.inner_split,
    )
    probe_task(
        embeddings=args.embeddings, task_table=args.task, model=args.model_id, task=args.task_name, settings=settings, out=args.out,
        predictions_out=args.predictions, threads=args.threads, baseline_features=args.baseline_features, baselines_out=args.baselines_out,
        baseline_predictions_out=args.baseline_predictions,
    )


def run_select(args: argparse.Namespace) -> None:
    from plmexit.pipeline.select_steps import select_task

    if args.figure is None and (args.lens or args.zero_shot):
        raise InputError("select: --lens and --zero-shot are drawn on the task's figure; pass --figure PNG as well, or leave them out")
    select = SelectSettings.from_args(args)
    select_task(
        probe_table=args.probes, predictions=args.predictions, cost_file=args.cost, task_info=args.task_info, task_type=args.type,
        metric=args.metric, tolerance=select.tolerance, n_boot=select.bootstrap, seed=select.seed, out=args.out,
        baselines=args.baselines, baseline_predictions=args.baseline_predictions,
    )
    if args.figure is None:
        return
    from plmexit.pipeline.report_steps import plot_task

    try:
        plot_task(probe_table=args.probes, selection_file=args.out, cost_file=args.cost, out=args.figure, lens_file=args.lens, zero_shot_file=args.zero_shot)
    except BaseException:
        Path(args.out).unlink(missing_ok=True)  # both outputs or neither
        raise


def run_summarize(args: argparse.Namespace) -> None:
    from plmexit.pipeline.select_steps import summarize_selections

    summarize_selections(selection_files=args.selections, out=args.out, n_boot=args.bootstrap, seed=args.seed, across_out=args.across_out)


def run_summarize_proteingym(args: argparse.Namespace) -> None:
    from plmexit.pipeline.select_steps import summarize_proteingym

    summarize_proteingym(
        selection_files=args.selections, predictions_files=args.predictions, task_tables=args.task_tables, out=args.out, variants_out=args.variants_out,
    )


COMMANDS = {"probe": run_probe, "select": run_select, "summarize": run_summarize, "summarize-proteingym": run_summarize_proteingym}


def run(args: argparse.Namespace) -> None:
    dispatch(COMMANDS, args)
