"""A config's task entries as frozen ``PlannedTask`` records, and the ``TaskIndex`` every per-job question is a lookup in.

Invariant: a ``TaskIndex`` is built once from the models and the tasks known so far, and never
scanned per job: each of its dicts answers one question Snakemake asks for every job (a task by id,
the task whose table a set embeds, a model's tasks, its lens and zero-shot sets). When a filtered
ProteinGym entry's tasks become known (the ``choose_assays`` checkpoint), the plan builds a new one.
Only the standard library is imported, so building the DAG stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from plmexit.data import sources
from plmexit.data.formats import COMMON_KEYS, FORMATS
from plmexit.errors import ConfigError

DEFAULT_SELECTION_METRIC = {"regression": "spearman", "classification": "accuracy", "multilabel": "fmax"}
DEFAULT_REFERENCE = "proteingym/reference_files/DMS_substitutions.csv"
# = plmexit.data.proteingym.FOLD_SCHEMES, repeated because planning imports no pandas (test_config checks they agree).
FOLD_SCHEMES = ("fold_random_5", "fold_modulo_5", "fold_contiguous_5")


@dataclass(frozen=True)
class PlannedTask:
    """One task of the plan: a config task entry, or one assay of a ``proteingym`` entry under one fold scheme.

    ``files`` maps each file role of the entry's kind to its value as the config gives it (a pinned
    file key, the data key of an assay staged from a ProteinGym archive, or a local path); ``entry`` is the config entry itself (its options), read, never changed.
    """

    id: str
    entry_id: str
    kind: str
    type: str
    metric: str
    embedding_set: str  # the tasks that share sequences share a set: an assay's fold schemes
    dms_id: str | None
    scheme: str | None
    files: Mapping[str, str]
    position: int  # of the entry in the config's tasks, for error messages
    entry: Mapping = field(repr=False)

    def __getitem__(self, key: str):
        """``task["type"]``: the dict-style read of the plan's tasks before they were records."""
        return getattr(self, key)


def check_model(entry: dict, position: int, entry_ids: list[str]) -> None:
    """Keys that only apply to some model sources (the schema says which source; this says which key
    fits it), and a model's ``tasks`` naming config task entries."""
    fair_esm = "name" in entry or "checkpoint" in entry
    where = f"config: models[{position}] ({entry['id']})"
    unknown = [t for t in entry.get("tasks", []) if t not in entry_ids]
    if unknown:
        raise ConfigError(f"{where}.tasks: {unknown[0]!r} is not the id of a config task entry (ids: {', '.join(entry_ids)}); fix the id")
    if "sha256" in entry and not fair_esm:
        raise ConfigError(f"{where}: sha256 applies to a fair-esm checkpoint (name or checkpoint); a transformers model's files are hashed when fetched, remove it")
    if "url" in entry and "name" not in entry:
        raise ConfigError(f"{where}: url is a mirror for a fair-esm model given by name; remove it")
    if "family" in entry and "hub" not in entry and "path" not in entry:
        raise ConfigError(f"{where}: family applies to a transformers model (hub or path); a random model takes random.family; remove it")
    if "revision" in entry and "hub" not in entry:
        raise ConfigError(f"{where}: revision pins a hub model; remove it or add hub")


def check_task_keys(entry: dict, position: int) -> None:
    """Every key of a task entry applies to its kind (``FORMATS``); a proteingym entry lists assays or has a filter."""
    kind = entry["kind"]
    allowed = set(COMMON_KEYS) | set(FORMATS[kind].file_roles) | set(FORMATS[kind].options)
    extra = sorted(set(entry) - allowed)
    if extra:
        raise ConfigError(
            f"config: tasks[{position}] ({entry['id']}): key {extra[0]!r} does not apply to a {kind} task "
            f"(it takes {', '.join(sorted(allowed - {'id', 'kind'}))}); remove it"
        )
    if kind == "proteingym" and ("assays" in entry) == ("filter" in entry):
        raise ConfigError(f"config: tasks[{position}] ({entry['id']}): give a proteingym task either assays (a DMS_id list) or filter")
    if "archive" in entry and "assay_dir" in entry:
        raise ConfigError(f"config: tasks[{position}] ({entry['id']}): give a proteingym task's assays either an archive or an assay_dir, not both")


