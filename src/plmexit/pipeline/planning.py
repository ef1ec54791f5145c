"""Turn a validated config into the workflow's targets, each job's inputs, and the settings that depend on a task.

Invariant: the Snakemake rules hold no logic; they name each setting as a ``params:`` entry and
write the flags in ``shell:``, and every decision that depends on config (which models and tasks
exist, where their inputs are, a task's type, metric, inner split, files and options, a set's
storage precision and crop) is made by ``Plan``, from the config as validated by
``workflow/schemas/config.schema.yaml`` (defaults already filled in). Only the standard library is
imported, so building the DAG stays fast; no data file is read while planning (ProteinGym assays
chosen by a filter come from the ``choose_assays`` checkpoint's list, with their sizes), only the
sizes of a probe's embeddings when its run time is asked for.

``Plan`` is the one object the Snakefile asks, made of one part per concern: the tasks and their
index (``plan_tasks``: ``PlannedTask``, ``TaskIndex``), the targets and input paths
(``plan_targets.TargetPaths``), the cluster batches (``plan_batches``) and the rules' settings
(``plan_flags.StepArguments``). Snakemake asks it once per job for each input function, so every
per-job question is a lookup in an index built once (and again when a checkpoint adds tasks).
"""

from __future__ import annotations

import csv
import difflib
import math
from pathlib import Path
from typing import Callable

from plmexit.data import sources
from plmexit.errors import ConfigError, MissingExtraError
from plmexit.models.families import MASKED_LM_FAMILIES
from plmexit.pipeline import plan_batches
from plmexit.pipeline.flags import RuleFlags
from plmexit.pipeline.plan_batches import PROBE_MB_PER_MINUTE, PROBE_MINUTES, BatchLayout, GpuLayout  # noqa: F401 (re-exported)
from plmexit.pipeline.plan_flags import INNER_SPLIT_OF_SCHEME, TASK_OPTION_KEYS, VARIANT_DTYPE, StepArguments  # noqa: F401 (re-exported)
from plmexit.pipeline.plan_targets import TargetPaths
from plmexit.pipeline.plan_tasks import (  # noqa: F401 (re-exported)
    DEFAULT_REFERENCE,
    DEFAULT_SELECTION_METRIC,
    FOLD_SCHEMES,
    PlannedTask,
    TaskIndex,
    check_model,
    check_task_keys,
    expand_entry,
)

# Where outputs go unless the config sets pathvars.results (Snakemake's own path variable <results>).
DEFAULT_RESULTS = "results"


def _by_id(entries: list[dict], section: str) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for position, entry in enumerate(entries):
        if entry["id"] in found:
            raise ConfigError(f"config: {section}[{position}].id {entry['id']!r} is used twice; give every entry of {section} its own id")
        found[entry["id"]] = entry
    return found


def has_head(entry: dict) -> bool:
    """Whether the depth diagnostics can read a model's own masked-LM head: a fair-esm ESM2 model, or a
    transformers model of a family in ``MASKED_LM_FAMILIES`` (named by ``family`` or ``random.family``)."""
    return "name" in entry or "checkpoint" in entry or entry.get("family", entry.get("random", {}).get("family", "fair-esm")) in ("fair-esm", *MASKED_LM_FAMILIES)


