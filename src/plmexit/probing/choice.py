"""Choose the layer per task from a probe table without looking at test scores, and say how sure.

Invariant: the layer for evaluation fold ``f`` is chosen from the ``inner_<metric>`` scores,
which probes compute on fold ``f``'s training rows only; the *nested score* is the mean over
folds of the test score of each fold's own chosen layer, so it estimates how well the selection
procedure does on data it has not seen. The *deployed layer* is the same procedure run on the
rows that are never test rows (``folds.deploy_rows``; probe-table fold ``DEPLOY_FOLD``): the
layer a user ships, whose savings are reported beside the nested estimate, with the folds'
choices and how often they agree with it.
A layer whose inner score is NaN (its training features carry no variation) is never chosen; a
task where no layer can be chosen is reported as ``no_signal``, never as a saving. The
``oracle`` layer (best mean test score) is reported too and is optimistic by construction.
Intervals are percentile bootstraps with a fixed seed: over test items or, for a ProteinGym
assay under any fold scheme, over mutated positions (paired) for one task's gain; over tasks
(each assay once) for the mean gain.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd

from plmexit.data.proteingym import BUILT_SUFFIX
from plmexit.errors import InputError
from plmexit.probing.folds import DEPLOY_FOLD
from plmexit.probing.metrics import CONFUSION_METRICS, METRICS, confusion, fmax_of_terms, fmax_terms
from plmexit.probing.probes import HYPERPARAMETER, HYPERPARAMETER_EDGE, INNER_PREFIX
from plmexit.probing.selection import Selection

CONFIDENCE_LEVEL = 0.95
# Multi-label metrics a bootstrap resample scores from per-item terms computed once (``metrics.fmax_terms``):
# the same value as the metric on the resample's rows, without comparing every class score at every
# threshold again (DeepFRI EC's 1,919 test chains have hundreds of classes).
TERM_METRICS = {"fmax": (fmax_terms, fmax_of_terms)}
# Rows of a probe table that record what was fitted, not how well.
NOT_SCORES = (HYPERPARAMETER, HYPERPARAMETER_EDGE)
STATUS_OK = "ok"
STATUS_NO_SIGNAL = "no_signal"
# The verdict of a task where neither the nested selection nor the final layer beats the chance
# predictor beyond its interval (``not_above_chance``, README "Baselines"): no saving is reported for it.
NOT_ABOVE_CHANCE = "not_above_chance"
# Below this many items in a test fold one item moves accuracy by 5 points or more and a Spearman
# by as much; 30 noise labels in 5 folds of 6 gave a "gain" of 0.16. Such tasks get a warning and
# the verdict ``too_little_data`` whatever their interval says. Counted in the unit the bootstrap
# resamples (the selection's ``test_unit``): mutated positions for a ProteinGym assay, else items.
MIN_TEST_FOLD_ITEMS = 20
# Below this many tasks (assays) an across-task interval gets the verdict ``too_little_data``: a 95%
# percentile bootstrap of a mean over n normal values covers the true mean in 73% of draws at n = 3,
# 83% at 5 and 90% at 10 (2,000 draws of 1,000 resamples), and an interval over fewer says little.
MIN_ACROSS_TASKS = 10
# An interval wider than this (in the metric's units: Spearman, accuracy, Fmax, F1 and MCC all
# span at most 2) cannot separate a real gain from none at the sizes reported in the literature
# (+0.4 to +7 points), so the verdict is ``too_little_data``.
MAX_INTERVAL_WIDTH = 0.3
VERDICTS = {
    "better_than_final": "better than the final layer",
    "worse_than_final": "worse than the final layer",
    "not_distinguishable": "not distinguishable from the final layer",
    "too_little_data": "too little data to tell",
    STATUS_NO_SIGNAL: "no layer carries a signal",
    NOT_ABOVE_CHANCE: "no layer beats chance",
}


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0
    return float(np.quantile(values, tail)), float(np.quantile(values, 1.0 - tail))


def choose_layer(inner_scores: pd.Series, tolerance: float) -> int | None:
    """The shallowest layer whose inner score is within ``tolerance`` of the best; NaN layers are never chosen.

    ``None`` when every layer's score is NaN (no layer carries a signal to choose by).
    """
    scores = inner_scores.dropna()
    if scores.empty:
        return None
    return int(scores[scores >= scores.max() - tolerance].index.min())


def select_layer(table: pd.DataFrame, metric: str, tolerance: float = 0.0) -> dict:
    """Nested-by-fold layer choice, and the deployed layer, for one (model, task) probe table.

    Within each evaluation fold the shallowest layer whose inner score is within ``tolerance``
    of that fold's best inner score wins, so equal accuracy goes to the cheaper model; the
    deployed layer is chosen the same way from the inner scores on the deploy rows (``folds.deploy_rows``).
    """
    if table["model"].nunique() != 1 or table["task"].nunique() != 1:
        raise InputError("a probe table must hold one model and one task; select each (model, task) on its own")
    inner_metric = INNER_PREFIX + metric
    for name in (metric, inner_metric):
        if not (table["metric"] == name).any():
            raise InputError(f"no {name!r} rows (metrics: {', '.join(sorted(table['metric'].unique()))}); select by the metric the probes were run with")
    if not ((table["metric"] == inner_metric) & (table["fold"] == DEPLOY_FOLD)).any():
        raise InputError(f"no {inner_metric!r} rows for fold {DEPLOY_FOLD} (the deploy rows), so no deployed layer; rerun `plmexit probe`")
    evaluated = table[table.fold != DEPLOY_FOLD]
    test = evaluated[evaluated.metric == metric].pivot(index="layer", columns="fold", values="value")
    inner = table[table.metric == inner_metric].pivot(index="layer", columns="fold", values="value")
    hyper = table[table.metric == HYPERPARAMETER].pivot(index="layer", columns="fold", values="value")
    edge = table[table.metric == HYPERPARAMETER_EDGE].pivot(index="layer", columns="fold", values="value")
    every = evaluated[~evaluated.metric.str.startswith(INNER_PREFIX) & ~evaluated.metric.isin(NOT_SCORES)]
    every = every.set_index(["fold", "layer", "metric"])["value"].sort_index()
    n_layers = int(test.index.max())
    folds = []
    for fold in test.columns:
        chosen = choose_layer(inner[fold], tolerance)
        folds.append(
            {
                "fold": int(fold),
                "layer": chosen,
                "inner_score": None if chosen is None else float(inner.at[chosen, fold]),
                "test_score": None if chosen is None else float(test.at[chosen, fold]),
                "final_test_score": float(test.at[n_layers, fold]),
                # Every test metric (e.g. MSE beside Spearman) of the chosen and of the final layer.
                "test_metrics": {} if chosen is None else {str(k): float(v) for k, v in every.loc[(fold, chosen)].items()},
                "final_test_metrics": {str(k): float(v) for k, v in every.loc[(fold, n_layers)].items()},
                "hyperparameter": _cell(hyper, chosen, fold),
                "final_hyperparameter": _cell(hyper, n_layers, fold),
            }
        )
    deployed = choose_layer(inner[DEPLOY_FOLD], tolerance)
    mean_test = test.mean(axis=1)
    # A layer with no signal on the deploy rows is no candidate, not even for the oracle.
    candidates = mean_test[inner[DEPLOY_FOLD].reindex(mean_test.index).notna()]
    no_signal = deployed is None or any(f["layer"] is None for f in folds)
    fold_layers = [f["layer"] for f in folds]
    final_score = float(mean_test[n_layers])
    (model,), (task,) = table["model"].unique(), table["task"].unique()
    selection = {
        "model": str(model),
        "task": str(task),
        "metric": metric,
        "status": STATUS_NO_SIGNAL if no_signal else STATUS_OK,
        "n_layers": n_layers,
        "n_folds": len(folds),
        "tolerance": tolerance,
        "deployed_layer": deployed,
        "deployed_inner_score": None if deployed is None else float(inner.at[deployed, DEPLOY_FOLD]),
        "deployed_hyperparameter": _cell(hyper, deployed, DEPLOY_FOLD),
        "fold_layers": fold_layers,
        "fold_agreement": None if no_signal else float(np.mean([layer == deployed for layer in fold_layers])),
        "nested_score": None if no_signal else float(np.mean([f["test_score"] for f in folds])),
        "final_score": final_score,
        "gain": None,
        "deployed_compute_saved": None if no_signal else (n_layers - deployed) / n_layers,
        "folds_compute_saved": None if no_signal else float(np.mean([(n_layers - layer) / n_layers for layer in fold_layers])),
        "oracle_layer": int(candidates.idxmax()) if len(candidates) else None,
        "oracle_score": float(candidates.max()) if len(candidates) else None,
        "folds": folds,
        "mean_test_score_by_layer": {int(k): float(v) for k, v in mean_test.items()},
        "hyperparameters_on_grid_edge": _edges(edge, hyper, folds, deployed),
    }
    if not no_signal:
        selection["gain"] = selection["nested_score"] - final_score
    return selection


def _cell(table: pd.DataFrame, layer: int | None, fold: int) -> float | None:
    if layer is None or table.empty or fold not in table.columns or layer not in table.index or pd.isna(table.at[layer, fold]):
        return None
    return float(table.at[layer, fold])


def _edges(edge: pd.DataFrame, hyper: pd.DataFrame, folds: list[dict], deployed: int | None) -> list[dict]:
    """The chosen (fold, layer) probes whose regularisation sits on the edge of its grid (a wider grid might score better)."""
    chosen = [(f["fold"], f["layer"]) for f in folds] + [(DEPLOY_FOLD, deployed)]
    found = []
    for fold, layer in chosen:
        side = _cell(edge, layer, fold)
        if side:
            found.append({"fold": fold, "layer": layer, "value": _cell(hyper, layer, fold), "edge": "lowest" if side < 0 else "highest"})
    return found


def bootstrap_gain(
    predictions: pd.DataFrame, selection: dict, task_type: str, n_boot: int, seed: int, level: float = CONFIDENCE_LEVEL,
    clusters: dict[str, object] | None = None,
) -> tuple[float, float]:
    """Percentile interval of the gain (each fold's chosen layer minus the final layer), resampling test units.

    Within each fold the same resampled units score both the fold's chosen layer and the final
    layer (a paired bootstrap); the gain of a resample is the mean over folds, as ``nested_score -
    final_score`` is. A unit is one test item, or with ``clusters`` (item id -> cluster key, e.g.
    the mutated position) all items of one cluster, drawn together: variants at one position
    share error, and resampling them singly makes the interval too narrow. Where every cluster
    lies in one fold (folds that hold out whole positions) clusters are drawn within each fold;
    where clusters cross folds (random folds test every position in several folds) a resample
    draws clusters once for all folds and each fold scores its items of the drawn clusters, so a
    position's shared error moves every fold of the resample alike (a fold left with no item in
    a resample is left out of that resample's mean). The probes are not refitted and the layers
    not re-chosen, so the interval covers the test sample's variability only.
    """
    if selection["metric"] not in METRICS.get(task_type, {}):
        raise InputError(f"metric {selection['metric']!r} is not a {task_type} metric ({', '.join(METRICS.get(task_type, {}))})")
    if selection.get("status", STATUS_OK) != STATUS_OK:
        raise InputError(f"task {selection['task']!r} has no layer to compare with the final one ({selection['status']})")
    metric = METRICS[task_type][selection["metric"]]
    final = selection["n_layers"]
    pairs, fold_keys = [], []
    for fold in selection["folds"]:
        rows = predictions[predictions.fold == fold["fold"]]
        chosen = rows[rows.layer == fold["layer"]].sort_values("id")
        last = rows[rows.layer == final].sort_values("id")
        if len(chosen) == 0 or not np.array_equal(chosen["id"].to_numpy(), last["id"].to_numpy()):
            raise InputError(f"predictions for fold {fold['fold']} do not cover layers {fold['layer']} and {final} alike; rerun `plmexit probe`")
        ids = chosen["id"].to_numpy()
        if clusters is None:
            units = [np.array([i]) for i in range(len(ids))]
        else:
            missing = [i for i in ids if i not in clusters]
            if missing:
                raise InputError(f"predictions for fold {fold['fold']}: item {missing[0]!r} has no cluster; this is a bug, please report it")
            keys = pd.Series([clusters[i] for i in ids]).astype(str).to_numpy()
            units = [np.flatnonzero(keys == key) for key in dict.fromkeys(keys)]
            fold_keys.append(keys)
        truth, selected, last = _values(chosen["label"]), _values(chosen["prediction"]), _values(last["prediction"])
        fold_metric = metric
        if task_type == "classification" and selection["metric"] in CONFUSION_METRICS:
            # Labels as integer codes, each resample scored from its confusion matrix (same values, far less overhead).
            labels, codes = np.unique(np.concatenate([truth, selected, last]), return_inverse=True)
            truth, selected, last = np.split(codes.reshape(-1), 3)
            fold_metric = partial(_confusion_metric, CONFUSION_METRICS[selection["metric"]], len(labels))
        elif task_type == "multilabel" and selection["metric"] in TERM_METRICS:
            # Each item's terms of the metric, computed once; a resample sums its items' terms (the same value).
            terms, of_terms = TERM_METRICS[selection["metric"]]
            selected, last = terms(truth, selected), terms(truth, last)
            fold_metric = partial(_metric_of_terms, of_terms)
        pairs.append((truth, selected, last, units, fold_metric))
    rng = np.random.default_rng(seed)
    gains = np.empty(n_boot)
    if fold_keys and sum(len(set(k)) for k in fold_keys) > len(set().union(*map(set, fold_keys))):
        return _percentile_interval(_crossing_cluster_gains(pairs, fold_keys, n_boot, rng), level)
    for b in range(n_boot):
        per_fold = []
        for truth, selected, last, units, fold_metric in pairs:
            draw = rng.integers(0, len(units), len(units))
            items = np.concatenate([units[u] for u in draw])
            per_fold.append(fold_metric(truth[items], selected[items]) - fold_metric(truth[items], last[items]))
        gains[b] = np.mean(per_fold)
    return _percentile_interval(gains, level)


def _crossing_cluster_gains(pairs: list[tuple], fold_keys: list[np.ndarray], n_boot: int, rng) -> np.ndarray:
    """``n_boot`` resampled gains drawing clusters once for all folds (clusters that cross folds; see ``bootstrap_gain``)."""
    distinct = list(dict.fromkeys(np.concatenate(fold_keys)))
    position = {key: k for k, key in enumerate(distinct)}
    item_cluster = [np.array([position[key] for key in keys]) for keys in fold_keys]
    gains = np.empty(n_boot)
    for b in range(n_boot):
        counts = np.bincount(rng.integers(0, len(distinct), len(distinct)), minlength=len(distinct))
        per_fold = []
        for (truth, selected, last, _, fold_metric), cluster in zip(pairs, item_cluster):
            items = np.repeat(np.arange(len(cluster)), counts[cluster])  # each item as often as its cluster was drawn
            if len(items):
                per_fold.append(fold_metric(truth[items], selected[items]) - fold_metric(truth[items], last[items]))
        gains[b] = np.mean(per_fold)
    return gains


def _confusion_metric(from_confusion, n_labels: int, truth: np.ndarray, predicted: np.ndarray) -> float:
    return from_confusion(confusion(truth, predicted, n_labels))


def _metric_of_terms(of_terms, truth: np.ndarray, terms: np.ndarray) -> float:
    return of_terms(terms)


def _values(column: pd.Series) -> np.ndarray:
    """A predictions column as an array; rows holding vectors (multi-label) become a matrix."""
    values = column.to_numpy()
    return np.stack(values) if len(values) and isinstance(values[0], np.ndarray) else values


# One row per (model, task). Each number names the layer(s) it describes: ``deployed_*`` the
# deployed layer, ``fold_*``/``folds_*``/``nested_score`` each fold's own choice, ``final_*`` layer
# L, ``oracle_*`` the best test layer.
SUMMARY_COLUMNS = [
    "model", "task", "dms_id", "fold_scheme", "metric", "status", "verdict", "n_layers", "deployed_layer", "deployed_compute_saved",
    "deployed_time_saved", "fold_layers", "fold_agreement", "nested_score", "final_score", "gain", "gain_ci_low", "gain_ci_high",
    "folds_compute_saved", "folds_time_saved", "oracle_layer", "oracle_score", "n_folds", "min_test_fold_size", "test_unit", "split", "n_sequences",
    "n_truncated", "layer_norm",
]
# The baselines (``plmexit.probing.baselines``), appended: their scores (mean test score over the
# folds, as ``final_score``), the gain of the final layer and of the nested selection over chance,
# and of the final layer over the feature baseline (``baseline_features``: onehot or composition),
# each with its paired bootstrap interval (``baseline_gains``). Empty where the probe step ran none.
BASELINE_SUMMARY_COLUMNS = [
    "chance_score", "baseline_features", "baseline_score", "nested_gain_over_chance", "nested_gain_over_chance_ci_low",
    "nested_gain_over_chance_ci_high", "final_gain_over_chance", "final_gain_over_chance_ci_low", "final_gain_over_chance_ci_high",
    "final_gain_over_baseline", "final_gain_over_baseline_ci_low", "final_gain_over_baseline_ci_high",
]
SUMMARY_COLUMNS += BASELINE_SUMMARY_COLUMNS


def verdict(selection: dict) -> str:
    """What the gain's interval says, in one of ``VERDICTS``' keys; small test folds or a wide interval say nothing."""
    if selection["status"] != STATUS_OK:
        return selection["status"]
    if not_above_chance(selection):
        return NOT_ABOVE_CHANCE
    if selection["min_test_fold_size"] < MIN_TEST_FOLD_ITEMS:
        return "too_little_data"
    return _interval_verdict(selection["gain_ci_low"], selection["gain_ci_high"])


def _interval_verdict(low: float, high: float) -> str:
    """An interval of a gain, in one of ``VERDICTS``' keys: wider than ``MAX_INTERVAL_WIDTH`` says nothing."""
    if not high - low <= MAX_INTERVAL_WIDTH:  # NaN too: no interval
        return "too_little_data"
    if low > 0:
        return "better_than_final"
    if high < 0:
        return "worse_than_final"
    return "not_distinguishable"


def describe(row: dict) -> str:
    """One line a person reads at the end of a run: the deployed layer, its score against the final one, the verdict."""
    if row["status"] != STATUS_OK:
        return f"{row['model']} / {row['task']}: {VERDICTS[row['status']]} (see its selection JSON)"
    if row["verdict"] == NOT_ABOVE_CHANCE:
        return (
            f"{row['model']} / {row['task']}: {VERDICTS[NOT_ABOVE_CHANCE]}: {row['metric']} {row['nested_score']:.3f} (nested) and "
            f"{row['final_score']:.3f} (final layer) against {row['chance_score']:.3f} by chance (95% intervals of the gains over chance "
            f"start at {row['nested_gain_over_chance_ci_low']:+.3f} and {row['final_gain_over_chance_ci_low']:+.3f}); no layer to deploy, no saving"
        )
    return (
        f"{row['model']} / {row['task']}: layer {int(row['deployed_layer'])} of {int(row['n_layers'])}, "
        f"{row['metric']} {row['nested_score']:.3f} against {row['final_score']:.3f} at the final layer "
        f"(gain {row['gain']:+.3f}, 95% interval {row['gain_ci_low']:+.3f} to {row['gain_ci_high']:+.3f}), "
        f"{100 * row['deployed_time_saved']:.0f}% of forward time saved: {VERDICTS[row['verdict']]}"
    )
# The separator of ``fold_layers`` in the summary table.
FOLD_LAYER_SEPARATOR = ";"


def summarize(selections: list[Selection]) -> pd.DataFrame:
    """One row per (model, task) selection, sorted; ``fold_layers`` as ``2;2;6;6;5``."""
    rows = []
    for s in selections:
        row = {key: getattr(s, key) for key in SUMMARY_COLUMNS}
        row["fold_layers"] = FOLD_LAYER_SEPARATOR.join("-" if layer is None else str(layer) for layer in s.fold_layers)
        rows.append(row)
    rows = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    return rows.sort_values(["model", "task"]).reset_index(drop=True)


ACROSS_TASK_COLUMNS = [
    "model", "metric", "scheme", "n_tasks", "n_no_signal", "final_selected_fraction", "final_oracle_fraction", "mean_gain",
    "mean_gain_ci_low", "mean_gain_ci_high", "verdict", "mean_deployed_compute_saved", "mean_deployed_time_saved",
]
# Appended: tasks whose verdict is ``not_above_chance``, left out of the means and fractions as ``no_signal`` ones are.
ACROSS_TASK_COLUMNS += ["n_not_above_chance"]
# ``scheme`` of tasks that have no ProteinGym fold scheme, and of the row that averages each assay over its schemes.
NO_SCHEME = "-"
ALL_SCHEMES = "all"


def across_tasks(summary: pd.DataFrame, n_boot: int, seed: int, level: float = CONFIDENCE_LEVEL) -> pd.DataFrame:
    """Per model, metric and ProteinGym fold scheme: how often the final layer wins, and the mean gain over tasks.

    Gains in different metrics are never averaged together. Within a (model, metric, scheme)
    group each assay counts once. The ``all`` scheme row holds only the assays seen under every
    scheme present for that model and metric (a scheme plmexit built counts as the published one
    it rebuilds), each averaged over its schemes (as ProteinGym's overall score averages the
    three), then over assays, so every assay in it is averaged over the same schemes.
    ``final_selected_fraction`` counts tasks whose deployed layer is the final one;
    ``final_oracle_fraction`` those whose best test score is at the final layer, the figure
    same-split studies report (17.9% over 13 PLMs x 15 tasks in PLMSommelier). ``n_tasks`` and
    ``n_no_signal`` count assays (tasks, outside ProteinGym); an assay is ``no_signal`` in a row
    when any of its tasks there is, and means and fractions leave it out; so are assays with a
    ``not_above_chance`` task there (and none ``no_signal``), counted in ``n_not_above_chance``. The interval resamples
    assays; ``verdict`` is ``too_little_data`` below ``MIN_ACROSS_TASKS`` of them with a signal
    or when the interval is wider than ``MAX_INTERVAL_WIDTH``.
    """
    summary = summary.copy()
    def column(name: str) -> pd.Series:
        values = summary[name] if name in summary else pd.Series(None, index=summary.index)
        return values.astype(object).where(values.notna() & (values.astype(str) != ""), None)

    summary["scheme"] = column("fold_scheme").fillna(NO_SCHEME)
    summary["unit"] = column("dms_id").fillna(summary["task"])
    summary["final_selected"] = (summary["deployed_layer"] == summary["n_layers"]).astype(float)
    summary["final_oracle"] = (summary["oracle_layer"] == summary["n_layers"]).astype(float)
    summary["not_above_chance"] = (column("verdict") == NOT_ABOVE_CHANCE).astype(bool)
    rng = np.random.default_rng(seed)
    rows = []
    for (model, metric), group in summary.groupby(["model", "metric"], sort=True):
        parts = [(scheme, g) for scheme, g in group.groupby("scheme", sort=True)]
        schemed = group[group.scheme != NO_SCHEME]
        kinds = schemed["scheme"].str.removesuffix(BUILT_SUFFIX)
        if kinds.nunique() > 1:
            seen = kinds.groupby(schemed["unit"]).nunique()
            parts.append((ALL_SCHEMES, schemed[schemed["unit"].isin(seen.index[seen == kinds.nunique()])]))
        for scheme, part in parts:
            no_signal = (part["status"] != STATUS_OK).groupby(part["unit"]).any()
            at_chance = part["not_above_chance"].groupby(part["unit"]).any() & ~no_signal
            ok = part[part["unit"].isin(no_signal.index[~no_signal & ~at_chance])]
            # Each unit (assay, or task) once: its schemes' values averaged.
            per_unit = ok.groupby("unit")[["gain", "final_selected", "final_oracle", "deployed_compute_saved", "deployed_time_saved"]].mean()
            rows.append(_across_row(model, metric, scheme, len(no_signal), int(no_signal.sum()), per_unit, n_boot, rng, level))
            rows[-1]["n_not_above_chance"] = int(at_chance.sum())
    return pd.DataFrame(rows, columns=ACROSS_TASK_COLUMNS)


def _across_row(model, metric, scheme, n_tasks, n_no_signal, per_unit: pd.DataFrame, n_boot: int, rng, level: float) -> dict:
    gains = per_unit["gain"].to_numpy(dtype=float)
    low = high = np.nan
    if len(gains):
        low, high = _percentile_interval(gains[rng.integers(0, len(gains), (n_boot, len(gains)))].mean(axis=1), level)
    mean = (lambda column: float(per_unit[column].mean())) if len(per_unit) else (lambda column: np.nan)
    return {
        "model": model, "metric": metric, "scheme": scheme, "n_tasks": n_tasks, "n_no_signal": n_no_signal,
        "final_selected_fraction": mean("final_selected"), "final_oracle_fraction": mean("final_oracle"),
        "mean_gain": mean("gain"), "mean_gain_ci_low": low, "mean_gain_ci_high": high,
        "verdict": "too_little_data" if len(gains) < MIN_ACROSS_TASKS else _interval_verdict(low, high),
        "mean_deployed_compute_saved": mean("deployed_compute_saved"), "mean_deployed_time_saved": mean("deployed_time_saved"),
    }


def not_above_chance(selection: dict) -> bool:
    """True when neither the nested selection nor the final layer beats chance: both gains' 95% intervals start at or below 0.

    False where no chance predictor was fitted (its intervals are None).
    """
    lows = (selection.get("nested_gain_over_chance_ci_low"), selection.get("final_gain_over_chance_ci_low"))
    return all(low is not None and not pd.isna(low) for low in lows) and all(low <= 0 for low in lows)


# The layer number a baseline's predictions take while ``bootstrap_gain`` compares it with a layer (never a real layer).
_BASELINE_AS_LAYER = -1


def baseline_scores(table: pd.DataFrame, metric: str) -> dict[str, float]:
    """Each baseline's mean test ``metric`` over the evaluation folds (as ``final_score`` is the final layer's)."""
    if not (table["metric"] == metric).any():
        raise InputError(f"no {metric!r} rows (metrics: {', '.join(sorted(table['metric'].unique()))}); rerun `plmexit probe` with this metric")
    rows = table[(table.metric == metric) & (table.fold != DEPLOY_FOLD)]
    return {str(name): float(values.mean()) for name, values in rows.groupby("baseline", sort=True)["value"]}


def baseline_gains(
    predictions: pd.DataFrame, baseline_predictions: pd.DataFrame, scores: dict[str, float], selection: dict, task_type: str,
    n_boot: int, seed: int, clusters: dict[str, object] | None = None,
) -> dict:
    """The baselines' scores and the gains over them: ``BASELINE_SUMMARY_COLUMNS``' values.

    Gains are of the final layer over chance and over the feature baseline, and of the nested
    selection (each fold's chosen layer) over chance; each point value is a difference of
    means over folds, as ``gain`` is, and each interval is ``bootstrap_gain``'s paired
    bootstrap, same units, resamples and seed as the gain's, with the baseline's predictions in
    place of the final layer's. ``scores`` are ``baseline_scores``' (chance and one feature
    baseline). Nested gains are None where the selection has no signal.
    """
    features = [name for name in scores if name != "chance"]
    if "chance" not in scores or len(features) != 1:
        raise InputError(f"baselines {', '.join(scores)} are not chance and one feature baseline; rerun `plmexit probe --baseline-features ...`")
    (feature,) = features
    final = selection["n_layers"]
    out = dict.fromkeys(BASELINE_SUMMARY_COLUMNS)
    out.update(chance_score=scores["chance"], baseline_features=feature, baseline_score=scores[feature])
    out["final_gain_over_chance"] = selection["final_score"] - scores["chance"]
    out["final_gain_over_baseline"] = selection["final_score"] - scores[feature]
    comparisons = [("final_gain_over_chance", "chance", [final] * len(selection["folds"])),
                   ("final_gain_over_baseline", feature, [final] * len(selection["folds"]))]
    if selection.get("status", STATUS_OK) == STATUS_OK:
        out["nested_gain_over_chance"] = selection["nested_score"] - scores["chance"]
        comparisons.append(("nested_gain_over_chance", "chance", [f["layer"] for f in selection["folds"]]))
    for column, baseline, layers in comparisons:
        rows = baseline_predictions[baseline_predictions.baseline == baseline].drop(columns="baseline").assign(layer=_BASELINE_AS_LAYER)
        paired = pd.concat([predictions[predictions.layer.isin(set(layers))], rows[predictions.columns]], ignore_index=True)
        versus = {
            "task": selection["task"], "metric": selection["metric"], "status": STATUS_OK, "n_layers": _BASELINE_AS_LAYER,
            "folds": [{"fold": f["fold"], "layer": layer} for f, layer in zip(selection["folds"], layers)],
        }
        out[column + "_ci_low"], out[column + "_ci_high"] = bootstrap_gain(paired, versus, task_type, n_boot, seed, clusters=clusters)
    return out
