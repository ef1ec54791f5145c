"""One (model, task)'s figure: its probe curve beside its lens and zero-shot curves, from hand-written results files."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from plmexit.cli import main
from plmexit.pipeline.report_steps import plot_task
from plmexit.probing.choice import select_layer
from plmexit.reporting import figures

from probe_tables import INNER, TEST, as_selection, long_table

TASK, SET = "NUD15.fold_contiguous_5", "NUD15"
AGREEMENT = [0.0, 0.25, 0.5, 0.95, 1.0]
KL = [3.0, 2.0, 1.0, 0.2, 0.0]
MASKED = [0.05, 0.10, 0.30, 0.25, 0.20]
SECONDS = [0.1, 0.3, 0.5, 0.7, 0.9]


@pytest.fixture
def results(tmp_path):
    """A probe table, selection, lens table and zero-shot long table of one tiny 4-layer model, as the pipeline writes them."""
    probes = long_table(INNER, TEST, model="tiny", task=TASK)
    probes.to_csv(tmp_path / "probes.tsv", sep="\t", index=False)
    selection = as_selection(select_layer(probes, "spearman"), dms_id=SET, fold_scheme="fold_contiguous_5")
    selection.to_json(tmp_path / "selection.json")
    lens = [("tiny", SET, variant, k, metric, value + (0.01 if variant == "raw" else 0.0))
            for variant in ("final_norm", "raw") for k in range(5)
            for metric, value in (("kl_to_final", KL[k]), ("top1_agreement", AGREEMENT[k]), ("entropy", 2.0))]
    pd.DataFrame(lens, columns=["model", "task", "lens", "layer", "metric", "value"]).to_csv(tmp_path / "lens.tsv", sep="\t", index=False)
    zero = [("tiny", SET, k, method, subset, "spearman", value) for k, v in enumerate(MASKED) for subset in ("all", "held_out")
            for method, value in (("masked_marginal", v), ("wt_marginal", v / 2))]
    zero += [("tiny", SET, j, "dola", "all", "spearman", 0.1 * j) for j in range(4)]
    zero += [("tiny", SET, 4, "sled_calibrated", "held_out", "spearman", 0.28), ("tiny", SET, 2, "dola_calibrated", "held_out", "spearman", 0.15),
             ("tiny", SET, 4, "masked_marginal", "all", "ndcg", 0.9)]
    pd.DataFrame(zero, columns=["model", "dms_id", "layer", "method", "subset", "metric", "value"]).to_csv(tmp_path / "zero.tsv", sep="\t", index=False)
    (tmp_path / "cost.json").write_text(json.dumps({"n_layers": 4, "seconds": SECONDS}))
    return tmp_path, selection


def test_the_command_draws_the_files_values_beside_the_layer_axis_on_one_relative_depth_axis(results, capsys):
    path, selection = results
    code = main([str(a) for a in ("plot", "--probes", path / "probes.tsv", "--selection", path / "selection.json", "--cost", path / "cost.json",
                                  "--lens", path / "lens.tsv", "--zero-shot", path / "zero.tsv", "--out", path / "f.png")])
    assert code == 0, capsys.readouterr().err
    assert (path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    curves = plot_task(path / "probes.tsv", path / "selection.json", path / "cost.json", path / "g.png", path / "lens.tsv", path / "zero.tsv")
    relative = [k / 4 for k in range(5)]
    probe = curves[curves.source == "probe"]
    assert list(probe["relative_depth"]) == relative and list(probe["value"]) == pytest.approx(np.mean(TEST, axis=1))
    assert list(probe["spread"]) == pytest.approx(np.std(TEST, axis=1, ddof=1))
    agreement = curves[curves.curve == "final_norm:top1_agreement"]
    assert list(agreement["relative_depth"]) == relative and list(agreement["value"]) == AGREEMENT
    assert list(curves[curves.curve == "final_norm:kl_to_final"]["value"]) == KL
    assert list(curves[curves.curve == "masked_marginal"]["value"]) == MASKED  # all variants, Spearman only
    assert list(curves[curves.curve == "dola"]["relative_depth"]) == relative[:4]
    held_out = curves[curves.curve.str.endswith("(held out)")].set_index("curve")
    assert held_out.loc["sled_calibrated (held out)", "value"] == 0.28 and held_out.loc["dola_calibrated (held out)", "relative_depth"] == 0.5

    fig = figures.layers_figure(long_table(INNER, TEST, model="tiny", task=TASK), selection, SECONDS, curves)
    layers, top, bottom, saved = fig.axes  # the layer axis (its time-saved twin last) and the depth column
    assert layers.get_xlabel().startswith("layer") and saved.get_ylabel().startswith("forward time saved")
    probe_line, deployed = top.lines[0], top.lines[1]
    assert list(probe_line.get_xdata()) == relative and list(probe_line.get_ydata()) == pytest.approx(np.mean(TEST, axis=1))
    assert list(probe_line.get_ydata()) == pytest.approx(list(layers.lines[0].get_ydata()))  # the same curve as on the layer axis
    assert list(deployed.get_xdata()) == [selection.deployed_layer / 4] * 2
    lines = {line.get_label(): line for line in top.lines}
    assert list(lines["lens (final_norm): top-1 agreement with the final layer"].get_ydata()) == AGREEMENT
    assert list(lines["zero-shot Spearman: masked marginal"].get_ydata()) == MASKED
    assert [line.get_label() for line in bottom.lines] == ["_lens (final_norm)", "_lens (raw)"] and list(bottom.lines[0].get_ydata()) == KL
    assert bottom.get_xlabel().startswith("relative depth (layer / 4 layers")
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert "zero-shot Spearman: masked marginal" in legend and "final layer 4" in legend and not any(label.startswith("_") for label in legend)
    plt.close(fig)


def test_without_a_lens_one_depth_panel_without_either_none_and_a_table_of_another_model_is_one_line(results, capsys):
    path, selection = results
    table = long_table(INNER, TEST, model="tiny", task=TASK)
    curves = plot_task(path / "probes.tsv", path / "selection.json", path / "cost.json", path / "h.png", zero_shot_file=path / "zero.tsv")
    assert set(curves["source"]) == {"probe", "zero_shot"} and (path / "h.png").is_file()
    fig = figures.layers_figure(table, selection, SECONDS, curves)
    assert len(fig.axes) == 3  # the layer axis, its twin and one depth panel
    plt.close(fig)
    curves = plot_task(path / "probes.tsv", path / "selection.json", path / "cost.json", path / "i.png")
    assert set(curves["source"]) == {"probe"}
    fig = figures.layers_figure(table, selection, SECONDS, curves)
    assert len(fig.axes) == 2  # no diagnostic: the layer figure alone
    plt.close(fig)

    lens = pd.read_csv(path / "lens.tsv", sep="\t").assign(model="other")
    lens.to_csv(path / "other.tsv", sep="\t", index=False)
    code = main([str(a) for a in ("plot", "--probes", path / "probes.tsv", "--selection", path / "selection.json", "--cost", path / "cost.json",
                                  "--lens", path / "other.tsv", "--zero-shot", "--out", path / "x.png")])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and "other.tsv: speaks of model ['other']" in err and not (path / "x.png").exists()
