"""Command line: one subcommand per pipeline step, each a thin wrapper over one library function.

Invariant: this package is the only code that reads argv, prints or exits. Expected errors
(``PlmexitError``) become one line on stderr and exit status 1; logs go to stderr.

Layout: one module per stage, each with ``register(subparsers)`` (its commands' arguments, light
imports only, since every ``plmexit`` process builds every parser) and ``run(args)`` (imports its
step and calls it with keyword arguments). A new command is a parser and a function in its stage's
module; a new stage is a module added to ``STAGES``. Config settings' arguments come from
``plmexit.settings``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from plmexit import __version__
from plmexit.cli import cluster, data, depth, embed, export, models, probe, report, scan
from plmexit.cli import exit as exit_stage
from plmexit.errors import PlmexitError

STAGES = (scan, models, data, embed, probe, export, depth, exit_stage, report, cluster)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plmexit",
        description=(
            "Layer-wise probing of protein language models. The pipeline runs through Snakemake "
            "(`snakemake --cores N --configfile CONFIG` in the repository; see README.md); each command below "
            "is one step of it, which `snakemake -p` prints so it can be rerun by hand."
        ),
    )
    parser.add_argument("--version", action="version", version=f"plmexit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument(
        "--log", metavar="FILE",
        help="append the log to FILE instead of writing it to stderr; an error is still printed on stderr too, so it reaches the console "
        "(pipeline rules send the whole of stderr to their log instead: `2>> LOG`)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage in STAGES:
        before = set(sub.choices)
        stage.register(sub)
        for name in set(sub.choices) - before:
            sub.choices[name].set_defaults(run=stage.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Appended: a rerun by hand, or stderr sent to the same file (`2>> FILE`), keeps what is already there.
    handler = logging.FileHandler(args.log, mode="a") if args.log else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        args.run(args)
    except PlmexitError as exc:
        message = f"plmexit {args.command}: error: {exc}"
        if args.log:
            handler.stream.write(message + "\n")
        print(message, file=sys.stderr)
        return 1
    finally:
        root.removeHandler(handler)
        handler.close()
    return 0
