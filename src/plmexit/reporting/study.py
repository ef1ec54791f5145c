"""Figures across models, for a paper: every figure from the files under results/, nothing recomputed.

Invariant: each figure is drawn from ``summary/best_layers.tsv`` and the probe tables alone
(``plmexit summarize`` and ``plmexit probe`` outputs), on a relative-depth axis (layer / the
model's number of blocks) so that models of different depths share it; each is written as PNG and
PDF, with the Okabe-Ito colour-blind-safe palette (plus a marker per model, so print in grey
stays readable), at journal column width (3.5 in single, 7.2 in double) with 8-point text.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from plmexit.atomic import atomic_path  # noqa: E402

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
SINGLE, DOUBLE = 3.5, 7.2  # inches: one and two journal columns
FORMATS = ("png", "pdf")
# PLMSommelier (arXiv:2608.12090): over 13 PLMs x 15 tasks the deepest layer was the best in 17.9%
# of cases, chosen and scored on the same split (ANCHORS.md) -- comparable to our oracle layer.
PLMSOMMELIER_FINAL_BEST = 0.179
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7}


def model_styles(models: list[str]) -> dict[str, dict]:
    """One colour and marker per model, in the order given (the same in every figure)."""
    return {m: {"color": OKABE_ITO[i % len(OKABE_ITO)], "marker": MARKERS[i % len(MARKERS)]} for i, m in enumerate(models)}


def save(fig: plt.Figure, stem: Path) -> list[Path]:
    """``stem``.png (300 dpi) and ``stem``.pdf, each written atomically."""
    written = []
    for fmt in FORMATS:
        out = stem.with_suffix(f".{fmt}")
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=fmt, dpi=300, bbox_inches="tight")
        written.append(out)
    plt.close(fig)
    return written


def depth_curves(probes: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per model, task and layer: the test metric's mean and sd over evaluation folds, with the relative depth."""
    rows = summary[["model", "task", "metric", "n_layers"]]
    scored = probes[probes["fold"] >= 0].merge(rows, on=["model", "task", "metric"])
    curves = scored.groupby(["model", "task", "metric", "n_layers", "layer"])["value"].agg(["mean", "std", "count"]).reset_index()
    curves["depth"] = curves["layer"] / curves["n_layers"]
    return curves


