"""The CPU steps around the embedding store: gather a set's shards, and probe every layer of a task.

Invariant: as every module of ``plmexit.pipeline``: one function per CLI command, reading its
inputs, calling the computing modules and writing its outputs atomically.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from plmexit.atomic import atomic_path, write_text
from plmexit.data import proteingym, tasks
from plmexit.embedding import store
from plmexit.errors import InputError, StoreError
from plmexit.probing import baselines, probes, tables
from plmexit.probing.folds import FoldFit

log = logging.getLogger(__name__)


def gather_embeddings(shards: list[str | Path], out: str | Path) -> None:
    """Stream a task's shard stores, in shard order, into the task's store (memory bounded by a block of rows)."""
    first = store.read_info(shards[0]).attrs if shards else {}
    if "task_input_sha256" not in first:
        raise StoreError(f"{shards[0] if shards else '(none)'}: not a shard store; pass the files written by `plmexit embed --shard K --shards N`")
    store.gather(shards, out, {"input_sha256": first["task_input_sha256"]})


def probe_task(
    embeddings: str | Path, task_table: str | Path, model: str, task: str, settings: probes.ProbeSettings,
    out: str | Path, predictions_out: str | Path, threads: int = 1,
    baseline_features: str | None = None, baselines_out: str | Path | None = None, baseline_predictions_out: str | Path | None = None,
) -> pd.DataFrame:
    """Fit probes at every layer and fold, ``threads`` layers at a time.

    Writes the long table ``model, task, layer, fold, metric, value`` to ``out`` (test metrics,
    ``inner_<metric>`` and the chosen hyperparameter per evaluation fold, and the deploy fold's
    inner score and hyperparameter, ``folds.DEPLOY_FOLD``) and every test prediction (``model,
    task, layer, fold, id, label, prediction``, gzipped) to ``predictions_out``. With an inner split
    grouped by position, positions come from the ids (ProteinGym mutants). Logs one warning when
    chosen hyperparameters sit on the grid's edge.

    With ``baseline_features`` (``onehot`` or ``composition``, ``plmexit.probing.baselines``) it also
    fits the chance predictor and that feature baseline through the same folds, inner selection and
    metric, and writes their table (``tables.BASELINE_COLUMNS``) to ``baselines_out`` and their test
    predictions (``tables.BASELINE_PREDICTION_COLUMNS``, gzipped) to ``baseline_predictions_out``.
    """
    wanted = (baseline_features, baselines_out, baseline_predictions_out)
    if any(w is not None for w in wanted) and not all(w is not None for w in wanted):
        raise InputError("--baseline-features, --baselines-out and --baseline-predictions go together; give all three or none")
    if baseline_features is not None and baseline_features not in baselines.FEATURES:
        raise InputError(f"baseline features {baseline_features!r} are not one of {', '.join(baselines.FEATURES)} (--baseline-features)")
    table = tasks.read_task_table(task_table, settings.task_type)
    info = store.read_task_info(embeddings, table, task_table)
    if info.attrs.get("model", model) != model:
        raise StoreError(f"{embeddings} holds model {info.attrs['model']!r}, not {model!r}; pass that model's store, or --model-id {info.attrs['model']}")
    labels, folds, ids = table["label"].to_numpy(), table["fold"].to_numpy(), table["id"].to_numpy()
    classes = tables.classes_of(labels) if settings.task_type == "multilabel" else None
    y = tables.indicator(labels, classes) if classes else labels
    positions = _inner_positions(ids, settings.inner_split, task_table)
    rows, predictions = [], []
    started = time.monotonic()
    for layer, fits in _probe_layers(embeddings, info.n_layers + 1, y, folds, settings, threads, positions):
        _add_fits(rows, predictions, (model, task, layer), fits, y, settings, ids, labels, classes, tables.PREDICTION_COLUMNS)
        log.info("%s/%s: probed layer %d of %d (%.1f s)", model, task, layer, info.n_layers, time.monotonic() - started)
    result = pd.DataFrame(rows, columns=tables.PROBE_COLUMNS)
    _warn_on_grid_edges(result, settings, f"{model}/{task}")
    write_text(out, result.to_csv(sep="\t", index=False, float_format="%.10g"))
    with atomic_path(predictions_out) as tmp:
        pd.concat(predictions).to_csv(tmp, sep="\t", index=False, float_format="%.10g", compression="gzip")
    if baseline_features is not None:
        _probe_baselines(table, y, classes, model, task, settings, positions, baseline_features, baselines_out, baseline_predictions_out)
    return result


def _add_fits(rows: list, predictions: list, key: tuple, fits: list[FoldFit], y: np.ndarray, settings: probes.ProbeSettings,
              ids: np.ndarray, labels: np.ndarray, classes: list[str] | None, columns: list[str]) -> None:
    """Append one layer's (or baseline's) fits, ``key`` = (model, task, layer or baseline): its table rows and its test predictions."""
    rows.extend((*key, fold, metric, value) for fold, metric, value in probes.fold_metrics(fits, y, settings))
    for fit in fits:
        shown = tables.encode_scores(fit.predictions, classes) if classes else fit.predictions
        predictions.append(pd.DataFrame(dict(zip(columns, (*key, fit.fold, ids[fit.test], labels[fit.test], shown)))))


def _probe_baselines(
    table: pd.DataFrame, y: np.ndarray, classes: list[str] | None, model: str, task: str, settings: probes.ProbeSettings,
    positions: np.ndarray | None, features: str, out: str | Path, predictions_out: str | Path,
) -> None:
    """The chance predictor and the feature baseline of one task, written as the layers' tables are."""
    labels, folds, ids = table["label"].to_numpy(), table["fold"].to_numpy(), table["id"].to_numpy()
    started = time.monotonic()
    with threadpool_limits(1, user_api="blas"):
        fitted = baselines.probe_baselines(table["sequence"].to_numpy(), y, folds, settings, features, positions)
    rows, predictions = [], []
    for name, fits in fitted.items():
        _add_fits(rows, predictions, (model, task, name), fits, y, settings, ids, labels, classes, tables.BASELINE_PREDICTION_COLUMNS)
    log.info("%s/%s: probed the baselines %s (%.1f s)", model, task, ", ".join(fitted), time.monotonic() - started)
    write_text(out, pd.DataFrame(rows, columns=tables.BASELINE_COLUMNS).to_csv(sep="\t", index=False, float_format="%.10g"))
    with atomic_path(predictions_out) as tmp:
        pd.concat(predictions).to_csv(tmp, sep="\t", index=False, float_format="%.10g", compression="gzip")


