"""The steps that draw: a task's figure and the summary figure, from the tables other steps wrote.

Invariant: as every module of ``plmexit.pipeline``: one function per CLI command, reading its
inputs and writing its outputs atomically.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from plmexit.atomic import atomic_directory
from plmexit.pipeline.reading import read_json, read_probe_table, read_tsv
from plmexit.reporting import figures, manuscript, study


def plot_task(probe_table: str | Path, selection_file: str | Path, cost_file: str | Path, out: str | Path) -> None:
    """Figure of the selection metric (test and training-only) against layer for one (model, task), time saved beside it."""
    selection = read_json(selection_file, "`plmexit select`", ("metric", "n_layers", "n_folds", "status", "deployed_layer", "nested_score", "fold_layers"))
    costs = read_json(cost_file, "`plmexit cost`", ("n_layers", "seconds"))
    figures.plot_layers(read_probe_table(probe_table), selection, costs["seconds"], out)


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
