"""Stage: embed (embed, gather-embeddings, cost, summarize-gpu-batch): run a model over a task with the embedding's settings."""

from __future__ import annotations

import argparse
import sys

from plmexit.cli.common import ProgressBar, add_device_arguments, dispatch, set_up_device
from plmexit.errors import PlmexitError
from plmexit.settings import CostSettings, EmbedSettings, positive_int


def add_model_run_arguments(p: argparse.ArgumentParser, out: str) -> None:
    """Arguments of the commands that run a model over a task (embed, cost, exit-timing): they take the
    embedding's settings so that they time and count what the embedding ran."""
    p.add_argument("--model", required=True, help="model manifest JSON from fetch-model")
    p.add_argument("--task", required=True, help="task table TSV from prepare")
    p.add_argument("--out", required=True, help=out)
    add_device_arguments(p)
    EmbedSettings.add_arguments(p)
    p.add_argument("--variant-crop", action="store_true",
                   help="the task is one target's substitution variants: embed all through one crop that covers every mutated position")


def register(subparsers) -> None:
    p = subparsers.add_parser("embed", help="embed a task at every layer into an HDF5 store")
    add_model_run_arguments(p, out="HDF5 store to write")
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
    from plmexit.pipeline.model_steps import embed_task

    if (args.shard is None) != (args.shards is None):
        raise PlmexitError("--shard and --shards go together; give both (a shard index and the task's shard count) or neither")
    settings = EmbedSettings.from_args(args, device=set_up_device(args))
    embed_task(
        model_manifest=args.model, task_table=args.task, out=args.out, settings=settings, dtype=args.dtype, shard=args.shard,
        shards=args.shards or 1, progress=None if args.no_progress else ProgressBar(sys.stderr), variant_crop=args.variant_crop,
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
