"""Stage: embed (embed, gather-embeddings, cost, summarize-gpu-batch): run a model over a task (or, embed --fasta, a FASTA file's sequences) with the embedding's settings."""

from __future__ import annotations

import argparse
import sys

from plmexit.cli.common import ProgressBar, add_device_arguments, dispatch, set_up_device
from plmexit.errors import PlmexitError
from plmexit.settings import CostSettings, EmbedSettings, positive_int


def add_model_run_arguments(p: argparse.ArgumentParser, out: str, fasta: bool = False) -> None:
    """Arguments of the commands that run a model over a task (embed, cost, exit-timing): they take the
    embedding's settings so that they time and count what the embedding ran. ``fasta``: a FASTA file may
    stand in for the task table (embed)."""
    if fasta:
        p.add_argument("--model", required=True, help=(
            "model manifest JSON from fetch-model; with --fasta also a model as a config names it: a fair-esm release "
            "(esm2_t6_8M_UR50D), a checkpoint file, a transformers model directory, or a hub model ORG/NAME@COMMIT"
        ))
        source = p.add_mutually_exclusive_group(required=True)
        source.add_argument("--task", help="task table TSV from prepare (the workflow's embed step)")
        source.add_argument("--fasta", help="embed these sequences instead of a task table: FASTA (.fasta, .fa, .faa; ids from the headers) or a .csv with a sequence column")
    else:
        p.add_argument("--model", required=True, help="model manifest JSON from fetch-model")
        p.add_argument("--task", required=True, help="task table TSV from prepare")
    p.add_argument("--out", required=True, help=out)
    add_device_arguments(p)
    EmbedSettings.add_arguments(p)
    p.add_argument("--variant-crop", action="store_true",
                   help="the task is one target's substitution variants: embed all through one crop that covers every mutated position")


def register(subparsers) -> None:
    p = subparsers.add_parser("embed", help="embed a task (or the sequences of a FASTA file) at every layer into an HDF5 store")
    add_model_run_arguments(p, out="HDF5 store to write (plmexit.read_layer reads a layer of it)", fasta=True)
    p.add_argument("--layers", type=int, nargs="+", metavar="K",
                   help="with --fasta: store only these layers (0 the token embeddings, -1 the final layer; default every layer)")
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="storage precision (default float16)")
    p.add_argument("--shard", type=int, help="embed only this shard (0-based) of --shards; writes a shard store for gather-embeddings")
    p.add_argument("--shards", type=positive_int, help="number of shards the task is cut into")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (progress is then logged every 10 s)")
    p.add_argument("--record-out", help="JSON of this run to write: tokens embedded, seconds, device (a GPU batch's table reads it)")

    p = subparsers.add_parser("gather-embeddings", help="stream a task's shard stores into the task's HDF5 store")
    p.add_argument("shards", nargs="+", help="every shard store of the task (from embed --shard K --shards N)")
    p.add_argument("--out", required=True, help="HDF5 store to write")

    p = subparsers.add_parser("cost", help="analytic FLOPs (task lengths) and measured forward time (a sample, on --device) per depth")
    add_model_run_arguments(p, out="cost JSON to write")
    CostSettings.add_arguments(p)

    p = subparsers.add_parser(
        "summarize-gpu-batch", help="a GPU batch's table: per embedding shard and cost timing, its device, tokens, seconds, tokens/s and TFLOP/s",
    )
    p.add_argument("--shards", nargs="+", default=[], help="records of embedding shards from embed --record-out ({set}.shards/{k}-of-{n}.json)")
    p.add_argument("--costs", nargs="+", default=[], help="cost JSON files from cost ({set}.json)")
    p.add_argument("--out", required=True, help="TSV to write")


def run_embed(args: argparse.Namespace) -> None:
    from plmexit.pipeline.model_steps import embed_fasta, embed_task

    if (args.shard is None) != (args.shards is None):
        raise PlmexitError("--shard and --shards go together; give both (a shard index and the task's shard count) or neither")
    task_only = [flag for flag, given in (("--shard", args.shard is not None), ("--variant-crop", args.variant_crop)) if given]
    if args.fasta is not None and task_only:
        raise PlmexitError(f"{task_only[0]} applies to a task table (--task), not to --fasta; drop it")
    if args.task is not None and args.layers is not None:
        raise PlmexitError("--layers applies to --fasta; the workflow's steps read every layer of a task's store, so drop it")
    settings = EmbedSettings.from_args(args, device=set_up_device(args))
    progress = None if args.no_progress else ProgressBar(sys.stderr)
    if args.fasta is not None:
        embed_fasta(fasta=args.fasta, model=args.model, out=args.out, settings=settings, dtype=args.dtype, layers=args.layers, progress=progress)
        return
    embed_task(
        model_manifest=args.model, task_table=args.task, out=args.out, settings=settings, dtype=args.dtype, shard=args.shard,
        shards=args.shards or 1, progress=progress, variant_crop=args.variant_crop,
        record_out=args.record_out,
    )


def run_gather(args: argparse.Namespace) -> None:
    from plmexit.pipeline.probe_steps import gather_embeddings

    gather_embeddings(shards=args.shards, out=args.out)


def run_cost(args: argparse.Namespace) -> None:
    from plmexit.pipeline.model_steps import measure_cost

    settings = EmbedSettings.from_args(args, device=set_up_device(args))
    cost = CostSettings.from_args(args)
    measure_cost(
        model_manifest=args.model, task_table=args.task, out=args.out, settings=settings, sample_sequences=cost.sample_sequences,
        repeats=cost.repeats, seed=cost.seed, variant_crop=args.variant_crop,
    )


def run_summarize_gpu_batch(args: argparse.Namespace) -> None:
    from plmexit.pipeline.select_steps import summarize_gpu_batch

    summarize_gpu_batch(shard_records=args.shards, cost_files=args.costs, out=args.out)


COMMANDS = {"embed": run_embed, "gather-embeddings": run_gather, "cost": run_cost, "summarize-gpu-batch": run_summarize_gpu_batch}


def run(args: argparse.Namespace) -> None:
    dispatch(COMMANDS, args)