class Plan(TargetPaths, StepArguments):
    """The models x tasks grid of one config and the arguments of every step.

    A config task entry becomes one task, except a ``proteingym`` entry, which becomes one task
    per assay and fold scheme (``{DMS_id}.{scheme}``). Tasks with the same sequences share one
    embedding set: a ProteinGym assay is embedded once for its three schemes.
    """

    def __init__(self, config: dict, chosen_assays: Callable[[str], str] | None = None):
        self.config = config
        # Every rule writes under <results>, which Snakemake reads from the config's pathvars;
        # planning names the same directory, so one setting decides both.
        self.results = config.get("pathvars", {}).get("results", DEFAULT_RESULTS)
        self.data = config.get("data", {})
        self.models = _by_id(config["models"], "models")
        entry_ids = [entry["id"] for entry in config["tasks"]]
        for position, entry in enumerate(config["models"]):
            check_model(entry, position, entry_ids)
        unknown = [t for t in config["depth"]["lens_tasks"] if t not in entry_ids]
        if unknown:
            raise ConfigError(f"config: depth.lens_tasks: {unknown[0]!r} is not the id of a config task entry (ids: {', '.join(entry_ids)}); fix the id")
        unknown = [t for t in config.get("exit", {}).get("tasks", []) if t not in entry_ids]
        if unknown:
            raise ConfigError(f"config: exit.tasks: {unknown[0]!r} is not the id of a config task entry (ids: {', '.join(entry_ids)}); fix the id")
        self.tasks: dict[str, PlannedTask] = {}
        self.embedding_sets: dict[str, str] = {}  # embedding set -> the task whose table it embeds
        self._made_by: dict[str, int] = {}  # embedding set -> the config entry that made it
        # ProteinGym entries whose assays a filter chooses: expanded once the choose_assays
        # checkpoint has listed them. ``chosen_assays(entry id)`` gives that list's path (under
        # Snakemake it asks the checkpoint, which stops the DAG there until the list exists).
        self.chosen_assays = chosen_assays
        self._pending: dict[str, tuple[dict, int]] = {}
        # (rows, sequence length) of the embedding sets whose size is known while planning: the assays a
        # checkpoint chose (its list carries them); they set the sets' shards and cluster batches.
        self._set_size: dict[str, tuple[int, int]] = {}
        # Built from the tasks known so far on first use; dropped whenever tasks are added.
        self._index: TaskIndex | None = None
        self._layouts: dict[str, BatchLayout] = {}
        self._gpu_layouts: dict[str, GpuLayout] = {}
        for position, entry in enumerate(config["tasks"]):
            check_task_keys(entry, position)
            if "filter" in entry:
                self._pending[entry["id"]] = (entry, position)
            else:
                self._add(expand_entry(entry, position, entry.get("assays")), position)
        self.flags = RuleFlags(config)  # every rule's settings flags; their checks stop a bad config before any job

    def _add(self, tasks: list[PlannedTask], position: int) -> None:
        for task in tasks:
            name = task.embedding_set
            if task.id in self.tasks or self._made_by.setdefault(name, position) != position:
                clash = task.id if task.id in self.tasks else name
                raise ConfigError(f"config: tasks[{position}] makes {clash!r} a second time; give every task its own id and list each assay once")
            self.tasks[task.id] = task
            self.embedding_sets.setdefault(name, task.id)
        self._index = None
        self._layouts.clear()
        self._gpu_layouts.clear()

    def expand_chosen_assays(self) -> None:
        """Add the tasks of every filtered entry, from the assay lists its checkpoint wrote."""
        for entry_id, (entry, position) in list(self._pending.items()):
            if self.chosen_assays is None:
                raise ConfigError(
                    f"config: tasks[{position}] ({entry_id}): its assays are chosen by filter, which the workflow's choose_assays "
                    "checkpoint does; plan it under Snakemake, or list the assays by DMS_id"
                )
            path = self.chosen_assays(entry_id)
            with open(path, newline="") as handle:
                chosen = {row["DMS_id"]: (int(row["single_mutants"]), int(row["seq_len"])) for row in csv.DictReader(handle, delimiter="\t")}
            self._add(expand_entry(entry, position, list(chosen)), position)
            self._set_size.update(chosen)
            del self._pending[entry_id]

    @property
    def index(self) -> TaskIndex:
        """The ``TaskIndex`` of every task (a filtered entry's once its checkpoint ran)."""
        if self._pending:
            self.expand_chosen_assays()
        if self._index is None:
            d, e = self.config["depth"], self.config.get("exit", {})
            self._index = TaskIndex(self.models, self.tasks, d["lens_tasks"], d["zero_shot"], e.get("tasks", []))
        return self._index

    def task(self, task: str) -> PlannedTask:
        """A task's plan, by id (a filtered entry's tasks are known once its checkpoint ran)."""
        if task not in self.tasks:
            self.expand_chosen_assays()
        return self.tasks[task]

    def _set_task(self, embedding_set: str) -> PlannedTask:
        """The task whose table an embedding set embeds."""
        if embedding_set not in self.embedding_sets:
            self.expand_chosen_assays()
        return self.tasks[self.embedding_sets[embedding_set]]

    def _filtered(self, entry_id: str) -> dict:
        return next(entry for entry in self.config["tasks"] if entry["id"] == entry_id and "filter" in entry)

    def check_local_files(self) -> None:
        """Every task file that is not a data key (a pinned file, an archive's assay) must exist before any job starts: nothing would make it."""
        for task in self.tasks.values():
            for role, value in task.files.items():
                if not sources.is_data_key(value) and not Path(value).is_file():
                    key = role if role in task.entry else "assay_dir"
                    raise ConfigError(
                        f"config: tasks[{task.position}] ({task.entry_id}).{key}: file {value} does not exist "
                        f"(relative paths are read from the directory Snakemake runs in, {Path.cwd()}); fix the path"
                    )
        # A filter's assays are known after its checkpoint; what can be checked now is where they will be read from.
        for entry, position in self._pending.values():
            for key in ("assay_dir", "reference"):
                value = entry.get(key)
                if value is None or value in sources.PINNED_FILES:
                    continue
                if not (Path(value).is_dir() if key == "assay_dir" else Path(value).is_file()):
                    raise ConfigError(
                        f"config: tasks[{position}] ({entry['id']}).{key}: {value} does not exist "
                        f"(relative paths are read from the directory Snakemake runs in, {Path.cwd()}); fix the path"
                    )

    @classmethod
    def from_config(cls, config: dict, schema_path: str | Path, chosen_assays: Callable[[str], str] | None = None) -> Plan:
        """Check ``config`` against the schema (one line per mistake, see ``check_config``), fill in its defaults, and plan it."""
        try:
            from snakemake.utils import validate  # planning runs under Snakemake
        except ModuleNotFoundError as exc:
            raise MissingExtraError.of("workflow", "commands that plan a run (plmexit estimate)", exc) from None

        check_config(config, load_schema(schema_path))
        validate(config, str(schema_path), set_default=True)
        plan = cls(config, chosen_assays)
        plan.check_local_files()
        return plan

    # tasks -------------------------------------------------------------------------------------
    def pairs(self) -> list[tuple[str, str]]:
        """Every (model, task) to run: each model on every task, or on the tasks of the config entries its ``tasks`` names."""
        return self.index.pairs

    def is_variant_set(self, embedding_set: str) -> bool:
        """Whether an embedding set is one target's substitution variants (a ProteinGym assay)."""
        return self._set_task(embedding_set).dms_id is not None

    def shards(self, embedding_set: str) -> int:
        """How many embedding jobs a set is cut into: ``embed.shards``, or for a set of known size (an assay a filter
        chose) as many as its tokens need at ``embed.shard_tokens`` a shard (rows times the target's length and
        two special tokens: the most a crop embeds), at most ``embed.shards``."""
        e = self.config["embed"]
        if embedding_set not in self.embedding_sets:
            # A filter's assay, asked for before anything else expanded its entry (a cluster job's own plan starts
            # from the job's wildcards): its size comes with the checkpoint's list.
            self.expand_chosen_assays()
        if embedding_set not in self._set_size:
            return e["shards"]
        rows, length = self._set_size[embedding_set]
        return max(1, min(e["shards"], math.ceil(rows * (length + 2) / e["shard_tokens"])))

    # depth diagnostics ---------------------------------------------------------------------------
    def head_models(self) -> list[str]:
        """Models whose own masked-LM head the depth diagnostics read (``has_head``)."""
        return [m for m, e in self.models.items() if has_head(e)]

    def lens_sets(self, model: str) -> list[str]:
        """The embedding sets whose sequences feed ``model``'s logit lens (``depth.lens_tasks``, as far as the model runs them)."""
        return self.index.lens_sets[model]

    def zero_shot_sets(self, model: str) -> list[str]:
        """The ProteinGym assays ``model`` scores zero-shot (``depth.zero_shot``: every assay the model runs)."""
        return self.index.zero_shot_sets[model]

    def depth_models(self) -> list[str]:
        """Head models with anything to diagnose under this config."""
        return [m for m in self.head_models() if self.lens_sets(m) or self.zero_shot_sets(m)]

    def depth_tasks(self, model: str) -> list[str]:
        """The tasks a model's depth files speak of: those whose sequences feed its lens or whose assay it scores zero-shot."""
        return self.index.depth_tasks(model)

    # early exit ----------------------------------------------------------------------------------
    def exit_pairs(self) -> list[tuple[str, str]]:
        """Every (model, task) whose config entry ``exit.tasks`` names."""
        return self.index.exit_pairs

    # cluster batches ------------------------------------------------------------------------------
    def batch_layout(self, model: str) -> BatchLayout:
        """A model's embedding sets as the job groups a cluster runs them in (``plan_batches.pack``): the sets whose
        rows are known while planning (the assays a filter chose) packed within ``schedule``, every other set a
        batch of its own. A set over ``schedule.batch_rows`` is a batch of its own (``set_group``: split by task)."""
        if model not in self._layouts:
            index = self.index
            rows = {name: size[0] for name, size in self._set_size.items()}
            tasks = [(t, self.tasks[t].embedding_set) for t in index.tasks_of_model[model]]
            self._layouts[model] = plan_batches.layout(index.set_tasks[model], rows, self.config["schedule"], tasks)
        return self._layouts[model]

    def batches(self, model: str) -> list[list[str]]:
        """A model's embedding sets in its cluster batches (``batch_layout``)."""
        return self.batch_layout(model).batches

    def batch_of_set(self, model: str, embedding_set: str) -> int:
        return self.batch_layout(model).of_set[embedding_set]

    @staticmethod
    def batch_group(model: str, batch: int | str) -> str:
        """The job group of one batch: its sets' gathering, and their tasks' probes, selections and figures."""
        return f"batch.{model}.{batch}"

    def set_group(self, model: str, embedding_set: str) -> str | None:
        """The group of a set's gathering: its batch's, but none for a set whose probes alone read more rows than
        ``schedule.batch_rows``: gathered on its own, its tasks' jobs are then a group each (one batch id, not
        connected), so no submission grows past what one task needs."""
        layout = self.batch_layout(model)
        k = layout.of_set[embedding_set]
        if layout.rows[k] > self.config["schedule"]["batch_rows"]:
            return None
        return self.batch_group(model, k)

    def task_group(self, model: str, task: str) -> str:
        return self.batch_group(model, self.batch_of_set(model, self.task(task).embedding_set))

    def probe_minutes(self, model: str, task: str) -> int:
        """Run time of one probe on one attempt (``plan_batches.probe_minutes``): from its embeddings' size, or its
        shards' while they are not gathered; ``FileNotFoundError`` naming the store before either exists."""
        return plan_batches.probe_minutes(self.embeddings(model, task), self.embedding_shards(model, self.task(task).embedding_set))

    # GPU batches ----------------------------------------------------------------------------------
    def gpu_job_minutes(self, model: str, embedding_set: str) -> dict[str, int] | None:
        """Run time of each of a set's GPU jobs on one attempt (rule -> minutes; ``plan_batches.gpu_minutes``), for a
        set of known size (an assay a filter chose); None for any other set."""
        if embedding_set not in self.embedding_sets:
            self.expand_chosen_assays()  # a filter's assay (a set of any other entry is known without its checkpoint)
        if embedding_set not in self._set_size:
            return None
        rows, length = self._set_size[embedding_set]
        c, s = self.config["cost"], self.config["schedule"]
        tokens = plan_batches.gpu_job_tokens(rows, length, self.shards(embedding_set), c["sample_sequences"] * (c["repeats"] + 1))
        parameters = plan_batches.model_parameters(self.models[model])
        return {rule: plan_batches.gpu_minutes(n, parameters, s["gpu_tflops"]) for rule, n in tokens.items()}

    def gpu_minutes(self, rule: str, model: str, embedding_set: str) -> int:
        """Run time of one GPU job (``embed_shard``, ``measure_cost`` or ``zero_shot``) on one attempt: from its
        tokens for a set of known size, else ``plan_batches.GPU_MINUTES_UNKNOWN``."""
        minutes = self.gpu_job_minutes(model, embedding_set)
        return plan_batches.GPU_MINUTES_UNKNOWN[rule] if minutes is None else minutes[rule]

    def gpu_layout(self, model: str) -> GpuLayout:
        """A model's GPU batches (``plan_batches.gpu_layout``): its sets of known size, each with the minutes of all
        its GPU jobs (its shards, its cost timing and, when scored, its zero-shot job), packed within
        ``schedule.gpu_batch_minutes`` with the batch's table."""
        if model not in self._gpu_layouts:
            scored = set(self.zero_shot_sets(model)) if model in self.depth_models() else set()
            work = {}
            for name in self.index.set_tasks[model]:
                minutes = self.gpu_job_minutes(model, name)
                if minutes is not None:
                    work[name] = self.shards(name) * minutes["embed_shard"] + minutes["measure_cost"] + (minutes["zero_shot"] if name in scored else 0)
            self._gpu_layouts[model] = plan_batches.gpu_layout(work, self.config["schedule"]["gpu_batch_minutes"])
        return self._gpu_layouts[model]

    @staticmethod
    def gpu_table_minutes() -> int:
        """Run time of a GPU batch's table on one attempt (``plan_batches.GPU_TABLE_MINUTES``; the packing counts it)."""
        return plan_batches.GPU_TABLE_MINUTES

    @staticmethod
    def gpu_batch_group(model: str, batch: int | str) -> str:
        """The job group of one GPU batch: its sets' embedding shards, cost timings and zero-shot jobs, one after another."""
        return f"gpu.{model}.{batch}"

    def gpu_group(self, model: str, embedding_set: str) -> str | None:
        """The group of a set's GPU jobs: its GPU batch's, or none for a set in no batch (each job its own submission)."""
        k = self.gpu_layout(model).of_set.get(embedding_set)
        return None if k is None else self.gpu_batch_group(model, k)