def expand_entry(entry: dict, position: int, dms_ids: list[str] | None) -> list[PlannedTask]:
    """A config task entry's tasks: itself, or for a ``proteingym`` entry one per assay of ``dms_ids`` and fold scheme."""
    kind = entry["kind"]
    implied = FORMATS[kind].task_type
    task_type = entry.get("type") or implied
    if task_type is None:
        raise ConfigError(f"config: tasks[{position}] ({entry['id']}): a {kind} task needs a type (regression, classification or multilabel)")
    if implied is not None and task_type != implied:
        raise ConfigError(f"config: tasks[{position}] ({entry['id']}): a {kind} task is a {implied} task, not {task_type}; remove type")
    files = {r: entry[r] for r in FORMATS[kind].file_roles if r in entry}
    base = {
        "entry_id": entry["id"], "kind": kind, "type": task_type, "metric": entry.get("metric") or DEFAULT_SELECTION_METRIC[task_type],
        "position": position, "entry": entry,
    }
    if kind != "proteingym":
        if "path" not in entry:
            raise ConfigError(f"config: tasks[{position}] ({entry['id']}): a {kind} task needs path")
        return [PlannedTask(id=entry["id"], embedding_set=entry["id"], dms_id=None, scheme=None, files=files, **base)]
    files.setdefault("reference", DEFAULT_REFERENCE)
    tasks = []
    for dms_id in dms_ids:
        if "archive" in entry:
            assay = sources.archive_assay_key(entry["archive"], dms_id)
        elif "assay_dir" in entry:
            assay = f"{entry['assay_dir']}/{dms_id}.csv"
        else:
            assay = sources.proteingym_assay_key(dms_id)
        if assay is None:
            raise ConfigError(
                f"config: tasks[{position}] ({entry['id']}): no pinned third-party copy holds assay {dms_id!r}; set archive: "
                "cv_folds_singles_substitutions (ProteinGym's released archive) or assay_dir (a directory of its assay CSVs, {DMS_id}.csv)"
            )
        for scheme in entry.get("fold_schemes", FOLD_SCHEMES):
            tasks.append(PlannedTask(
                id=f"{dms_id}.{scheme}", embedding_set=dms_id, dms_id=dms_id, scheme=scheme, files={**files, "path": assay}, **base,
            ))
    return tasks


class TaskIndex:
    """The (model, task) grid of the tasks known so far, and the lookups every job's inputs are read from.

    ``pairs`` holds each model on every task, or on the tasks of the config entries its ``tasks``
    names, models in config order and tasks in planning order; every other list here keeps that order.
    """

    def __init__(self, models: dict[str, dict], tasks: dict[str, PlannedTask], lens_entries: list[str], zero_shot: bool, exit_entries: list[str]):
        lens_entries, exit_entries = set(lens_entries), set(exit_entries)
        self.pairs: list[tuple[str, str]] = []
        self.tasks_of_model: dict[str, list[str]] = {}
        # model -> its embedding sets, each with how many of its tasks the model runs, in planning order
        self.set_tasks: dict[str, dict[str, int]] = {}
        self.lens_sets: dict[str, list[str]] = {}
        self.zero_shot_sets: dict[str, list[str]] = {}
        for model, entry in models.items():
            runs = [t for t, plan in tasks.items() if "tasks" not in entry or plan.entry_id in entry["tasks"]]
            self.pairs += [(model, t) for t in runs]
            self.tasks_of_model[model] = runs
            counts: dict[str, int] = {}
            for t in runs:
                counts[tasks[t].embedding_set] = counts.get(tasks[t].embedding_set, 0) + 1
            self.set_tasks[model] = counts
            self.lens_sets[model] = sorted({tasks[t].embedding_set for t in runs if tasks[t].entry_id in lens_entries})
            self.zero_shot_sets[model] = sorted({tasks[t].dms_id for t in runs if tasks[t].dms_id}) if zero_shot else []
        self.proteingym_pairs = [(m, t) for m, t in self.pairs if tasks[t].dms_id]
        self.exit_pairs = [(m, t) for m, t in self.pairs if tasks[t].entry_id in exit_entries]
        self._lens = {m: frozenset(s) for m, s in self.lens_sets.items()}
        self._zero_shot = {m: frozenset(s) for m, s in self.zero_shot_sets.items()}
        self._tasks = tasks

    def has_lens(self, model: str, embedding_set: str) -> bool:
        return embedding_set in self._lens[model]

    def has_zero_shot(self, model: str, embedding_set: str) -> bool:
        return embedding_set in self._zero_shot[model]

    def depth_tasks(self, model: str) -> list[str]:
        """A model's tasks whose set feeds its lens or whose assay it scores zero-shot."""
        sets = self._lens[model] | self._zero_shot[model]
        return [t for t in self.tasks_of_model[model] if self._tasks[t].embedding_set in sets]
