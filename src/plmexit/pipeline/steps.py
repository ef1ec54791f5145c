"""One function per pipeline step: read inputs, call the computing modules, write outputs.

Invariant: these are the only functions that combine file I/O with computation; each CLI
subcommand wraps exactly one of them, and each writes its outputs atomically.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from plmexit.atomic import atomic_path, write_text
from plmexit.data import loading, proteingym, sources, tasks
from plmexit.embedding import cost, store
from plmexit.errors import InputError, StoreError
from plmexit.probing import choice, probes, tables
from plmexit.reporting import figures

log = logging.getLogger(__name__)


def fetch_data(key: str, out: str | Path, local_dir: str | Path | None = None, base_url: str | None = None) -> str:
    """Put one official data file in place, hash-verified (downloaded, or from local copies)."""
    return sources.stage(key, out, local_dir, base_url)


def prepare_task(spec: tasks.TaskSpec, out: str | Path, info_out: str | Path) -> pd.DataFrame:
    """Read and validate a task's source files into a normalised task table, and say how it is split.

    ``info_out`` (JSON) records the split (official, the file's folds, or seeded
    cross-validation) and, for ProteinGym, the assay and fold scheme, for the summaries; a scheme
    whose folds plmexit built is named with ``proteingym.BUILT_SUFFIX`` (``fold_modulo_5_built``).
    """
    table = loading.load_task(spec)
    info = {
        "task": spec.name, "format": spec.format, "type": spec.type, "split": table.attrs["split"], "n_sequences": len(table),
        "dms_id": spec.dms_id, "fold_scheme": table.attrs["fold_scheme"],
    }
    tasks.write_task_table(table, out)
    write_text(info_out, json.dumps(info, indent=2) + "\n")
    return table


def gather_embeddings(shards: list[str | Path], out: str | Path) -> None:
    """Stream a task's shard stores, in shard order, into the task's store (memory bounded by a block of rows)."""
    first = store.read_info(shards[0]).attrs if shards else {}
    if "task_input_sha256" not in first:
        raise StoreError(f"{shards[0] if shards else '(none)'}: not a shard store; pass the files written by `plmexit embed --shard K --shards N`")
    store.gather(shards, out, {"input_sha256": first["task_input_sha256"]})


def probe_task(
    embeddings: str | Path, task_table: str | Path, model: str, task: str, settings: probes.ProbeSettings,
    out: str | Path, predictions_out: str | Path, threads: int = 1,
) -> pd.DataFrame:
    """Fit probes at every layer and fold, ``threads`` layers at a time.

    Writes the long table ``model, task, layer, fold, metric, value`` to ``out`` (test metrics,
    ``inner_<metric>`` and the chosen hyperparameter per evaluation fold, and the deploy fold's
    inner score and hyperparameter, ``probes.DEPLOY_FOLD``) and every test prediction (``model,
    task, layer, fold, id, label, prediction``, gzipped) to ``predictions_out``. With an inner split
    grouped by position, positions come from the ids (ProteinGym mutants). Logs one warning when
    chosen hyperparameters sit on the grid's edge.
    """
    table = tasks.read_task_table(task_table, settings.task_type)
    info = store.read_info(embeddings)
    if info.attrs.get("input_sha256") != tasks.sequences_sha256(table["id"], table["sequence"]):
        raise StoreError(f"{embeddings} was embedded from other sequences than {task_table}; delete it and rerun `plmexit embed`")
    labels, folds, ids = table["label"].to_numpy(), table["fold"].to_numpy(), table["id"].to_numpy()
    classes = tables.classes_of(labels) if settings.task_type == "multilabel" else None
    y = tables.indicator(labels, classes) if classes else labels
    positions = _inner_positions(ids, settings.inner_split, task_table)
    rows, predictions = [], []
    started = time.monotonic()
    for layer, fits in _probe_layers(embeddings, info.n_layers + 1, y, folds, settings, threads, positions):
        rows.extend((model, task, layer, fold, metric, value) for fold, metric, value in probes.fold_metrics(fits, y, settings))
        for fit in fits:
            shown = tables.encode_scores(fit.predictions, classes) if classes else fit.predictions
            columns = (model, task, layer, fit.fold, ids[fit.test], labels[fit.test], shown)
            predictions.append(pd.DataFrame(dict(zip(tables.PREDICTION_COLUMNS, columns))))
        log.info("%s/%s: probed layer %d of %d (%.1f s)", model, task, layer, info.n_layers, time.monotonic() - started)
    result = pd.DataFrame(rows, columns=tables.PROBE_COLUMNS)
    _warn_on_grid_edges(result, settings, f"{model}/{task}")
    write_text(out, result.to_csv(sep="\t", index=False, float_format="%.10g"))
    with atomic_path(predictions_out) as tmp:
        pd.concat(predictions).to_csv(tmp, sep="\t", index=False, float_format="%.10g", compression="gzip")
    return result


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
) -> list[probes.FoldFit]:
    return probes.probe_layer(store.read_layer(embeddings, layer), y, folds, settings, positions)


def read_probe_table(path: str | Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, sep="\t")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: not a readable probe table ({exc}); rerun `plmexit probe`") from None
    if list(table.columns) != tables.PROBE_COLUMNS:
        raise InputError(f"{path}: columns {list(table.columns)} are not {tables.PROBE_COLUMNS}; rerun `plmexit probe`")
    return table


def select_task(
    probe_table: str | Path, predictions: str | Path, cost_file: str | Path, embeddings: str | Path, task_info: str | Path,
    task_type: str, metric: str, tolerance: float, n_boot: int, seed: int, out: str | Path,
) -> dict:
    """Choose the layer for one (model, task), add the gain's interval, the cost saved, a verdict and how the task was split; write JSON."""
    try:
        selection = choice.select_layer(read_probe_table(probe_table), metric, tolerance)
    except InputError as exc:
        raise InputError(f"{probe_table}: {exc}") from None
    try:
        table = _read_predictions(predictions, task_type)
    except InputError as exc:
        raise InputError(f"{predictions} (predictions for {probe_table}): {exc}") from None
    costs = _read_json(cost_file, "`plmexit cost`", ("n_layers", "flops", "seconds"))
    if costs["n_layers"] != selection["n_layers"]:
        raise InputError(f"{cost_file} describes {costs['n_layers']} layers but {probe_table} has {selection['n_layers']}; rerun `plmexit cost`")
    attrs = store.read_info(embeddings).attrs
    info = _read_json(task_info, "`plmexit prepare`", ("split", "n_sequences", "dms_id", "fold_scheme"))
    ok = selection["status"] == choice.STATUS_OK

    clusters = _position_clusters(info, table["id"])
    selection["bootstrap"] = {
        "resamples": n_boot, "seed": seed, "level": choice.CONFIDENCE_LEVEL,
        "unit": ("mutated positions" if clusters else "test items") + ", paired within folds; probes not refitted, layers not re-chosen",
    }
    selection["gain_ci_low"] = selection["gain_ci_high"] = None
    if ok:
        try:
            selection["gain_ci_low"], selection["gain_ci_high"] = choice.bootstrap_gain(table, selection, task_type, n_boot, seed, clusters=clusters)
        except InputError as exc:
            raise InputError(f"{predictions} (predictions for {probe_table}): {exc}") from None
    seconds = np.array(costs["seconds"])
    selection["deployed_time_saved"] = cost.fraction_saved(seconds, selection["deployed_layer"]) if ok else None
    selection["folds_time_saved"] = float(np.mean([cost.fraction_saved(seconds, f["layer"]) for f in selection["folds"]])) if ok else None
    sizes = table[table.layer == selection["n_layers"]].groupby("fold").size()
    selection["min_test_fold_size"] = int(sizes.min()) if len(sizes) else 0
    selection["layer_norm"] = attrs["layer_norm"]
    selection["n_truncated"] = int(attrs["n_truncated"])
    selection["split"], selection["n_sequences"], selection["task_info"] = info["split"], info["n_sequences"], info
    selection["dms_id"], selection["fold_scheme"] = info["dms_id"], info["fold_scheme"]
    selection["verdict"] = choice.verdict(selection)
    _warn_about(selection, task_type)
    write_text(out, json.dumps(selection, indent=2) + "\n")
    return selection


