"""ProteinGym's merge-format numbers against the mean of per-fold numbers, on a real assay.

BLAT_ECOLX_Stiffler_2015 (all 4,996 variants, the published fold columns), one-hot features of
the mutated sequence (constant columns dropped), plmexit's ridge probe per fold. For each scheme
it writes the mean over folds of the test Spearman and raw MSE (what plmexit reported before) and
ProteinGym's merge numbers (``proteingym.merge_scores``: one Spearman over all out-of-fold
predictions pooled, MSE on targets standardised by each fold's training statistics).

    python benchmarks/proteingym_merge_blat.py --out proteingym_merge_blat.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from plmexit.data import proteingym
from plmexit.probing import metrics, options, ridge
from plmexit.probing.folds import DEPLOY_FOLD

ASSAY = Path(__file__).resolve().parents[2] / "shared" / "data" / "proteingym" / "cv_folds_singles_substitutions" / "BLAT_ECOLX_Stiffler_2015.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assay", default=str(ASSAY), help="ProteinGym assay CSV with fold columns (default: BLAT in ../shared/data)")
    parser.add_argument("--out", required=True, help="JSON to write")
    args = parser.parse_args()
    source = pd.read_csv(args.assay)
    residues = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    sequences = np.array([list(s) for s in source["mutated_sequence"]])
    X = (sequences[:, :, None] == residues[None, None, :]).reshape(len(sequences), -1).astype(float)
    X = X[:, X.std(axis=0) > 0]  # constant columns carry nothing once standardised
    y = source["DMS_score"].to_numpy(dtype=float)
    rows = []
    with threadpool_limits(1, user_api="blas"):
        for scheme in proteingym.FOLD_SCHEMES:
            start = time.perf_counter()
            folds = source[scheme].to_numpy()
            fits = [f for f in ridge.ridge_folds(X, y, folds, options.DEFAULT_RIDGE_ALPHAS, metrics.spearman) if f.fold != DEPLOY_FOLD]
            test = np.concatenate([f.test for f in fits])
            predictions = np.concatenate([f.predictions for f in fits])
            spearman, mse = proteingym.merge_scores(y[test], predictions, folds[test], y, folds)
            rows.append({
                "scheme": scheme,
                "mean_of_folds_spearman": float(np.mean([metrics.spearman(y[f.test], f.predictions) for f in fits])),
                "mean_of_folds_mse_raw": float(np.mean([np.mean((y[f.test] - f.predictions) ** 2) for f in fits])),
                "merge_spearman": spearman,
                "merge_mse_standardised": mse,
                "alphas": [f.hyperparameter for f in fits],
                "seconds": time.perf_counter() - start,
            })
            print(rows[-1], flush=True)
    result = {"assay": Path(args.assay).name, "n": len(y), "features": X.shape[1], "schemes": rows,
              "machine": {"processor": platform.processor() or platform.machine(), "python": platform.python_version()}}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
