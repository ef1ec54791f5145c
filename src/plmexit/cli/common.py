"""What several stages' commands share: argument types, the device and thread arguments, the progress bar.

Invariant: light imports only (every ``plmexit`` process builds every command's parser); torch is
imported inside ``set_up_device``, which only a command's ``run`` calls.
"""

from __future__ import annotations

import argparse


def rate(text: str) -> tuple[str, float]:
    """``MODEL=TOKENS_PER_SECOND`` (estimate --tokens-per-second)."""
    model, _, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not model or number <= 0:
        raise argparse.ArgumentTypeError(f"expected MODEL=TOKENS_PER_SECOND with a positive number, got {text!r}")
    return model, number


def add_device_arguments(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--threads`` of every command that runs a model."""
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")


def set_up_device(args: argparse.Namespace) -> str:
    """Torch's CPU threads as ``--threads`` asks (0: torch's choice) and the device ``--device`` names, resolved."""
    import torch

    from plmexit.pipeline.model_steps import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    return resolve_device(args.device)


def add_head_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of the commands that read a model's own head at every layer (lens, zero-shot, lens-exit)."""
    p.add_argument("--model", required=True, help="model manifest JSON from fetch-model (its id names the model in the tables)")
    add_device_arguments(p)
    p.add_argument(
        "--engine", choices=["exact", "fused"], default="exact",
        help="exact (default): fair-esm's own blocks, the last layer's lens is the model's logits bit for bit; "
        "fused: plmexit's fused forward, faster, equal to fp32 rounding",
    )


# The files one step writes and later steps read, each described once; a command adds those it reads
# with ``add_inputs``, saying in a note what it takes from one where that helps.
INPUTS = {
    "model": "model manifest JSON from fetch-model",
    "embeddings": "HDF5 store from embed",
    "task": "task table TSV from prepare",
    "probes": "probe TSV from probe",
    "predictions": "predictions TSV from probe",
    "selection": "selection JSON from select",
    "cost": "cost JSON from cost",
    "summary": "best_layers TSV from summarize",
    "model_id": "the model's id, written in the table",
    "task_name": "the task's name, written in the table",
    "reference": "ProteinGym's DMS_substitutions.csv",
    "archive": "the zip fetch-archive wrote",
    "archive_info": "the JSON fetch-archive wrote beside it",
}


def add_inputs(p: argparse.ArgumentParser, *names: str, **notes: str) -> None:
    """Required ``--NAME`` arguments for the ``INPUTS`` named, in that order; ``notes`` adds to a name's help."""
    for name in names:
        note = f" ({notes[name]})" if name in notes else ""
        p.add_argument("--" + name.replace("_", "-"), required=True, help=INPUTS[name] + note)


def add_depth_curves(p: argparse.ArgumentParser, when: str = "") -> None:
    """Optional ``--lens`` and ``--zero-shot`` tables drawn beside a task's probe in its figure (``when``: the
    flag they need); each may be left empty (``--lens --zero-shot Z``), as a rule passes a task without one."""
    p.add_argument("--lens", nargs="?", help=f"{when}lens TSV of the task's sequences (from lens); none: no lens curves")
    p.add_argument("--zero-shot", nargs="?", help=f"{when}long zero-shot TSV of the task's assay (from zero-shot); none: no zero-shot curves")


def add_task_type(p: argparse.ArgumentParser) -> None:
    """``--type``: the task type (as prepare wrote the table), required."""
    from plmexit.data.formats import TASK_TYPES

    p.add_argument("--type", choices=list(TASK_TYPES), required=True, help="task type")


def dispatch(commands: dict, args: argparse.Namespace) -> None:
    """Run the function of ``args.command`` from a stage's ``{command: function}``."""
    commands[args.command](args)


class ProgressBar:
    """A one-line progress bar with tokens per second on stderr: redrawn in place on a terminal,
    a new line every ``every_s`` seconds otherwise (Snakemake writes stderr to the rule's log)."""

    WIDTH = 30

    def __init__(self, stream, every_s: float = 10.0):
        self.stream, self.every_s = stream, every_s
        self.tty = stream.isatty()
        self.last = None

    def __call__(self, done: int, total: int, seconds: float) -> None:
        finished = done >= total
        if not finished and self.last is not None and seconds - self.last < (0.25 if self.tty else self.every_s):
            return
        self.last = seconds
        fraction = min(done / total, 1.0) if total else 1.0
        rate = done / seconds if seconds > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else float("nan")
        filled = int(round(fraction * self.WIDTH))
        line = (
            f"embed [{'#' * filled}{'.' * (self.WIDTH - filled)}] {100 * fraction:5.1f}% "
            f"{done:,}/{total:,} tokens, {rate:,.0f} tokens/s, {seconds:,.0f} s elapsed"
            + ("" if finished or eta != eta else f", about {eta:,.0f} s left")
        )
        if self.tty:
            self.stream.write("\r" + line + ("\n" if finished else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
