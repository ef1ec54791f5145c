"""Stage: export (export, predict): ship the deployed layer and run it on new sequences."""

from __future__ import annotations

import argparse

from plmexit.cli.common import add_device_arguments, add_inputs, add_task_type, dispatch, set_up_device


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="ship the deployed layer: the model's first k blocks, the probe refitted on the rows that are never test rows, a model card")
    add_inputs(
        p, "model", "embeddings", "task", "selection", "cost", model="the model the store was embedded with",
        embeddings="the deployed layer's features and the embedding settings", task="the labels the probe is refitted on",
        selection="deployed layer, its hyperparameter, scores", cost="FLOPs and time per depth, for the card",
    )
    add_task_type(p)
    p.add_argument("--out", required=True, help="export directory to write (replaced whole if it exists)")

    p = subparsers.add_parser("predict", help="run an export (truncated model and probe) on new sequences; one row per sequence")
    p.add_argument("--export", required=True, help="export directory from export")
    p.add_argument("--input", required=True, help="sequences: .csv with a 'sequence' column (and optionally 'id'), or .fasta")
    p.add_argument("--out", required=True, help="predictions CSV to write")
    add_device_arguments(p)


def run_export(args: argparse.Namespace) -> None:
    from plmexit.pipeline.export_steps import export_model

    export_model(
        model_manifest=args.model, embeddings=args.embeddings, task_table=args.task, selection_file=args.selection, cost_file=args.cost,
        task_type=args.type, out=args.out,
    )


def run_predict(args: argparse.Namespace) -> None:
    from plmexit.pipeline.export_steps import predict

    predict(export_dir=args.export, input_file=args.input, out=args.out, device=set_up_device(args))


COMMANDS = {"export": run_export, "predict": run_predict}


def run(args: argparse.Namespace) -> None:
    dispatch(COMMANDS, args)
