"""The selection record: what ``plmexit select`` writes for one (model, task) and every later step reads.

Invariant: ``Selection`` is the one declaration of the selection JSON. Each field is written by
``to_json`` under its own name, in declaration order, and ``from_json`` refuses a file that lacks
one or holds a value of another type, with one line naming the file, the key and the fix (rerun
``plmexit select``); readers take attributes and never check keys of their own. Keys a file holds
beyond the fields are ignored, so a newer writer's additions do not break an older reader. This
module imports only the standard library (no pandas), so any step may read a selection cheaply.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from plmexit.atomic import write_text
from plmexit.errors import SelectionError

# What ``min_test_fold_size`` counts and the gain's bootstrap resamples (``Selection.test_unit``).
TEST_UNIT_POSITIONS = "positions"  # mutated positions of a ProteinGym assay, each with its variants
TEST_UNIT_ITEMS = "items"
TEST_UNIT_CLUSTERS = "clusters"  # MMseqs2 sequence clusters of a homology-folded task
TEST_UNITS = (TEST_UNIT_POSITIONS, TEST_UNIT_ITEMS, TEST_UNIT_CLUSTERS)
# The command that writes a selection: every error tells the user to rerun it.
WRITER = "`plmexit select`"


@dataclass(frozen=True)
class FoldChoice:
    """One evaluation fold's nested choice: the layer its training rows chose and how it scored on its test rows."""

    fold: int
    layer: int | None  # None: every inner score of this fold is NaN (no signal)
    inner_score: float | None  # the chosen layer's inner (training rows only) score
    test_score: float | None  # the chosen layer's test score, in the selection metric
    final_test_score: float  # the final layer's test score on the same rows
    test_metrics: dict[str, float]  # every test metric of the chosen layer (e.g. MSE beside Spearman)
    final_test_metrics: dict[str, float]  # every test metric of the final layer
    hyperparameter: float | None  # the chosen layer's regularisation, as the probe step chose it
    final_hyperparameter: float | None


@dataclass(frozen=True)
class GridEdge:
    """A chosen probe whose regularisation sits on the edge of its grid (a wider grid might score better)."""

    fold: int  # an evaluation fold, or the deploy fold (``probes.DEPLOY_FOLD``)
    layer: int
    value: float | None  # the hyperparameter chosen
    edge: str  # "lowest" or "highest"


@dataclass(frozen=True)
class Bootstrap:
    """How the gain's interval was drawn."""

    resamples: int
    seed: int
    level: float  # e.g. 0.95
    unit: str  # what one resample draws, in words


