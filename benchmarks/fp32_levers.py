"""fp32 encoder levers, A/B in one process: each candidate forward against the previous one and
against transformers' SDPA forward, interleaved, with the matmul roofline measured alongside.

One random ESM2 (ESM2-35M architecture; no real weights exist on this machine) embeds the same
equal-length BLAT_ECOLX variants through every path; a round runs every path once (order reversed
every other round, so machine load hits all alike) and the JSON reports medians over rounds, both
wall-clock and process CPU time, and the median of per-round paired ratios. Paths:

- ``before``: ``FastEncoder`` with the block as of commit 66e3c0d (``F.linear`` per projection, a
  fresh tensor for every intermediate);
- ``plmexit``: ``engine.embed_pooled`` as it is now (what ``plmexit embed`` runs; ``plmexit_matmul``
  in the JSON says how its linear layers ran);
- ``lever_*``: candidate levers on top of ``plmexit`` (rotary without ``roll``; the feed-forward in
  chunks of 1,024 tokens; pre-transposed contiguous weights; ``onednn``: oneDNN matmuls over
  weights prepacked once, with GELU and the residual adds fused into them), kept in the engine only if they win;
- ``hf_sdpa``: transformers ``EsmModel`` + ``output_hidden_states``, hand-written as a user would
  (``embed_hub.hand_written``), the peer issue 17's 1.3x target is against;
- ``weight_gemms``: only the forward's weight matrix multiplies (QKV, out, fc1, fc2 per layer) at
  their real shapes into preallocated outputs: no forward can beat it, so ``tokens / its time`` is
  the roofline, and each path's time over it the fraction of the machine's matmul rate it reaches;
- ``weight_gemms_onednn``: the same through oneDNN over prepacked weights (the faster of the two
  is the roofline);
- ``gemm_2048``: the (2048 x 2048) fp32 matmul (torch.mm, MKL) that ``embed_peers`` calls the peak;
  ``gemm_2048_onednn`` the same through oneDNN (on an AMD EPYC it is the faster: the machine's peak
  is the larger of the two).

Every plmexit path's pooled output is checked against ``before`` (max over vectors of
``|x - ref| / max|ref|``, per layer; the engine's contract is 1e-5).

    python benchmarks/fp32_levers.py --threads 1 --out benchmarks/results/fp32_levers_threads1.json
    python benchmarks/fp32_levers.py --threads 2 --rounds 6 --out benchmarks/results/fp32_levers_threads2.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import transformers
from embed_hub import hand_written

import plmexit
from plmexit.embedding import engine, fast_esm2, options
from plmexit.models import fair_esm, hub
from plmexit.models import manifest as model_manifest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BLAT = DATA / "proteingym" / "cv_folds_singles_substitutions" / "BLAT_ECOLX_Stiffler_2015.csv"
ARCH = ("ESM2-35M", 12, 480, 20)
FFN_CHUNK_TOKENS = 1024


class Before(fast_esm2.FastEncoder):
    """The fp32 block as of 66e3c0d: ``F.linear`` per projection, every intermediate a fresh tensor."""

    def __init__(self, loaded):
        with torch.backends.mkldnn.flags(enabled=False):  # keeps the plain weights (no oneDNN packing)
            super().__init__(loaded, "cpu", "float32")

    def _block(self, x, p, mask, cos, sin_signed):
        B, T, E = x.shape
        H, D = self.heads, self.head_dim

        def linear(h, name):
            return F.linear(h, p[f"{name}_w"], p[f"{name}_b"])

        h = F.layer_norm(x, (E,), *p["ln1"])
        qkv = linear(h, "qkv").view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
        qk = qkv[:2]
        qk = torch.addcmul(qk * cos, torch.roll(qk, D // 2, dims=-1), sin_signed)
        attn = F.scaled_dot_product_attention(qk[0], qk[1], qkv[2], attn_mask=mask)
        x = x + linear(attn.transpose(1, 2).reshape(B, T, E), "out")
        h = F.layer_norm(x, (E,), *p["ln2"])
        return x + linear(F.gelu(linear(h, "fc1")), "fc2")


class Lever(fast_esm2.FastEncoder):
    """``FastEncoder`` with one candidate lever: ``rotary_halves``, ``ffn_chunks`` or ``pretransposed``."""

    def __init__(self, loaded, lever: str):
        with torch.backends.mkldnn.flags(enabled=False):  # the addmm path's plain weights, levers on top
            super().__init__(loaded, "cpu", "float32")
        self.lever = lever
        for p in self.layers:
            for name in ("qkv", "out", "fc1", "fc2"):
                w = p[f"{name}_w"]
                p[f"{name}_wt"] = w.t().contiguous() if lever == "pretransposed" else w.t()

    def _block(self, x, p, mask, cos, sin_signed):
        if self.lever == "onednn":
            return self._block_onednn(x, p, mask, cos, sin_signed)
        B, T, E = x.shape
        H, D = self.heads, self.head_dim
        N, half = B * T, D // 2
        h = F.layer_norm(x, (E,), *p["ln1"]).view(N, E)
        qkv = torch.addmm(p["qkv_b"], h, p["qkv_wt"], out=self._workspace("qkv", (N, 3 * E)))
        qkv = qkv.view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
        qk = qkv[:2]
        if self.lever == "rotary_halves":  # x1 c - x2 s | x2 c + x1 s, no rolled copy
            c, s = cos[:, :half], sin_signed[:, half:]
            out = torch.empty_like(qk)
            torch.mul(qk[..., :half], c, out=out[..., :half]).addcmul_(qk[..., half:], s, value=-1)
            torch.mul(qk[..., half:], c, out=out[..., half:]).addcmul_(qk[..., :half], s)
            qk = out
        else:
            qk = torch.addcmul(qk * cos, torch.roll(qk, half, dims=-1), sin_signed)
        attn = F.scaled_dot_product_attention(qk[0], qk[1], qkv[2], attn_mask=mask)
        x = torch.addmm(x.reshape(N, E), attn.transpose(1, 2).reshape(N, E), p["out_wt"]).add_(p["out_b"])
        chunk = FFN_CHUNK_TOKENS if self.lever == "ffn_chunks" else N
        for start in range(0, N, chunk):
            xs = x[start : start + chunk]
            hidden = torch.addmm(p["fc1_b"], F.layer_norm(xs, (E,), *p["ln2"]), p["fc1_wt"],
                                 out=self._workspace("fc1", (xs.shape[0], p["fc1_wt"].shape[1])))
            torch.ops.aten.gelu_(hidden)
            xs.addmm_(hidden, p["fc2_wt"]).add_(p["fc2_b"])
        return x.view(B, T, E)

    def _block_onednn(self, x, p, mask, cos, sin_signed):
        """oneDNN matmuls over weights prepacked once, GELU and the residual adds fused into them."""
        B, T, E = x.shape
        H, D = self.heads, self.head_dim
        N = B * T
        if "qkv_packed" not in p:
            for name in ("qkv", "out", "fc1", "fc2"):
                p[f"{name}_packed"] = torch.ops.mkldnn._reorder_linear_weight(p[f"{name}_w"], N)
        linear, linear_add = torch.ops.mkldnn._linear_pointwise, torch.ops.mkldnn._linear_pointwise.binary
        h = F.layer_norm(x, (E,), *p["ln1"]).view(N, E)
        qkv = linear(h, p["qkv_packed"], p["qkv_b"], "none", [], "").view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
        qk = qkv[:2]
        qk = torch.addcmul(qk * cos, torch.roll(qk, D // 2, dims=-1), sin_signed)
        attn = F.scaled_dot_product_attention(qk[0], qk[1], qkv[2], attn_mask=mask)
        x = linear_add(attn.transpose(1, 2).reshape(N, E), x.reshape(N, E), p["out_packed"], p["out_b"], "add")
        hidden = linear(F.layer_norm(x, (E,), *p["ln2"]), p["fc1_packed"], p["fc1_b"], "gelu", [], "none")
        return linear_add(hidden, x, p["fc2_packed"], p["fc2_b"], "add").view(B, T, E)


def weight_gemms_onednn(n_tokens: int, n_layers: int, dim: int):
    """``weight_gemms`` through oneDNN over prepacked weights."""
    x, hidden = torch.randn(n_tokens, dim), torch.randn(n_tokens, 4 * dim)
    shapes = [(x, 3 * dim), (x, dim), (x, 4 * dim), (hidden, dim)]
    work = [(a, torch.ops.mkldnn._reorder_linear_weight(torch.randn(n, a.shape[1]), n_tokens), torch.randn(n)) for a, n in shapes]

    def run(_sequences):
        for _ in range(n_layers):
            for a, w, b in work:
                torch.ops.mkldnn._linear_pointwise(a, w, b, "none", [], "")
    return run


def weight_gemms(n_tokens: int, n_layers: int, dim: int):
    """The forward's weight matmuls alone, at their shapes, into preallocated outputs."""
    x, hidden = torch.randn(n_tokens, dim), torch.randn(n_tokens, 4 * dim)
    shapes = [(x, 3 * dim), (x, dim), (x, 4 * dim), (hidden, dim)]
    work = [(a, torch.randn(a.shape[1], n), torch.randn(n), torch.empty(n_tokens, n)) for a, n in shapes]

    def run(_sequences):
        for _ in range(n_layers):
            for a, w, b, out in work:
                torch.addmm(b, a, w, out=out)
    return run


