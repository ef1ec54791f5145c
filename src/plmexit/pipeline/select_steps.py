"""The steps that choose and summarise: the layer of one (model, task), the summary tables, ProteinGym's merge file, a GPU batch's table.

Invariant: as every module of ``plmexit.pipeline``: one function per CLI command, reading its
inputs, calling the computing modules and writing its outputs atomically.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from plmexit.atomic import atomic_directory, write_text
from plmexit.data import proteingym, tasks
from plmexit.embedding import cost
from plmexit.errors import InputError
from plmexit.pipeline.plan_batches import block_parameters
from plmexit.pipeline.reading import (
    read_baseline_predictions,
    read_baseline_table,
    read_json,
    read_predictions,
    read_probe_table,
    read_tsv,
)
from plmexit.probing import choice
from plmexit.probing.selection import TEST_UNIT_CLUSTERS, TEST_UNIT_ITEMS, TEST_UNIT_POSITIONS, Selection

log = logging.getLogger(__name__)


def select_task(
    probe_table: str | Path, predictions: str | Path, cost_file: str | Path, task_info: str | Path,
    task_type: str, metric: str, tolerance: float, n_boot: int, seed: int, out: str | Path,
    baselines: str | Path | None = None, baseline_predictions: str | Path | None = None,
) -> Selection:
    """Choose the layer for one (model, task), add the gain's interval, the cost saved, a verdict and how the task was split; write JSON.

    With ``baselines`` and ``baseline_predictions`` (``plmexit probe --baseline-features``) it adds the
    baselines' scores and the gains over them (``choice.baseline_gains``); a task where neither the
    nested selection nor the final layer beats chance gets the verdict ``not_above_chance`` and no saving.
    """
    if (baselines is None) != (baseline_predictions is None):
        raise InputError("--baselines and --baseline-predictions go together; give both (from `plmexit probe --baseline-features`) or neither")
    try:
        selection = choice.select_layer(read_probe_table(probe_table), metric, tolerance)
    except InputError as exc:
        raise InputError(f"{probe_table}: {exc}") from None
    try:
        table = read_predictions(predictions, task_type)
    except InputError as exc:
        raise InputError(f"{predictions} (predictions for {probe_table}): {exc}") from None
    costs = read_json(cost_file, "`plmexit cost`", ("model", "model_name", "n_layers", "flops", "seconds"))
    if costs["model"] != selection["model"]:
        raise InputError(f"{cost_file} times model {costs['model']!r} but {probe_table} probes {selection['model']!r}; pass the cost file of the same model")
    if costs["n_layers"] != selection["n_layers"]:
        raise InputError(f"{cost_file} describes {costs['n_layers']} layers but {probe_table} has {selection['n_layers']}; rerun `plmexit cost`")
    # What the embedding ran (its layer-norm convention, how many sequences were cut) comes with the cost
    # file, which records the embedding's settings, so selection never reopens the store.
    missing = [key for key in ("layer_norm", "n_truncated") if key not in costs]
    if missing:
        raise InputError(f"{cost_file}: lacks {', '.join(missing)}; rerun `plmexit cost`")
    info = read_json(task_info, "`plmexit prepare`", ("split", "n_sequences", "dms_id", "fold_scheme"))
    ok = selection["status"] == choice.STATUS_OK

    clusters = _position_clusters(info, table["id"])
    selection["test_unit"] = TEST_UNIT_POSITIONS if clusters else TEST_UNIT_ITEMS
    unit = "mutated positions with their variants" if clusters else "test items"
    if clusters is None and info.get("clusters"):
        # Homology folds: sequences of one MMseqs2 cluster share their errors, so the cluster is the unit (no cluster spans two folds).
        clusters, unit = info["clusters"], "MMseqs2 sequence clusters"
        selection["test_unit"] = TEST_UNIT_CLUSTERS
    selection["bootstrap"] = {
        "resamples": n_boot, "seed": seed, "level": choice.CONFIDENCE_LEVEL,
        "unit": unit + ", paired within folds; probes not refitted, layers not re-chosen",
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
    # Counted in the unit the bootstrap resamples: distinct mutated positions where it draws positions.
    final_rows = table[table.layer == selection["n_layers"]]
    sizes = final_rows.groupby("fold")["id"].agg(lambda ids: len({clusters[i] for i in ids})) if clusters else final_rows.groupby("fold").size()
    selection["min_test_fold_size"] = int(sizes.min()) if len(sizes) else 0
    selection["model_name"] = costs["model_name"]
    selection["layer_norm"] = costs["layer_norm"]
    selection["n_truncated"] = int(costs["n_truncated"])
    selection["split"], selection["n_sequences"], selection["task_info"] = info["split"], info["n_sequences"], info
    selection["task_info"] = {k: v for k, v in info.items() if k != "clusters"}  # the clustering's summary stays; each id's cluster is in the task info
    selection["dms_id"], selection["fold_scheme"] = info["dms_id"], info["fold_scheme"]
    selection.update(dict.fromkeys(choice.BASELINE_SUMMARY_COLUMNS))
    if baselines is not None:
        selection.update(_baseline_gains(baselines, baseline_predictions, table, selection, task_type, n_boot, seed, clusters))
    selection["verdict"] = choice.verdict(selection)
    if selection["verdict"] == choice.NOT_ABOVE_CHANCE:
        # No layer is shown to beat a predictor that reads no sequence: a saving of compute that buys nothing is no saving.
        for key in ("deployed_compute_saved", "deployed_time_saved", "folds_compute_saved", "folds_time_saved"):
            selection[key] = None
    _warn_about(selection, task_type)
    record = Selection.from_dict(selection, out)  # every field the record declares, typed: what each reader relies on
    record.to_json(out)
    return record


def _baseline_gains(
    baselines: str | Path, baseline_predictions: str | Path, predictions: pd.DataFrame, selection: dict, task_type: str,
    n_boot: int, seed: int, clusters: dict | None,
) -> dict:
    """``choice.baseline_gains`` from the probe step's baseline files, errors naming them."""
    try:
        scores = choice.baseline_scores(read_baseline_table(baselines), selection["metric"])
        table = read_baseline_predictions(baseline_predictions, task_type)
        return choice.baseline_gains(predictions, table, scores, selection, task_type, n_boot, seed, clusters)
    except InputError as exc:
        raise InputError(f"{baselines} with {baseline_predictions}: {exc}") from None


