"""Figures: test metric against layer for one (model, task), final and deployed layers marked; gain against
compute; what every layer already knows (all models, and beside one (model, task)'s probe in its layer figure)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from plmexit.atomic import atomic_path  # noqa: E402
from plmexit.probing.selection import Selection  # noqa: E402


def plot_layers(table: pd.DataFrame, selection: Selection, seconds: list[float], out: str | Path, depth: pd.DataFrame | None = None) -> None:
    """``layers_figure`` written as a PNG."""
    _save(layers_figure(table, selection, seconds, depth), out)


def layers_figure(table: pd.DataFrame, selection: Selection, seconds: list[float], depth: pd.DataFrame | None = None) -> plt.Figure:
    """The test metric and the training-only (inner) scores that chose the layer, against layer; time saved on a second axis.

    ``seconds[k]`` is the measured forward time to depth k (``results/cost/``), drawn as the fraction
    of the full depth's time saved. With ``depth`` (``task_depth_curves``) holding lens or zero-shot
    curves, a second column draws them beside the probe on one relative-depth axis
    (``draw_task_depth``): one figure per (model, task), whatever the task's diagnostics.
    """
    has_depth = depth is not None and bool((depth.source != "probe").any())
    has_lens = has_depth and bool((depth.source == "lens").any())
    if has_depth:
        mosaic = [["layers", "depth"], ["layers", "kl"]] if has_lens else [["layers", "depth"]]
        fig, panels = plt.subplot_mosaic(mosaic, figsize=(13, 8 if has_lens else 5.6), layout="constrained")
        ax = panels["layers"]
    else:
        fig, ax = plt.subplots(figsize=(6.5, 5.2), layout="constrained")
    metric = selection.metric
    scored = table[table.fold >= 0]
    scores = scored[scored.metric == metric].groupby("layer")["value"]
    mean, sd = scores.mean(), scores.std()
    inner = scored[scored.metric == f"inner_{metric}"].groupby("layer")["value"].mean()
    deployed = table[(table.fold < 0) & (table.metric == f"inner_{metric}")].set_index("layer")["value"].sort_index()
    ax.plot(mean.index, mean.values, marker="o", color="black", label=f"test {metric}, mean over {selection.n_folds} fold(s)")
    if selection.n_folds > 1:
        ax.fill_between(mean.index, mean - sd, mean + sd, color="grey", alpha=0.3, label="+- 1 sd over folds")
    ax.plot(inner.index, inner.values, marker=".", linestyle="--", color="tab:green", label="training-only score, mean over folds")
    if len(deployed):
        ax.plot(deployed.index, deployed.values, linestyle=":", color="tab:blue", label="training-only score on the deploy rows (chooses the deployed layer)")
    if selection.status == "ok":
        ax.axvline(
            selection.deployed_layer, color="tab:blue", linestyle="-",
            label=f"deployed layer {selection.deployed_layer} (nested score {selection.nested_score:.3f}; folds chose {_layers(selection)})",
        )
    else:
        ax.text(0.02, 0.02, f"{selection.status}: no layer carries a signal", transform=ax.transAxes, fontsize="small")
    if selection.verdict == "not_above_chance":
        ax.text(0.02, 0.08, "not_above_chance: no layer beats chance, no saving", transform=ax.transAxes, fontsize="small")
    # The baselines (plmexit.probing.baselines), where the probe step fitted them: what a layer must beat.
    for score, name, color in ((selection.chance_score, "chance", "tab:purple"), (selection.baseline_score, selection.baseline_features, "tab:brown")):
        if score is not None:
            ax.axhline(score, color=color, linestyle="-.", linewidth=1, label=f"{name} baseline: test {metric} {score:.3f}, mean over folds")
    # The final-layer line is drawn last and dashed so it stays visible when the deployed layer is the final one.
    ax.axvline(selection.n_layers, color="tab:red", linestyle="--", label=f"final layer {selection.n_layers}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="layer (0 = token embeddings)", ylabel=metric, title=f"{selection.task} · {selection.model}")
    saved = ax.twinx()
    seconds = np.asarray(seconds, dtype=float)
    saved.plot(np.arange(len(seconds)), 100 * (1 - seconds / seconds[-1]), color="tab:orange", alpha=0.6, linewidth=1)
    saved.set_ylim(0, 100)
    saved.set_ylabel("forward time saved at this depth (%, measured)", color="tab:orange")
    saved.tick_params(axis="y", colors="tab:orange")
    if has_depth:
        draw_task_depth(panels["depth"], panels.get("kl"), depth, selection)
    fig.legend(fontsize="x-small", loc="outside lower center", ncols=3 if has_depth else 2)
    return fig


def _save(fig: plt.Figure, out: str | Path) -> None:
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def _layers(selection: Selection) -> str:
    return ",".join(str(layer) for layer in selection.fold_layers)


# Points labelled by number with a key beside the axes, up to this many per panel; more would
# be unreadable at any size, and the table holds them all.
MAX_LABELLED_POINTS = 30


def plot_gain_vs_compute(summary: pd.DataFrame, out: str | Path) -> None:
    """``gain_figure`` written as a PNG."""
    _save(gain_figure(summary), out)


def gain_figure(summary: pd.DataFrame) -> plt.Figure:
    """Nested gain over the final layer (95% interval) against the deployed layer's measured time saved.

    One panel per metric (gains in different units are never on one axis), one point per task,
    numbered, with the key beside the panels.
    """
    # A task with no signal, or none above chance, has no saving to plot.
    summary = summary[(summary["status"] == "ok") & (summary.get("verdict", pd.Series(index=summary.index, dtype=object)) != "not_above_chance")]
    summary = summary.sort_values(["metric", "model", "task"])
    metrics = sorted(summary["metric"].unique()) or ["(no task with a signal)"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics) + 2.5, 4.2), layout="constrained", squeeze=False)
    key = []
    for ax, metric in zip(axes[0], metrics):
        rows = summary[summary["metric"] == metric]
        for model, group in rows.groupby("model", sort=True):
            # A percentile interval need not contain the point estimate; draw the part that exists.
            errors = np.maximum([group["gain"] - group["gain_ci_low"], group["gain_ci_high"] - group["gain"]], 0.0)
            ax.errorbar(100 * group["deployed_time_saved"], group["gain"], yerr=errors, fmt="o", capsize=3, label=model)
        if len(rows) <= MAX_LABELLED_POINTS:
            for _, row in rows.iterrows():
                key.append(f"{len(key) + 1}: {row['model']} / {row['task']} (layer {int(row['deployed_layer'])} of {int(row['n_layers'])})")
                ax.annotate(str(len(key)), (100 * row["deployed_time_saved"], row["gain"]), fontsize="x-small", xytext=(3, 3), textcoords="offset points")
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_xlim(-3, 103)  # 0-100%, points at the ends drawn whole
        ax.set(xlabel="forward time saved at the deployed layer (%, measured)", ylabel=f"nested gain over the final layer ({metric})", title=metric)
        if len(rows):
            ax.legend(fontsize="small")
    fig.suptitle("Gain against compute saved (95% bootstrap intervals)")
    if key:
        fig.text(1.0, 0.5, "\n".join(key), fontsize="x-small", va="center", ha="left")
    return fig


def plot_depth(curves: pd.DataFrame, summary: pd.DataFrame, out: str | Path) -> None:
    """``depth_figure`` written as a PNG."""
    _save(depth_figure(curves, summary), out)


def depth_figure(curves: pd.DataFrame, summary: pd.DataFrame) -> plt.Figure:
    """What every layer already knows, against relative depth (layer / L), one colour per model:
    the logit lens's top-1 agreement with the final prediction and its KL to the final
    distribution (standard lens), the cumulative distribution of exit layers, the final output's
    change when one block is skipped, and zero-shot Spearman per method; the probes' deployed
    layers are marked on the agreement panel."""
    models = sorted(set(curves["model"]) | set(summary["model"]))
    colour = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5), layout="constrained")
    panels = [
        (axes[0, 0], "lens:final_norm:top1_agreement", "top-1 agreement with the final layer"),
        (axes[0, 1], "lens:final_norm:kl_to_final", "KL(final || lens) at masked positions (nats)"),
        (axes[1, 0], "exit", "fraction of masked positions settled (cumulative)"),
        (axes[1, 1], "zero_shot:masked_marginal", "zero-shot Spearman (all variants)"),
    ]
    for ax, curve, label in panels:
        for (model, name), rows in curves[curves.curve == curve].groupby(["model", "set"]):
            ax.plot(rows["relative_depth"], rows["value"], "-", marker=".", color=colour[model], label=f"{model} · {name}")
        ax.set(xlabel="relative depth (layer / number of layers)", ylabel=label, xlim=(-0.02, 1.02))
    for (model, name), rows in curves[curves.curve == "zero_shot:wt_marginal"].groupby(["model", "set"]):
        axes[1, 1].plot(rows["relative_depth"], rows["value"], "--", color=colour[model], label=f"{model} · {name} (wild-type marginal)")
    for (model, name), rows in curves[curves.curve == "skip:final_kl_mean"].groupby(["model", "set"]):
        axes[0, 1].plot(rows["relative_depth"], rows["value"], ":", marker="x", color=colour[model], label=f"{model} · {name}: block skipped (x = the block)")
    deployed = summary.dropna(subset=["deployed_relative"])
    axes[0, 0].scatter(deployed["deployed_relative"], np.full(len(deployed), 1.03), marker="v", c=[colour[m] for m in deployed["model"]],
                       label="probes' deployed layers")
    axes[0, 0].axhline(0.9, color="grey", linewidth=0.8, linestyle=":")
    axes[0, 0].set_title("logit lens (final norm first)")
    axes[1, 1].set_title("zero-shot ProteinGym, per layer's lens")
    for ax in axes.flat:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="x-small")
    return fig


# The curves of one (model, task) on one relative-depth axis, as task_depth_curves lays them out.
TASK_DEPTH_COLUMNS = ["source", "curve", "layer", "relative_depth", "value", "spread"]
# Zero-shot methods drawn per layer (DoLa: Spearman of the contrast of the final layer with premature layer j, drawn at j).
ZERO_SHOT_CURVES = ("masked_marginal", "wt_marginal", "dola")
ZERO_SHOT_STYLE = {"masked_marginal": ("tab:cyan", "-"), "wt_marginal": ("tab:olive", "--"), "dola": ("tab:purple", ":")}


def task_depth_curves(probes: pd.DataFrame, selection: Selection, lens: pd.DataFrame | None = None, zero_shot: pd.DataFrame | None = None) -> pd.DataFrame:
    """What ``draw_task_depth`` draws for one (model, task), long (``TASK_DEPTH_COLUMNS``), every
    layer ``k`` also as relative depth ``k / L`` (``L = selection.n_layers``):

    - ``probe``: the selection metric on the test folds (mean, ``spread`` = sd over folds);
    - ``lens`` (a ``plmexit lens`` table): ``<variant>:top1_agreement`` with the final layer and
      ``<variant>:kl_to_final`` (nats) for the standard lens (``final_norm``) and the ``raw`` one;
    - ``zero_shot`` (a ``plmexit zero-shot`` long table): Spearman over all variants per layer for
      ``ZERO_SHOT_CURVES``, and each calibrated method's held-out Spearman at its layer.
    """
    n, metric = selection.n_layers, selection.metric
    rows = []
    scores = probes[(probes.fold >= 0) & (probes.metric == metric)].groupby("layer")["value"]
    for (k, mean), sd in zip(scores.mean().items(), scores.std().fillna(0.0).to_numpy()):
        rows.append(("probe", metric, int(k), k / n, float(mean), float(sd)))
    if lens is not None:
        chosen = lens[lens.metric.isin(["top1_agreement", "kl_to_final"])]
        for (variant, name), group in chosen.groupby(["lens", "metric"], sort=True):
            rows += [("lens", f"{variant}:{name}", int(k), k / n, float(v), 0.0) for k, v in zip(group["layer"], group["value"])]
    if zero_shot is not None:
        spearman = zero_shot[(zero_shot.metric == "spearman")]
        for method in ZERO_SHOT_CURVES:
            group = spearman[(spearman.method == method) & (spearman.subset == "all")].sort_values("layer")
            rows += [("zero_shot", method, int(k), k / n, float(v), 0.0) for k, v in zip(group["layer"], group["value"])]
        calibrated = spearman[spearman.method.str.endswith("_calibrated") & (spearman.subset == "held_out")]
        rows += [("zero_shot", f"{m} (held out)", int(k), k / n, float(v), 0.0) for m, k, v in zip(calibrated["method"], calibrated["layer"], calibrated["value"])]
    return pd.DataFrame(rows, columns=TASK_DEPTH_COLUMNS)


def draw_task_depth(top: plt.Axes, bottom: plt.Axes | None, curves: pd.DataFrame, selection: Selection) -> None:
    """One (model, task) on one relative-depth axis (``top``): the probe's test metric (mean +- sd over
    folds, deployed layer marked, as on the layer axis beside it) under what the model's own head says
    at each layer (lens top-1 agreement with the final layer, zero-shot Spearman per method); the
    lens's KL to the final distribution on ``bottom``, on the same axis."""
    probe = curves[curves.source == "probe"]
    top.plot(probe["relative_depth"], probe["value"], marker="o", color="black", label="_probe")
    if selection.n_folds > 1:
        top.fill_between(probe["relative_depth"], probe["value"] - probe["spread"], probe["value"] + probe["spread"], color="grey", alpha=0.3)
    if selection.status == "ok" and selection.deployed_layer is not None:
        top.axvline(selection.deployed_layer / selection.n_layers, color="tab:blue", label="_deployed")
    for variant, style in (("final_norm", "-"), ("raw", "--")):
        rows = curves[(curves.source == "lens") & (curves.curve == f"{variant}:top1_agreement")]
        if len(rows):
            top.plot(rows["relative_depth"], rows["value"], style, marker=".", color="tab:orange", label=f"lens ({variant}): top-1 agreement with the final layer")
    for method, (colour, style) in ZERO_SHOT_STYLE.items():
        rows = curves[(curves.source == "zero_shot") & (curves.curve == method)]
        if len(rows):
            label = "zero-shot Spearman: DoLa, final layer contrasted with layer j" if method == "dola" else f"zero-shot Spearman: {method.replace('_', ' ')}"
            top.plot(rows["relative_depth"], rows["value"], style, marker=".", color=colour, label=label)
    held_out = curves[(curves.source == "zero_shot") & curves.curve.str.endswith("(held out)")]
    for (name, rows), marker in zip(held_out.groupby("curve", sort=True), "sPD"):
        top.scatter(rows["relative_depth"], rows["value"], marker=marker, color="tab:red", label=f"zero-shot Spearman: {name.replace('_', ' ')}")
    top.axhline(0.0, color="grey", linewidth=0.6)
    top.set(ylabel=f"{selection.metric} / agreement / Spearman", title="against relative depth, beside the model's own head", xlim=(-0.03, 1.03))
    if bottom is not None:
        top.sharex(bottom)
        for variant, style in (("final_norm", "-"), ("raw", "--")):
            rows = curves[(curves.source == "lens") & (curves.curve == f"{variant}:kl_to_final")]
            if len(rows):
                bottom.plot(rows["relative_depth"], rows["value"], style, marker=".", color="tab:orange", label=f"_lens ({variant})")
        bottom.set(ylabel="lens: KL(final || lens), nats")
    (bottom if bottom is not None else top).set_xlabel(f"relative depth (layer / {selection.n_layers} layers; 0 = token embeddings)")
