"""The figures draw what a reader needs to see why a layer was chosen and what it saves."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from plmexit.probing.choice import select_layer, summarize
from plmexit.reporting import figures

from probe_tables import INNER, TEST, as_selection, long_table

SECONDS = [0.1, 0.3, 0.5, 0.7, 0.9]


def labels(fig) -> list[str]:
    return [text.get_text() for legend in fig.legends for text in legend.get_texts()]


def test_the_layer_figure_shows_the_scores_that_chose_the_layer_and_the_time_saved():
    table = long_table(INNER, TEST)
    fig = figures.layers_figure(table, as_selection(select_layer(table, "spearman")), SECONDS)

    drawn = labels(fig)
    assert "training-only score, mean over folds" in drawn  # what the folds chose by
    assert "training-only score on the deploy rows (chooses the deployed layer)" in drawn
    assert any(label.startswith("deployed layer 2 (nested score 0.467; folds chose 2,2,3)") for label in drawn)
    assert "final layer 4" in drawn and "+- 1 sd over folds" in drawn
    time_axis = fig.axes[1]
    assert time_axis.get_ylabel() == "forward time saved at this depth (%, measured)"
    assert list(time_axis.lines[0].get_ydata()) == pytest.approx([100 * (1 - s / 0.9) for s in SECONDS])
    plt.close(fig)


def test_with_one_fold_no_band_is_promised():
    table = long_table([[0.1], [0.5], [0.3]], [[0.2], [0.6], [0.4]], metric="accuracy")
    fig = figures.layers_figure(table, as_selection(select_layer(table, "accuracy")), SECONDS[:3])

    assert "+- 1 sd over folds" not in labels(fig) and "test accuracy, mean over 1 fold(s)" in labels(fig)
    plt.close(fig)


def test_the_summary_figure_has_a_panel_per_metric_on_a_0_to_100_percent_axis():
    rows = []
    for metric in ("spearman", "accuracy", "fmax"):
        for j in range(3):
            choice = select_layer(long_table(INNER, TEST, task=f"{metric}_{j}", metric=metric), metric)
            rows.append(as_selection(choice, deployed_time_saved=1.0 if j == 2 else 0.1 * j))
    fig = figures.gain_figure(summarize(rows))

    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["accuracy", "fmax", "spearman"]  # Spearman, accuracy and Fmax never share an axis
    for ax in panels:
        low, high = ax.get_xlim()
        assert -5 <= low <= 0 and 100 <= high <= 105
        assert ax.get_ylabel() == f"nested gain over the final layer ({ax.get_title()})"
        # Points are numbered, not labelled by name, so labels cannot collide; the key names them.
        assert all(text.get_text().isdigit() for text in ax.texts)
    key = fig.texts[-1].get_text().splitlines()
    assert len(key) == 9 and key[0] == "1: esm2_tiny / accuracy_0 (layer 2 of 4)"
    plt.close(fig)


def test_the_layer_figure_draws_the_baselines_as_horizontal_lines():
    table = long_table(INNER, TEST)
    selection = as_selection(select_layer(table, "spearman"), chance_score=0.0, baseline_features="onehot", baseline_score=0.25)
    fig = figures.layers_figure(table, selection, SECONDS)

    drawn = labels(fig)
    assert "chance baseline: test spearman 0.000, mean over folds" in drawn
    assert "onehot baseline: test spearman 0.250, mean over folds" in drawn
    horizontal = [line for line in fig.axes[0].lines if len(set(line.get_ydata())) == 1 and list(line.get_xdata()) == [0, 1]]
    assert sorted(line.get_ydata()[0] for line in horizontal) == [0.0, 0.25]
    plt.close(fig)
    # Without baselines (a probe step run without them) no line is promised.
    fig = figures.layers_figure(table, as_selection(select_layer(table, "spearman")), SECONDS)
    assert not any("baseline" in label for label in labels(fig))
    plt.close(fig)


def test_a_task_not_above_chance_has_no_point_in_the_gain_figure():
    rows = [as_selection(select_layer(long_table(INNER, TEST, task=t), "spearman"), verdict=v) for t, v in (("a", "too_little_data"), ("b", "not_above_chance"))]
    fig = figures.gain_figure(summarize(rows))
    assert [len(c.get_offsets()) for c in fig.axes[0].collections if hasattr(c, "get_offsets")] in ([1], [])
    assert len(fig.axes[0].lines[0].get_xdata()) == 1  # one errorbar point: task a
    plt.close(fig)