def _warn_about(selection: dict, task_type: str) -> None:
    """One log line for each thing a user must know before trusting the selection."""
    name = f"{selection['model']}/{selection['task']}"
    if selection["status"] != choice.STATUS_OK:
        log.warning(
            "%s: no layer carries a signal on some training part (every inner score is NaN: the embedded features do not vary); "
            "reported as %s, with no gain or saving", name, selection["status"],
        )
    if selection["verdict"] == choice.NOT_ABOVE_CHANCE:
        log.warning(
            "%s: neither the nested selection (%s %.3f) nor the final layer (%.3f) beats chance (%.3f) beyond its interval; "
            "reported as %s, with no saving", name, selection["metric"], selection["nested_score"], selection["final_score"],
            selection["chance_score"], choice.NOT_ABOVE_CHANCE,
        )
    if selection["verdict"] == "too_little_data":
        log.warning(
            "%s: the smallest test fold has %d %s and the gain's interval is %.2f wide; too little data to tell a layer from the final one",
            name, selection["min_test_fold_size"], selection["test_unit"], selection["gain_ci_high"] - selection["gain_ci_low"],
        )
    edges = selection["hyperparameters_on_grid_edge"]
    if edges:
        log.warning(
            "%s: the chosen probes of %s have their regularisation at the edge of its grid; the best value may lie outside it, widen probe.%s",
            name, ", ".join(f"layer {e['layer']} of fold {e['fold']} ({e['edge']}, {e['value']:g})" for e in edges),
            "ridge_alphas" if task_type == "regression" else "logistic_cs",
        )


def _position_clusters(info: dict, ids: pd.Series) -> dict[str, tuple[int, ...]] | None:
    """For a ProteinGym assay (any fold scheme, published or built), each id's mutated positions (the bootstrap's units); else None.

    Variants at one position share error under every scheme, random folds included (a random
    fold tests positions its training part has seen, and the probe's error there is shared by
    all of them): resampled singly they make the interval too narrow. In
    ``benchmarks/interval_coverage.py`` (true gain 0, position-level effects) the per-variant
    interval under fold_random_5 covers 0 in far fewer draws than its level; the position one does.
    A multi-mutant's unit is its set of positions.
    """
    if not info.get("fold_scheme"):
        return None
    return {i: proteingym.mutated_positions(i) for i in ids.unique()}