def _warn_about(selection: dict, task_type: str) -> None:
    """One log line for each thing a user must know before trusting the selection."""
    name = f"{selection['model']}/{selection['task']}"
    if selection["status"] != choice.STATUS_OK:
        log.warning(
            "%s: no layer carries a signal on some training part (every inner score is NaN: the embedded features do not vary); "
            "reported as %s, with no gain or saving", name, selection["status"],
        )
    if selection["verdict"] == "too_little_data":
        log.warning(
            "%s: the smallest test fold has %d items and the gain's interval is %.2f wide; too little data to tell a layer from the final one",
            name, selection["min_test_fold_size"], selection["gain_ci_high"] - selection["gain_ci_low"],
        )
    edges = selection["hyperparameters_on_grid_edge"]
    if edges:
        log.warning(
            "%s: the chosen probes of %s have their regularisation at the edge of its grid; the best value may lie outside it, widen probe.%s",
            name, ", ".join(f"layer {e['layer']} of fold {e['fold']} ({e['edge']}, {e['value']:g})" for e in edges),
            "ridge_alphas" if task_type == "regression" else "logistic_cs",
        )


def _position_clusters(info: dict, ids: pd.Series) -> dict[str, tuple[int, ...]] | None:
    """Under ProteinGym schemes that hold out whole positions, each id's mutated positions (the bootstrap's units); else None."""
    scheme = info.get("fold_scheme") or ""
    if not scheme.startswith(proteingym.POSITION_SCHEMES):
        return None
    return {i: proteingym.mutated_positions(i) for i in ids.unique()}


