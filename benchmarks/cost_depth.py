"""Time per depth, two ways: timestamps within one forward (what ``plmexit cost`` runs) against a
separate forward stopped after each block (what it ran before), on the same encoder and batches.

One random ESM2 (ESM2-35M architecture by default) is written in fair-esm's format; with
``--hooked`` it is converted to the transformers layout and run through plmexit's generic
encoder (the model's own forward, pooled by hooks), so both encoders' ``on_layer`` seam is timed.
The sample is what ``plmexit cost`` samples by default: 8 sequences (here seeded from DeepLoc in
``../shared/data``, cut to 1,022 residues), in the embedding's 4,096-token batches. The two
measurements take turns ``--rounds`` times, so machine load hits both alike. Recorded: each
method's seconds per depth (median over rounds) and its round-to-round spread (the noise), their
relative difference per depth, and the wall time each measurement took (what the cost step pays).

    python benchmarks/cost_depth.py --out benchmarks/results/cost_depth.json
    python benchmarks/cost_depth.py --layers 2 --dim 32 --heads 4 --rounds 1 --out cost_depth.json   # a quick check
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from plmexit.embedding import cost, engine, pieces
from plmexit.models import fair_esm, hub
from plmexit.models import manifest as model_manifest
from plmexit.settings import EmbedSettings

DEEPLOC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "deeploc" / "deeploc_test_set.fasta"


def deeploc_sequences() -> list[str]:
    sequences, chunks = [], None
    for line in DEEPLOC.read_text().splitlines():
        if line.startswith(">"):
            if chunks is not None:
                sequences.append("".join(chunks))
            chunks = []
        else:
            chunks.append(line.strip())
    return sequences + ["".join(chunks)]


def separate_forwards(encoder, sequences: list[str], settings: EmbedSettings, repeats: int) -> np.ndarray:
    """The measurement ``plmexit cost`` made before: per depth, every batch through a forward that
    stops after block k, synchronised before and after on CUDA; the median over repeats."""
    batches = engine.device_batches(encoder, sequences, settings)
    synchronize = torch.cuda.synchronize if settings.device.startswith("cuda") else (lambda: None)

    def run(depth: int) -> None:
        for tokens, weights in batches:
            encoder.pooled(tokens, weights, settings.layer_norm, depth).cpu()

    seconds = np.zeros((repeats, encoder.num_layers + 1))
    run(encoder.num_layers)
    for repeat in range(repeats):
        for depth in range(encoder.num_layers + 1):
            synchronize()
            start = time.perf_counter()
            run(depth)
            synchronize()
            seconds[repeat, depth] = time.perf_counter() - start
    return np.median(seconds, axis=0)


def compare(encoder, sample: list[str], settings: EmbedSettings, repeats: int, rounds: int) -> dict:
    """Both measurements on ``encoder`` over ``sample``, taking turns ``rounds`` times: each one's seconds per
    depth (median over rounds), their round-to-round spread and relative difference, and each one's wall time."""
    methods = {"timestamps": lambda: cost.measure_depth_seconds(encoder, sample, settings, repeats),
               "separate_forwards": lambda: separate_forwards(encoder, sample, settings, repeats)}
    seconds = {name: [] for name in methods}
    wall = {name: [] for name in methods}
    for round_ in range(rounds):
        for name in (list(methods) if round_ % 2 == 0 else list(methods)[::-1]):
            start = time.perf_counter()
            seconds[name].append(methods[name]())
            wall[name].append(time.perf_counter() - start)
    median = {name: np.median(np.stack(v), axis=0) for name, v in seconds.items()}
    spread = {name: ((np.max(v, axis=0) - np.min(v, axis=0)) / np.median(v, axis=0)) for name, v in seconds.items()}
    rel_diff = (median["timestamps"] - median["separate_forwards"]) / median["separate_forwards"]
    full = median["separate_forwards"][-1]
    return {
        "precision": settings.precision, "max_tokens": settings.max_tokens, "encoder": encoder.engine,
        "sample_sequences": len(sample), "sample_residues": int(sum(map(len, sample))), "repeats": repeats, "rounds": rounds,
        "seconds_per_depth": {name: v.tolist() for name, v in median.items()},
        "round_spread_per_depth": {name: v.tolist() for name, v in spread.items()},
        "relative_difference_per_depth": rel_diff.tolist(),
        "max_abs_relative_difference_depth_1_to_L": float(np.max(np.abs(rel_diff[1:]))),
        "max_abs_difference_as_fraction_of_full_forward": float(np.max(np.abs(median["timestamps"] - median["separate_forwards"])) / full),
        "time_saved_fraction": {name: [cost.fraction_saved(v, k) for k in range(len(v))] for name, v in median.items()},
        "measurement_wall_s": {name: float(np.median(v)) for name, v in wall.items()},
        "separate_over_timestamps": float(np.median(wall["separate_forwards"]) / np.median(wall["timestamps"])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--dim", type=int, default=480)
    parser.add_argument("--heads", type=int, default=20)
    parser.add_argument("--sample", type=int, default=8, help="sequences timed (default 8, the cost step's default)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats within one measurement (default 3, the cost step's default)")
    parser.add_argument("--rounds", type=int, default=3, help="times each measurement is made, taking turns (default 3)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--hooked", action="store_true", help="time plmexit's generic encoder over the transformers layout instead of the fused one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    settings = EmbedSettings(device=args.device, precision=args.precision)
    pool = deeploc_sequences()
    chosen = np.random.default_rng(args.seed).choice(len(pool), size=args.sample, replace=False)
    sample, _ = pieces.prepare_sequences([pool[i] for i in np.sort(chosen)], settings)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = fair_esm.make_test_model(args.layers, args.dim, args.heads, args.seed, tmp)
        if args.hooked:
            from plmexit.embedding.generic import HookedEncoder

            directory = hub.convert_fair_esm_checkpoint(checkpoint, Path(tmp) / "hf")
            encoder = HookedEncoder(model_manifest.load(model_manifest.resolve(path=directory)), args.device, args.precision)
        else:
            encoder = engine.make_encoder(model_manifest.load(model_manifest.resolve(checkpoint=checkpoint)), args.device, args.precision)
        measured = compare(encoder, sample, settings, args.repeats, args.rounds)
    result = {
        "benchmark": "cost_depth",
        "command": shlex.join([sys.executable, *sys.argv] if argv is None else [sys.executable, __file__, *argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "device": args.device, "device_name": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else None,
                    "load_average_at_end": os.getloadavg()},
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "model": {"layers": args.layers, "dim": args.dim, "heads": args.heads, "weights": "random", "encoder": encoder.engine},
        **measured,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("relative_difference_per_depth", "max_abs_difference_as_fraction_of_full_forward",
                                             "measurement_wall_s", "separate_over_timestamps")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
