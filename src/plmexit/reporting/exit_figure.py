"""The early-exit figure of one (model, task): test metric against mean layers executed and against forward time.

Invariant: every point is a mean over outer folds of numbers computed on test rows: each static
layer (a line), the calibrated controller of each gate (filled markers) and Hart's test-swept
threshold for the same gate (open markers, labelled optimistic). Time is the fraction of the full
depth's forward time, estimated from the cost step's measured seconds per static depth; with a
timing table (``plmexit exit-timing``) the measured adaptive, static and full-depth forwards are
drawn beside it in green.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from plmexit.reporting.figures import _save  # noqa: E402

MARKERS = {"probability": "o", "margin": "s", "entropy": "^", "patience": "D"}
# Above this ratio between the slowest measured point and the quickest static layer, time is drawn on a log axis.
SPREAD_FOR_LOG_SCALE = 20.0


def plot_exit(table: pd.DataFrame, out: str | Path, timing: pd.DataFrame | None = None) -> None:
    """``exit_figure`` written as a PNG."""
    _save(exit_figure(table, timing), out)


def exit_figure(table: pd.DataFrame, timing: pd.DataFrame | None = None) -> plt.Figure:
    """Two panels from one exit table (``plmexit exit``): metric against mean layers, and against time.

    With ``timing`` (``plmexit exit-timing``) the time panel adds the measured points: each gate's adaptive
    forward (and with one deep sequence per batch), the timed static layer and full depth, at their measured
    fraction of full depth's time (the static line stays estimated)."""
    metric = table["metric"].iloc[0]
    n_folds = table["fold"].nunique()
    means = table.groupby(["gate", "kind", "layer"], dropna=False)[["score", "mean_layer", "time_saved_estimate", "disagreement"]].mean().reset_index()
    static = means[means.kind == "static"].sort_values("mean_layer")
    fig, axes = plt.subplots(1, 2, figsize=(13.5, 4.6), layout="constrained", sharey=True)
    for ax, x, label in ((axes[0], "mean_layer", "mean layers executed"), (axes[1], "time", "forward time, fraction of full depth" + (" (line: estimated; green: measured)" if timing is not None else " (estimated)"))):
        value = (lambda frame: 1.0 - frame["time_saved_estimate"]) if x == "time" else (lambda frame: frame["mean_layer"])
        ax.plot(value(static), static["score"], marker=".", color="black", label="every static layer")
        last = static.iloc[-1]
        ax.scatter([value(static).iloc[-1]], [last["score"]], marker="*", s=160, color="black", label="full depth", zorder=3)
        for gate in sorted(set(means.gate) - {"-"}):
            marker = MARKERS.get(gate, "o")
            for kind, face, text in (("calibrated", None, "calibrated"), ("hart_test_swept", "none", "Hart test-swept (optimistic)")):
                point = means[(means.gate == gate) & (means.kind == kind)]
                ax.scatter(value(point), point["score"], marker=marker, s=60, facecolors=face, edgecolors="tab:blue" if kind == "calibrated" else "tab:red",
                           color="tab:blue" if kind == "calibrated" else None, label=f"{gate}: {text}", zorder=4)
        if x == "time" and timing is not None:
            _measured_points(ax, means, static, timing)
            if (1.0 - timing["time_saved"]).max() > SPREAD_FOR_LOG_SCALE * max(value(static).min(), 1e-6):
                ax.set_xscale("log")  # gates that cost more than the forward (tiny models) would squash every other point
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"test {metric}, mean over {n_folds} fold(s)")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside: measured points crowd the panel
    model, task = table["model"].iloc[0], table["task"].iloc[0]
    fig.suptitle(f"{model} / {task}: early exit, thresholds calibrated on training rows only")
    return fig


def _measured_points(ax, means: pd.DataFrame, static: pd.DataFrame, timing: pd.DataFrame) -> None:
    """Measured points on the time panel: green, at ``1 - time_saved`` of the timed fold's sequences."""
    scores = static.set_index("layer")["score"]
    for run, marker, text in (("static_layer", "P", "static layer, measured"), ("full_depth", "*", "full depth, measured")):
        rows = timing[timing.run == run]
        if len(rows) and rows["layer"].iloc[0] in scores.index:
            ax.scatter([1.0 - rows["time_saved"].mean()], [scores[rows["layer"].iloc[0]]], marker=marker, s=90, color="tab:green", label=text, zorder=5)
    for run, face in (("adaptive", "tab:green"), ("adaptive_one_deep", "none")):
        for gate, rows in timing[timing.run == run].groupby("gate"):
            point = means[(means.gate == gate) & (means.kind == "calibrated")]
            if len(point):
                label = f"{gate}: calibrated, measured" + (" (one deep sequence per batch)" if run == "adaptive_one_deep" else "")
                ax.scatter([1.0 - rows["time_saved"].mean()], point["score"].iloc[:1], marker=MARKERS.get(gate, "o"), s=60,
                           facecolors=face, edgecolors="tab:green", label=label, zorder=5)
