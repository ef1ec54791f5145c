"""Stage: early exit (exit, exit-timing, summarize-exit, plot-exit, lens-exit, summarize-lens-exit)."""

from __future__ import annotations

import argparse

from plmexit.cli.common import add_head_arguments, add_inputs, add_task_type, dispatch, positive_int, set_up_device
from plmexit.cli.embed import add_model_run_arguments
from plmexit.settings import EmbedSettings, ExitSettings, LensExitSettings, TimingSettings


def register(subparsers) -> None:
    p = subparsers.add_parser("exit", help="per-sequence early exit: calibrate each fold's controller on training rows (Learn-then-Test), report it on test rows")
    add_inputs(
        p, "embeddings", "task", "probes", "selection", "cost", "model_id", "task_name",
        probes="the hyperparameter chosen per layer and fold", selection="each fold's deployed layer", cost="measured seconds per depth",
    )
    add_task_type(p)
    p.add_argument("--metric", required=True, help="metric to report (the task's selection metric)")
    ExitSettings.add_arguments(p)
    p.add_argument("--out", required=True, help="exit TSV to write")
    p.add_argument("--info-out", required=True, help="exit JSON to write (thresholds tested, p-values, exit histograms)")

    p = subparsers.add_parser("exit-timing", help="measured wall clock of full depth, the deployed layer and each calibrated controller (rows dropped "
                              "as they exit) on one fold's test sequences, with the embedding's settings")
    add_model_run_arguments(p, out="timing TSV to write: per gate full_depth, static_layer, adaptive and adaptive_one_deep")
    add_inputs(
        p, "embeddings", "probes", "selection", embeddings="the probes are refitted on the fold's training rows",
        probes="the hyperparameter chosen per layer and fold", selection="the deployed layer, timed as the static layer",
    )
    p.add_argument("--exit-info", required=True, help="exit JSON from exit (the calibrated thresholds)")
    p.add_argument("--info-out", required=True, help="JSON to write: device, precision, batches, exit histograms")
    TimingSettings.add_arguments(p)

    p = subparsers.add_parser("summarize-exit", help="gather exit tables into one summary (means over folds)")
    p.add_argument("tables", nargs="+", help="exit TSV files")
    p.add_argument("--timings", nargs="*", default=[], help="timing TSVs from exit-timing (measured seconds beside the estimated ones)")
    ExitSettings.add_arguments(p, only=("epsilon",), required=True)
    p.add_argument("--out", required=True, help="summary TSV to write")

    p = subparsers.add_parser("plot-exit", help="figure of the metric against mean layers and time: static layers, calibrated controllers, Hart's point")
    p.add_argument("--table", required=True, help="exit TSV from exit")
    p.add_argument("--timing", nargs="?", help="timing TSV from exit-timing; none: the time panel shows estimated time only")
    p.add_argument("--out", required=True, help="PNG to write")

    p = subparsers.add_parser("lens-exit", help="early exit of the model's own head: the exit gates calibrated (Learn-then-Test) on the logit lens "
                              "of a masked sample, per position and per sequence, against the final layer")
    add_head_arguments(p)
    add_inputs(p, "task", "task_name", task="its sequences are sampled", task_name="or the embedding set's")
    p.add_argument("--max-tokens", type=positive_int, default=4096, help="padded tokens per batch (default 4096)")
    LensExitSettings.add_arguments(p)
    p.add_argument("--out", required=True, help="TSV to write: every static layer and each calibrated controller on the test sequences")
    p.add_argument("--info-out", required=True, help="JSON to write: settings, sample, calibration split, thresholds tested, provenance")

    p = subparsers.add_parser("summarize-lens-exit", help="gather head-exit tables into one summary (the calibrated controllers)")
    p.add_argument("tables", nargs="+", help="TSV files from lens-exit")
    ExitSettings.add_arguments(p, only=("epsilon",), required=True)
    p.add_argument("--out", required=True, help="summary TSV to write")


def run_exit(args: argparse.Namespace) -> None:
    from plmexit.pipeline.exit_steps import exit_task

    exit_task(
        embeddings=args.embeddings, task_table=args.task, probe_table=args.probes, selection_file=args.selection, cost_file=args.cost,
        model=args.model_id, task=args.task_name, task_type=args.type, metric=args.metric, settings=ExitSettings.from_args(args),
        out=args.out, info_out=args.info_out,
    )


def run_exit_timing(args: argparse.Namespace) -> None:
    from plmexit.pipeline.exit_timing_steps import time_exit_task

    settings = EmbedSettings.from_args(args, device=set_up_device(args))
    timing = TimingSettings.from_args(args)
    time_exit_task(
        model_manifest=args.model, task_table=args.task, embeddings=args.embeddings, probe_table=args.probes, selection_file=args.selection,
        exit_info=args.exit_info, out=args.out, info_out=args.info_out, settings=settings, sample_sequences=timing.sample_sequences,
        repeats=timing.repeats, seed=timing.seed, variant_crop=args.variant_crop,
    )


def run_summarize_exit(args: argparse.Namespace) -> None:
    from plmexit.pipeline.exit_steps import summarize_exit_tables

    summarize_exit_tables(exit_tables=args.tables, epsilon=args.epsilon, out=args.out, timing_tables=args.timings)


def run_plot_exit(args: argparse.Namespace) -> None:
    from plmexit.pipeline.exit_steps import plot_exit_table

    plot_exit_table(exit_table=args.table, out=args.out, timing_table=args.timing)


def run_lens_exit(args: argparse.Namespace) -> None:
    from plmexit.pipeline.lens_exit_steps import lens_exit_task

    device = set_up_device(args)
    lens_exit_task(
        model=args.model, task=args.task, out=args.out, info_out=args.info_out, set_name=args.task_name,
        settings=LensExitSettings.from_args(args), device=device, engine=args.engine, max_tokens=args.max_tokens,
    )


def run_summarize_lens_exit(args: argparse.Namespace) -> None:
    from plmexit.pipeline.lens_exit_steps import summarize_lens_exit_tables

    summarize_lens_exit_tables(tables=args.tables, epsilon=args.epsilon, out=args.out)


COMMANDS = {
    "exit": run_exit, "exit-timing": run_exit_timing, "summarize-exit": run_summarize_exit, "plot-exit": run_plot_exit,
    "lens-exit": run_lens_exit, "summarize-lens-exit": run_summarize_lens_exit,
}


def run(args: argparse.Namespace) -> None:
    dispatch(COMMANDS, args)