def task_figure(task: str, curves: pd.DataFrame, summary: pd.DataFrame, styles: dict[str, dict]) -> plt.Figure:
    """The probe's test metric against relative depth, one line per model (band: +-1 sd over folds), the
    deployed layer a filled marker on each line and the final layer at depth 1."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(SINGLE, 3.4), layout="constrained")
        metric = None
        for model, c in curves[curves["task"] == task].groupby("model", sort=False):
            s, row = styles[model], summary[(summary["model"] == model) & (summary["task"] == task)].iloc[0]
            metric = row["metric"]
            ax.plot(c["depth"], c["mean"], color=s["color"], linewidth=1.2, label=f"{model} ({int(row['n_layers'])} layers)")
            if c["count"].max() > 1:
                ax.fill_between(c["depth"], c["mean"] - c["std"], c["mean"] + c["std"], color=s["color"], alpha=0.15, linewidth=0)
            if row["status"] == "ok":
                deployed = c[c["layer"] == row["deployed_layer"]]
                ax.plot(deployed["depth"], deployed["mean"], linestyle="none", marker=s["marker"], color=s["color"], markersize=5)
        ax.axvline(1.0, color="grey", linestyle="--", linewidth=0.8)
        ax.set(xlabel="relative depth (layer / blocks; 1 = final layer)", ylabel=f"test {metric} (mean over folds)", title=task, xlim=(-0.02, 1.02))
        fig.legend(title="marker: deployed layer", loc="outside lower center", ncols=2, frameon=False)
    return fig


def heat_map(summary: pd.DataFrame, value: str, models: list[str], title: str, label: str, cmap: str, centre: float | None = None) -> plt.Figure:
    """Tasks (rows) by models (columns) coloured by ``value``; cells of tasks without a signal left blank."""
    ok = summary[summary["status"] == "ok"]
    grid = ok.pivot_table(index="task", columns="model", values=value, aggfunc="first").reindex(columns=models)
    tasks = list(grid.index)
    with plt.rc_context(STYLE):
        height = min(max(2.0, 0.14 * len(tasks) + 1.2), 9.5)
        fig, ax = plt.subplots(figsize=(DOUBLE if len(models) > 3 else SINGLE + 1.5, height), layout="constrained")
        data = np.ma.masked_invalid(grid.to_numpy(dtype=float))
        if centre is None:
            image = ax.imshow(data, aspect="auto", cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        else:
            bound = max(float(np.nanmax(np.abs(data))) if data.count() else 0.0, 1e-9)
            image = ax.imshow(data, aspect="auto", cmap=cmap, vmin=centre - bound, vmax=centre + bound, interpolation="nearest")
        ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
        ax.set_yticks(range(len(tasks)), tasks if len(tasks) <= 60 else [""] * len(tasks))
        if len(tasks) > 60:
            ax.set_ylabel(f"{len(tasks)} tasks")
        fig.colorbar(image, ax=ax, label=label, shrink=0.8)
        ax.set_title(title)
    return fig


def deployed_depth_figure(summary: pd.DataFrame, models: list[str]) -> plt.Figure:
    frame = summary.assign(relative=summary["deployed_layer"] / summary["n_layers"])
    return heat_map(frame, "relative", models, "Deployed layer, relative depth", "deployed layer / blocks (1 = final)", "viridis")


def gain_heat_figure(summary: pd.DataFrame, models: list[str]) -> plt.Figure:
    """Gain over the final layer; a cell whose 95% interval excludes 0 is marked with a dot."""
    fig = heat_map(summary, "gain", models, "Nested gain over the final layer (dot: 95% interval excludes 0)", "gain (task's metric)", "PuOr", centre=0.0)
    ax = fig.axes[0]
    ok = summary[summary["status"] == "ok"]
    tasks = list(ok.pivot_table(index="task", columns="model", values="gain", aggfunc="first").index)
    for _, row in ok.iterrows():
        if row["gain_ci_low"] > 0 or row["gain_ci_high"] < 0:
            ax.plot(models.index(row["model"]), tasks.index(row["task"]), marker=".", color="black", markersize=3)
    return fig


def gain_vs_compute_figure(summary: pd.DataFrame, styles: dict[str, dict]) -> plt.Figure:
    """Nested gain (95% interval) against compute saved at the deployed layer, by FLOPs and by measured
    time, every task of every model; one panel pair per metric."""
    ok = summary[(summary["status"] == "ok") & (summary.get("verdict", pd.Series(index=summary.index, dtype=object)) != "not_above_chance")]
    metrics = sorted(ok["metric"].unique()) or ["(no task with a signal)"]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(metrics), 2, figsize=(DOUBLE, 2.6 * len(metrics)), layout="constrained", squeeze=False)
        for (ax_flops, ax_time), metric in zip(axes, metrics):
            rows = ok[ok["metric"] == metric]
            for model, g in rows.groupby("model", sort=False):
                s = styles[model]
                yerr = np.maximum([g["gain"] - g["gain_ci_low"], g["gain_ci_high"] - g["gain"]], 0.0)
                for ax, column in ((ax_flops, "deployed_compute_saved"), (ax_time, "deployed_time_saved")):
                    ax.errorbar(100 * g[column], g["gain"], yerr=yerr, fmt=s["marker"], color=s["color"], markersize=3.5, elinewidth=0.6, capsize=1.5, label=model)
            for ax, what, column in ((ax_flops, "FLOPs (analytic)", "deployed_compute_saved"), (ax_time, "forward time (measured)", "deployed_time_saved")):
                ax.axhline(0.0, color="grey", linewidth=0.6)
                # Measured time saved can be below 0 (timing noise on tiny models): never clipped away.
                low = min(-3.0, 100 * float(ok[column].min()) - 3) if len(ok) else -3.0
                ax.set(xlabel=f"{what} saved at the deployed layer (%)", ylabel=f"gain over final layer ({metric})", xlim=(low, 103))
        handles, labels = axes[0][0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 5), frameon=False)
        fig.suptitle("Gain against compute saved (95% bootstrap intervals)")
    return fig


def final_layer_wins(summary: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """Per model: of its tasks with a signal, how often the final layer is the best on test (oracle, as
    PLMSommelier counted) and how often the nested selection deploys it, with Wilson 95% intervals."""
    rows = []
    for model in models:
        ok = summary[(summary["model"] == model) & (summary["status"] == "ok")]
        n = len(ok)
        for what, column in (("oracle", "oracle_layer"), ("deployed", "deployed_layer")):
            k = int((ok[column] == ok["n_layers"]).sum())
            low, high = wilson(k, n)
            rows.append({"model": model, "layer": what, "final_wins": k, "tasks": n, "fraction": k / n if n else float("nan"), "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k / n (95% by default)."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def final_wins_figure(wins: pd.DataFrame, models: list[str]) -> plt.Figure:
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(SINGLE, 3.6), layout="constrained")
        x = np.arange(len(models))
        for offset, (what, colour, hatch) in zip((-0.2, 0.2), (("oracle", OKABE_ITO[0], ""), ("deployed", OKABE_ITO[1], "//"))):
            w = wins[wins["layer"] == what].set_index("model").reindex(models)
            yerr = np.maximum([w["fraction"] - w["ci_low"], w["ci_high"] - w["fraction"]], 0.0) * 100
            label = "best on test (oracle)" if what == "oracle" else "deployed by nested selection"
            ax.bar(x + offset, 100 * w["fraction"], width=0.38, color=colour, hatch=hatch, edgecolor="black", linewidth=0.4, yerr=yerr, capsize=2, label=label)
        ax.axhline(100 * PLMSOMMELIER_FINAL_BEST, color="black", linestyle="--", linewidth=0.8, label="PLMSommelier, 13 PLMs x 15 tasks (17.9%)")
        tasks = wins[wins["layer"] == "oracle"].set_index("model").reindex(models)["tasks"]
        ax.set_xticks(x, [f"{m}\n({int(n)} tasks)" for m, n in zip(models, tasks)], rotation=30, ha="right")
        ax.set(ylabel="tasks where the final layer wins (%)", ylim=(0, 100), title="How often the final layer wins (95% Wilson intervals)")
        fig.legend(frameon=False, loc="outside lower center", ncols=1)
    return fig


def plot_study(summary: pd.DataFrame, probes: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Every across-model figure under ``out_dir``: ``tasks/{task}``, ``deployed_depth``, ``gain``,
    ``gain_vs_compute`` and ``final_layer_wins``, each .png and .pdf; returns the files written."""
    out_dir = Path(out_dir)
    models = list(dict.fromkeys(summary["model"]))
    styles = model_styles(models)
    curves = depth_curves(probes, summary)
    written = []
    for task in dict.fromkeys(summary["task"]):
        written += save(task_figure(task, curves, summary, styles), out_dir / "tasks" / task)
    written += save(deployed_depth_figure(summary, models), out_dir / "deployed_depth")
    written += save(gain_heat_figure(summary, models), out_dir / "gain")
    written += save(gain_vs_compute_figure(summary, styles), out_dir / "gain_vs_compute")
    written += save(final_wins_figure(final_layer_wins(summary, models), models), out_dir / "final_layer_wins")
    return written
