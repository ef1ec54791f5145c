"""Store precision for variant sets: does float16 keep a single substitution's signal on a long target?

A single substitution moves a mean-pooled embedding by about 1/length, close to float16's
resolution for a long protein. On a synthetic target (random residues) with a tiny random ESM2,
every single substitution at random positions is embedded in float32 (``plmexit.embedding.engine.embed_pooled``);
the planted label is a random direction of the final layer's shift from the wild type, plus noise
(so it is fully in the fp32 embeddings and only rounding can hide it). Each storage scheme is then
probed layer by layer exactly as ``plmexit probe`` does (``ridge.ridge_folds``, 5 random folds,
the default alpha grid), and reports the Spearman of the pooled test predictions, the largest
difference from the fp32 predictions, and bytes stored per variant:

- ``float32``: the pooled vectors as computed;
- ``float16``: rounded to float16 (``embed.dtype: float16``, the default);
- ``float16_relative``: float16 of each vector's difference from the wild type's, the wild type
  kept in float32 (a design that halves the bytes of float32 if it kept the signal).

    python benchmarks/variant_precision.py --out variant_precision.json                    # L = 1000, 400 variants
    python benchmarks/variant_precision.py --length 200 --variants 100 --out quick.json     # seconds
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import plmexit
from plmexit.embedding import engine
from plmexit.embedding.options import EmbedSettings
from plmexit.models import fair_esm
from plmexit.probing import metrics, ridge
from plmexit.probing.options import DEFAULT_RIDGE_ALPHAS

RESIDUES = np.array(list("ACDEFGHIKLMNPQRSTVWY"))


def embedded(loaded, sequences: list[str], settings: EmbedSettings) -> np.ndarray:
    out = np.empty((loaded.num_layers + 1, len(sequences), loaded.embed_dim), dtype=np.float32)
    for index, block in engine.embed_pooled(loaded, sequences, settings):
        out[:, index] = block
    return out


def probe(X: np.ndarray, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Test predictions of every row, as ``plmexit probe`` makes them."""
    predictions = np.empty(len(y))
    for fit in ridge.ridge_folds(X, y, folds, DEFAULT_RIDGE_ALPHAS, metrics.spearman):
        predictions[fit.test] = fit.predictions
    return predictions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=1000, help="target residues (default 1000)")
    parser.add_argument("--variants", type=int, default=400, help="single substitutions (default 400)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--noise", type=float, default=0.5, help="label noise, in standard deviations of the planted signal (default 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    target = "".join(rng.choice(RESIDUES, size=args.length))
    positions = rng.choice(args.length, size=args.variants, replace=args.variants > args.length)
    sequences = []
    for p in positions:
        residues = list(target)
        residues[p] = rng.choice([r for r in RESIDUES if r != target[p]])
        sequences.append("".join(residues))
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = fair_esm.make_test_model(out_dir=Path(tmp), layers=args.layers, dim=args.dim, heads=args.heads, seed=args.seed)
        loaded = fair_esm.load_model(checkpoint)
        start = time.perf_counter()
        fp32 = embedded(loaded, [target] + sequences, EmbedSettings())
        embed_seconds = time.perf_counter() - start
    wild, fp32 = fp32[:, :1], fp32[:, 1:]  # (L + 1, 1, E), (L + 1, N, E)
    direction = rng.normal(size=args.dim)
    signal = (fp32[-1] - wild[-1]) @ direction
    signal = (signal - signal.mean()) / signal.std()
    y = signal + args.noise * rng.normal(size=args.variants)
    folds = rng.permutation(np.arange(args.variants) % 5)

    stores = {
        "float32": fp32,
        "float16": fp32.astype(np.float16).astype(np.float32),
        "float16_relative": wild + (fp32 - wild).astype(np.float16).astype(np.float32),
    }
    bytes_per_variant = {
        "float32": (args.layers + 1) * args.dim * 4,
        "float16": (args.layers + 1) * args.dim * 2,
        "float16_relative": (args.layers + 1) * args.dim * 2,  # + the wild type once per assay
    }
    reference = [probe(fp32[k], y, folds) for k in range(args.layers + 1)]
    results = {}
    for name, X in stores.items():
        per_layer = []
        for k in range(args.layers + 1):
            predictions = probe(X[k], y, folds)
            per_layer.append({
                "layer": k,
                "spearman": metrics.spearman(y, predictions),
                "max_abs_prediction_diff_from_float32": float(np.abs(predictions - reference[k]).max()),
                "max_abs_embedding_error": float(np.abs(X[k] - fp32[k]).max()),
            })
        results[name] = {"bytes_per_variant": bytes_per_variant[name], "layers": per_layer}
    shift = np.abs(fp32 - wild)
    out = {
        "benchmark": "variant_precision",
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python", "benchmarks/variant_precision.py", *sys.argv[1:]]) if argv is None else None,
        "plmexit_version": plmexit.__version__,
        "torch_version": str(torch.__version__),
        "machine": platform.machine(),
        "settings": vars(args),
        "embed_seconds": embed_seconds,
        "median_abs_shift_from_wild_type": [float(np.median(shift[k])) for k in range(args.layers + 1)],
        "median_abs_embedding": [float(np.median(np.abs(fp32[k]))) for k in range(args.layers + 1)],
        "float16_spacing_at_median_embedding": [float(np.spacing(np.float16(np.median(np.abs(fp32[k]))))) for k in range(args.layers + 1)],
        "stores": results,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    for name, r in results.items():
        print(name, r["bytes_per_variant"], " ".join(f"{layer['spearman']:.3f}" for layer in r["layers"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
