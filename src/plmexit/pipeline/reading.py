"""Reading the files steps pass each other (probe tables, predictions, JSON), with a one-line error naming the writer to rerun."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from plmexit.errors import InputError
from plmexit.probing import tables
from plmexit.probing.probes import HYPERPARAMETER


def read_tsv(path: str | Path, what: str, writer: str) -> pd.DataFrame:
    """A TSV another step wrote; a one-line error naming ``what`` it should be and the ``writer`` to rerun."""
    try:
        return pd.read_csv(path, sep="\t")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: not a readable {what} ({exc}); rerun {writer}") from None


def read_probe_table(path: str | Path) -> pd.DataFrame:
    return _read_columns(path, tables.PROBE_COLUMNS, "probe table", "`plmexit probe`")


def read_hyperparameters(probe_table: str | Path, n_layers: int) -> pd.DataFrame:
    """``(L + 1 layers) x folds``: the hyperparameter the probe step chose per layer and fold (NaN: no signal)."""
    table = read_probe_table(probe_table)
    hyper = table[table.metric == HYPERPARAMETER].pivot(index="layer", columns="fold", values="value")
    if hyper.empty or sorted(hyper.index) != list(range(n_layers + 1)):
        raise InputError(f"{probe_table}: no hyperparameter rows for every layer 0..{n_layers}; rerun `plmexit probe`")
    return hyper.sort_index()


def _read_columns(path: str | Path, columns: list[str], what: str, writer: str) -> pd.DataFrame:
    """``read_tsv``, and a one-line error unless its columns are ``columns``."""
    table = read_tsv(path, what, writer)
    if list(table.columns) != columns:
        raise InputError(f"{path}: columns {list(table.columns)} are not {columns}; rerun {writer}")
    return table


def read_predictions(path: str | Path, task_type: str) -> pd.DataFrame:
    """A predictions table of ``plmexit probe``; errors do not name ``path`` (callers say which table it belongs to)."""
    return _read_prediction_rows(path, task_type, tables.PREDICTION_COLUMNS, {}, "predictions file", "`plmexit probe`")


def _read_prediction_rows(path, task_type: str, columns: list[str], dtypes: dict, what: str, writer: str) -> pd.DataFrame:
    """Predictions-shaped rows (ids and, but for regression, labels and predictions as text), multi-label ones decoded."""
    text = {"label": str, "prediction": str} if task_type != "regression" else {}
    try:
        table = pd.read_csv(path, sep="\t", dtype={"id": str, **dtypes, **text}, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, EOFError) as exc:
        raise InputError(f"not a readable {what} ({exc}); rerun {writer}") from None
    if list(table.columns) != columns:
        raise InputError(f"columns {list(table.columns)} are not {columns}; pass the {what} written by {writer}")
    return tables.decode_multilabel(table) if task_type == "multilabel" else table


def read_json(path: str | Path, writer: str, keys: tuple[str, ...]) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a file written by {writer} ({exc})") from None
    missing = [key for key in keys if not isinstance(data, dict) or key not in data]
    if missing:
        raise InputError(f"{path}: lacks {', '.join(missing)}; pass a file written by {writer}")
    return data


def read_baseline_table(path: str | Path) -> pd.DataFrame:
    return _read_columns(path, tables.BASELINE_COLUMNS, "baseline table", "`plmexit probe --baseline-features ...`")


def read_baseline_predictions(path: str | Path, task_type: str) -> pd.DataFrame:
    """A baseline predictions table, its ``baseline`` column where a predictions table has ``layer``, decoded as ``read_predictions`` does."""
    try:
        return _read_prediction_rows(
            path, task_type, tables.BASELINE_PREDICTION_COLUMNS, {"baseline": str}, "baseline predictions", "`plmexit probe --baseline-predictions`",
        )
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
