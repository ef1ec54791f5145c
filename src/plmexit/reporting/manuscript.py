"""Tables for a manuscript: the best-layer and across-task summaries as Markdown and LaTeX (booktabs).

Invariant: the tables are ``summary/best_layers.tsv`` and ``summary/across_tasks.tsv`` (``plmexit
summarize``) with columns renamed and numbers rounded as a paper prints them (scores and gains to
three decimals, gains with their 95% interval, shares of compute and tasks as whole percentages);
no number is recomputed. LaTeX needs ``\\usepackage{booktabs}``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from plmexit.atomic import write_text

LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def _score(x) -> str:
    return "" if pd.isna(x) else f"{x:.3f}"


def _gain(x, low, high) -> str:
    return "" if pd.isna(x) else f"{x:+.3f} [{low:+.3f}, {high:+.3f}]"


def _percent(x) -> str:
    return "" if pd.isna(x) else f"{100 * x:.0f}%"


def best_layers_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per model and task: deployed layer of L, nested and final-layer scores, gain with its
    interval, compute and measured time saved at the deployed layer."""
    rows = []
    for r in summary.itertuples():
        ok = r.status == "ok"
        # A task no layer lifts above chance keeps its scores and gain but claims no layer and no saving.
        above_chance = getattr(r, "verdict", None) != "not_above_chance"
        rows.append({
            "Model": r.model, "Task": r.task, "Metric": r.metric,
            "Layer": ("no signal" if not ok else f"{int(r.deployed_layer)}/{int(r.n_layers)}" if above_chance else "not above chance"),
            "Nested": _score(r.nested_score), "Final layer": _score(r.final_score),
            "Gain [95% CI]": _gain(r.gain, r.gain_ci_low, r.gain_ci_high) if ok else "",
            "FLOPs saved": _percent(r.deployed_compute_saved) if ok and above_chance else "",
            "Time saved": _percent(r.deployed_time_saved) if ok and above_chance else "",
        })
    return pd.DataFrame(rows)


def across_tasks_table(across: pd.DataFrame) -> pd.DataFrame:
    """One row per model, metric and scheme: tasks, how often the final layer is deployed and is the
    best on test, the mean gain with its interval, mean compute and time saved."""
    rows = []
    for r in across.itertuples():
        rows.append({
            "Model": r.model, "Metric": r.metric, "Scheme": "" if r.scheme == "-" else r.scheme, "Tasks": f"{int(r.n_tasks)}",
            "Final deployed": _percent(r.final_selected_fraction), "Final best (oracle)": _percent(r.final_oracle_fraction),
            "Mean gain [95% CI]": _gain(r.mean_gain, r.mean_gain_ci_low, r.mean_gain_ci_high),
            "FLOPs saved": _percent(r.mean_deployed_compute_saved), "Time saved": _percent(r.mean_deployed_time_saved),
        })
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    cells = [[str(v).replace("|", "\\|") for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "|".join("---" for _ in table.columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def latex(table: pd.DataFrame, caption: str, label: str) -> str:
    """A ``table`` float with a booktabs ``tabular`` (text columns left, numbers right)."""
    numeric = [all(ch in "0123456789.+-[], %/" for ch in "".join(map(str, table[c]))) and c not in ("Model", "Task") for c in table.columns]
    spec = "".join("r" if n else "l" for n in numeric)
    body = [" & ".join(_latex_escape(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
    return "\n".join([
        r"\begin{table}[t]", r"\centering", rf"\caption{{{_latex_escape(caption)}}}", rf"\label{{{label}}}", r"\small",
        rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(_latex_escape(c) for c in table.columns) + r" \\", r"\midrule",
        *body, r"\bottomrule", r"\end{tabular}", r"\end{table}",
    ]) + "\n"


BEST_CAPTION = (
    "Deployed layer per model and task, chosen on training data only (nested cross-validation); nested test score, "
    "final-layer score, gain over the final layer with its 95% bootstrap interval, and compute (analytic FLOPs) and "
    "measured forward time saved by stopping at the deployed layer."
)
ACROSS_CAPTION = (
    "Across tasks, per model, metric and ProteinGym scheme: how often the final layer is deployed and is the best on "
    "test, the mean gain over the final layer (95% bootstrap interval, each assay once), and the mean compute and time saved."
)


def write_tables(summary: pd.DataFrame, across: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """``best_layers.{md,tex}`` and ``across_tasks.{md,tex}`` under ``out_dir``."""
    out_dir = Path(out_dir)
    written = []
    for name, table, caption in (("best_layers", best_layers_table(summary), BEST_CAPTION), ("across_tasks", across_tasks_table(across), ACROSS_CAPTION)):
        for suffix, text in (("md", markdown(table)), ("tex", latex(table, caption, f"tab:{name.replace('_', '-')}"))):
            write_text(out_dir / f"{name}.{suffix}", text)
            written.append(out_dir / f"{name}.{suffix}")
    return written