def load_schema(path: str | Path) -> dict:
    import yaml

    return yaml.safe_load(Path(path).read_text())


def check_config(config: dict, schema: dict) -> None:
    """One line for the first way ``config`` breaks ``schema``: the key, what is wrong, and the fix.

    An unknown key (a typo) names the nearest valid key. Snakemake's own validation (which also
    fills in defaults) runs after this and finds nothing more; it only prints the whole schema.
    """
    import jsonschema  # installed with Snakemake, which is what plans the workflow

    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        return
    where = _key_path(config, list(error.absolute_path))
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        key = unknown[0]
        near = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f"did you mean {near[0]!r}?" if near else f"allowed keys: {', '.join(allowed)}"
        raise ConfigError(f"config: {where + '.' if where else ''}{key}: unknown key; {hint}")
    if error.validator == "required":
        raise ConfigError(f"config: {where or 'top level'}: {error.message}; add it")
    if error.validator == "enum":
        choices = ", ".join(map(str, error.validator_value))
        raise ConfigError(f"config: {where}: {error.instance!r} is not one of {choices}")
    raise ConfigError(f"config: {where or 'top level'}: {error.message}")


def _key_path(config, path: list) -> str:
    """``tasks[0] (my_task).label_column``-style name of a place in the config."""
    text, node = "", config
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
            node = node[part]
            if isinstance(node, dict) and "id" in node:
                text += f" ({node['id']})"
        else:
            text += f".{part}" if text else str(part)
            node = node[part] if isinstance(node, dict) and part in node else None
    return text
