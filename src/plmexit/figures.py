"""Figures: test metric against layer for one (model, task), final and deployed layers marked."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from plmexit.atomic import atomic_path  # noqa: E402


def plot_layers(table: pd.DataFrame, selection: dict, out: str | Path) -> None:
    """Mean +- sd over folds of the selection metric by layer, written as a PNG."""
    metric = selection["metric"]
    scores = table[table.metric == metric].groupby("layer")["value"]
    mean, sd = scores.mean(), scores.std().fillna(0.0)
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.plot(mean.index, mean.values, marker="o", color="black", label=f"test {metric} (mean over folds)")
    ax.fill_between(mean.index, mean - sd, mean + sd, color="grey", alpha=0.3, label="+- 1 sd over folds")
    if selection.get("status", "ok") == "ok":
        ax.axvline(
            selection["deployed_layer"], color="tab:blue", linestyle="-",
            label=f"deployed layer {selection['deployed_layer']} (nested score {selection['nested_score']:.3f}, folds chose {_layers(selection)})",
        )
    else:
        ax.text(0.02, 0.02, f"{selection['status']}: no layer carries a signal", transform=ax.transAxes, fontsize="small")
    # The final-layer line is drawn last and dashed so it stays visible when the selected layer is the final one.
    ax.axvline(selection["n_layers"], color="tab:red", linestyle="--", label=f"final layer {selection['n_layers']}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="layer (0 = token embeddings)", ylabel=metric, title=f"{selection['task']} · {selection['model']}")
    ax.legend(fontsize="small")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def _layers(selection: dict) -> str:
    return ",".join(str(layer) for layer in selection["fold_layers"])


def plot_gain_vs_compute(summary: pd.DataFrame, out: str | Path) -> None:
    """Nested gain over the final layer (95% interval) against the deployed layer's measured time saved, one point per task."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5), layout="constrained")
    summary = summary[summary["status"] == "ok"]
    for model, group in summary.groupby("model", sort=True):
        # A percentile interval need not contain the point estimate; draw the part that exists.
        errors = np.maximum([group["gain"] - group["gain_ci_low"], group["gain_ci_high"] - group["gain"]], 0.0)
        ax.errorbar(group["deployed_time_saved"], group["gain"], yerr=errors, fmt="o", capsize=3, label=model)
        for _, row in group.iterrows():
            ax.annotate(f"{row['task']} (L{int(row['deployed_layer'])})", (row["deployed_time_saved"], row["gain"]), fontsize="x-small", xytext=(4, 4), textcoords="offset points")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set(
        xlabel="fraction of forward time saved at the deployed layer (measured)",
        ylabel="nested gain over the final layer (metric units)",
        title="Gain against compute saved (95% bootstrap intervals)",
    )
    ax.legend(fontsize="small")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
