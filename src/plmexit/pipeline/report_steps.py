"""The steps that draw: a task's figure (beside its depth curves), the summary figure and the depth figure, from the tables other steps wrote;
and the resource summary, from the jobs' benchmark records.

Invariant: as every module of ``plmexit.pipeline``: one function per CLI command, reading its
inputs and writing its outputs atomically.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from plmexit.atomic import atomic_directory, write_text
from plmexit.errors import InputError
from plmexit.pipeline.reading import read_json, read_probe_table, read_tsv
from plmexit.probing.selection import Selection
from plmexit.reporting import figures, manuscript, resources, study


def plot_task(
    probe_table: str | Path, selection_file: str | Path, cost_file: str | Path, out: str | Path, lens_file: str | Path | None = None,
    zero_shot_file: str | Path | None = None,
) -> pd.DataFrame:
    """Figure of the selection metric (test and training-only) against layer for one (model, task), time saved
    beside it and, with a lens or zero-shot table, the probe beside those curves on one relative-depth axis
    (``figures.layers_figure``); returns the relative-depth curves (the probe's alone without either table).
    The lens and zero-shot tables must speak of the selection's model, its task's sequences and its layers."""
    selection = Selection.from_json(selection_file)
    costs = read_json(cost_file, "`plmexit cost`", ("n_layers", "seconds"))
    model, n, name = selection.model, selection.n_layers, selection.task_name
    tables = {}
    for kind, path, column, writer in (("lens", lens_file, "task", "`plmexit lens`"), ("zero_shot", zero_shot_file, "dms_id", "`plmexit zero-shot`")):
        if path is None:
            continue
        table = read_tsv(path, f"{kind.replace('_', '-')} table", writer)
        missing = [c for c in ("model", column, "layer", "metric", "value") if c not in table.columns]
        if missing:
            raise InputError(f"{path}: lacks column(s) {', '.join(missing)}; pass the TSV {writer} wrote")
        found = (sorted(set(table["model"])), sorted(set(table[column])), int(table["layer"].max()) if len(table) else None)
        if found != ([model], [name], n):
            raise InputError(
                f"{path}: speaks of model {found[0]}, {column} {found[1]}, layers up to {found[2]}; the selection {selection_file} is model "
                f"{model!r}, {name!r}, {n} layers; pass the {kind.replace('_', '-')} table of the same model and task"
            )
        tables[kind] = table
    probes = read_probe_table(probe_table)
    curves = figures.task_depth_curves(probes, selection, tables.get("lens"), tables.get("zero_shot"))
    figures.plot_layers(probes, selection, costs["seconds"], out, curves)
    return curves


def plot_summary(summary_file: str | Path, out: str | Path) -> None:
    """Figure of the gain (with its interval) against the compute saved, every model and task."""
    figures.plot_gain_vs_compute(read_tsv(summary_file, "summary", "`plmexit summarize`"), out)


def plot_depth(curves_file: str | Path, summary_file: str | Path, out: str | Path) -> None:
    """Figure of what every layer already knows (lens, exit layers, skipping, zero-shot) against relative depth."""
    tables = [read_tsv(path, "depth table", "`plmexit summarize-depth`") for path in (curves_file, summary_file)]
    figures.plot_depth(*tables, out)


def plot_study(summary_file: str | Path, across_file: str | Path, probe_tables: list[str | Path], figures_dir: str | Path, tables_dir: str | Path) -> None:
    """The paper's figures across models (``reporting.study``) and its tables (``reporting.manuscript``),
    from the summaries and probe tables alone; each directory replaced whole, or not at all."""
    summary = read_tsv(summary_file, "summary", "`plmexit summarize`")
    across = read_tsv(across_file, "across-task summary", "`plmexit summarize`")
    probes = pd.concat([read_probe_table(path) for path in probe_tables], ignore_index=True)
    with atomic_directory(figures_dir) as tmp:
        study.plot_study(summary, probes, tmp)
    with atomic_directory(tables_dir) as tmp:
        manuscript.write_tables(summary, across, tmp)


def plot_depth_exit(
    model: str, summary_file: str | Path, depth_file: str | Path, exit_tables: list[str | Path], out: str | Path, pdf_out: str | Path,
) -> pd.DataFrame:
    """One model's depth diagnostics and early exit in one figure (``depth_exit.depth_exit_figure``), PNG
    and PDF; returns the dot chart's rows. Every exit table must be ``model``'s, and every task the depth
    summary or an exit table names for it must be in the best-layer summary."""
    from plmexit.reporting import depth_exit  # its own module: the other figures never need it

    best = read_tsv(summary_file, "summary", "`plmexit summarize`")
    depth = read_tsv(depth_file, "depth summary", "`plmexit summarize-depth`")
    exits = []
    for path in exit_tables:
        table = read_tsv(path, "exit table", "`plmexit exit`")
        found = sorted(set(table["model"].astype(str)))
        if found != [model]:
            raise InputError(f"{path}: holds model(s) {', '.join(found) or 'none'}; pass the exit tables of model {model}")
        exits.append(table)
    exits = pd.concat(exits, ignore_index=True) if exits else pd.DataFrame(columns=["model", "task", "fold", "gate", "kind", "mean_layer", "score"])
    wanted = set(depth.loc[depth["model"] == model, "task"]) | set(exits["task"])
    if not wanted:
        raise InputError(f"{depth_file} and the exit tables name no task of model {model}; pass the depth summary and exit tables of a run that has it")
    missing = sorted(wanted - set(best.loc[best["model"] == model, "task"]))
    if missing:
        raise InputError(f"{summary_file}: no row for model {model}, task {missing[0]}, which the depth summary or an exit table names; "
                         "pass the best-layer summary of the same run")
    return depth_exit.plot_depth_exit(model, best, depth, exits, out, pdf_out)


def summarize_resources(benchmarks_dir: str | Path, models: list[str], out: str | Path) -> pd.DataFrame:
    """What the models' jobs spent, per model and rule (``reporting.resources``), from every benchmark record under
    ``benchmarks_dir/{rule}/{model}/`` (the workflow's layout); returns the table it writes."""
    root = Path(benchmarks_dir)
    records = []
    for model in models:
        for path in sorted(root.glob(f"*/{model}/**/*.tsv")):
            records.append({"model": model, "rule": path.relative_to(root).parts[0], **resources.read_record(path)})
    fields = ["model", "rule", "seconds", "cpu_seconds", "unsampled", "max_rss_mb", "threads", "gpus"]
    table = resources.summarize(pd.DataFrame(records, columns=fields))
    write_text(out, table.to_csv(sep="\t", index=False, float_format="%.6g"))
    return table
