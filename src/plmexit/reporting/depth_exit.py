"""One model's depth diagnostics and early exit laid out together, on the relative-depth axis k / L.

Invariant: drawn from results alone (``summary/best_layers.tsv``, ``summary/depth.tsv`` and the
model's ``exit/{model}/*.tsv`` tables), every depth as ``layer / L`` with ``L`` the model's number of
blocks, so each task's rows and panels share one axis and figures of models of different depths
can be laid side by side. Panel a is a dot chart, one row per task (ProteinGym's many assays
folded into one row per fold scheme, median and interquartile range, once the rows would no
longer be legible); panels b... are the early-exit trade-offs of the model's exit tasks, on the
same axis, with panel a's marks for that task drawn across them. Only numbers computed on test
rows or chosen without them are drawn as choices; Hart's test-swept threshold is drawn open and
labelled optimistic. Colours are Okabe-Ito; every mark also differs by shape.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from plmexit.atomic import atomic_path  # noqa: E402
from plmexit.reporting.study import DOUBLE, OKABE_ITO, STYLE  # noqa: E402

# = plmexit.depth.lens.AGREEMENT_THRESHOLD, repeated because drawing imports no torch (the test checks they agree).
AGREEMENT_THRESHOLD = 0.9
# Panel a's marks, in the order of their lanes within a row: the column of a dot-chart row, the
# legend label, the colour and the marker. The controller's marker is its gate's (GATE_MARKERS).
MARKS = {
    "deployed": ("deployed layer (probe, nested selection)", OKABE_ITO[7], "*"),
    "lens": (f"lens: first layer with \u2265{AGREEMENT_THRESHOLD:.0%} top-1 agreement", OKABE_ITO[1], "v"),
    "zero_shot": ("zero-shot layer chosen on calibration variants", OKABE_ITO[2], "P"),
    "controller": ("calibrated controller: mean exit layer (filled)", OKABE_ITO[0], None),
}
HART_COLOUR = OKABE_ITO[5]
# Panel a's marks drawn across an exit panel: a vertical line each, told apart by style as well as colour.
REFERENCE_STYLES = {"deployed": "-", "lens": ":", "zero_shot": "-."}
GATE_MARKERS = {"probability": "o", "margin": "s", "entropy": "^", "patience": "D"}
# A dot chart stays legible to about this many rows at journal width; past it, ProteinGym's tasks
# (hundreds of assays per fold scheme in a study) become one row per scheme: median and IQR.
MAX_TASK_ROWS = 40
# Exit panels, three to a row at journal width; a model with more exit tasks shows the first ones
# here (every task keeps its own figure under figures/exit/).
MAX_EXIT_PANELS = 6
EXIT_COLUMNS = 3
ROW_INCHES, EXIT_ROW_INCHES = 0.2, 2.15
# Dot-chart columns: one row per (row, mark, gate); low/high the interquartile range of a folded
# row (equal to value for a single task), n the tasks behind it.
DOT_COLUMNS = ["row", "order", "mark", "gate", "value", "low", "high", "n"]


def plot_depth_exit(model: str, best: pd.DataFrame, depth: pd.DataFrame, exits: pd.DataFrame, out: str | Path, pdf_out: str | Path) -> pd.DataFrame:
    """``depth_exit_figure`` written as a PNG (300 dpi) and a PDF; returns the dot chart's rows."""
    dots = dot_rows(model, best, depth, exits)
    fig = depth_exit_figure(model, best, depth, exits, dots)
    for path, fmt in ((out, "png"), (pdf_out, "pdf")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=300, bbox_inches="tight")
    plt.close(fig)
    return dots


