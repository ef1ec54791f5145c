"""Which linear layers int8 should keep in float32: deviation from fp32 and throughput of each choice,
next to esm-cpp int8, on the same random weights and sequences.

One random ESM2 (ESM2-35M architecture by default; no real ESM2 weights exist on this machine)
embeds BLAT_ECOLX variants and DeepLoc proteins (as ``embed_peers.py``) with ``FastEncoder``: in
float32 (the reference), and with int8 (per-channel weights, dynamic per-batch activations; torch's
``quantized.linear_dynamic``) on every linear layer except those a choice keeps float32:

- ``all_int8``: none (what ``embed.precision: int8`` did before);
- ``out_fp32``: each block's attention output projection (what ``embed.precision: int8`` does:
  ``precision.INT8_FLOAT32_LINEARS``; the run checks that ``make_encoder(..., "int8")`` gives
  exactly its numbers);
- ``fc2_fp32``: each block's FFN output;
- ``first_last_fp32``: the first and the last block entirely;
- ``out_and_last_fp32``: the attention output projections and the last block.

Per choice and workload: tokens/s (best of ``--repeats`` passes, paths taking turns) and the
deviation from float32 per layer (max over vectors of |x - ref| / max|ref|), and esm-cpp int8's
(``esm_cpp_worker.py``, in ``--esm-cpp-python``'s venv; skipped when absent).

    python benchmarks/int8_choice.py --threads 1 --out benchmarks/results/int8_choice.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from embed_peers import ARCHITECTURES, BLAT, DEFAULT_ESM_CPP_PYTHON, deviation, esm_cpp_safetensors, read_deeploc

import plmexit
from plmexit.embedding import engine, fast_esm2, options
from plmexit.embedding import precision as precisions
from plmexit.models import fair_esm, hub

LINEARS = ("qkv", "out", "fc1", "fc2")


def choices(layers: int) -> dict[str, set[tuple[int, str]]]:
    """Each choice's (block, linear) pairs kept float32."""
    every = range(layers)
    return {
        "all_int8": set(),
        "out_fp32": {(i, "out") for i in every},
        "fc2_fp32": {(i, "fc2") for i in every},
        "first_last_fp32": {(i, n) for i in (0, layers - 1) for n in LINEARS},
        "out_and_last_fp32": {(i, "out") for i in every} | {(layers - 1, n) for n in LINEARS},
    }