def summarize_selections(
    selection_files: list[str | Path], out: str | Path, n_boot: int, seed: int, across_out: str | Path | None = None,
) -> pd.DataFrame:
    """Gather selections into a best-layers table (``best_layers.tsv``, or one cluster batch's), and
    when ``across_out`` is given the per-model view across tasks."""
    summary = choice.summarize([Selection.from_json(p) for p in selection_files])
    write_text(out, summary.to_csv(sep="\t", index=False, float_format="%.6g"))
    if across_out is not None:
        write_text(across_out, choice.across_tasks(summary, n_boot, seed).to_csv(sep="\t", index=False, float_format="%.6g"))
    return summary


GPU_BATCH_COLUMNS = ["model", "step", "set", "shard", "device_name", "precision", "engine", "tokens", "seconds", "tokens_per_second", "tflops"]


def summarize_gpu_batch(shard_records: list[str | Path], cost_files: list[str | Path], out: str | Path) -> pd.DataFrame:
    """A GPU batch's table: a row per embedding shard (``embed --record-out``, in ``{set}.shards/``: the tokens its
    run embedded and their seconds) and per cost timing (``cost``, ``{set}.json``: the sampled tokens and one full
    forward's seconds), each with its device, tokens per second, and TFLOP/s as the planner counts them (two per
    block weight per token, ``plan_batches.block_parameters``): the figure ``schedule.gpu_tflops`` stands for."""
    rows = []
    keys = ("model", "n_layers", "dim", "device_name", "engine", "precision", "seconds")
    for path in shard_records:
        r = read_json(path, "`plmexit embed --record-out`", (*keys, "tokens", "shard"))
        rows.append(_gpu_row(r, "embed", Path(path).parent.name.removesuffix(".shards"), r["shard"], r["tokens"], r["seconds"]))
    for path in cost_files:
        c = read_json(path, "`plmexit cost`", (*keys, "sample_tokens"))
        rows.append(_gpu_row(c, "cost", Path(path).name.removesuffix(".json"), None, c["sample_tokens"], c["seconds"][-1]))
    table = pd.DataFrame(rows, columns=GPU_BATCH_COLUMNS)
    write_text(out, table.to_csv(sep="\t", index=False, float_format="%.6g"))
    return table


def _gpu_row(found: dict, step: str, name: str, shard: int | None, tokens: int, seconds: float) -> dict:
    rate = tokens / seconds if seconds > 0 else float("nan")  # a resumed shard may have had nothing left to embed
    return {
        "model": found["model"], "step": step, "set": name, "shard": shard, "device_name": found["device_name"], "precision": found["precision"],
        "engine": found["engine"], "tokens": tokens, "seconds": seconds, "tokens_per_second": rate,
        "tflops": 2 * block_parameters(found["n_layers"], found["dim"]) * rate / 1e12,
    }


