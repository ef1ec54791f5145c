"""The early-exit step: calibrate each outer fold's controller on its training rows, report it on its test rows.

Invariant: as every module of ``plmexit.pipeline``: one function per CLI command, reading its
inputs, calling the computing modules (``plmexit.exit``) and writing its outputs atomically. For
outer fold ``f`` the probes, the calibration and the deployed layer (fold ``f``'s own nested
choice) see only fold ``f``'s training rows; its test rows are read once, to report. Hart's
test-swept threshold is written beside, labelled ``hart_test_swept``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from plmexit.atomic import write_json, write_text
from plmexit.data import tasks
from plmexit.embedding import store
from plmexit.errors import InputError
from plmexit.exit import calibration, gates
from plmexit.exit.controller import reference_layer, warn_calibration
from plmexit.exit.evaluation import row_flops, summarize_exits, task_metric
from plmexit.exit.outputs import fold_outputs
from plmexit.pipeline.reading import read_hyperparameters, read_json, read_tsv
from plmexit.probing.folds import evaluation_folds
from plmexit.probing.selection import Selection
from plmexit.probing.tables import task_targets
from plmexit.settings import ExitSettings  # noqa: F401 - re-exported: declared with the other settings

log = logging.getLogger(__name__)

# What each row of an exit table describes: a static layer (every row stops there), the calibrated
# controller, or Hart's protocol (threshold read off the test rows: optimistic).
KINDS = ("static", "calibrated", "hart_test_swept")
EXIT_COLUMNS = [
    "model", "task", "fold", "gate", "kind", "layer", "threshold", "certified", "reference_layer", "n_calibration", "n_rows",
    "metric", "score", "disagreement", "mean_layer", "median_layer", "fraction_early", "layers_saved", "flops_saved", "time_saved_estimate",
]

SUMMARY_COLUMNS = [
    "model", "task", "gate", "kind", "layer", "n_folds", "metric", "score", "disagreement", "max_fold_disagreement", "folds_over_epsilon",
    "mean_layer", "layers_saved", "flops_saved", "time_saved_estimate", "certified_folds",
    "time_saved_measured", "time_saved_measured_one_deep", "gate_overhead", "timed_layers_saved",
]


def exit_task(
    embeddings: str | Path, task_table: str | Path, probe_table: str | Path, selection_file: str | Path, cost_file: str | Path,
    model: str, task: str, task_type: str, metric: str, settings: ExitSettings, out: str | Path, info_out: str | Path,
) -> pd.DataFrame:
    """Per outer fold and gate: the calibrated controller and Hart's test-swept one, and every static layer, on the test rows.

    Writes the long table (``EXIT_COLUMNS``) to ``out`` and, to ``info_out``, the settings and per
    fold and gate the thresholds tested in sequence with their p-values and the exit-layer histograms.
    """
    calibration.check_budget(settings.epsilon, settings.delta)
    table = tasks.read_task_table(task_table, task_type)
    info = store.read_task_info(embeddings, table, task_table)
    selection = Selection.from_json(selection_file)
    costs = read_json(cost_file, "`plmexit cost`", ("model", "n_layers", "seconds"))
    L = info.n_layers
    for name, found in ((selection_file, selection.n_layers), (cost_file, costs["n_layers"])):
        if found != L:
            raise InputError(f"{name} describes {found} layers but {embeddings} holds {L}; rerun the pipeline for one model")
    hyper = read_hyperparameters(probe_table, L)
    applicable = [g for g in settings.gates if g in gates.GATES[task_type]]
    if not applicable:
        raise InputError(f"none of exit.gates ({', '.join(settings.gates)}) applies to {task_type} task {task!r}; add one of {', '.join(gates.GATES[task_type])}")
    y, classes = task_targets(table, task_type)
    folds = table["fold"].to_numpy()
    layers = [store.read_layer(embeddings, k) for k in range(L + 1)]
    flops = row_flops(np.array([len(s) for s in table["sequence"]]) + 2, info.dim)
    seconds = np.asarray(costs["seconds"], dtype=float)
    fold_layers = {f.fold: f.layer for f in selection.folds}
    rows, details = [], []
    for fold in evaluation_folds(folds):
        if fold not in hyper.columns:
            raise InputError(f"{probe_table} has no hyperparameter rows for fold {fold}; rerun `plmexit probe` on {task_table}")
        train, test = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
        cal, tested = fold_outputs(lambda k: layers[k], y, task_type, classes, train, test, hyper[fold].to_numpy(), settings.inner_folds, settings.seed)
        tolerance = settings.tolerance * float(np.std(y[train])) if task_type == "regression" else 0.0
        reference = reference_layer(settings.fallback, L, fold_layers.get(fold))
        truth = y[test]

        def report(kind, gate, exits, threshold=np.nan, certified=None, n_cal=0, layer=None):
            numbers = summarize_exits(tested, exits, reference, task_type, tolerance, truth, metric, classes, flops[test], seconds)
            rows.append({
                "model": model, "task": task, "fold": fold, "gate": gate, "kind": kind, "layer": layer, "threshold": threshold,
                "certified": certified, "reference_layer": reference, "n_calibration": n_cal, **numbers,
            })
            return numbers

        for k in range(L + 1):
            report("static", "-", np.full(len(test), k), layer=k)
        for gate in applicable:
            grid = gates.threshold_grid(gate, settings.n_thresholds, settings.max_patience)
            first = min(settings.first_layer, reference)
            chosen = calibration.learn_then_test(cal, gate, task_type, grid, settings.epsilon, settings.delta, first, reference, tolerance)
            exits = chosen.controller.exit_layers(gates.gate_scores(tested, gate, task_type, tolerance))
            numbers = report("calibrated", gate, exits, chosen.controller.threshold, chosen.certified, chosen.n_calibration)
            hart, sweep = calibration.hart_swept(
                tested, gate, task_type, grid, first, reference, lambda out: task_metric(task_type, metric, truth, out, classes), tolerance,
            )
            hart_numbers = report("hart_test_swept", gate, hart.exit_layers(gates.gate_scores(tested, gate, task_type, tolerance)), hart.threshold)
            details.append({
                "fold": fold, "gate": gate, "reference_layer": reference, "certified": chosen.certified, "threshold": chosen.controller.threshold,
                "tested": chosen.tested, "exit_histogram": numbers["exit_histogram"], "hart_threshold": hart.threshold,
                "hart_exit_histogram": hart_numbers["exit_histogram"], "hart_sweep": sweep,
            })
    result = pd.DataFrame(rows, columns=EXIT_COLUMNS)
    calibrated = result[result.kind == "calibrated"]
    warn_calibration(
        f"{model}/{task}", "(fold, gate) controllers", int((calibrated.disagreement > settings.epsilon).sum()),
        int((~calibrated.certified.astype(bool)).sum()), len(calibrated), settings, "those rows all run to the reference layer",
    )
    write_text(out, result.to_csv(sep="\t", index=False, float_format="%.6g"))
    meta = {
        "model": model, "task": task, "task_type": task_type, "metric": metric, "n_layers": L, "settings": asdict(settings),
        "risk": "rate at which the exited prediction disagrees with the reference layer's (full depth, or the fold's deployed layer)",
        "guarantee": "Learn-then-Test, exact binomial p-values, fixed-sequence testing from the most conservative threshold: with probability "
                     "at least 1 - delta over the calibration rows, risk <= epsilon on rows exchangeable with them",
        "calibration_rows": "inner-fold out-of-fold probe outputs of each outer fold's training rows",
        "hart_test_swept": "threshold chosen on the test rows (Hart et al.'s protocol): optimistic, for comparison only",
        "folds": details,
    }
    write_json(info_out, meta)
    return result

# Measured columns (``plmexit exit-timing``, one fold's test sequences): a calibrated row gets its gate's
# adaptive forward; the static row of the timed static layer its static forward, full depth 0; other rows none.
MEASURED = ("time_saved_measured", "time_saved_measured_one_deep", "gate_overhead", "timed_layers_saved")


def _measured(timings: pd.DataFrame, model: str, task: str, gate: str, kind: str, layer: int | None) -> dict:
    mine = timings[(timings.model == model) & (timings.task == task)]
    found = dict.fromkeys(MEASURED, None)
    if mine.empty:
        return found
    if kind == "calibrated":
        runs = mine[mine.gate == gate].set_index("run")
        if "adaptive" in runs.index:
            found.update(time_saved_measured=runs.at["adaptive", "time_saved"], gate_overhead=runs.at["adaptive", "gate_overhead"],
                         timed_layers_saved=runs.at["adaptive", "layers_saved"])
        if "adaptive_one_deep" in runs.index:
            found["time_saved_measured_one_deep"] = runs.at["adaptive_one_deep", "time_saved"]
    elif kind == "static":
        for run in ("full_depth", "static_layer"):
            rows = mine[(mine.run == run) & (mine.layer == layer)]
            if len(rows):
                found.update(time_saved_measured=float(rows["time_saved"].mean()), timed_layers_saved=float(rows["layers_saved"].mean()))
    return found


def summarize_exit_tables(exit_tables: list[str | Path], epsilon: float, out: str | Path, timing_tables: list[str | Path] = ()) -> pd.DataFrame:
    """One row per (model, task, gate, kind[, static layer]): means over outer folds, and in how many folds the
    test disagreement exceeded ``epsilon``; with ``timing_tables`` (``plmexit exit-timing``), the measured time saved
    beside the estimated one."""
    parts = [read_tsv(p, "exit table", "`plmexit exit`") for p in exit_tables]
    timings = pd.concat([read_tsv(p, "timing table", "`plmexit exit-timing`") for p in timing_tables], ignore_index=True) if timing_tables else None
    rows = []
    for frame in parts:
        frame = frame.assign(layer=frame["layer"].fillna(-1))
        for (model, task, gate, kind, layer), g in frame.groupby(["model", "task", "gate", "kind", "layer"], sort=True):
            rows.append({
                "model": model, "task": task, "gate": gate, "kind": kind, "layer": None if layer < 0 else int(layer), "n_folds": len(g),
                "metric": g["metric"].iloc[0], "score": g["score"].mean(), "disagreement": g["disagreement"].mean(),
                "max_fold_disagreement": g["disagreement"].max(), "folds_over_epsilon": int((g["disagreement"] > epsilon).sum()),
                "mean_layer": g["mean_layer"].mean(), "layers_saved": g["layers_saved"].mean(), "flops_saved": g["flops_saved"].mean(),
                "time_saved_estimate": g["time_saved_estimate"].mean(),
                "certified_folds": int(g["certified"].astype(str).str.lower().eq("true").sum()) if kind == "calibrated" else None,
                **(_measured(timings, model, task, gate, kind, None if layer < 0 else int(layer)) if timings is not None else {}),
            })
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    write_text(out, summary.to_csv(sep="\t", index=False, float_format="%.6g"))
    return summary


def plot_exit_table(exit_table: str | Path, out: str | Path, timing_table: str | Path | None = None) -> None:
    """The early-exit figure of one (model, task) from its exit table (and its measured timing, when given)."""
    from plmexit.reporting.exit_figure import plot_exit  # matplotlib only where a figure is drawn

    timing = read_tsv(timing_table, "timing table", "`plmexit exit-timing`") if timing_table else None
    plot_exit(read_tsv(exit_table, "exit table", "`plmexit exit`"), out, timing)