def _inner_positions(ids: np.ndarray, inner_split: str, task_table: str | Path) -> np.ndarray | None:
    """Each row's mutated position when the inner split groups by position, else None.

    Modulo and contiguous folds are defined for single substitutions (``proteingym.make_folds``),
    so a multi-mutant row is an error rather than a guess at its group.
    """
    if inner_split == "loo":
        return None
    try:
        positions = [proteingym.mutated_positions(i) for i in ids]
    except InputError as exc:
        raise InputError(f"{task_table}: {exc}; --inner-split {inner_split} needs ProteinGym mutants as ids (else use loo)") from None
    for i, p in zip(ids, positions):
        if len(p) != 1:
            raise InputError(
                f"{task_table}: id {i!r} names {len(p)} positions, but --inner-split {inner_split} groups single substitutions "
                "by position; use --inner-split loo for multi-mutant assays"
            )
    return np.array([p[0] for p in positions])


def _warn_on_grid_edges(table: pd.DataFrame, settings: probes.ProbeSettings, name: str) -> None:
    """One warning line counting the (layer, fold) fits whose chosen hyperparameter is the grid's smallest or largest value."""
    edges = table.loc[table.metric == probes.HYPERPARAMETER_EDGE, "value"].dropna()  # NaN: a constant layer, nothing chosen
    low, high = int((edges == -1.0).sum()), int((edges == 1.0).sum())
    if low or high:
        grid, flag = ("alpha", "--alphas") if settings.task_type == "regression" else ("C", "--cs")
        log.warning(
            "%s: the chosen %s is the grid's smallest in %d and its largest in %d of %d (layer, fold) fits; "
            "the best value may lie outside the grid, widen %s", name, grid, low, high, len(edges), flag,
        )


def _probe_layers(
    embeddings: str | Path, n_layers: int, y: np.ndarray, folds: np.ndarray, settings: probes.ProbeSettings, threads: int,
    positions: np.ndarray | None = None,
):
    """Yield ``(layer, fits)`` in layer order, fitting ``threads`` layers at once in worker processes.

    Every layer runs on one BLAS thread: a probe's matrices are small enough that BLAS threads
    cost more in synchronisation than they give (scikit-learn's logistic grid search at 1,000 x
    1,280 runs 3.9x faster on one thread than on two; README, "Probe speed"), so cores are used
    one layer each instead.
    """
    if threads <= 1:
        with threadpool_limits(1, user_api="blas"):
            for layer in range(n_layers):
                yield layer, _probe_one_layer(embeddings, layer, y, folds, settings, positions)
        return
    # forkserver: workers do not inherit this process's BLAS thread pools or open HDF5 handles.
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=min(threads, n_layers), mp_context=context, initializer=_one_blas_thread) as pool:
        jobs = [pool.submit(_probe_one_layer, embeddings, layer, y, folds, settings, positions) for layer in range(n_layers)]
        try:
            for layer, job in enumerate(jobs):
                yield layer, job.result()
        finally:
            # On an error, stop at the layers already running instead of fitting all the rest.
            for job in jobs:
                job.cancel()


def _one_blas_thread() -> None:
    threadpool_limits(1, user_api="blas")


def _probe_one_layer(
    embeddings: str | Path, layer: int, y: np.ndarray, folds: np.ndarray, settings: probes.ProbeSettings, positions: np.ndarray | None = None,
) -> list[FoldFit]:
    return probes.probe_layer(store.read_layer(embeddings, layer), y, folds, settings, positions)
