"""plmexit's logistic probe against scikit-learn's grid search on a real store: every layer, every evaluation fold.

For each layer of an embedding store and each evaluation fold of its task table, the training rows
go through plmexit's probe (``classifiers.logistic_probe``: C by inner stratified K-fold, then the
refit) and through the stock pipeline it stands for (``reference_logistic``: ``GridSearchCV`` over
``StandardScaler`` + ``LogisticRegression``, the same C grid and inner splits), both on one BLAS
thread as ``plmexit probe`` runs a layer. Written: how often the chosen C is the same, how many test
predictions are identical, the largest inner-score difference, and each side's seconds.

The store and table are any ``plmexit embed`` / ``plmexit prepare`` pair of a classification task,
for example the DeepLoc chain's (``benchmarks/chain_deeploc.py --keep DIR`` leaves
``DIR/embeddings.h5`` and ``DIR/task.tsv``). To compare two checkouts, run this file with the other
checkout's ``src`` first on ``PYTHONPATH``:

    python benchmarks/probe_agreement.py --embeddings DIR/embeddings.h5 --task DIR/task.tsv --out agreement.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time

import numpy as np
import sklearn
from threadpoolctl import threadpool_limits

import plmexit
from plmexit.data import tasks
from plmexit.embedding import store
from plmexit.probing.classifiers import logistic_probe
from plmexit.probing.folds import DEPLOY_FOLD, fit_parts
from plmexit.probing.probes import ProbeSettings
from plmexit.probing.reference import reference_logistic


def compare(embeddings: str, task: str, inner_folds: int) -> dict:
    table = tasks.read_task_table(task, "classification")
    y, folds = table["label"].to_numpy(), table["fold"].to_numpy()
    settings = ProbeSettings("classification", "accuracy", inner_folds=inner_folds)
    n_layers = store.read_info(embeddings).n_layers + 1
    totals = {"fits": 0, "c_matches": 0, "identical_predictions": 0, "predictions": 0, "max_inner_score_diff": 0.0, "ours_s": 0.0, "reference_s": 0.0}
    with threadpool_limits(1, user_api="blas"):
        for layer in range(n_layers):
            X = store.read_layer(embeddings, layer)
            for fold, train, test in fit_parts(folds):
                if fold == DEPLOY_FOLD:
                    continue
                started = time.perf_counter()
                predict, score, c = logistic_probe(X[train], y[train], settings)
                ours = predict(X[test])
                middle = time.perf_counter()
                reference, reference_score, reference_c = reference_logistic(X[train], y[train], X[test], settings)
                totals["reference_s"] += time.perf_counter() - middle
                totals["ours_s"] += middle - started
                totals["fits"] += 1
                totals["c_matches"] += int(c == reference_c)
                totals["identical_predictions"] += int(np.sum(ours == reference))
                totals["predictions"] += len(reference)
                totals["max_inner_score_diff"] = max(totals["max_inner_score_diff"], abs(score - reference_score))
    return {"layers": n_layers, "rows": len(table), "classes": int(len(np.unique(y))), "inner_folds": inner_folds, "cs": list(settings.logistic_cs), **totals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embeddings", required=True, help="a classification task's embedding store (plmexit embed)")
    parser.add_argument("--task", required=True, help="its task table (plmexit prepare)")
    parser.add_argument("--inner-folds", type=int, default=3, help="inner folds that choose C (default 3, the config's)")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()
    result = {
        "benchmark": "probe_agreement",
        "date": datetime.date.today().isoformat(),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "scikit-learn": sklearn.__version__},
        "plmexit": os.path.dirname(plmexit.__file__),
        "embeddings": args.embeddings,
        "task": args.task,
        **compare(args.embeddings, args.task, args.inner_folds),
    }
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)
        handle.write("\n")


if __name__ == "__main__":
    main()
