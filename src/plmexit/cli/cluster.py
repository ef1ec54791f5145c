"""Stage: cluster (estimate, install-profile): before a cluster run."""

from __future__ import annotations

import argparse
from pathlib import Path

from plmexit.cli.common import dispatch, rate


def register(subparsers) -> None:
    p = subparsers.add_parser("estimate", help="before submitting: tokens each model will embed, and the GPU-hours they cost")
    p.add_argument("--configfile", required=True, help="the config to plan (as given to snakemake)")
    p.add_argument("--schema", default="workflow/schemas/config.schema.yaml", help="config schema (default: the repository's, from its root)")
    p.add_argument("--tokens-per-second", type=rate, action="append", default=[], metavar="MODEL=N",
                   help="a model's embedding throughput on your GPUs (repeat per model); default: measured by a previous run's cost files")

    p = subparsers.add_parser(
        "install-profile", help="install the SLURM profile where Snakemake finds it by name, with your site's account and partitions (CPU, and GPU if any)"
    )
    p.add_argument("--account", required=True, help="SLURM account charged (sbatch -A)")
    p.add_argument("--cpu-partition", required=True, help="partition of every job that asks for no GPU (sinfo -o '%%P %%G')")
    p.add_argument("--gpu-partition", help="partition of the jobs that run a model, one GPU each (the same name as --cpu-partition if one takes both); "
                                           "without it no job asks for a GPU and every job goes to the CPU partition")
    p.add_argument("--gpus", type=int, help="GPUs a node of the GPU partition has, the most one job may ask for (default 1)")
    p.add_argument("--squeue-status", action="store_true", help="read job states with squeue (a cluster without SLURM accounting, no sacct)")
    p.add_argument("--name", default="slurm", help="profile name (default slurm: `snakemake --profile slurm`)")
    p.add_argument("--template", default="profiles/slurm/config.yaml", help="the shipped profile (default profiles/slurm/config.yaml, from the repository root)")
    p.add_argument("--force", action="store_true", help="replace a profile of that name already installed")


def run_estimate(args: argparse.Namespace) -> None:
    import yaml

    from plmexit.errors import ConfigError
    from plmexit.pipeline.estimate import estimate
    from plmexit.pipeline.planning import Plan

    try:
        config = yaml.safe_load(Path(args.configfile).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{args.configfile}: cannot read the config ({' '.join(str(exc).split())})") from None
    table = estimate(plan=Plan.from_config(config, args.schema), throughput=dict(args.tokens_per_second))
    print(f"{'model':<16} {'sets':>6} {'sequences':>11} {'tokens':>15} {'tokens/s':>10} {'GPU-hours':>10}  throughput")
    for row in table.itertuples():
        print(f"{row.model:<16} {row.embedding_sets:>6,} {row.sequences:>11,} {row.tokens:>15,} {row.tokens_per_second:>10,.0f} {row.gpu_hours:>10,.1f}  {row.throughput}")
    print(f"{'total':<16} {'':>6} {'':>11} {table['tokens'].sum():>15,} {'':>10} {table['gpu_hours'].sum(min_count=len(table)):>10,.1f}")
    print("Embedding only (every layer, one forward per token); cost timing, zero-shot scoring and probes come on top.")


def run_install_profile(args: argparse.Namespace) -> None:
    from plmexit.pipeline.slurm_profile import install_profile

    dest = install_profile(
        template=args.template, account=args.account, cpu_partition=args.cpu_partition, gpu_partition=args.gpu_partition, gpus=args.gpus,
        squeue_status=args.squeue_status, name=args.name, force=args.force,
    )
    print(f"installed {dest} and {dest.parent / 'partitions.yaml'}; run `snakemake --profile {args.name}`")


COMMANDS = {"estimate": run_estimate, "install-profile": run_install_profile}


def run(args: argparse.Namespace) -> None:
    dispatch(COMMANDS, args)