def _read_predictions(path: str | Path, task_type: str) -> pd.DataFrame:
    text = {"label": str, "prediction": str} if task_type != "regression" else {}
    try:
        table = pd.read_csv(path, sep="\t", dtype={"id": str, **text}, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, EOFError) as exc:
        raise InputError(f"not a readable predictions table ({exc}); rerun `plmexit probe`") from None
    if list(table.columns) != tables.PREDICTION_COLUMNS:
        raise InputError(f"columns {list(table.columns)} are not {tables.PREDICTION_COLUMNS}; pass the predictions file written by `plmexit probe`")
    return tables.decode_multilabel(table) if task_type == "multilabel" else table


def _read_json(path: str | Path, writer: str, keys: tuple[str, ...]) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a file written by {writer} ({exc})") from None
    missing = [key for key in keys if not isinstance(data, dict) or key not in data]
    if missing:
        raise InputError(f"{path}: lacks {', '.join(missing)}; pass a file written by {writer}")
    return data


def summarize_selections(selection_files: list[str | Path], out: str | Path, across_out: str | Path, n_boot: int, seed: int) -> pd.DataFrame:
    """Gather every selection into ``best_layers.tsv``, and the per-model view across tasks."""
    summary = choice.summarize([_read_json(p, "`plmexit select`", tuple(choice.SUMMARY_COLUMNS)) for p in selection_files])
    write_text(out, summary.to_csv(sep="\t", index=False, float_format="%.6g"))
    write_text(across_out, choice.across_tasks(summary, n_boot, seed).to_csv(sep="\t", index=False, float_format="%.6g"))
    return summary


def summarize_proteingym(
    selection_files: list[str | Path], predictions_files: list[str | Path], task_tables: list[str | Path], model_names: dict[str, str],
    out: str | Path,
) -> pd.DataFrame:
    """ProteinGym's supervised merge format (``DMS_id, model_name, fold_variable_name, Spearman, MSE``).

    The ``i``-th selection, predictions file and task table belong to one (model, task); Spearman
    and MSE are ProteinGym's, pooled over out-of-fold predictions on standardised targets (see
    ``proteingym.merge_scores``). ``model_names`` maps a config model id to the name used in
    ``model_name`` (``@final`` and ``@selected`` are appended), e.g. ``esm2_8M -> esm2_t6_8M_UR50D``.
    """
    if not len(selection_files) == len(predictions_files) == len(task_tables):
        raise InputError(
            f"{len(selection_files)} selections, {len(predictions_files)} predictions files and {len(task_tables)} task tables; "
            "pass one of each per ProteinGym task, in the same order"
        )
    rows = []
    for path, predictions_file, task_table in zip(selection_files, predictions_files, task_tables):
        selection = _read_json(path, "`plmexit select`", ("model", "task", "n_layers", "folds", "task_info"))
        if not selection["task_info"].get("dms_id"):
            raise InputError(f"{path}: not a ProteinGym task's selection; pass only ProteinGym selections")
        try:
            predictions = _read_predictions(predictions_file, "regression")
        except InputError as exc:
            raise InputError(f"{predictions_file}: {exc}") from None
        found = sorted(set(zip(predictions["model"].astype(str), predictions["task"].astype(str))))
        if found != [(selection["model"], selection["task"])]:
            raise InputError(
                f"{predictions_file} holds (model, task) {found}, but {path} is {selection['model']}/{selection['task']}; "
                "pass each selection's own predictions, in the same order"
            )
        name = model_names.get(selection["model"], selection["model"])
        table = tasks.read_task_table(task_table, "regression")
        try:
            rows.extend(proteingym.supervised_rows(selection, name, predictions, table))
        except InputError as exc:
            raise InputError(f"{predictions_file} with {task_table}: {exc}") from None
    table = pd.DataFrame(rows, columns=proteingym.MERGE_COLUMNS).sort_values(["DMS_id", "fold_variable_name", "model_name"])
    write_text(out, table.to_csv(index=False, float_format="%.6g"))
    return table


def plot_task(probe_table: str | Path, selection_file: str | Path, cost_file: str | Path, out: str | Path) -> None:
    """Figure of the selection metric (test and training-only) against layer for one (model, task), time saved beside it."""
    selection = _read_json(selection_file, "`plmexit select`", ("metric", "n_layers", "n_folds", "status", "deployed_layer", "nested_score", "fold_layers"))
    costs = _read_json(cost_file, "`plmexit cost`", ("n_layers", "seconds"))
    figures.plot_layers(read_probe_table(probe_table), selection, costs["seconds"], out)


def plot_summary(summary_file: str | Path, out: str | Path) -> None:
    """Figure of the gain (with its interval) against the compute saved, every model and task."""
    try:
        summary = pd.read_csv(summary_file, sep="\t")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{summary_file}: not a readable summary ({exc}); rerun `plmexit summarize`") from None
    figures.plot_gain_vs_compute(summary, out)