def task_marks(model: str, best: pd.DataFrame, depth: pd.DataFrame, exits: pd.DataFrame) -> pd.DataFrame:
    """One row per task of ``model`` in its depth summary or its exit tables: the relative depth of each
    mark (``deployed``, ``lens``, ``zero_shot``, ``controller:<gate>``; NaN where the task has none),
    with ``n_layers``, ``dms_id`` and ``fold_scheme`` from the best-layer summary."""
    best = best[best["model"] == model].set_index("task")
    tasks = sorted(set(depth.loc[depth["model"] == model, "task"]) | set(exits.loc[exits["model"] == model, "task"]))
    marks = best.loc[tasks, ["n_layers", "dms_id", "fold_scheme", "status", "deployed_layer"]].copy()
    n = marks["n_layers"].astype(float)
    marks["deployed"] = np.where(marks["status"] == "ok", marks["deployed_layer"] / n, np.nan)
    found = depth[depth["model"] == model].set_index("task")
    marks["lens"] = found["lens_agreeing_relative"].reindex(tasks)
    marks["zero_shot"] = found["zero_shot_chosen_relative"].reindex(tasks)
    calibrated = exits[(exits["model"] == model) & (exits["kind"] == "calibrated")]
    per_gate = calibrated.groupby(["task", "gate"])["mean_layer"].mean().unstack("gate")
    for gate in [g for g in GATE_MARKERS if g in per_gate.columns]:
        marks[f"controller:{gate}"] = per_gate[gate].reindex(tasks) / n
    marks["dms_id"] = marks["dms_id"].fillna("").astype(str)
    return marks.drop(columns=["status", "deployed_layer"])


def dot_rows(model: str, best: pd.DataFrame, depth: pd.DataFrame, exits: pd.DataFrame, max_rows: int = MAX_TASK_ROWS) -> pd.DataFrame:
    """Panel a's rows (``DOT_COLUMNS``), top to bottom: every task other than ProteinGym's, then
    ProteinGym's tasks, one row each, or folded into one row per fold scheme (median, IQR) when
    there would be more than ``max_rows`` rows. Rows keep task order, so every model's figure
    lists the same tasks in the same places."""
    marks = task_marks(model, best, depth, exits)
    columns = [c for c in marks.columns if c in MARKS or c.startswith("controller:")]
    proteingym = marks["dms_id"] != ""
    groups = [(task, marks.loc[[task]]) for task in marks.index[~proteingym]]
    if len(marks) > max_rows:
        for scheme, rows in marks[proteingym].groupby("fold_scheme", sort=True):
            groups.append((f"ProteinGym, {scheme} ({rows['dms_id'].nunique()} assays)", rows))
    else:
        groups += [(task, marks.loc[[task]]) for task in marks.index[proteingym]]
    out = []
    for order, (name, rows) in enumerate(groups):
        for column in columns:
            values = rows[column].dropna().astype(float)
            if values.empty:
                continue
            mark, _, gate = column.partition(":")
            low, mid, high = np.percentile(values, [25, 50, 75])
            out.append((name, order, mark, gate or None, mid, low, high, len(values)))
    return pd.DataFrame(out, columns=DOT_COLUMNS)


