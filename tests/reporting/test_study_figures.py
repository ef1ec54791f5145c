"""The paper's figures across models and its tables, from hand-written summaries and probe tables."""

from __future__ import annotations

import pandas as pd
import pytest

from plmexit.cli import main
from plmexit.reporting import manuscript, study

SUMMARY_COLUMNS = [
    "model", "task", "metric", "status", "n_layers", "deployed_layer", "oracle_layer", "nested_score", "final_score",
    "gain", "gain_ci_low", "gain_ci_high", "deployed_compute_saved", "deployed_time_saved",
]


def summary() -> pd.DataFrame:
    rows = [
        ("small", "loc", "accuracy", "ok", 4, 2, 4, 0.70, 0.65, 0.05, 0.01, 0.09, 0.5, 0.45),
        ("small", "fit", "spearman", "ok", 4, 4, 3, 0.40, 0.40, 0.0, 0.0, 0.0, 0.0, -0.02),
        ("big", "loc", "accuracy", "ok", 8, 8, 8, 0.75, 0.75, 0.0, -0.02, 0.02, 0.0, 0.0),
        ("big", "fit", "spearman", "no_signal", 8, 8, 8, float("nan"), 0.01, float("nan"), float("nan"), float("nan"), float("nan"), float("nan")),
    ]
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def probes() -> pd.DataFrame:
    rows = []
    for model, task, metric, layers in (("small", "loc", "accuracy", 4), ("small", "fit", "spearman", 4), ("big", "loc", "accuracy", 8), ("big", "fit", "spearman", 8)):
        for layer in range(layers + 1):
            for fold in (0, 1):
                rows.append((model, task, layer, fold, metric, layer / layers + 0.1 * fold))
                rows.append((model, task, layer, fold, f"inner_{metric}", 0.5))
            rows.append((model, task, layer, -1, f"inner_{metric}", 0.5))
    return pd.DataFrame(rows, columns=["model", "task", "layer", "fold", "metric", "value"])


def test_curves_are_on_relative_depth_with_the_fold_spread():
    curves = study.depth_curves(probes(), summary())
    big = curves[(curves.model == "big") & (curves.task == "loc")].set_index("layer")
    assert big.loc[4, "depth"] == 0.5 and big.loc[8, "depth"] == 1.0
    assert big.loc[4, "mean"] == pytest.approx(0.55) and big.loc[4, "std"] == pytest.approx(0.1 / 2**0.5)
    assert set(curves.metric) == {"accuracy", "spearman"}  # inner scores are not test scores


def test_final_layer_wins_counts_tasks_with_a_signal_with_wilson_intervals():
    wins = study.final_layer_wins(summary(), ["small", "big"]).set_index(["model", "layer"])
    assert wins.loc[("small", "oracle"), ["final_wins", "tasks"]].tolist() == [1, 2]  # oracle layer 4 of 4 on loc
    assert wins.loc[("small", "deployed"), ["final_wins", "tasks"]].tolist() == [1, 2]  # deployed 4 of 4 on fit
    assert wins.loc[("big", "oracle"), ["final_wins", "tasks"]].tolist() == [1, 1]  # the no-signal task left out
    # Wilson's interval for 1 of 2 at 95%: 0.5 -+ 1.96 * sqrt(0.25 / 2 + 1.96^2 / 16) / (1 + 1.96^2 / 2).
    assert study.wilson(1, 2) == pytest.approx((0.0945, 0.9055), abs=1e-4)
    assert study.wilson(0, 1) == pytest.approx((0.0, 0.7935), abs=1e-4)


def test_every_figure_in_png_and_pdf_and_the_tables_from_the_command(tmp_path):
    summary().assign(dms_id="", fold_scheme="").to_csv(tmp_path / "best.tsv", sep="\t", index=False)
    across = pd.DataFrame([{
        "model": "small", "metric": "accuracy", "scheme": "-", "n_tasks": 1, "n_no_signal": 0, "final_selected_fraction": 0.0,
        "final_oracle_fraction": 1.0, "mean_gain": 0.05, "mean_gain_ci_low": 0.01, "mean_gain_ci_high": 0.09,
        "mean_deployed_compute_saved": 0.5, "mean_deployed_time_saved": 0.45,
    }])
    across.to_csv(tmp_path / "across.tsv", sep="\t", index=False)
    probe_files = []
    for (model, task), table in probes().groupby(["model", "task"]):
        probe_files.append(str(tmp_path / f"{model}_{task}.tsv"))
        table.to_csv(probe_files[-1], sep="\t", index=False)
    args = ["plot-study", "--summary", str(tmp_path / "best.tsv"), "--across", str(tmp_path / "across.tsv"), "--probes", *probe_files]
    assert main([*args, "--figures-dir", str(tmp_path / "figures"), "--tables-dir", str(tmp_path / "tables")]) == 0
    stems = ["tasks/loc", "tasks/fit", "deployed_depth", "gain", "gain_vs_compute", "final_layer_wins"]
    assert sorted(str(p.relative_to(tmp_path / "figures")) for p in (tmp_path / "figures").rglob("*.*")) == sorted(
        f"{stem}.{fmt}" for stem in stems for fmt in ("png", "pdf")
    )
    assert (tmp_path / "figures" / "tasks" / "loc.pdf").read_bytes().startswith(b"%PDF")
    md = (tmp_path / "tables" / "best_layers.md").read_text().splitlines()
    assert md[0] == "| Model | Task | Metric | Layer | Nested | Final layer | Gain [95% CI] | FLOPs saved | Time saved |"
    assert md[2] == "| small | loc | accuracy | 2/4 | 0.700 | 0.650 | +0.050 [+0.010, +0.090] | 50% | 45% |"
    assert md[5] == "| big | fit | spearman | no signal |  | 0.010 |  |  |  |"
    tex = (tmp_path / "tables" / "across_tasks.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\label{tab:across-tasks}" in tex
    assert r"small & accuracy &  & 1 & 0\% & 100\% & +0.050 [+0.010, +0.090] & 50\% & 45\% \\" in tex


def test_latex_escapes_what_task_names_contain():
    table = pd.DataFrame([{"Task": "BLAT_ECOLX_Stiffler_2015.fold_random_5", "Gain": "+0.1 [0, 1]"}])
    assert r"BLAT\_ECOLX\_Stiffler\_2015.fold\_random\_5 & +0.1 [0, 1] \\" in manuscript.latex(table, "c", "tab:x")


def test_a_task_not_above_chance_claims_no_layer_or_saving_in_the_tables_and_no_point_in_the_gain_figure():
    table = summary().assign(verdict=["better_than_final", "not_above_chance", "not_distinguishable", "no_signal"])
    table.loc[1, ["deployed_compute_saved", "deployed_time_saved"]] = float("nan")
    rows = manuscript.best_layers_table(table).set_index(["Model", "Task"])
    assert rows.loc[("small", "fit"), ["Layer", "FLOPs saved", "Time saved"]].tolist() == ["not above chance", "", ""]
    assert rows.loc[("small", "loc"), "Layer"] == "2/4" and rows.loc[("big", "fit"), "Layer"] == "no signal"
    fig = study.gain_vs_compute_figure(table, {"small": {"marker": "o", "color": "k"}, "big": {"marker": "s", "color": "r"}})
    titles = {ax.get_ylabel() for ax in fig.axes}
    assert "gain over final layer (spearman)" not in titles  # the only spearman task left is not above chance
