"""Does the inner score pick the features that generalise? Position-memorising vs amino-acid features on a ProteinGym assay.

Two feature sets stand in for two layers: ``position`` gives every variant at a position the
same random vector (a probe on it can only learn each position's mean effect, which is useless
on positions it never saw), ``amino_acid`` is the one-hot wild-type and mutant residue (it
carries substitution effects to new positions). For each of the assay's fold schemes and each
inner split (``loo``, ``modulo``, ``contiguous``), the ridge probe (``ridge.ridge_folds``) gives
per evaluation fold the training-only inner Spearman and the test Spearman; the JSON reports
their means over folds and which feature set the inner score picks per fold. Under modulo and
contiguous folds leave-one-out rewards memorising positions; the inner split of the scheme
(``plmexit.pipeline.planning.INNER_SPLIT_OF_SCHEME``) does not.

    python benchmarks/inner_split_blat.py --assay ../shared/data/proteingym/cv_folds_singles_substitutions/BLAT_ECOLX_Stiffler_2015.csv --out blat.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys

import numpy as np
import pandas as pd

from plmexit.data import proteingym
from plmexit.pipeline.planning import INNER_SPLIT_OF_SCHEME
from plmexit.probing import metrics, options, ridge
from plmexit.probing.folds import DEPLOY_FOLD

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"


def feature_sets(mutants: pd.Series, dim: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``{name: (n, d) features}`` and each variant's mutated position."""
    parts = [m.strip() for m in mutants]
    positions = np.array([proteingym.mutated_positions(m)[0] for m in parts])
    distinct, index = np.unique(positions, return_inverse=True)
    per_position = np.random.default_rng(seed).normal(size=(len(distinct), dim))
    one_hot = np.zeros((len(parts), 2 * len(AMINO_ACIDS)))
    for i, m in enumerate(parts):
        one_hot[i, AMINO_ACIDS.index(m[0])] = 1.0
        one_hot[i, len(AMINO_ACIDS) + AMINO_ACIDS.index(m[-1])] = 1.0
    return {"position": per_position[index], "amino_acid": one_hot}, positions


def run(assay: str, dim: int, seed: int, inner_folds: int) -> dict:
    raw = pd.read_csv(assay)
    raw = raw[~raw["mutant"].str.contains(":")].reset_index(drop=True)  # modulo and contiguous are defined for singles
    features, positions = feature_sets(raw["mutant"], dim, seed)
    y = raw["DMS_score"].to_numpy(dtype=np.float64)
    schemes = {}
    for scheme in proteingym.FOLD_SCHEMES:
        folds = raw[scheme].to_numpy()
        splits = {}
        for split in options.INNER_SPLITS:
            fits = {
                name: [f for f in ridge.ridge_folds(X, y, folds, options.DEFAULT_RIDGE_ALPHAS, metrics.spearman, split, inner_folds, positions)
                       if f.fold != DEPLOY_FOLD]
                for name, X in features.items()
            }
            picks = [max(fits, key=lambda name: fits[name][k].inner_score) for k in range(len(fits["position"]))]
            splits[split] = {
                name: {
                    "inner_spearman": float(np.mean([f.inner_score for f in fs])),
                    "test_spearman": float(np.mean([metrics.spearman(y[f.test], f.predictions) for f in fs])),
                }
                for name, fs in fits.items()
            } | {"picked_per_fold": picks}
        schemes[scheme] = {"inner_split_used": INNER_SPLIT_OF_SCHEME[scheme], **splits}
    return {
        "assay": str(assay), "n_variants": len(y), "n_positions": len(np.unique(positions)), "position_dim": dim, "seed": seed,
        "inner_folds": inner_folds, "date": datetime.date.today().isoformat(), "schemes": schemes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assay", required=True, help="ProteinGym assay CSV with mutant, DMS_score and the three fold columns")
    parser.add_argument("--dim", type=int, default=512, help="width of the random per-position vectors; wider than the number of positions, they memorise every one (default 512)")
    parser.add_argument("--inner-folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    result = run(args.assay, args.dim, args.seed, args.inner_folds)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)
        handle.write("\n")
    json.dump(result["schemes"], sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
