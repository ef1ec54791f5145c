"""Stage: depth diagnostics (lens, zero-shot, summarize-depth, plot-depth): what every layer already knows (one task's curves
are drawn beside its probe by the report stage's ``plot``)."""

from __future__ import annotations

import argparse

from plmexit.cli.common import add_head_arguments, add_inputs, dispatch, set_up_device
from plmexit.settings import LensSettings, ZeroShotSettings, positive_int


def register(subparsers) -> None:
    p = subparsers.add_parser("lens", help="logit lens, block skipping and exit layers on a seeded masked sample of a task, from the model's own head")
    add_head_arguments(p)
    add_inputs(p, "task", "task_name", task="its sequences are sampled")
    LensSettings.add_arguments(p)
    p.add_argument("--max-tokens", type=positive_int, default=4096, help="padded tokens per batch (default 4096)")
    p.add_argument("--out", required=True, help="lens TSV to write: model, task, lens, layer, metric, value")
    p.add_argument("--skip-out", required=True, help="skipping TSV to write: model, task, block, layer, metric, value")
    p.add_argument("--exit-out", required=True, help="exit-layer TSV to write: model, task, layer, n_positions, fraction, cumulative_fraction")
    p.add_argument("--info-out", required=True, help="JSON to write: sample, masking, summary numbers, provenance")

    p = subparsers.add_parser("zero-shot", help="score a ProteinGym assay at every layer from the model's own head (masked and wild-type marginals, DoLa, SLED)")
    add_head_arguments(p)
    p.add_argument("--assay", required=True, help="ProteinGym substitution assay CSV (mutant, DMS_score[, DMS_score_bin])")
    add_inputs(p, "reference")
    p.add_argument("--dms-id", required=True, help="the assay's DMS_id in the reference table")
    ZeroShotSettings.add_arguments(p)
    p.add_argument("--batch-size", type=positive_int, help="masked copies of the wild type per forward (default 32 on a GPU, 1 on a CPU, where batching does not pay)")
    p.add_argument("--out-long", required=True, help="TSV to write: model, dms_id, layer, method, subset, metric, value")
    p.add_argument("--out-proteingym", required=True, help="CSV to write in ProteinGym's zero-shot per-assay layout (one column per layer and method)")
    p.add_argument("--info-out", required=True, help="JSON to write: what the model read, the calibration choices, provenance")

    p = subparsers.add_parser("summarize-depth", help="per model and task: the lens's agreeing layer, the best zero-shot layer and the deployed layer; the per-layer curves")
    p.add_argument("--lens", nargs="*", default=[], help="info JSON files of lens (its tables are read from beside them)")
    p.add_argument("--zero-shot", nargs="*", default=[], help="info JSON files of zero-shot (its long tables are read from beside them)")
    p.add_argument("--selections", nargs="+", required=True, help="selection JSON files of the tasks the lens and zero-shot files speak of")
    p.add_argument("--out", required=True, help="summary TSV to write (one row per model and task)")
    p.add_argument("--curves-out", required=True, help="TSV of per-layer curves to write (what plot-depth draws)")

    p = subparsers.add_parser("plot-depth", help="figure of what every layer already knows, against relative depth, every model")
    p.add_argument("--curves", required=True, help="curves TSV from summarize-depth")
    p.add_argument("--summary", required=True, help="summary TSV from summarize-depth (the deployed layers)")
    p.add_argument("--out", required=True, help="PNG to write")


def run_lens(args: argparse.Namespace) -> None:
    from plmexit.pipeline.depth_steps import lens_task

    device = set_up_device(args)
    lens = LensSettings.from_args(args)
    lens_task(
        model=args.model, task=args.task, out=args.out, skip_out=args.skip_out, exit_out=args.exit_out, info_out=args.info_out,
        task_name=args.task_name, sample=lens.sample, mask_fraction=lens.mask_fraction, seed=lens.seed, device=device,
        engine=args.engine, max_tokens=args.max_tokens, skip_blocks=lens.skip_blocks,
    )


def run_zero_shot(args: argparse.Namespace) -> None:
    from plmexit.pipeline.depth_steps import zero_shot_assay

    device = set_up_device(args)
    zero_shot = ZeroShotSettings.from_args(args)
    zero_shot_assay(
        model=args.model, assay=args.assay, reference=args.reference, dms_id=args.dms_id, out_long=args.out_long,
        out_proteingym=args.out_proteingym, info_out=args.info_out, calibration_fraction=zero_shot.calibration_fraction,
        seed=zero_shot.seed, device=device, engine=args.engine, batch_size=args.batch_size,
    )


def run_summarize_depth(args: argparse.Namespace) -> None:
    from plmexit.pipeline.select_steps import summarize_depth

    summarize_depth(lens_infos=args.lens, zero_shot_infos=args.zero_shot, selection_files=args.selections, out=args.out, curves_out=args.curves_out)


def run_plot_depth(args: argparse.Namespace) -> None:
    from plmexit.pipeline.report_steps import plot_depth

    plot_depth(curves_file=args.curves, summary_file=args.summary, out=args.out)


COMMANDS = {
    "lens": run_lens, "zero-shot": run_zero_shot, "summarize-depth": run_summarize_depth, "plot-depth": run_plot_depth,
}


def run(args: argparse.Namespace) -> None:
    dispatch(COMMANDS, args)