def gemm_2048():
    a, out = torch.randn(2048, 2048), torch.empty(2048, 2048)
    return lambda _sequences: torch.mm(a, a, out=out)


def gemm_2048_onednn():
    a = torch.randn(2048, 2048)
    packed = torch.ops.mkldnn._reorder_linear_weight(a, None)
    return lambda _sequences: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], "")


def deviation(x: np.ndarray, ref: np.ndarray) -> list[float]:
    return [float(v) for v in (np.abs(x - ref).max(axis=-1) / np.abs(ref).max(axis=-1)).max(axis=1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=14, help="BLAT_ECOLX variants per round (default 14: one 4,032-token batch)")
    parser.add_argument("--rounds", type=int, default=8, help="rounds, every path once per round (default 8)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--max-tokens", type=int, default=4096, help="plmexit's padded tokens per batch (default 4096)")
    parser.add_argument("--paths", default="before,plmexit,lever_rotary_halves,hf_sdpa,weight_gemms,weight_gemms_onednn,gemm_2048,gemm_2048_onednn",
                        help="comma-separated paths (default: all but lever_onednn, which is now plmexit, lever_ffn_chunks and lever_pretransposed)")
    parser.add_argument("--layers", type=int, default=ARCH[1])
    parser.add_argument("--dim", type=int, default=ARCH[2])
    parser.add_argument("--heads", type=int, default=ARCH[3])
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    sequences = pd.read_csv(BLAT)["mutated_sequence"].tolist()[: args.sequences]
    tokens = sum(len(s) + 2 for s in sequences)
    settings = options.EmbedSettings(max_tokens=args.max_tokens)
    L, E = args.layers, args.dim
    paths = args.paths.split(",")

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = fair_esm.make_test_model(L, E, args.heads, 0, tmp)
        loaded = model_manifest.load(model_manifest.resolve(checkpoint=checkpoint))

        def embed_with(encoder):
            def embed(chunk):
                out = np.zeros((L + 1, len(chunk), E), dtype=np.float32)
                for index, block in engine.embed_pooled(loaded, chunk, settings, encoder=encoder):
                    out[:, index] = block
                return out
            return embed

        runners, plmexit_matmul = {}, None
        for name in paths:
            if name == "before":
                runners[name] = embed_with(Before(loaded))
            elif name == "plmexit":
                encoder = engine.make_encoder(loaded, "cpu", "float32")
                plmexit_matmul = encoder.matmul
                runners[name] = embed_with(encoder)
            elif name.startswith("lever_"):
                runners[name] = embed_with(Lever(loaded, name.removeprefix("lever_")))
            elif name == "hf_sdpa":
                runners[name] = hand_written(Path(hub.convert_fair_esm_checkpoint(checkpoint, Path(tmp) / "hub")), "sdpa")
            elif name == "weight_gemms":
                runners[name] = weight_gemms(tokens, L, E)
            elif name == "weight_gemms_onednn":
                runners[name] = weight_gemms_onednn(tokens, L, E)
            elif name == "gemm_2048":
                runners[name] = gemm_2048()
            elif name == "gemm_2048_onednn":
                runners[name] = gemm_2048_onednn()
            else:
                parser.error(f"unknown path {name!r}")
        outputs = {name: runners[name](sequences) for name in paths}  # warm-up, and the outputs compared
        wall = {name: [] for name in paths}
        cpu = {name: [] for name in paths}
        for r in range(args.rounds):
            for name in paths if r % 2 == 0 else paths[::-1]:
                begin, begin_cpu = time.perf_counter(), time.process_time()
                runners[name](sequences)
                wall[name].append(time.perf_counter() - begin)
                cpu[name].append(time.process_time() - begin_cpu)
            print(f"round {r + 1}/{args.rounds}: " + " ".join(f"{n} {wall[n][-1]:.2f}s" for n in paths), file=sys.stderr)

    def paired(a: str, b: str, times: dict) -> float:
        """Median over rounds of time(a) / time(b): how many times faster b is than a."""
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    weight_flops = 2 * L * (4 * E * E + 2 * E * 4 * E) * tokens
    result = {
        "benchmark": "fp32_levers",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/fp32_levers.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                    "load_average_at_end": os.getloadavg(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "conditions": "loaded: the cores are shared with other jobs, so compare ratios within rounds, not absolute rates"},
        "versions": {"python": platform.python_version(), "torch": str(torch.__version__), "transformers": transformers.__version__,
                     "plmexit": plmexit.__version__},
        "model": f"{ARCH[0]} architecture, random weights ({L} layers, width {E}, {args.heads} heads)",
        "workload": {"sequences": len(sequences), "tokens": tokens, "residues_each": len(sequences[0]), "max_tokens": args.max_tokens},
        "rounds": args.rounds,
        "plmexit_matmul": plmexit_matmul,
        "median_wall_s": {n: statistics.median(v) for n, v in wall.items()},
        "median_cpu_s": {n: statistics.median(v) for n, v in cpu.items()},
        "tokens_per_s_wall": {n: tokens / statistics.median(v) for n, v in wall.items() if not n.startswith("gemm_2048")},
        "wall_s": wall, "cpu_s": cpu,
    }
    if "before" in paths:
        result["speedup_over_before_paired_wall"] = {n: paired("before", n, wall) for n in paths if not n.startswith("gemm_2048")}
        result["speedup_over_before_paired_cpu"] = {n: paired("before", n, cpu) for n in paths if not n.startswith("gemm_2048")}
        ref = outputs["before"]
        result["max_rel_deviation_from_before_per_layer"] = {n: deviation(outputs[n], ref) for n in paths
                                                            if n == "plmexit" or n.startswith("lever_")}
    if "hf_sdpa" in paths:
        result["speedup_over_hf_sdpa_paired_wall"] = {n: paired("hf_sdpa", n, wall) for n in paths if n != "hf_sdpa" and not n.startswith("gemm_2048")}
        result["speedup_over_hf_sdpa_paired_cpu"] = {n: paired("hf_sdpa", n, cpu) for n in paths if n != "hf_sdpa" and not n.startswith("gemm_2048")}
    gemm_paths = [n for n in ("weight_gemms", "weight_gemms_onednn") if n in paths]
    if gemm_paths:
        # The roofline per round: the faster way of running the weight matmuls alone. A path's
        # fraction of it is time(roofline) / time(path), per round.
        roofline = [min(wall[n][r] for n in gemm_paths) for r in range(args.rounds)]
        result["fraction_of_weight_gemm_roofline_paired_wall"] = {
            n: statistics.median(a / b for a, b in zip(roofline, wall[n])) for n in paths if not n.startswith("gemm_2048")}
        peaks = [n for n in ("gemm_2048", "gemm_2048_onednn") if n in paths]
        if peaks:
            gemm_rate = [2 * 2048**3 / min(wall[n][r] for n in peaks) for r in range(args.rounds)]
            result["weight_gemm_roofline_rate_over_gemm_2048_rate_paired"] = statistics.median(
                weight_flops / t / g for t, g in zip(roofline, gemm_rate))
            result["fraction_of_gemm_2048_peak_paired_wall"] = {
                n: statistics.median(weight_flops / t / g for t, g in zip(wall[n], gemm_rate)) for n in paths if not n.startswith("gemm_2048")}
    if "hf_sdpa" in paths and "fraction_of_gemm_2048_peak_paired_wall" in result:
        # Issue 17's fp32 target, as fractions of the matmul rate: what 1.3x transformers SDPA needs.
        peak, roof = result["fraction_of_gemm_2048_peak_paired_wall"], result["fraction_of_weight_gemm_roofline_paired_wall"]
        result["target_1_3x_hf_sdpa"] = {
            "hf_sdpa_fraction_of_peak": peak["hf_sdpa"], "needed_fraction_of_peak": 1.3 * peak["hf_sdpa"],
            "hf_sdpa_fraction_of_weight_gemm_roofline": roof["hf_sdpa"], "needed_fraction_of_weight_gemm_roofline": 1.3 * roof["hf_sdpa"],
            "plmexit_fraction_of_peak": peak.get("plmexit"), "plmexit_fraction_of_weight_gemm_roofline": roof.get("plmexit"),
            "note": "weight-matmul FLOPs only (2 x parameters per token); a path over the roofline's 1.0 would be faster than its weight matmuls alone",
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for key in ("speedup_over_before_paired_wall", "speedup_over_before_paired_cpu", "speedup_over_hf_sdpa_paired_wall",
                "fraction_of_weight_gemm_roofline_paired_wall", "fraction_of_gemm_2048_peak_paired_wall"):
        if key in result:
            print(key, json.dumps({k: round(v, 3) for k, v in result[key].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
