"""Embedding throughput: plmexit's forward against fair-esm's ``scripts/extract.py`` computation.

Both paths embed the same sequences with the same model file in the same process, every layer
mean-pooled: the reference is ``plmexit.embedding.reference.reference_pooled`` (fair-esm's batching, batch
converter and ``model(tokens, repr_layers=all)`` in fp32, mean over positions 1..len); ours is
``plmexit.embedding.engine.embed_pooled``. The sequences are cut into chunks and the paths alternate chunk by
chunk (which goes first alternates too), so machine load hits both alike. Before the chunks, each
path embeds one batch's worth of sequences cold (ours builds its encoder then): that call, less
the same tokens at the steady rate, is its warm-up; steady-state tokens/s come from the chunks,
and end to end is warm-up call plus chunks. The matrix-multiply peak of the run's precision is
measured by the benchmark itself before and after the run (``roofline``: the best of torch.mm and
oneDNN's prepacked matmul over several sizes, all threads) and stated beside the theoretical peak
where the CPU's clock and vector units are known; achieved FLOP/s count 2 x parameters per token plus
attention (``plmexit.embedding.cost.block_flops_per_token``) over the real (unpadded) tokens. Above
100% of the measured peak the benchmark fails (after writing its JSON): the peak or the count is wrong.

    python benchmarks/embed_throughput.py --device cpu --out embed_throughput.json           # ESM2-35M arch, 400 BLAT_ECOLX variants
    python benchmarks/embed_throughput.py --device cpu --quick --out embed_throughput.json   # 56 variants, about a minute on 2 quiet cores
    python benchmarks/embed_throughput.py --device cuda --out embed_throughput_gpu.json       # ESM2-650M arch, bf16
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import roofline
import torch
from roofline import synchronize

import plmexit
from plmexit.embedding import cost, engine, fast_esm2, pieces
from plmexit.embedding import precision as precisions
from plmexit.embedding.reference import REFERENCE_EXTRA_TOKS_PER_SEQ, REFERENCE_TOKS_PER_BATCH, reference_pooled
from plmexit.models import fair_esm
from plmexit.settings import EmbedSettings

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BLAT = DATA / "proteingym" / "cv_folds_singles_substitutions" / "BLAT_ECOLX_Stiffler_2015.csv"
ARCHITECTURES = {"cpu": ("ESM2-35M", 12, 480, 20, "float32"), "cuda": ("ESM2-650M", 33, 1280, 20, "bfloat16")}


def flops(sequences: list[str], n_layers: int, dim: int) -> float:
    tokens = np.array([len(s) + 2 for s in sequences], dtype=np.float64)
    return float(np.sum(tokens * n_layers * cost.block_flops_per_token(dim, tokens)))


def padded_tokens(batches, sequences: list[str]) -> int:
    return int(sum(len(b) * (max(len(sequences[i]) for i in b) + 2) for b in batches))


def levers(loaded, sequences: list[str], device: str, precision: str, repeats: int) -> dict:
    """Wall-clock of one batch under each lever, variants interleaved within every repeat (median s).

    ``fair_esm_forward``: fair-esm's module forward (hand-written attention, LM head) with pooling
    on the device; ``fused_math_attention``: plmexit's forward with attention unfused (SDPA's math
    backend: scores materialised, as fair-esm does); ``fused``: plmexit's forward as shipped.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    encoder = fast_esm2.FastEncoder(loaded, device, precision)
    _, _, tokens = loaded.alphabet.get_batch_converter()([(str(i), s) for i, s in enumerate(sequences)])
    tokens = tokens.to(device)
    residues = (tokens != loaded.alphabet.padding_idx) & (tokens != loaded.alphabet.cls_idx) & (tokens != loaded.alphabet.eos_idx)
    weights = residues / residues.sum(dim=1, keepdim=True)
    layers = list(range(loaded.num_layers + 1))

    @torch.inference_mode()
    def fair_esm_forward():
        reps = loaded.model(tokens, repr_layers=layers)["representations"]
        return torch.stack([torch.bmm(weights.unsqueeze(1), reps[k]).squeeze(1) for k in layers])

    def fused_math_attention():
        with sdpa_kernel([SDPBackend.MATH]):
            return encoder.pooled(tokens, weights, "raw")

    variants = {"fair_esm_forward": fair_esm_forward, "fused_math_attention": fused_math_attention,
                "fused": lambda: encoder.pooled(tokens, weights, "raw")}
    for f in variants.values():
        f()
    seconds = {k: [] for k in variants}
    for _ in range(repeats):
        for name, f in variants.items():
            synchronize(device)
            begin = time.perf_counter()
            f()
            synchronize(device)
            seconds[name].append(time.perf_counter() - begin)
    median = {k: float(np.median(v)) for k, v in seconds.items()}
    return {"batch_sequences": len(sequences), "batch_tokens": int(tokens.numel()), "repeats": repeats, "median_s": median,
            "speedup_over_fair_esm_forward": {k: median["fair_esm_forward"] / v for k, v in median.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="56 variants in 2 chunks, levers once (about a minute on 2 quiet CPU cores)")
    parser.add_argument("--n", type=int, default=400, help="BLAT_ECOLX variants to embed (default 400)")
    parser.add_argument("--chunk", type=int, default=56, help="sequences per alternating chunk (default 56: 4 batches of 14)")
    parser.add_argument("--warmup-sequences", type=int, default=14, help="sequences in each path's cold warm-up call (default 14: one batch)")
    parser.add_argument("--lever-repeats", type=int, default=3, help="repeats of the one-batch lever comparison (default 3; 0 skips it)")
    parser.add_argument("--precision", choices=list(precisions.DTYPES), help="our compute precision (default fp32 on CPU, bf16 on CUDA)")
    parser.add_argument("--max-tokens", type=int, default=4096, help="our padded tokens per batch (default 4096)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--gemm-sizes", default="", help="sizes of the peak matmuls, comma-separated (default: roofline.CPU_SIZES, CPU_SIZES_QUICK with --quick, GPU_SIZES)")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.chunk, args.lever_repeats = 56, 28, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    arch, n_layers, dim, heads, default_precision = ARCHITECTURES[args.device]
    precision = args.precision or default_precision
    peak_dtype = precisions.DTYPES[precision]  # int8 computes float32 outside its int8 matmuls: no sanity check then (below)
    sizes = tuple(int(n) for n in args.gemm_sizes.split(",")) if args.gemm_sizes else (roofline.CPU_SIZES_QUICK if args.quick and args.device == "cpu" else None)
    sequences = pd.read_csv(BLAT)["mutated_sequence"].tolist()[: args.n]
    chunks = [sequences[i : i + args.chunk] for i in range(0, len(sequences), args.chunk)]

    peak_before = roofline.roofline(args.device, peak_dtype, sizes)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = fair_esm.make_test_model(n_layers, dim, heads, 0, tmp)
        loaded = fair_esm.load_model(path, device=args.device)
        load_s = time.perf_counter() - start

        settings = EmbedSettings(max_tokens=args.max_tokens, device=args.device, precision=precision)
        times = {"reference": [], "ours": []}
        outputs = {"reference": [], "ours": []}
        encoder_s = 0.0

        def run(path_name: str, chunk: list[str]) -> None:
            nonlocal encoder_s
            synchronize(args.device)
            begin = time.perf_counter()
            if path_name == "reference":
                result = reference_pooled(loaded, chunk, device=args.device)
            else:
                if run.encoder is None:  # building the encoder (weights in working precision) is warm-up
                    run.encoder = fast_esm2.FastEncoder(loaded, args.device, precision)
                    encoder_s = time.perf_counter() - begin
                result = np.zeros((n_layers + 1, len(chunk), dim), dtype=np.float32)
                for index, block in engine.embed_pooled(loaded, chunk, settings, encoder=run.encoder):
                    result[:, index] = block
            synchronize(args.device)
            times[path_name].append(time.perf_counter() - begin)
            outputs[path_name].append(result)
            print(f"call {len(times[path_name])}/{len(chunks) + 1} {path_name}: {times[path_name][-1]:.2f} s", file=sys.stderr)

        run.encoder = None
        warm = sequences[: args.warmup_sequences]
        for path_name in ("reference", "ours"):
            run(path_name, warm)
        for i, chunk in enumerate(chunks):
            for path_name in (("reference", "ours") if i % 2 == 0 else ("ours", "reference")):
                run(path_name, chunk)
        lever_result = levers(loaded, sequences[: args.warmup_sequences], args.device, precision, args.lever_repeats) if args.lever_repeats else None
    peak_after = roofline.measured_peak(args.device, peak_dtype, sizes)
    peak = max(peak_before["measured"]["flops_per_s"], peak_after["flops_per_s"])
    theoretical = peak_before["theoretical"]["flops_per_s"]

    reference, ours = (np.concatenate(outputs[k][1:], axis=1) for k in ("reference", "ours"))
    scale = np.abs(reference).max(axis=-1, keepdims=True)
    max_rel_diff = float((np.abs(ours - reference) / scale).max())
    steady_tokens = sum(len(s) + 2 for s in sequences)
    rate = {k: steady_tokens / sum(times[k][1:]) for k in times}
    # Warm-up: what the cold call cost beyond the steady rate (ours includes building the encoder).
    warmup = {k: times[k][0] - sum(len(s) + 2 for s in warm) / rate[k] for k in times}
    total = {k: sum(times[k]) for k in times}
    achieved = flops(sequences, n_layers, dim) / sum(times["ours"][1:])
    ref_batches = fair_esm.fair_esm_batch_indices(sequences, REFERENCE_TOKS_PER_BATCH, REFERENCE_EXTRA_TOKS_PER_SEQ)
    lengths = np.array([len(s) for s in sequences])
    ours_batches = pieces.token_batches(lengths, args.max_tokens)
    result = {
        "benchmark": "embed_throughput",
        "date": datetime.date.today().isoformat(),
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "versions": {"python": platform.python_version(), "torch": str(torch.__version__), "fair_esm": fair_esm.fair_esm_version(), "plmexit": plmexit.__version__},
        "model": f"{arch} architecture, random weights ({n_layers} layers, width {dim}, {heads} heads)",
        "layers_pooled": n_layers + 1,
        "sequences": len(sequences),
        "tokens": int(steady_tokens),
        "precision": {"ours": precision, "reference": "float32"},
        "chunks": len(chunks),
        "warmup_sequences": len(warm),
        "ours_tokens_per_s": rate["ours"],
        "reference_tokens_per_s": rate["reference"],
        "ratio": rate["ours"] / rate["reference"],
        "end_to_end_s": total,
        "end_to_end_ratio": total["reference"] / total["ours"],
        "warmup_s": warmup["ours"],
        "reference_warmup_s": warmup["reference"],
        "encoder_build_s": encoder_s,
        "model_load_s": load_s,
        "gemm_flops_per_s": peak,
        "roofline": {"before": peak_before, "after": peak_after["rates"], "peak_dtype": str(peak_dtype).removeprefix("torch."),
                     "note": "gemm_flops_per_s is the best measured rate before and after the run; theoretical where the clock and vector units are known"},
        "achieved_flops_per_s": achieved,
        "fraction_of_peak": achieved / peak,
        "fraction_of_theoretical_peak": achieved / theoretical if theoretical else None,
        "load_average_at_end": os.getloadavg(),
        "max_rel_diff": max_rel_diff,
        "layer_work": {
            "reference_padded_tokens": padded_tokens(ref_batches, sequences),
            "ours_padded_tokens": padded_tokens(ours_batches, sequences),
            "reference_batches": len(ref_batches),
            "ours_batches": len(ours_batches),
            "note": "the reference also runs fair-esm's LM head (a dense layer, layer norm and vocabulary projection per token), which ours skips",
        },
        "levers": lever_result,
        "chunk_seconds": times,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)
    print(json.dumps(result, indent=2))
    if precision != "int8":
        roofline.check_fraction(result["fraction_of_peak"], f"plmexit's {precision} forward on {args.device}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
