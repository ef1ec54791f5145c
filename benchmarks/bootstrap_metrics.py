"""Bootstrap speed: plmexit's gain interval with its own Spearman and Fmax terms against the library path.

``probing.choice.bootstrap_gain`` scores every resample twice per fold (the chosen and the final layer).
plmexit computes Spearman as ``scipy.stats.spearmanr`` does without its checks (``metrics.spearman``) and
a multi-label resample's Fmax from per-item terms computed once (``metrics.fmax_terms``). This times the
interval both ways on synthetic predictions of a real task's size, in the same run, and checks the two
intervals are equal to the last bit:

- regression: ``metrics.spearman`` against the same tie snapping and constant rule followed by
  ``scipy.stats.spearmanr`` (the function ProteinGym scores with);
- multilabel: the Fmax terms against ``metrics.fmax`` (DeepFRI's scoring) on every resample's rows.

    python benchmarks/bootstrap_metrics.py --out bootstrap_metrics.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
from planning_speed import cpu_model  # this directory is first on sys.path when a script of it runs
from scipy.stats import spearmanr

from plmexit.probing import choice, metrics


def scipy_spearman(y_true, y_pred) -> float:
    """plmexit's Spearman as it was written on scipy: the same tie snapping and constant rule, then spearmanr."""
    y_pred = metrics._snap_ties(np.asarray(y_pred, dtype=np.float64))
    if np.ptp(y_true) == 0 or np.ptp(y_pred) == 0:
        return 0.0
    return float(spearmanr(y_true, y_pred).statistic)


def predictions(task_type: str, n: int, classes: int, folds: int, seed: int) -> pd.DataFrame:
    """Predictions of layers 2 (chosen) and 4 (final) for ``folds`` test folds of ``n`` items each."""
    rng = np.random.default_rng(seed)
    frames = []
    for fold in range(folds):
        ids = [f"f{fold}_{i:05d}" for i in range(n)]
        if task_type == "regression":
            truth = rng.normal(size=n)
            for layer, noise in ((2, 0.8), (4, 1.2)):
                frames.append(pd.DataFrame({"layer": layer, "fold": fold, "id": ids, "label": truth, "prediction": truth + rng.normal(0, noise, n)}))
        else:
            truth = rng.random((n, classes)) < 3 / classes
            for layer, noise in ((2, 0.3), (4, 0.5)):
                scores = np.clip(truth + rng.normal(0, noise, truth.shape), 0, 1).astype(np.float32)
                frames.append(pd.DataFrame({"layer": layer, "fold": fold, "id": ids, "label": list(truth.astype(int)), "prediction": list(scores)}))
    return pd.concat(frames, ignore_index=True)


def timed(function) -> tuple[float, tuple[float, float]]:
    started = time.perf_counter()
    interval = function()
    return time.perf_counter() - started, interval


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1000, help="test items per fold (a ProteinGym assay's fold, DeepFRI EC's test set)")
    parser.add_argument("--classes", type=int, default=400, help="classes of the multi-label task (DeepFRI EC has hundreds)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--bootstrap", type=int, default=200, help="resamples per interval")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    results = {}
    for task_type, metric in (("regression", "spearman"), ("multilabel", "fmax")):
        table = predictions(task_type, args.items, args.classes, args.folds, seed=0)
        selection = {"task": "t", "metric": metric, "n_layers": 4, "status": choice.STATUS_OK,
                     "folds": [{"fold": fold, "layer": 2} for fold in range(args.folds)]}
        run = lambda: choice.bootstrap_gain(table, selection, task_type, n_boot=args.bootstrap, seed=0)  # noqa: E731
        ours_s, ours = timed(run)
        if task_type == "regression":
            library = {**choice.METRICS, "regression": {**choice.METRICS["regression"], "spearman": scipy_spearman}}
            with mock.patch.object(choice, "METRICS", library):
                library_s, theirs = timed(run)
        else:
            with mock.patch.object(choice, "TERM_METRICS", {}):
                library_s, theirs = timed(run)
        results[task_type] = {"metric": metric, "ours_s": round(ours_s, 3), "library_s": round(library_s, 3),
                              "speedup": round(library_s / ours_s, 2), "same_interval": ours == theirs, "interval": list(ours)}
    out = {
        "benchmark": "bootstrap_metrics",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "settings": vars(args) | {"out": str(args.out)},
        **results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if all(r["same_interval"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
