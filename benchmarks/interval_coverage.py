"""How often does the gain's interval cover a true gain of 0? Per-variant against position-cluster bootstrap, per fold scheme.

A simulated deep-mutational scan: ``--positions`` positions with ``--per-position`` variants each;
a variant's score is its position's effect (sd 1) plus its own (sd ``--variant-effect``). Two layers, the "chosen" and
the "final", predict the score with an error shared by every variant at a position (sd
``--position-error``) plus one of each variant's own (sd ``--variant-error``), drawn alike for
both layers, so over positions neither layer is better: the true gain is 0. Each draw makes new
positions, variants, errors and folds (ProteinGym's rules: ``fold_random_5`` assigns variants at
random, ``fold_modulo_5`` position mod 5, ``fold_contiguous_5`` five consecutive blocks) and
computes the 95% interval of the gain with ``choice.bootstrap_gain`` itself, the function
``plmexit select`` calls: once resampling variants, once resampling mutated positions (the
clusters ``select`` passes, ``proteingym.mutated_positions`` of each id). The JSON reports, per
scheme and unit, the fraction of draws whose interval covers 0 and the mean interval width.

    python benchmarks/interval_coverage.py --out benchmarks/results/interval_coverage_$(date +%F)_cpu2.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time

import numpy as np
import pandas as pd

from plmexit.data import proteingym
from plmexit.probing import choice

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
N_FOLDS = 5
CHOSEN, FINAL = 1, 2  # the layers compared: every fold chooses layer 1 of 2


def fold_of(scheme: str, positions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each variant's fold by the rule of ProteinGym's ``scheme`` (positions are 1..P, consecutive)."""
    if scheme == "fold_random_5":
        return rng.permutation(np.arange(len(positions)) % N_FOLDS)
    if scheme == "fold_modulo_5":
        return positions % N_FOLDS
    distinct = positions.max()
    return np.minimum((positions - 1) * N_FOLDS // distinct, N_FOLDS - 1)


def one_draw(scheme: str, n_positions: int, per_position: int, variant_effect: float, position_error: float, variant_error: float, n_boot: int,
             rng: np.random.Generator, seed: int) -> dict[str, tuple[float, float]]:
    """The gain's interval ``{unit: (low, high)}`` for one simulated scan, by variants and by positions."""
    positions = np.repeat(np.arange(1, n_positions + 1), per_position)
    ids = np.array([f"M{p}{AMINO_ACIDS[k % len(AMINO_ACIDS)]}" for p, k in zip(positions, np.tile(np.arange(per_position), n_positions))])
    truth = rng.normal(size=n_positions)[positions - 1] + variant_effect * rng.normal(size=len(ids))
    folds = fold_of(scheme, positions, rng)
    frames = []
    for layer in (CHOSEN, FINAL):
        prediction = truth + position_error * rng.normal(size=n_positions)[positions - 1] + variant_error * rng.normal(size=len(ids))
        frames.append(pd.DataFrame({"layer": layer, "fold": folds, "id": ids, "label": truth, "prediction": prediction}))
    predictions = pd.concat(frames, ignore_index=True)
    selection = {"task": "simulated", "metric": "spearman", "status": choice.STATUS_OK, "n_layers": FINAL,
                 "folds": [{"fold": f, "layer": CHOSEN} for f in range(N_FOLDS)]}
    clusters = {i: proteingym.mutated_positions(i) for i in ids}
    return {
        "variants": choice.bootstrap_gain(predictions, selection, "regression", n_boot, seed),
        "positions": choice.bootstrap_gain(predictions, selection, "regression", n_boot, seed, clusters=clusters),
    }


def run(schemes: list[str], draws: int, n_boot: int, n_positions: int, per_position: int, variant_effect: float, position_error: float,
        variant_error: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    result = {}
    for scheme in schemes:
        started = time.perf_counter()
        intervals = {"variants": [], "positions": []}
        for d in range(draws):
            for unit, interval in one_draw(scheme, n_positions, per_position, variant_effect, position_error, variant_error, n_boot, rng, seed + d).items():
                intervals[unit].append(interval)
        result[scheme] = {
            unit: {
                "coverage_of_0": float(np.mean([low <= 0.0 <= high for low, high in found])),
                "mean_width": float(np.mean([high - low for low, high in found])),
            }
            for unit, found in intervals.items()
        } | {"seconds": round(time.perf_counter() - started, 1)}
    return {
        "question": "fraction of 95% gain intervals covering the true gain 0, resampling variants or mutated positions",
        "level": choice.CONFIDENCE_LEVEL, "draws": draws, "resamples": n_boot, "positions": n_positions, "variants_per_position": per_position,
        "variant_effect_sd": variant_effect, "position_error_sd": position_error, "variant_error_sd": variant_error, "seed": seed, "date": datetime.date.today().isoformat(),
        "schemes": result,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schemes", default=",".join(proteingym.FOLD_SCHEMES), help="comma-separated fold schemes (default: all three)")
    parser.add_argument("--draws", type=int, default=100, help="simulated scans per scheme (default 100: coverage to about +-0.02 near 0.95)")
    parser.add_argument("--resamples", type=int, default=200, help="bootstrap resamples per interval (default 200)")
    parser.add_argument("--positions", type=int, default=60, help="mutated positions per scan (default 60: 12 per test fold under modulo)")
    parser.add_argument("--per-position", type=int, default=8, help="variants per position (default 8)")
    parser.add_argument("--variant-effect", type=float, default=0.5, help="sd of a variant's own effect beside its position's (sd 1; default 0.5)")
    parser.add_argument("--position-error", type=float, default=0.7, help="sd of each layer's error shared by a position's variants (default 0.7)")
    parser.add_argument("--variant-error", type=float, default=0.3, help="sd of each layer's error of one variant (default 0.3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    result = run(args.schemes.split(","), args.draws, args.resamples, args.positions, args.per_position, args.variant_effect,
                 args.position_error, args.variant_error, args.seed)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)
        handle.write("\n")
    json.dump(result["schemes"], sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