def summarize_proteingym(
    selection_files: list[str | Path], predictions_files: list[str | Path], task_tables: list[str | Path], out: str | Path,
    variants_out: str | Path | None = None,
) -> pd.DataFrame:
    """ProteinGym's supervised merge format (``DMS_id, model_name, fold_variable_name, Spearman, MSE``), and its per-variant files.

    The ``i``-th selection, predictions file and task table belong to one (model, task); Spearman
    and MSE are ProteinGym's, pooled over out-of-fold predictions on standardised targets (see
    ``proteingym.merge_scores``). ``model_name`` is the model's own name as its selection records it
    (from the model manifest, through the cost file), with ``@final`` or ``@selected`` appended,
    e.g. ``esm2_t6_8M_UR50D@selected`` for the config id ``esm2_8M``.

    ``variants_out`` (a directory) gets the per-variant files those numbers pool, in the layout
    ProteinGym's ``merge_supervised.py`` reads (``{fold_variable_name}/{model_name}/{DMS_id}.csv``,
    columns ``proteingym.VARIANT_COLUMNS``): with ``model_name`` added to its ``config.json``
    (``location`` the same name, ``key`` mutated_sequence, ``input_score_name`` predictions_fitness,
    ``label_name`` labels_fitness), ProteinGym's own scripts give the same numbers.
    """
    if not len(selection_files) == len(predictions_files) == len(task_tables):
        raise InputError(
            f"{len(selection_files)} selections, {len(predictions_files)} predictions files and {len(task_tables)} task tables; "
            "pass one of each per ProteinGym task, in the same order"
        )
    rows, files = [], {}
    for path, predictions_file, task_table in zip(selection_files, predictions_files, task_tables):
        selection = Selection.from_json(path)
        if not selection.dms_id or not selection.fold_scheme:
            raise InputError(f"{path}: not a ProteinGym task's selection; pass only ProteinGym selections")
        try:
            predictions = read_predictions(predictions_file, "regression")
        except InputError as exc:
            raise InputError(f"{predictions_file}: {exc}") from None
        found = sorted(set(zip(predictions["model"].astype(str), predictions["task"].astype(str))))
        if found != [(selection.model, selection.task)]:
            raise InputError(
                f"{predictions_file} holds (model, task) {found}, but {path} is {selection.model}/{selection.task}; "
                "pass each selection's own predictions, in the same order"
            )
        table = tasks.read_task_table(task_table, "regression")
        try:
            variants = proteingym.supervised_variants(
                selection.n_layers, {f.fold: f.layer for f in selection.folds}, selection.status == choice.STATUS_OK, predictions, table,
            )
        except InputError as exc:
            raise InputError(f"{predictions_file} with {task_table}: {exc}") from None
        rows.extend(proteingym.supervised_rows(selection.dms_id, selection.fold_scheme, selection.model_name, variants))
        for suffix, frame in variants.items():
            where = (selection.fold_scheme, f"{selection.model_name}@{suffix}", f"{selection.dms_id}.csv")
            if where in files:
                raise InputError(f"{path}: a second {'/'.join(where)}; two models share the name {selection.model_name}, or a task came twice")
            files[where] = frame
    table = pd.DataFrame(rows, columns=proteingym.MERGE_COLUMNS).sort_values(["DMS_id", "fold_variable_name", "model_name"])
    if variants_out is not None:
        with atomic_directory(variants_out) as tmp:
            for where, frame in files.items():
                (tmp / where[0] / where[1]).mkdir(parents=True, exist_ok=True)
                frame.to_csv(tmp.joinpath(*where), index=False)  # full precision: ProteinGym's script recomputes the numbers from these
    write_text(out, table.to_csv(index=False, float_format="%.6g"))
    return table


DEPTH_COLUMNS = [
    "model", "task", "n_layers", "lens_agreeing_layer", "lens_agreeing_relative",
    "zero_shot_chosen_layer", "zero_shot_chosen_relative", "zero_shot_chosen_held_out_spearman", "zero_shot_final_held_out_spearman",
    "zero_shot_oracle_layer", "zero_shot_oracle_relative", "zero_shot_oracle_spearman", "zero_shot_final_spearman",
    "deployed_layer", "deployed_relative",
]
DEPTH_CURVE_COLUMNS = ["model", "set", "curve", "layer", "relative_depth", "value"]


def _sibling(path: Path, suffix: str) -> Path:
    """``{set}.json`` -> ``{set}{suffix}``: the files ``plmexit lens`` / ``zero-shot`` write beside their info JSON."""
    return path.with_name(path.name[: -len(".json")] + suffix)


