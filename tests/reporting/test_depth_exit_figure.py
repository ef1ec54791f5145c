"""One model's depth diagnostics and early exit together, from hand-written tables shaped as the pipeline writes them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from plmexit.cli import main
from plmexit.pipeline.exit_steps import EXIT_COLUMNS
from plmexit.pipeline.report_steps import plot_depth_exit
from plmexit.pipeline.select_steps import DEPTH_COLUMNS
from plmexit.probing.choice import SUMMARY_COLUMNS
from plmexit.reporting import depth_exit

SCHEMES = ("fold_random_5", "fold_modulo_5", "fold_contiguous_5")


def best_layers(model: str, n_layers: int, tasks: dict[str, int], assays: list[str]) -> pd.DataFrame:
    """``summary/best_layers.tsv`` rows: ``tasks`` {task: deployed layer}, and each assay under the three schemes (deployed at L / 2)."""
    rows = [{"model": model, "task": t, "dms_id": None, "fold_scheme": None, "metric": "accuracy", "status": "ok", "deployed_layer": k} for t, k in tasks.items()]
    rows += [{"model": model, "task": f"{a}.{s}", "dms_id": a, "fold_scheme": s, "metric": "spearman", "status": "ok", "deployed_layer": n_layers // 2 + i % 3}
             for i, a in enumerate(assays) for s in SCHEMES]
    table = pd.DataFrame(rows).reindex(columns=SUMMARY_COLUMNS)
    return table.assign(n_layers=n_layers)


def depth_summary(model: str, n_layers: int, lens: dict[str, int], assays: list[str]) -> pd.DataFrame:
    """``summary/depth.tsv`` rows: the lens's agreeing layer of ``lens`` tasks, and each assay's zero-shot layer (L - 1)."""
    rows = [{"model": model, "task": t, "lens_agreeing_layer": k} for t, k in lens.items()]
    rows += [{"model": model, "task": f"{a}.{s}", "zero_shot_chosen_layer": n_layers - 1} for a in assays for s in SCHEMES]
    table = pd.DataFrame(rows).reindex(columns=DEPTH_COLUMNS).assign(n_layers=n_layers)
    table["lens_agreeing_relative"] = table["lens_agreeing_layer"] / n_layers
    table["zero_shot_chosen_relative"] = table["zero_shot_chosen_layer"] / n_layers
    return table


def exit_table(model: str, task: str, n_layers: int, folds: int = 3, gates=("probability", "margin", "entropy", "patience")) -> pd.DataFrame:
    """An exit table (``plmexit exit``): every static layer per fold, and per gate the calibrated and Hart controllers."""
    rows = []
    for fold in range(folds):
        for k in range(n_layers + 1):
            rows.append({"fold": fold, "gate": "-", "kind": "static", "layer": k, "score": 0.5 + 0.3 * k / n_layers + 0.01 * fold,
                         "mean_layer": k, "time_saved_estimate": 1 - (0.05 + 0.95 * k / n_layers)})
        for i, gate in enumerate(gates):
            rows.append({"fold": fold, "gate": gate, "kind": "calibrated", "score": 0.75, "mean_layer": (0.6 + 0.05 * i) * n_layers, "time_saved_estimate": 0.3})
            rows.append({"fold": fold, "gate": gate, "kind": "hart_test_swept", "score": 0.78, "mean_layer": 0.3 * n_layers, "time_saved_estimate": 0.6})
    table = pd.DataFrame(rows).reindex(columns=EXIT_COLUMNS)
    return table.assign(model=model, task=task, metric="accuracy", certified=True, reference_layer=n_layers)


def write(tmp_path, model="m", n_layers=8, assays=("A1", "A2"), exit_tasks=("loc", "sol")):
    tasks = {"loc": 3, "sol": 8, "ec": 5}
    best = best_layers(model, n_layers, tasks, list(assays))
    other = best_layers("other", 4, tasks, list(assays))  # another model's rows: never drawn
    pd.concat([best, other]).to_csv(tmp_path / "best.tsv", sep="\t", index=False)
    depth_summary(model, n_layers, {"loc": 2}, list(assays)).to_csv(tmp_path / "depth.tsv", sep="\t", index=False)
    files = []
    for task in exit_tasks:
        files.append(tmp_path / f"{task}.tsv")
        exit_table(model, task, n_layers).to_csv(files[-1], sep="\t", index=False)
    return files


def test_a_row_per_task_with_every_mark_as_relative_depth(tmp_path):
    files = write(tmp_path)
    best, depth = (pd.read_csv(tmp_path / f, sep="\t") for f in ("best.tsv", "depth.tsv"))
    exits = pd.concat([pd.read_csv(f, sep="\t") for f in files])
    dots = depth_exit.dot_rows("m", best, depth, exits)
    # Tasks with a depth diagnostic or an exit table (ec has neither); ProteinGym's after the others, in task order.
    assert list(dots.drop_duplicates("order")["row"]) == ["loc", "sol", *(f"{a}.{s}" for a in ("A1", "A2") for s in sorted(SCHEMES))]
    loc = dots[dots.row == "loc"].set_index(["mark", "gate"], drop=False)
    assert loc.loc[("deployed", None), "value"] == 3 / 8 and loc.loc[("lens", None), "value"] == 2 / 8
    # Each gate's calibrated controller: its mean exit layer over folds, over L (patience, the fourth gate, at 0.75 L).
    assert loc.loc[("controller", "patience"), "value"] == pytest.approx(0.75)
    assert ("zero_shot", None) not in loc.index  # no zero-shot score for a task that is not an assay
    assert dots[dots.row == "A1.fold_random_5"].set_index("mark").loc["zero_shot", "value"] == 7 / 8
    assert (dots["n"] == 1).all() and (dots["low"] == dots["value"]).all()


def test_many_assays_fold_into_one_row_per_scheme_with_median_and_iqr(tmp_path):
    assays = [f"A{i:03d}" for i in range(30)]
    files = write(tmp_path, assays=assays)
    best, depth = (pd.read_csv(tmp_path / f, sep="\t") for f in ("best.tsv", "depth.tsv"))
    dots = depth_exit.dot_rows("m", best, depth, pd.concat([pd.read_csv(f, sep="\t") for f in files]))
    rows = list(dots.drop_duplicates("order")["row"])
    assert rows == ["loc", "sol", *(f"ProteinGym, {s} (30 assays)" for s in sorted(SCHEMES))]
    folded = dots[dots.row == "ProteinGym, fold_random_5 (30 assays)"].set_index("mark")
    deployed = np.array([8 // 2 + i % 3 for i in range(30)]) / 8
    assert folded.loc["deployed", "n"] == 30
    assert folded.loc["deployed", ["low", "value", "high"]].tolist() == pytest.approx(np.percentile(deployed, [25, 50, 75]).tolist())


def test_the_figure_in_png_and_pdf_from_the_command_at_journal_width(tmp_path):
    files = write(tmp_path, assays=[f"A{i:03d}" for i in range(30)])  # folded rows: the longest row labels and panel a's two-line title
    args = ["plot-depth-exit", "--model", "m", "--summary", tmp_path / "best.tsv", "--depth", tmp_path / "depth.tsv", "--exit-tables", *files]
    assert main([str(a) for a in [*args, "--out", tmp_path / "f.png", "--pdf-out", tmp_path / "f.pdf"]]) == 0
    assert (tmp_path / "f.pdf").read_bytes().startswith(b"%PDF")
    width, height = Image.open(tmp_path / "f.png").size
    # 7.2 in wide at 300 dpi (and the tight bounding box's 0.1 in padding), a dot chart above two exit panels.
    assert 7.2 * 300 <= width <= 7.4 * 300 and height > 4 * 300
    best, depth = (pd.read_csv(tmp_path / f, sep="\t") for f in ("best.tsv", "depth.tsv"))
    fig = depth_exit.depth_exit_figure("m", best, depth, pd.concat([pd.read_csv(f, sep="\t") for f in files]))
    shown = [ax for ax in fig.axes if ax.get_visible() and ax.get_title(loc="left")]
    assert [ax.get_title(loc="left").split("   ")[0] for ax in shown] == ["a", "b", "c"]
    assert [ax.get_title(loc="left").split("   ")[1] for ax in shown[1:]] == ["loc", "sol"]
    assert all(ax.get_xlabel() for ax in shown) and all(ax.get_ylabel() for ax in shown[1:])


def test_exit_tables_of_another_model_or_a_task_missing_from_the_summary_are_refused(tmp_path):
    files = write(tmp_path)
    exit_table("other", "loc", 4).to_csv(tmp_path / "wrong.tsv", sep="\t", index=False)
    with pytest.raises(Exception, match=r"wrong.tsv: holds model\(s\) other; pass the exit tables of model m"):
        plot_depth_exit("m", tmp_path / "best.tsv", tmp_path / "depth.tsv", [tmp_path / "wrong.tsv"], tmp_path / "f.png", tmp_path / "f.pdf")
    exit_table("m", "gone", 8).to_csv(tmp_path / "gone.tsv", sep="\t", index=False)
    code = main([str(a) for a in ("plot-depth-exit", "--model", "m", "--summary", tmp_path / "best.tsv", "--depth", tmp_path / "depth.tsv",
                                  "--exit-tables", *files, tmp_path / "gone.tsv", "--out", tmp_path / "f.png", "--pdf-out", tmp_path / "f.pdf")])
    assert code == 1 and not (tmp_path / "f.png").exists()


def test_the_agreement_threshold_is_the_lens_one():
    from plmexit.depth import lens

    assert depth_exit.AGREEMENT_THRESHOLD == lens.AGREEMENT_THRESHOLD
