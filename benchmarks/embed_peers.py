"""plmexit at every CPU precision against every peer, same weights, same sequences, one JSON.

One random ESM2 (ESM2-35M architecture; no real weights exist on this machine) is written in
fair-esm's format, converted to the transformers layout (``hub.convert_fair_esm_checkpoint``) and
from that to the safetensors layout esm-cpp loads (LayerNorm ``weight``/``bias`` names, the tied LM
head and the rotary ``inv_freq`` buffers that transformers no longer saves). Paths, all pooling
every layer (mean over residues):

- ``plmexit_<precision>``: ``engine.embed_pooled`` with ``make_encoder`` at that precision (what
  ``plmexit embed`` runs; the JSON records what ran, so a fallback is visible);
- ``fair_esm_extract``: fair-esm's ``scripts/extract.py`` computation (``reference_pooled``);
- ``hf_sdpa`` / ``hf_eager``: ``EsmModel`` + ``output_hidden_states=True``, hand-written as a user
  would (``embed_hub.hand_written``), batches of a fixed number of sequences in input order;
- ``esm_cpp_fp32`` / ``esm_cpp_int8``: esm-cpp's ``forward_with_hidden_states`` (its only call that
  returns hidden states: one sequence at a time), in a separate venv (``--esm-cpp-python``), via
  ``esm_cpp_worker.py``; ``*_scheduled_logits`` times its packed ``forward_scheduled`` on the same
  sequences (logits only, no per-layer output: its ceiling, not a way to get embeddings).

Two workloads: equal-length BLAT_ECOLX variants and mixed-length DeepLoc proteins (truncated to
1022). Sequences go in chunks; in-process paths take turns chunk by chunk (order rotating), the
esm-cpp worker runs each chunk right after, each path warmed up first. Reported per workload:
tokens/s (residues + 2 specials), padded tokens per real token (``padding_waste``: padded / real -
1 under each path's batching), the deviation from ``plmexit_float32`` per layer (max over vectors
of |x - ref| / max|ref|), and the issue's ratios. The fp32 matmul peak is measured before the run and
after every chunk, through torch.mm (MKL) and through oneDNN (``onednn_*``: the faster on an AMD EPYC).

    python benchmarks/embed_peers.py --out benchmarks/results/embed_peers.json                 # 400 variants, 200 DeepLoc
    python benchmarks/embed_peers.py --quick --out embed_peers_quick.json                      # 56 variants, 24 DeepLoc
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
import transformers
from embed_hub import hand_written
from roofline import gemm_rate, onednn_rate
from safetensors.torch import load_file, save_file

import plmexit
from plmexit.embedding import engine, pieces
from plmexit.embedding.reference import REFERENCE_EXTRA_TOKS_PER_SEQ, REFERENCE_TOKS_PER_BATCH, reference_pooled
from plmexit.models import fair_esm, hub
from plmexit.models import manifest as model_manifest
from plmexit.models.families import ESM2_MAX_RESIDUES
from plmexit.settings import EmbedSettings

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BLAT = DATA / "proteingym" / "cv_folds_singles_substitutions" / "BLAT_ECOLX_Stiffler_2015.csv"
DEEPLOC = DATA / "deeploc" / "deeploc_our_val_set.fasta"
ARCHITECTURES = {"ESM2-35M": (12, 480, 20), "ESM2-8M": (6, 320, 20)}
DEFAULT_ESM_CPP_PYTHON = "/work/venv-bench-precision/bin/python"
# A hand-written transformers loop batches a fixed number of sequences in input order.
HAND_BATCH_TOKENS = 4096


def esm_cpp_safetensors(directory: Path, out: Path) -> Path:
    """The transformers ``model.safetensors`` in the names esm-cpp reads (see module doc)."""
    tensors = load_file(str(directory / "model.safetensors"))
    tensors = {k.replace(".LayerNorm.gamma", ".LayerNorm.weight").replace(".LayerNorm.beta", ".LayerNorm.bias"): v for k, v in tensors.items()}
    tensors.setdefault("lm_head.weight", tensors["esm.embeddings.word_embeddings.weight"].clone())
    config = json.loads((directory / "config.json").read_text())
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    for i in range(config["num_hidden_layers"]):
        tensors.setdefault(f"esm.encoder.layer.{i}.attention.self.rotary_embeddings.inv_freq", inv_freq.clone())
    save_file(tensors, str(out))
    return out


def read_deeploc(n: int, seed: int) -> list[str]:
    sequences = ["".join(block.strip().splitlines()[1:]) for block in DEEPLOC.read_text().split(">")[1:]]
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(sequences), size=min(n, len(sequences)), replace=False))
    return [sequences[i][: ESM2_MAX_RESIDUES] for i in chosen]


def padded(batches, lengths) -> int:
    return int(sum(len(b) * (max(lengths[i] for i in b) + 2) for b in batches))


def fixed_batches(lengths: list[int], budget: int = HAND_BATCH_TOKENS) -> list[list[int]]:
    """Input order, as many sequences per batch as the longest of the workload allows in ``budget`` tokens."""
    size = max(1, budget // (max(lengths) + 2))
    return [list(range(i, min(i + size, len(lengths)))) for i in range(0, len(lengths), size)]


def deviation(x: np.ndarray, ref: np.ndarray) -> list[float]:
    return [float(v) for v in (np.abs(x - ref).max(axis=-1) / np.abs(ref).max(axis=-1)).max(axis=1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=list(ARCHITECTURES), default="ESM2-35M")
    parser.add_argument("--variants", type=int, default=400, help="BLAT_ECOLX variants (default 400)")
    parser.add_argument("--deeploc", type=int, default=200, help="DeepLoc proteins, a seeded random subset (default 200; 0 skips)")
    parser.add_argument("--chunks", type=int, default=4, help="chunks per workload (default 4)")
    parser.add_argument("--precisions", default="float32,bfloat16,int8", help="plmexit precisions (default float32,bfloat16,int8)")
    parser.add_argument("--paths", default="fair_esm_extract,hf_sdpa,hf_eager", help="in-process peers (default all)")
    parser.add_argument("--esm-cpp-python", default=os.environ.get("PLMEXIT_ESM_CPP_PYTHON", DEFAULT_ESM_CPP_PYTHON),
                        help="python of a venv with esm-cpp installed (skipped when absent)")
    parser.add_argument("--max-tokens", type=int, default=4096, help="plmexit's padded tokens per batch (default 4096)")
    parser.add_argument("--threads", type=int, default=0, help="torch and esm-cpp threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="56 variants and 24 DeepLoc proteins in 2 chunks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.quick:
        args.variants, args.deeploc, args.chunks = 56, 24, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    n_layers, dim, heads = ARCHITECTURES[args.arch]
    workloads = {"blat_ecolx_variants": pd.read_csv(BLAT)["mutated_sequence"].tolist()[: args.variants]}
    if args.deeploc:
        workloads["deeploc_mixed_lengths"] = read_deeploc(args.deeploc, args.seed)
    esm_cpp = Path(args.esm_cpp_python)
    use_esm_cpp = esm_cpp.exists()
    settings = EmbedSettings(max_tokens=args.max_tokens)
    peaks = [gemm_rate("cpu", torch.float32, 2048, 3)]
    onednn_peaks = [onednn_rate(2048, 3)]

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = fair_esm.make_test_model(n_layers, dim, heads, 0, tmp)
        directory = hub.convert_fair_esm_checkpoint(checkpoint, Path(tmp) / "hub")
        cpp_weights = esm_cpp_safetensors(Path(directory), Path(tmp) / "esm_cpp.safetensors")
        loaded = model_manifest.load(model_manifest.resolve(checkpoint=checkpoint))
        ran = {}

        def plmexit_path(precision: str):
            encoder = engine.make_encoder(loaded, "cpu", precision)
            ran[f"plmexit_{precision}"] = encoder.resolved.attrs()

            def embed(chunk):
                out = np.zeros((n_layers + 1, len(chunk), dim), dtype=np.float32)
                for index, block in engine.embed_pooled(loaded, chunk, settings, encoder=encoder):
                    out[:, index] = block
                return out
            return embed

        def hand(attn: str):
            embed_batch = hand_written(Path(directory), attn)
            return lambda chunk: np.concatenate([embed_batch([chunk[i] for i in b]) for b in fixed_batches([len(s) for s in chunk])], axis=1)

        builders = {f"plmexit_{p}": (lambda p=p: plmexit_path(p)) for p in args.precisions.split(",")}
        builders.update({"fair_esm_extract": lambda: lambda chunk: reference_pooled(loaded, chunk),
                         "hf_sdpa": lambda: hand("sdpa"), "hf_eager": lambda: hand("eager")})
        paths = [p for p in builders if p.startswith("plmexit_") or p in args.paths.split(",")]
        runners = {name: builders[name]() for name in paths}
        def dump() -> None:
            peak = float(np.median(peaks))
            flops_per_token = 2 * n_layers * (4 * dim * dim + 2 * dim * 4 * dim)  # weight matmuls only
            for r in results.values():
                r["plmexit_float32_fraction_of_fp32_matmul_peak"] = r["tokens_per_s"]["plmexit_float32"] * flops_per_token / peak
                r["plmexit_float32_fraction_of_onednn_fp32_matmul_peak"] = (
                    r["tokens_per_s"]["plmexit_float32"] * flops_per_token / float(np.median(onednn_peaks)))
            cpu = platform.processor() or platform.machine()
            try:
                cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
            except (OSError, StopIteration):
                pass
            out = {
                "benchmark": "embed_peers",
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "command": " ".join(["python", "benchmarks/embed_peers.py", *(sys.argv[1:] if argv is None else argv)]),
                "device": "cpu", "device_name": cpu,
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": threads, "load_average_at_end": os.getloadavg(),
                            "cpu_capability": torch.backends.cpu.get_cpu_capability()},
                "versions": {"python": platform.python_version(), "torch": str(torch.__version__), "transformers": transformers.__version__,
                             "fair_esm": fair_esm.fair_esm_version(), "plmexit": plmexit.__version__, "esm_cpp": cpp_info},
                "model": f"{args.arch} architecture, random weights ({n_layers} layers, width {dim}, {heads} heads): no real ESM2 weights exist here",
                "plmexit_precision_ran": ran,
                "fp32_matmul_peak_flops_per_s": peak, "fp32_matmul_peak_samples": peaks,
                "onednn_fp32_matmul_peak_flops_per_s": float(np.median(onednn_peaks)), "onednn_fp32_matmul_peak_samples": onednn_peaks,
                "workloads": results,
            }
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(out, indent=2) + "\n")

        results = {}
        cpp_info = None
        for workload, sequences in workloads.items():
            size = -(-len(sequences) // args.chunks)
            chunks = [sequences[i : i + size] for i in range(0, len(sequences), size)]
            warm = sequences[: max(1, len(sequences) // (2 * args.chunks))]
            for name in paths:
                runners[name](warm)
            seconds = {name: 0.0 for name in paths}
            outputs = {name: [] for name in paths}
            cpp = {"esm_cpp_fp32": [], "esm_cpp_int8": []}
            cpp_seconds = {k: 0.0 for k in ("esm_cpp_fp32", "esm_cpp_int8", "esm_cpp_fp32_scheduled_logits", "esm_cpp_int8_scheduled_logits")}
            for i, chunk in enumerate(chunks):
                order = paths[i % len(paths) :] + paths[: i % len(paths)]
                for name in order[::-1] if i % 2 else order:
                    begin = time.perf_counter()
                    outputs[name].append(runners[name](chunk))
                    seconds[name] += time.perf_counter() - begin
                    print(f"{workload} chunk {i + 1}/{len(chunks)} {name}: {time.perf_counter() - begin:.2f} s", file=sys.stderr)
                if use_esm_cpp:
                    request = {"safetensors": str(cpp_weights), "modes": ["fp32", "int8"], "sequences": chunk, "warmup": warm}
                    done = subprocess.run([str(esm_cpp), str(Path(__file__).with_name("esm_cpp_worker.py"))], input=json.dumps(request),
                                          capture_output=True, text=True, check=True, env={**os.environ, "ESM_NUM_THREADS": str(threads)})
                    reply = json.loads(done.stdout)
                    cpp_info = {k: reply[k] for k in ("isa", "version", "threads")}
                    for mode in ("fp32", "int8"):
                        cpp[f"esm_cpp_{mode}"].append(np.asarray(reply[mode]["pooled"], dtype=np.float32))
                        cpp_seconds[f"esm_cpp_{mode}"] += reply[mode]["hidden_states_s"]
                        cpp_seconds[f"esm_cpp_{mode}_scheduled_logits"] += reply[mode]["scheduled_logits_s"]
                    print(f"{workload} chunk {i + 1}/{len(chunks)} esm-cpp: {json.dumps({m: reply[m]['hidden_states_s'] for m in ('fp32', 'int8')})}", file=sys.stderr)
                peaks.append(gemm_rate("cpu", torch.float32, 2048, 3))
                onednn_peaks.append(onednn_rate(2048, 3))
            tokens = sum(len(s) + 2 for s in sequences)
            pooled = {k: np.concatenate(v, axis=1) for k, v in outputs.items()}
            if use_esm_cpp:
                pooled.update({k: np.concatenate(v, axis=1) for k, v in cpp.items()})
                seconds.update(cpp_seconds)
            rate = {k: tokens / v for k, v in seconds.items()}
            ref = pooled["plmexit_float32"]
            lengths = [len(s) for s in sequences]
            real = tokens
            waste = {
                "plmexit": padded(pieces.token_batches(np.array(lengths), args.max_tokens), lengths) / real - 1,
                "fair_esm_extract": padded(fair_esm.fair_esm_batch_indices(sequences, REFERENCE_TOKS_PER_BATCH, REFERENCE_EXTRA_TOKS_PER_SEQ), lengths) / real - 1,
                "hf_hand_written": padded(fixed_batches(lengths), lengths) / real - 1,
                "esm_cpp_hidden_states": 0.0,
            }
            fp32_peers = [k for k in rate if k in ("fair_esm_extract", "hf_sdpa", "hf_eager", "esm_cpp_fp32")]
            reduced = [k for k in rate if k.startswith("plmexit_") and k != "plmexit_float32"]
            dev = {k: deviation(v, ref) for k, v in pooled.items() if k != "plmexit_float32"}
            ratios = {}
            if fp32_peers:
                fastest = max(fp32_peers, key=rate.get)
                ratios["fp32_over_fastest_fp32_peer"] = {"peer": fastest, "ratio": rate["plmexit_float32"] / rate[fastest], "target": 1.3}
            if use_esm_cpp:
                for k in reduced:
                    ratios[f"{k}_over_esm_cpp_int8"] = {
                        "ratio": rate[k] / rate["esm_cpp_int8"], "target": 1.0,
                        "ratio_vs_scheduled_logits": rate[k] / rate["esm_cpp_int8_scheduled_logits"],
                        "max_deviation": max(dev[k]), "esm_cpp_int8_max_deviation": max(dev["esm_cpp_int8"]),
                        "no_larger_deviation": max(dev[k]) <= max(dev["esm_cpp_int8"]),
                    }
            results[workload] = {
                "sequences": len(sequences), "tokens": tokens, "chunks": len(chunks),
                "length_min_median_max": [int(min(lengths)), int(np.median(lengths)), int(max(lengths))],
                "tokens_per_s": rate, "seconds": seconds, "padding_waste": waste,
                "max_rel_deviation_from_plmexit_float32_per_layer": dev, "ratios": ratios,
            }
            dump()  # after every workload: a long run keeps what it finished
    for workload, r in results.items():
        print(workload, json.dumps({k: round(v) for k, v in r["tokens_per_s"].items()}), json.dumps(r["ratios"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