def exit_curves(table: pd.DataFrame, n_layers: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One task's exit table as ``(static, controllers)``: per static layer its relative depth, the
    test metric's mean and sd over folds and the forward time as a fraction of full depth; per
    (gate, kind) of the calibrated and Hart controllers the mean over folds of relative mean exit
    layer and test metric."""
    static = table[table["kind"] == "static"].groupby("layer").agg(score=("score", "mean"), sd=("score", "std"), saved=("time_saved_estimate", "mean"))
    static = static.reset_index().assign(depth=lambda s: s["layer"] / n_layers, time=lambda s: 1.0 - s["saved"], sd=lambda s: s["sd"].fillna(0.0))
    chosen = table[table["kind"].isin(["calibrated", "hart_test_swept"])]
    controllers = chosen.groupby(["gate", "kind"])[["mean_layer", "score"]].mean().reset_index()
    controllers["depth"] = controllers["mean_layer"] / n_layers
    return static, controllers


def depth_exit_figure(model: str, best: pd.DataFrame, depth: pd.DataFrame, exits: pd.DataFrame, dots: pd.DataFrame | None = None) -> plt.Figure:
    """Panel a: the dot chart of ``dot_rows``; panels b...: each exit task's test metric against the
    mean layers executed (relative), static layers as a line with its fold spread, each gate's
    calibrated controller (filled) and Hart's test-swept threshold (open), the task's panel-a marks
    as vertical lines, and the measured forward time of the static depths on the top axis."""
    dots = dot_rows(model, best, depth, exits) if dots is None else dots
    exit_tasks = sorted(set(exits.loc[exits["model"] == model, "task"]))
    shown = exit_tasks[:MAX_EXIT_PANELS]
    n_rows = int(dots["order"].max()) + 1 if len(dots) else 1
    exit_rows = math.ceil(len(shown) / EXIT_COLUMNS)
    dot_height = ROW_INCHES * n_rows + 0.9
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(DOUBLE, dot_height + EXIT_ROW_INCHES * exit_rows + 0.9), layout="constrained")
        if shown:
            top, bottom = fig.subfigures(2, 1, height_ratios=[dot_height, EXIT_ROW_INCHES * exit_rows])
        else:
            top, bottom = fig, None
        _dot_chart(top.subplots(), dots, n_rows)
        if bottom is not None:
            axes = bottom.subplots(exit_rows, EXIT_COLUMNS, squeeze=False)
            marks = task_marks(model, best, depth, exits)
            for i, (ax, task) in enumerate(zip(axes.flat, shown)):
                _exit_panel(ax, exits[(exits["model"] == model) & (exits["task"] == task)], marks.loc[task], task, "bcdefghijklmnopqrstuvwxyz"[i])
            for ax in list(axes.flat)[len(shown):]:
                ax.set_visible(False)
        gates = [g for g in GATE_MARKERS if (dots["gate"] == g).any() or (exits.loc[exits["model"] == model, "gate"] == g).any()]
        fig.legend(handles=_legend(gates, bool(shown)), loc="outside lower center", ncols=3, frameon=False)
        more = f"\n(exit panels: the first {len(shown)} of {len(exit_tasks)} exit tasks)" if len(exit_tasks) > len(shown) else ""
        fig.suptitle(f"{model}: depth diagnostics and early exit on relative depth k / L (L = blocks){more}", fontsize=9)
    return fig


def _dot_chart(ax: plt.Axes, dots: pd.DataFrame, n_rows: int) -> None:
    labels = dots.drop_duplicates("order").set_index("order")["row"].reindex(range(n_rows)).fillna("")
    for k in range(0, n_rows, 2):
        ax.axhspan(k - 0.5, k + 0.5, color="0.93", linewidth=0, zorder=0)
    lanes = dict(zip(MARKS, np.linspace(-0.27, 0.27, len(MARKS))))
    for mark, rows in dots.groupby("mark", sort=False):
        _, colour, marker = MARKS[mark]
        y = rows["order"] + lanes[mark]
        folded = rows["n"] > 1
        if folded.any():
            ax.hlines(y[folded], rows.loc[folded, "low"], rows.loc[folded, "high"], color=colour, linewidth=1.0, zorder=2)
        if mark == "controller":
            for order, gates in rows.groupby("order"):  # the gates of one task span a range: joined by a thin line
                ax.plot([gates["value"].min(), gates["value"].max()], [order + lanes[mark]] * 2, color=colour, linewidth=0.6, zorder=2)
            for gate, g in rows.groupby("gate"):
                ax.plot(g["value"], g["order"] + lanes[mark], linestyle="none", marker=GATE_MARKERS[gate], color=colour, markersize=3.5, zorder=3)
        else:
            ax.plot(rows["value"], y, linestyle="none", marker=marker, color=colour, markersize=6 if marker == "*" else 4, zorder=3)
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=0.8, zorder=1)
    ax.set_yticks(range(n_rows), labels)
    ax.set_ylim(n_rows - 0.5, -0.5)
    ax.set_xlim(-0.03, 1.03)
    ax.xaxis.grid(True, color="0.85", linewidth=0.5)
    ax.set_axisbelow(True)
    ax.tick_params(axis="y", length=0)
    ax.set_xlabel("relative depth k / L (0 = token embeddings, 1 = final layer)")
    folded = "\n     folded rows: median over assays, bar = interquartile range" if (dots["n"] > 1).any() else ""
    ax.set_title(f"a   The layer each method points to, per task{folded}", loc="left")


def _exit_panel(ax: plt.Axes, table: pd.DataFrame, marks: pd.Series, task: str, letter: str) -> None:
    n_layers = int(marks["n_layers"])
    static, controllers = exit_curves(table, n_layers)
    ax.fill_between(static["depth"], static["score"] - static["sd"], static["score"] + static["sd"], color="0.8", linewidth=0)
    ax.plot(static["depth"], static["score"], color="0.2", marker=".", markersize=3, linewidth=1.0)
    for mark in ("deployed", "lens", "zero_shot"):
        if pd.notna(marks.get(mark)):
            ax.axvline(marks[mark], color=MARKS[mark][1], linestyle=REFERENCE_STYLES[mark], linewidth=1.0, zorder=1)
    for _, row in controllers.iterrows():
        calibrated = row["kind"] == "calibrated"
        colour = MARKS["controller"][1] if calibrated else HART_COLOUR
        ax.plot([row["depth"]], [row["score"]], linestyle="none", marker=GATE_MARKERS.get(row["gate"], "o"), markersize=4.5, markeredgewidth=1.0,
                color=colour, markerfacecolor=colour if calibrated else "none", zorder=5)
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=0.8, zorder=1)
    ax.set_xlim(-0.03, 1.03)
    ax.grid(alpha=0.3, linewidth=0.5)
    metric, folds = table["metric"].iloc[0], table["fold"].nunique()
    ax.set_xlabel("mean layers executed / L")
    ax.set_ylabel(f"test {metric} (mean over {folds} folds)" if folds > 1 else f"test {metric} (one test split)")
    # Forward time is measured per static depth; its ticks sit at the layers nearest quarters of the depth.
    ticks = static.set_index("layer")["time"]
    chosen = sorted({int(round(q * n_layers)) for q in (0.0, 0.25, 0.5, 0.75, 1.0)} & set(ticks.index.astype(int)))
    top = ax.secondary_xaxis("top")
    top.set_xticks([k / n_layers for k in chosen], [f"{100 * ticks[k]:.0f}" for k in chosen])
    top.set_xlabel("forward time, % of full depth", fontsize=7)
    ax.set_title(f"{letter}   {task}", loc="left")


def _legend(gates: list[str], with_exit: bool) -> list:
    """Three columns (filled column by column): the layers chosen, the exit results, the gates' markers."""
    blank = Line2D([], [], linestyle="none", label=" ")
    chosen = [Line2D([], [], linestyle=REFERENCE_STYLES[m] if with_exit else "none", linewidth=1.0, marker=MARKS[m][2], color=MARKS[m][1],
                     markersize=6 if m == "deployed" else 4, label=MARKS[m][0]) for m in ("deployed", "lens", "zero_shot")]
    chosen.append(Line2D([], [], color="grey", linestyle="--", linewidth=0.8, label="final layer (k / L = 1)"))
    exits = [Line2D([], [], marker="o", linewidth=0.6, color=MARKS["controller"][1], markersize=4, label=MARKS["controller"][0])]
    if with_exit:
        exits.append(Line2D([], [], linestyle="none", marker="o", markerfacecolor="none", color=HART_COLOUR, markersize=4.5,
                            label="Hart: swept on test rows (open, optimistic)"))
        exits.append(Line2D([], [], color="0.2", marker=".", linewidth=1.0, label="static layers (band: \u00b11 sd over folds)"))
    shapes = [Line2D([], [], linestyle="none", marker=GATE_MARKERS[g], color="0.35", markerfacecolor="none", markersize=4.5, label=f"gate: {g}")
              for g in gates]
    rows = max(len(chosen), len(exits), len(shapes))
    return [h for column in (chosen, exits, shapes) for h in column + [blank] * (rows - len(column))]