class ChoiceEncoder(fast_esm2.FastEncoder):
    """``FastEncoder`` in float32 with int8 on every linear layer not in ``keep``."""

    def __init__(self, loaded, keep: set[tuple[int, str]]):
        super().__init__(loaded, "cpu", "float32")
        self._reduce_range = precisions.reduce_range()
        for i, layer in enumerate(self.layers):
            for name in LINEARS:
                if (i, name) not in keep:
                    layer[name] = precisions.quantize_linear(layer.pop(f"{name}_w"), layer.pop(f"{name}_b"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=list(ARCHITECTURES), default="ESM2-35M")
    parser.add_argument("--variants", type=int, default=56, help="BLAT_ECOLX variants (default 56; 0 skips)")
    parser.add_argument("--choices", default="", help="comma-separated choices to run (default: all)")
    parser.add_argument("--deeploc", type=int, default=24, help="DeepLoc proteins, a seeded random subset (default 24; 0 skips)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per path (default 2; best counts)")
    parser.add_argument("--esm-cpp-python", default=os.environ.get("PLMEXIT_ESM_CPP_PYTHON", DEFAULT_ESM_CPP_PYTHON))
    parser.add_argument("--threads", type=int, default=0, help="torch and esm-cpp threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    n_layers, dim, heads = ARCHITECTURES[args.arch]
    workloads = {}
    if args.variants:
        workloads["blat_ecolx_variants"] = pd.read_csv(BLAT)["mutated_sequence"].tolist()[: args.variants]
    if args.deeploc:
        workloads["deeploc_mixed_lengths"] = read_deeploc(args.deeploc, args.seed)
    settings = options.EmbedSettings()
    esm_cpp = Path(args.esm_cpp_python)
    results, cpp_info = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = fair_esm.make_test_model(n_layers, dim, heads, args.seed, tmp)
        loaded = fair_esm.load_model(checkpoint)
        encoders = {"float32": fast_esm2.FastEncoder(loaded, "cpu", "float32")}
        chosen = {name: keep for name, keep in choices(n_layers).items() if not args.choices or name in args.choices.split(",")}
        encoders.update({name: ChoiceEncoder(loaded, keep) for name, keep in chosen.items()})
        encoders["plmexit_int8"] = engine.make_encoder(loaded, "cpu", "int8")
        cpp_weights = None
        if esm_cpp.exists():
            cpp_weights = esm_cpp_safetensors(Path(hub.convert_fair_esm_checkpoint(checkpoint, Path(tmp) / "hub")), Path(tmp) / "esm_cpp.safetensors")

        def run(encoder, sequences):
            out = np.zeros((n_layers + 1, len(sequences), dim), dtype=np.float32)
            begin = time.perf_counter()
            for index, block in engine.embed_pooled(None, sequences, settings, encoder=encoder):
                out[:, index] = block
            return out, time.perf_counter() - begin

        for workload, sequences in workloads.items():
            tokens = sum(len(s) + 2 for s in sequences)
            warm = sequences[: max(1, len(sequences) // 4)]
            for encoder in encoders.values():
                run(encoder, warm)
            pooled, seconds = {}, {name: [] for name in encoders}
            for r in range(args.repeats):
                names = list(encoders) if r % 2 == 0 else list(encoders)[::-1]
                for name in names:
                    pooled[name], s = run(encoders[name], sequences)
                    seconds[name].append(s)
            rate = {name: tokens / min(s) for name, s in seconds.items()}
            if cpp_weights is not None:
                request = {"safetensors": str(cpp_weights), "modes": ["int8"], "sequences": sequences, "warmup": warm}
                done = subprocess.run([str(esm_cpp), str(Path(__file__).with_name("esm_cpp_worker.py"))], input=json.dumps(request),
                                      capture_output=True, text=True, check=True, env={**os.environ, "ESM_NUM_THREADS": str(threads)})
                reply = json.loads(done.stdout)
                cpp_info = {k: reply[k] for k in ("isa", "version", "threads")}
                pooled["esm_cpp_int8"] = np.asarray(reply["int8"]["pooled"], dtype=np.float32)
                rate["esm_cpp_int8"] = tokens / reply["int8"]["hidden_states_s"]
            if "out_fp32" in pooled and not np.array_equal(pooled["plmexit_int8"], pooled["out_fp32"]):
                raise AssertionError("embed.precision int8 no longer computes the out_fp32 choice; update this benchmark")
            dev = {name: deviation(x, pooled["float32"]) for name, x in pooled.items() if name != "float32"}
            summary = {name: {"max_deviation": max(dev[name]), "tokens_per_s": rate[name],
                              "over_esm_cpp_int8": rate[name] / rate["esm_cpp_int8"] if "esm_cpp_int8" in rate else None,
                              "no_larger_deviation_than_esm_cpp_int8": max(dev[name]) <= max(dev["esm_cpp_int8"]) if "esm_cpp_int8" in dev else None}
                       for name in dev}
            results[workload] = {"sequences": len(sequences), "tokens": tokens, "tokens_per_s": rate, "seconds": seconds,
                                 "max_rel_deviation_from_float32_per_layer": dev, "summary": summary}
            for name, s in summary.items():
                print(workload, name, f"max deviation {100 * s['max_deviation']:.2f}%", f"{s['tokens_per_s']:.0f} tokens/s", file=sys.stderr)
            write(args, argv, threads, cpp_info, n_layers, dim, heads, results)  # after every workload: a long run keeps what it finished
    return 0


def write(args, argv, threads, cpp_info, n_layers, dim, heads, results) -> None:
    out = {
        "benchmark": "int8_choice",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/int8_choice.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": threads, "load_average_at_end": os.getloadavg(),
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(), "int8_reduce_range": precisions.reduce_range()},
        "versions": {"python": platform.python_version(), "torch": str(torch.__version__), "plmexit": plmexit.__version__, "esm_cpp": cpp_info},
        "model": f"{args.arch} architecture, random weights ({n_layers} layers, width {dim}, {heads} heads): no real ESM2 weights exist here",
        "choices_kept_float32": {name: sorted(f"{i}:{n}" for i, n in keep) for name, keep in choices(n_layers).items()
                                 if not args.choices or name in args.choices.split(",")},
        "plmexit_int8_is": "out_fp32",
        "workloads": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
