"""Stage: figures and tables (plot, plot-summary, plot-study, plot-depth-exit, summarize-resources)."""

from __future__ import annotations

import argparse

from plmexit.cli.common import add_depth_curves, add_inputs, dispatch


def register(subparsers) -> None:
    p = subparsers.add_parser("plot", help="figure of the metric against layer for one model and task, beside its lens and zero-shot curves where it has them")
    add_inputs(p, "probes", "selection", "cost", cost="measured time per depth, drawn as time saved")
    add_depth_curves(p)
    p.add_argument("--out", required=True, help="PNG to write")

    p = subparsers.add_parser("plot-summary", help="figure of gain (with intervals) against compute saved, all tasks")
    add_inputs(p, "summary")
    p.add_argument("--out", required=True, help="PNG to write")

    p = subparsers.add_parser("plot-study", help="the paper's figures across models (relative depth, heat maps, gain vs compute, final-layer wins) and its tables")
    add_inputs(p, "summary")
    p.add_argument("--across", required=True, help="across_tasks TSV from summarize")
    p.add_argument("--probes", nargs="+", required=True, help="probe tables (TSV from probe) of every model and task in the summary")
    p.add_argument("--figures-dir", required=True, help="directory to write the figures to (PNG and PDF), replaced whole")
    p.add_argument("--tables-dir", required=True, help="directory to write the tables to (Markdown and LaTeX), replaced whole")

    p = subparsers.add_parser("plot-depth-exit", help="figure of one model: per task the layer each depth diagnostic and the exit controller point to, beside its exit trade-offs")
    p.add_argument("--model", required=True, help="model id (as in the summaries)")
    add_inputs(p, "summary", summary="deployed layers, number of layers, ProteinGym assay and scheme")
    p.add_argument("--depth", required=True, help="summary TSV from summarize-depth (lens agreement layer, zero-shot layer chosen on calibration)")
    p.add_argument("--exit-tables", nargs="*", default=[], help="the model's exit TSVs from exit")
    p.add_argument("--out", required=True, help="PNG to write (300 dpi, 7.2 in wide)")
    p.add_argument("--pdf-out", required=True, help="PDF to write")

    p = subparsers.add_parser(
        "summarize-resources", help="table of the wall, GPU- and CPU-hours the models' jobs spent, per model and rule, from Snakemake's benchmark records",
    )
    p.add_argument("--benchmarks", required=True, help="the run's benchmark directory (<results>/benchmarks: one TSV per job under {rule}/{model}/)")
    p.add_argument("--models", nargs="+", required=True, help="model ids whose jobs to count")
    p.add_argument("--out", required=True, help="TSV to write")


def run_plot(args: argparse.Namespace) -> None:
    from plmexit.pipeline.report_steps import plot_task

    plot_task(
        probe_table=args.probes, selection_file=args.selection, cost_file=args.cost, out=args.out, lens_file=args.lens, zero_shot_file=args.zero_shot,
    )


def run_plot_summary(args: argparse.Namespace) -> None:
    from plmexit.pipeline.report_steps import plot_summary

    plot_summary(summary_file=args.summary, out=args.out)


def run_plot_study(args: argparse.Namespace) -> None:
    from plmexit.pipeline.report_steps import plot_study

    plot_study(summary_file=args.summary, across_file=args.across, probe_tables=args.probes, figures_dir=args.figures_dir, tables_dir=args.tables_dir)


def run_plot_depth_exit(args: argparse.Namespace) -> None:
    from plmexit.pipeline.report_steps import plot_depth_exit

    plot_depth_exit(
        model=args.model, summary_file=args.summary, depth_file=args.depth, exit_tables=args.exit_tables, out=args.out, pdf_out=args.pdf_out,
    )


def run_summarize_resources(args: argparse.Namespace) -> None:
    from plmexit.pipeline.report_steps import summarize_resources

    summarize_resources(benchmarks_dir=args.benchmarks, models=args.models, out=args.out)


COMMANDS = {
    "plot": run_plot, "plot-summary": run_plot_summary, "plot-study": run_plot_study, "plot-depth-exit": run_plot_depth_exit,
    "summarize-resources": run_summarize_resources,
}


def run(args: argparse.Namespace) -> None:
    dispatch(COMMANDS, args)