@dataclass(frozen=True)
class Selection:
    """One (model, task)'s layer choice as ``plmexit select`` writes it (``choice.select_layer`` plus ``select_steps.select_task``).

    Scores are in ``metric`` (higher is better) and averaged over the evaluation folds. Fields
    that cannot be computed (no signal, no baselines fitted) are None. ``deployed_*`` describe
    the deployed layer (chosen on the rows that are never test rows), ``fold*``/``nested_score``
    each fold's own choice, ``final_*`` layer ``n_layers`` and ``oracle_*`` the best mean test
    layer (optimistic by construction).
    """

    model: str  # the config's model id
    task: str
    metric: str  # the selection metric
    status: str  # ``choice.STATUS_OK`` or ``choice.STATUS_NO_SIGNAL``
    n_layers: int  # L: the final layer (layer 0 is the token embeddings)
    n_folds: int  # evaluation folds
    tolerance: float  # a layer within this of the best inner score may be chosen (the shallowest wins)
    deployed_layer: int | None
    deployed_inner_score: float | None
    deployed_hyperparameter: float | None  # the deploy fold's regularisation at the deployed layer
    fold_layers: tuple[int | None, ...]  # each evaluation fold's chosen layer, in fold order
    fold_agreement: float | None  # fraction of folds that chose the deployed layer
    nested_score: float | None  # mean over folds of each fold's chosen layer's test score
    final_score: float  # mean test score of the final layer
    gain: float | None  # nested_score - final_score
    deployed_compute_saved: float | None  # fraction of layers not run at the deployed layer
    folds_compute_saved: float | None
    oracle_layer: int | None
    oracle_score: float | None
    folds: tuple[FoldChoice, ...]
    mean_test_score_by_layer: dict[int, float]
    hyperparameters_on_grid_edge: tuple[GridEdge, ...]
    test_unit: str  # one of ``TEST_UNITS``: what ``min_test_fold_size`` counts and the bootstrap draws
    bootstrap: Bootstrap
    gain_ci_low: float | None  # the gain's percentile interval (``bootstrap``)
    gain_ci_high: float | None
    deployed_time_saved: float | None  # fraction of measured forward time saved at the deployed layer
    folds_time_saved: float | None
    min_test_fold_size: int  # the smallest test fold, in ``test_unit``
    model_name: str  # the model's own name (fair-esm release, hub id), for ProteinGym's files
    layer_norm: str  # the embedding's layer-norm convention
    n_truncated: int  # sequences not embedded whole
    split: str  # how the task was split, in words
    n_sequences: int
    task_info: dict[str, typing.Any]  # ``plmexit prepare``'s task info without each id's cluster
    dms_id: str | None  # the ProteinGym assay, None for other tasks
    fold_scheme: str | None  # the ProteinGym fold scheme, None for other tasks
    # The baselines (``choice.BASELINE_SUMMARY_COLUMNS``); None where the probe step fitted none.
    chance_score: float | None
    baseline_features: str | None
    baseline_score: float | None
    nested_gain_over_chance: float | None
    nested_gain_over_chance_ci_low: float | None
    nested_gain_over_chance_ci_high: float | None
    final_gain_over_chance: float | None
    final_gain_over_chance_ci_low: float | None
    final_gain_over_chance_ci_high: float | None
    final_gain_over_baseline: float | None
    final_gain_over_baseline_ci_low: float | None
    final_gain_over_baseline_ci_high: float | None
    verdict: str  # one of ``choice.VERDICTS``' keys

    @property
    def task_name(self) -> str:
        """The name other steps' files use for the task: the ProteinGym assay, else the task."""
        return self.dms_id or self.task

    def to_dict(self) -> dict:
        """The JSON object ``to_json`` writes (nested records as objects, tuples as lists)."""
        return dataclasses.asdict(self)

    def to_json(self, path: str | Path) -> None:
        """Write the selection to ``path`` atomically (a reader never sees half of it)."""
        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: object, source: str | Path) -> Selection:
        """The selection in ``data`` (a JSON object); a ``SelectionError`` naming ``source`` and the first missing or odd key."""
        return _build(cls, data, source, "")

    @classmethod
    def from_json(cls, path: str | Path) -> Selection:
        """Read a selection JSON written by ``to_json``; a one-line ``SelectionError`` if it is unreadable or incomplete."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise SelectionError(f"{path}: not a readable selection JSON ({exc}); rerun {WRITER}") from None
        return cls.from_dict(data, path)


def _build(cls: type, data: object, source: str | Path, prefix: str):
    if not isinstance(data, dict):
        raise SelectionError(f"{source}: the file is not a JSON object; rerun {WRITER}")
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        key = prefix + field.name
        if field.name not in data:
            # Selections of older releases lack keys (``test_unit`` among them). No default is guessed: the test unit
            # decides what the gain's interval and an export's card say, and select reruns from files the run keeps.
            raise SelectionError(f"{source}: lacks key {key!r} (written by an older plmexit, or by hand); rerun {WRITER}")
        values[field.name] = _convert(data[field.name], hints[field.name], source, key)
    return cls(**values)


def _convert(value, hint, source: str | Path, key: str):
    """``value`` as type ``hint`` (the JSON form: lists for tuples, string keys for int keys), else a ``SelectionError``."""
    nullable = typing.get_origin(hint) in (typing.Union, types.UnionType)
    if nullable:
        if value is None:
            return None
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return _build(hint, value, source, key + ".")
    if origin is tuple and isinstance(value, (list, tuple)):
        return tuple(_convert(v, args[0], source, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict and isinstance(value, dict):
        key_type, value_type = args
        if key_type is int:
            try:
                return {int(k): _convert(v, value_type, source, f"{key}[{k}]") for k, v in value.items()}
            except ValueError:
                pass  # a key that is no integer: reported below
        elif value_type is typing.Any:
            return dict(value)
        else:
            return {str(k): _convert(v, value_type, source, f"{key}[{k}]") for k, v in value.items()}
    if hint is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if hint is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, str):
        return value
    expected = _describe(hint) + (" or null" if nullable else "")
    raise SelectionError(f"{source}: key {key!r} holds {json.dumps(value, default=str)[:60]}, not {expected}; rerun {WRITER}")


def _describe(hint) -> str:
    origin = typing.get_origin(hint)
    if origin is tuple:
        return "a list"
    if origin is dict or dataclasses.is_dataclass(hint):
        return "an object"
    return {int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))
