"""Probe speed: plmexit's shared-decomposition ridge against the straightforward scikit-learn loop.

Both paths fit, for every layer and each of 5 folds, standardise + ridge with the regularisation
chosen by leave-one-out on the training rows, and predict the test rows; then the deploy fit on
every row (``folds.DEPLOY_FOLD``; every section times it, on both sides). The reference is
``make_pipeline(StandardScaler(), RidgeCV(alphas, scoring=spearman))`` per layer and fold
(``plmexit.probing.reference_ridge``); ours is ``plmexit.probing.ridge.ridge_folds``. Layers are
interleaved (reference, then ours, layer by layer), so machine load hits both paths alike.

The grouped section times the ridge probe of ProteinGym's modulo and contiguous schemes, whose
inner folds hold out whole mutated positions (``ridge_folds(..., inner_split="contiguous")``:
one eigendecomposition per inner fit gives every alpha) against scikit-learn's ``GridSearchCV``
over ``StandardScaler`` + ``Ridge`` on the same position splits (``reference_ridge_grouped``),
and plmexit's leave-one-out probe on the same data for the cost of the change; all three on one
BLAS thread, as ``plmexit probe`` runs a layer, every outer fold and the deploy fit (all rows).

The classification section times the multinomial logistic probe (ours: ``plmexit.probing.logistic``,
the same objective and L-BFGS solver solved over the span of the training rows, a warm-started C
path per inner fold, one BLAS thread as ``plmexit probe`` runs it; reference: scikit-learn's
``GridSearchCV`` over ``StandardScaler`` + ``LogisticRegression``, ``reference_logistic``)
on a smaller problem; the multi-label section does the same for the one-vs-rest probe
(``reference_one_vs_rest``: ``OneVsRestClassifier`` in the grid search). The parallel section times the probe step itself (``probe_steps.probe_task``, what
``plmexit probe`` runs) on a synthetic store, one layer at a time and ``--threads`` layers at once.

    python benchmarks/probe_speed.py --out probe_speed.json            # 5,000 x 1,280 x 34 layers
    python benchmarks/probe_speed.py --quick --out probe_speed.json    # about two minutes on 2 cores
    python benchmarks/probe_speed.py --layers 0 --classification-layers 2 --out logistic.json  # logistic only
    python benchmarks/probe_speed.py --layers 0 --classification-layers 0 --multilabel-layers 1 --out ovr.json
    python benchmarks/probe_speed.py --layers 0 --classification-layers 0 --parallel-layers 4 --out parallel.json
    python benchmarks/probe_speed.py --layers 0 --classification-layers 0 --grouped-layers 2 --out grouped.json
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
import sklearn
from threadpoolctl import threadpool_limits

from plmexit.data import tasks
from plmexit.embedding import store
from plmexit.pipeline import probe_steps
from plmexit.probing import metrics, options, probes, ridge
from plmexit.probing.folds import DEPLOY_FOLD, inner_groups
from plmexit.probing.reference import reference_logistic, reference_one_vs_rest, reference_ridge, reference_ridge_grouped


def layer_features(rng: np.random.Generator, n: int, dim: int, latent: np.ndarray) -> np.ndarray:
    """Embedding-like features: correlated (low-rank plus noise), offset, rounded to float16 as stored."""
    mixing = rng.normal(size=(latent.shape[1], dim))
    X = latent @ mixing + rng.normal(scale=2.0, size=(n, dim)) + rng.normal(scale=5.0, size=dim)
    return X.astype(np.float16).astype(np.float32)


def ridge_section(n: int, dim: int, layers: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 32))
    y = latent[:, :4].sum(axis=1) + rng.normal(size=n)
    folds = rng.permutation(np.arange(n) % 5)
    alphas = options.DEFAULT_RIDGE_ALPHAS
    ours_s = reference_s = 0.0
    max_abs_diff = max_inner_diff = 0.0
    alpha_mismatches = 0
    for layer in range(layers):
        X = layer_features(rng, n, dim, latent)
        start = time.perf_counter()
        reference = [reference_ridge(X[folds != f], y[folds != f], X[folds == f], alphas, metrics.spearman) for f in range(5)]
        reference.append(reference_ridge(X, y, X[:1], alphas, metrics.spearman))  # the deploy fit, on every row
        reference_s += time.perf_counter() - start
        start = time.perf_counter()
        fits = ridge.ridge_folds(X, y, folds, alphas, metrics.spearman)
        ours_s += time.perf_counter() - start
        diff, inner_diff, mismatches, _ = compare_ridge(fits, reference)
        max_abs_diff, max_inner_diff, alpha_mismatches = max(max_abs_diff, diff), max(max_inner_diff, inner_diff), alpha_mismatches + mismatches
        print(f"ridge layer {layer + 1}/{layers}: reference {reference_s:.1f} s, ours {ours_s:.1f} s so far", file=sys.stderr)
    return {
        "n": n, "dim": dim, "layers": layers, "folds": 5, "alphas": len(alphas),
        "ours_s": ours_s, "reference_s": reference_s, "ratio": reference_s / ours_s,
        "max_abs_diff": max_abs_diff, "max_inner_score_diff": max_inner_diff, "alpha_mismatches": int(alpha_mismatches),
    }


def compare_ridge(fits, reference) -> tuple[float, float, int, int]:
    """Largest test-prediction and inner-score differences, alpha mismatches and fits compared, ours against the reference."""
    max_abs_diff = max_inner_diff = 0.0
    mismatches = 0
    for fit, (predictions, inner, alpha) in zip(fits, reference):
        if len(fit.test):  # the deploy fit has no test rows
            max_abs_diff = max(max_abs_diff, float(np.abs(fit.predictions - predictions).max()))
        max_inner_diff = max(max_inner_diff, abs(fit.inner_score - inner))
        mismatches += fit.hyperparameter != alpha
    return max_abs_diff, max_inner_diff, int(mismatches), len(fits)


def grouped_section(n: int, dim: int, layers: int, inner_folds: int, seed: int) -> dict:
    """Time the position-grouped ridge probe against GridSearchCV on the same splits, and against leave-one-out.

    Variants sit 19 to a position (every substitution, as in a deep mutational scan); outer folds
    are ProteinGym's contiguous blocks of positions; inner folds the same rule on each training
    part's positions (``folds.inner_groups``).
    """
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 32))
    positions = np.arange(n) // 19 + 1
    distinct = np.unique(positions)
    y = latent[:, :4].sum(axis=1) + rng.normal(size=len(distinct))[positions - 1] + rng.normal(size=n)
    folds = inner_groups(positions, "contiguous", 5)  # the outer rule is the inner rule with k = 5
    alphas = options.DEFAULT_RIDGE_ALPHAS
    ours_s = reference_s = loo_s = 0.0
    max_abs_diff = max_inner_diff = 0.0
    alpha_mismatches = fits_compared = 0
    for layer in range(layers):
        X = layer_features(rng, n, dim, latent)
        with threadpool_limits(1, user_api="blas"):
            start = time.perf_counter()
            fits = ridge.ridge_folds(X, y, folds, alphas, metrics.spearman, "contiguous", inner_folds, positions)
            ours_s += time.perf_counter() - start
            start = time.perf_counter()
            reference = []
            for fit in fits:
                train = folds != fit.fold if fit.fold != DEPLOY_FOLD else np.full(n, True)
                groups = inner_groups(positions[train], "contiguous", inner_folds)
                X_test = X[fit.test] if len(fit.test) else X[:1]  # the deploy fit has no test rows; scikit-learn needs one
                reference.append(reference_ridge_grouped(X[train], y[train], X_test, alphas, metrics.spearman, groups))
            reference_s += time.perf_counter() - start
            start = time.perf_counter()
            ridge.ridge_folds(X, y, folds, alphas, metrics.spearman)
            loo_s += time.perf_counter() - start
        diff, inner_diff, mismatches, compared = compare_ridge(fits, reference)
        max_abs_diff, max_inner_diff = max(max_abs_diff, diff), max(max_inner_diff, inner_diff)
        alpha_mismatches, fits_compared = alpha_mismatches + mismatches, fits_compared + compared
        print(f"grouped layer {layer + 1}/{layers}: ours {ours_s:.1f} s, GridSearchCV {reference_s:.1f} s, ours LOO {loo_s:.1f} s so far", file=sys.stderr)
    return {
        "n": n, "dim": dim, "layers": layers, "positions": len(distinct), "folds": 5, "inner_folds": inner_folds, "alphas": len(alphas),
        "fits_per_layer": len(fits), "ours_s": ours_s, "reference_s": reference_s, "ratio": reference_s / ours_s,
        "ours_loo_s": loo_s, "grouped_over_loo": ours_s / loo_s, "ours_s_per_layer": ours_s / layers,
        "max_abs_diff": max_abs_diff, "max_inner_score_diff": max_inner_diff, "alpha_mismatches": int(alpha_mismatches),
        "fits_compared": fits_compared,
    }


def logistic_section(task_type: str, n: int, dim: int, classes: int, layers: int, seed: int) -> dict:
    """Time a logistic probe, ours against scikit-learn's GridSearchCV, layer by layer.

    ``task_type`` "classification": the multinomial probe against ``reference_logistic``;
    "multilabel": the one-vs-rest probe (Fmax) against ``reference_one_vs_rest``. Ours runs
    as ``plmexit probe`` runs it, on one BLAS thread per layer. The reference runs twice: with the
    BLAS threads numpy starts by default (what a straightforward script gets), and on one thread,
    so the solver's gain and the threading's are told apart.
    """
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 32))
    if task_type == "classification":
        y = np.digitize(latent[:, 0] * 2 + rng.normal(size=n), np.quantile(latent[:, 0] * 2, np.linspace(0, 1, classes + 1)[1:-1])).astype(str)
        settings = probes.ProbeSettings(task_type="classification", selection_metric="accuracy", seed=seed)
        reference_probe = reference_logistic
    else:
        # Each class switched on by its own latent direction, about a fifth of the rows each.
        y = (latent[:, :classes] + rng.normal(size=(n, classes)) > 1.2).astype(int)
        settings = probes.ProbeSettings(task_type="multilabel", selection_metric="fmax", seed=seed)
        reference_probe = reference_one_vs_rest
    folds = rng.permutation(np.arange(n) % 5)
    ours_s = reference_s = reference_one_thread_s = 0.0
    agreement, c_matches, inner_diff, probability_diff = [], 0, 0.0, 0.0
    for layer in range(layers):
        X = layer_features(rng, n, dim, latent)
        start = time.perf_counter()
        with threadpool_limits(1, user_api="blas"):
            fits = probes.probe_layer(X, y, folds, settings)
        ours_s += time.perf_counter() - start
        # Every fit of ours, the deploy fit on all rows included (it has no test rows; scikit-learn needs one to predict).
        parts = [(folds != fit.fold, X[fit.test] if len(fit.test) else X[:1]) for fit in fits]
        start = time.perf_counter()
        reference = [reference_probe(X[train], y[train], X_test, settings) for train, X_test in parts]
        reference_s += time.perf_counter() - start
        start = time.perf_counter()
        with threadpool_limits(1, user_api="blas"):
            for train, X_test in parts:
                reference_probe(X[train], y[train], X_test, settings)
        reference_one_thread_s += time.perf_counter() - start
        for fit, (predictions, inner, c) in zip(fits, reference):
            c_matches += fit.hyperparameter == c
            inner_diff = max(inner_diff, abs(fit.inner_score - inner))
            if not len(fit.test):
                continue
            if task_type == "classification":
                agreement.append(float(np.mean(predictions == fit.predictions)))
            else:  # the calls at probability 0.5, and the probabilities themselves
                agreement.append(float(np.mean((predictions >= 0.5) == (fit.predictions >= 0.5))))
                probability_diff = max(probability_diff, float(np.abs(predictions - fit.predictions).max()))
        print(f"{task_type} layer {layer + 1}/{layers}: ours {ours_s:.1f} s, reference {reference_s:.1f} s "
              f"(one BLAS thread {reference_one_thread_s:.1f} s) so far", file=sys.stderr)
    result = {
        "n": n, "dim": dim, "classes": classes, "layers": layers, "folds": 5, "cs": len(settings.logistic_cs),
        "inner_folds": settings.inner_folds, "ours_s": ours_s, "reference_s": reference_s, "ratio": reference_s / ours_s,
        "reference_one_blas_thread_s": reference_one_thread_s, "ratio_one_blas_thread": reference_one_thread_s / ours_s,
        "ours_s_per_layer": ours_s / layers, "mean_prediction_agreement": float(np.mean(agreement)),
        "min_prediction_agreement": min(agreement), "c_matches": int(c_matches), "fits": len(agreement),
        "max_inner_score_diff": inner_diff,
    }
    if task_type == "multilabel":
        result["max_abs_probability_diff"] = probability_diff
    return result


def parallel_section(n: int, dim: int, classes: int, layers: int, threads: int, seed: int) -> dict:
    """Time ``plmexit probe``'s step on a store of ``layers`` layers, one layer at a time and ``threads`` at once."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 32))
    labels = np.digitize(latent[:, 0] * 2 + rng.normal(size=n), np.quantile(latent[:, 0] * 2, np.linspace(0, 1, classes + 1)[1:-1]))
    table = pd.DataFrame({"id": [f"p{i}" for i in range(n)], "sequence": "MKV", "label": labels.astype(str), "fold": rng.permutation(np.arange(n) % 5)})
    settings = probes.ProbeSettings(task_type="classification", selection_metric="accuracy", seed=seed)
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        task, embeddings = Path(tmp) / "task.tsv", Path(tmp) / "store.h5"
        tasks.write_task_table(table, task)
        attrs = {"input_sha256": tasks.sequences_sha256(table["id"], table["sequence"])}
        with store.create_store(embeddings, list(table["id"]), layers - 1, dim, "float16", attrs, np.full(n, 3), np.zeros(n, dtype=bool)) as writer:
            writer.write(np.arange(n), np.stack([layer_features(rng, n, dim, latent) for _ in range(layers)]))
        outputs = {}
        for count in (1, threads):
            out = Path(tmp) / f"probes{count}.tsv"
            start = time.perf_counter()
            probe_steps.probe_task(embeddings, task, "m", "t", settings, out, Path(tmp) / f"predictions{count}.tsv.gz", threads=count)
            seconds[count] = time.perf_counter() - start
            outputs[count] = out.read_text()
            print(f"probe step, {count} thread(s): {seconds[count]:.1f} s", file=sys.stderr)
    return {
        "n": n, "dim": dim, "classes": classes, "layers": layers, "threads": threads, "one_thread_s": seconds[1],
        "threads_s": seconds[threads], "speedup": seconds[1] / seconds[threads], "identical_tables": outputs[1] == outputs[threads],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 x 320 x 7 layers, logistic at 500 items (about two minutes on 2 cores)")
    parser.add_argument("--n", type=int, default=5000, help="items (default 5000)")
    parser.add_argument("--dim", type=int, default=1280, help="embedding width (default 1280, ESM2-650M)")
    parser.add_argument("--layers", type=int, default=34, help="layers incl. embeddings for the ridge section (default 34, ESM2-650M; 0 skips it)")
    parser.add_argument("--classification-n", type=int, default=1000, help="items for the logistic section (default 1000)")
    parser.add_argument("--classification-layers", type=int, default=1, help="layers for the logistic section (default 1; 0 skips it)")
    parser.add_argument("--multilabel-layers", type=int, default=0, help="layers for the one-vs-rest section, 7 classes (default 0 skips it)")
    parser.add_argument("--parallel-layers", type=int, default=0, help="layers for the probe step's --threads section (default 0 skips it)")
    parser.add_argument("--grouped-layers", type=int, default=0, help="layers for the position-grouped ridge section (default 0 skips it)")
    parser.add_argument("--grouped-n", type=int, default=2000, help="items for the grouped section (default 2000)")
    parser.add_argument("--inner-folds", type=int, default=3, help="inner folds of the grouped section (default 3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="worker processes for that section (default: all CPUs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.dim, args.layers, args.classification_n = 1000, 320, 7, 500
    result = {
        "benchmark": "probe_speed",
        "date": datetime.date.today().isoformat(),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "scikit-learn": sklearn.__version__},
    }
    if args.layers:
        result.update(ridge_section(args.n, args.dim, args.layers, args.seed))
    if args.classification_layers:
        result["classification"] = logistic_section("classification", args.classification_n, args.dim, 10, args.classification_layers, args.seed)
    if args.multilabel_layers:
        result["multilabel"] = logistic_section("multilabel", args.classification_n, args.dim, 7, args.multilabel_layers, args.seed)
    if args.grouped_layers:
        result["grouped"] = grouped_section(args.grouped_n, args.dim, args.grouped_layers, args.inner_folds, args.seed)
    if args.parallel_layers:
        result["parallel"] = parallel_section(args.classification_n, args.dim, 10, args.parallel_layers, args.threads, args.seed)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