def summarize_depth(
    lens_infos: list[str | Path], zero_shot_infos: list[str | Path], selection_files: list[str | Path], out: str | Path, curves_out: str | Path,
) -> pd.DataFrame:
    """Side by side per (model, task): the shallowest layer whose logit lens agrees with the final
    top-1 on ``lens.AGREEMENT_THRESHOLD`` of masked positions (standard lens, final norm first), the
    zero-shot masked-marginal layer chosen on the calibration variants with its Spearman and the
    final layer's on the held-out variants (``chosen``: the honest estimate), the layer with the best
    Spearman over all variants (``oracle``: chosen and scored on the same variants, optimistic, for
    comparison only), and the probe's deployed layer, each also as relative depth (layer / L);
    ``out`` (TSV, ``DEPTH_COLUMNS``).

    ``curves_out`` (TSV, ``DEPTH_CURVE_COLUMNS``) holds the per-layer curves the depth figure draws:
    the lens's KL to the final distribution and top-1 agreement (``lens:<variant>:<metric>``), the
    cumulative exit-layer distribution (``exit``), the mean KL of the final output when a block is
    skipped (``skip:final_kl_mean``, layer = the block), and zero-shot Spearman per method
    (``zero_shot:<method>``, all variants).
    """
    lens_layer, zero_best, curves = {}, {}, []
    for path in map(Path, lens_infos):
        info = read_json(path, "`plmexit lens`", ("model", "task", "num_layers"))
        model, name, n = info["model"], info["task"], int(info["num_layers"])
        lens_layer[model, name] = info.get("shallowest_agreeing_layer_final_norm")
        table = read_tsv(_sibling(path, ".tsv"), "lens table", "`plmexit lens`")
        for (variant, metric), rows in table[table.metric.isin(["kl_to_final", "top1_agreement"])].groupby(["lens", "metric"]):
            curves += [(model, name, f"lens:{variant}:{metric}", int(k), k / n, float(v)) for k, v in zip(rows["layer"], rows["value"])]
        exits = read_tsv(_sibling(path, ".exit.tsv"), "exit-layer table", "`plmexit lens`")
        curves += [(model, name, "exit", int(k), k / n, float(v)) for k, v in zip(exits["layer"], exits["cumulative_fraction"])]
        skips = read_tsv(_sibling(path, ".skip.tsv"), "skipping table", "`plmexit lens`")
        skips = skips[skips.metric == "final_kl_mean"]
        curves += [(model, name, "skip:final_kl_mean", int(b), b / n, float(v)) for b, v in zip(skips["block"], skips["value"])]
    for path in map(Path, zero_shot_infos):
        info = read_json(path, "`plmexit zero-shot`", ("model", "dms_id", "num_layers"))
        model, name, n = info["model"], info["dms_id"], int(info["num_layers"])
        table = read_tsv(_sibling(path, ".tsv"), "zero-shot table", "`plmexit zero-shot`")
        per_layer = table[(table.subset == "all") & (table.metric == "spearman") & table.method.isin(["masked_marginal", "wt_marginal"])]
        curves += [(model, name, f"zero_shot:{m}", int(k), k / n, float(v)) for m, k, v in zip(per_layer["method"], per_layer["layer"], per_layer["value"])]
        masked = per_layer[per_layer.method == "masked_marginal"].set_index("layer")["value"]
        chosen = info.get("calibration", {}).get("best_layer", {}).get("masked_marginal")  # absent without calibration variants
        chosen_row = (chosen["layer"], chosen["held_out_spearman"], chosen["final_layer_held_out_spearman"]) if chosen else (None, np.nan, np.nan)
        oracle_row = (int(masked.idxmax()), float(masked.max()), float(masked.get(n, np.nan))) if len(masked) else (None, np.nan, np.nan)
        zero_best[model, name] = (*chosen_row, *oracle_row)
    rows = []
    for path in selection_files:
        selection = Selection.from_json(path)
        model, task, n, name = selection.model, selection.task, selection.n_layers, selection.task_name
        lens = lens_layer.get((model, name))
        chosen, chosen_rho, final_held_out, oracle, oracle_rho, final_rho = zero_best.get((model, name), (None, np.nan, np.nan, None, np.nan, np.nan))
        deployed = selection.deployed_layer
        relative = lambda layer: None if layer is None else layer / n  # noqa: E731
        rows.append((
            model, task, n, lens, relative(lens), chosen, relative(chosen), chosen_rho, final_held_out,
            oracle, relative(oracle), oracle_rho, final_rho, deployed, relative(deployed),
        ))
    summary = pd.DataFrame(rows, columns=DEPTH_COLUMNS).sort_values(["model", "task"])
    write_text(out, summary.to_csv(sep="\t", index=False, float_format="%.6g"))
    write_text(curves_out, pd.DataFrame(curves, columns=DEPTH_CURVE_COLUMNS).to_csv(sep="\t", index=False, float_format="%.6g"))
    return summary
