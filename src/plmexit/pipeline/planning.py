"""Turn a validated config into the workflow's targets, each job's inputs, and the settings that depend on a task.

Invariant: the Snakemake rules hold no logic; they name each setting as a ``params:`` entry and
write the flags in ``shell:``, and every decision that depends on config (which models and tasks
exist, where their inputs are, a task's type, metric, inner split, files and options, a set's
storage precision and crop) is made here, from the
config as validated by ``workflow/schemas/config.schema.yaml`` (defaults already filled in). Only
the standard library is imported, so building the DAG stays fast; no data file is read while
planning (ProteinGym assays chosen by a filter come from the ``choose_assays`` checkpoint's list,
with their sizes), only the sizes of a probe's embeddings when its run time is asked for.
"""

from __future__ import annotations

import csv
import difflib
import errno
import math
import re
import shlex
from collections import Counter
from pathlib import Path
from typing import Callable

from plmexit.data import sources
from plmexit.data.formats import COMMON_KEYS, FORMATS
from plmexit.errors import ConfigError
from plmexit.models import families
from plmexit.models.families import MASKED_LM_FAMILIES
from plmexit.pipeline.flags import RuleFlags

# Where outputs go unless the config sets pathvars.results (Snakemake's own path variable <results>).
DEFAULT_RESULTS = "results"
# A ridge probe's inner split mimics the outer one: ProteinGym's modulo and contiguous folds hold out
# whole mutated positions, so inner folds do too (leave-one-out over variants would reward
# features that memorise positions); random folds and non-ProteinGym tasks (no scheme) use
# exact leave-one-out. Values are ``plmexit probe --inner-split`` choices.
INNER_SPLIT_OF_SCHEME = {"fold_random_5": "loo", "fold_modulo_5": "modulo", "fold_contiguous_5": "contiguous", None: "loo"}
DEFAULT_SELECTION_METRIC = {"regression": "spearman", "classification": "accuracy", "multilabel": "fmax"}
DEFAULT_REFERENCE = "proteingym/reference_files/DMS_substitutions.csv"
# Storage precision of variant sets (ProteinGym assays), whatever embed.dtype says (see Plan.embed_args).
VARIANT_DTYPE = "float32"
# Config task-entry keys that become ``prepare`` options (``--label-column`` ...), as they are spelled.
TASK_OPTION_KEYS = ("sequence_column", "label_column", "id_column", "fold_column", "label_regex", "split", "labels", "max_sequences", "min_class_size", "folds", "homology_identity")
# A probe's run time on a cluster (``Plan.probe_minutes``): a minute per 15 MB of embeddings on 8 CPUs is
# the slowest probe measured (benchmarks/README.md: logistic, 10 classes, 3,000 x 320 float32, 4.7 s
# per MB on one core) over 8 layers at once, times about 7 (float16 stores, slower nodes); plus 5
# minutes to start and read. ESM2-3B on ProteinGym's largest assay (16,897 variants, 6.4 GB): 7.2 hours.
PROBE_MINUTES, PROBE_MB_PER_MINUTE = 5, 15
# = plmexit.data.proteingym.FOLD_SCHEMES, repeated because planning imports no pandas (test_config checks they agree).
FOLD_SCHEMES = ("fold_random_5", "fold_modulo_5", "fold_contiguous_5")


def _by_id(entries: list[dict], section: str) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for position, entry in enumerate(entries):
        if entry["id"] in found:
            raise ConfigError(f"config: {section}[{position}].id {entry['id']!r} is used twice; give every entry of {section} its own id")
        found[entry["id"]] = entry
    return found


class Plan:
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
            _check_model(entry, position, entry_ids)
        unknown = [t for t in config["depth"]["lens_tasks"] if t not in entry_ids]
        if unknown:
            raise ConfigError(f"config: depth.lens_tasks: {unknown[0]!r} is not the id of a config task entry (ids: {', '.join(entry_ids)}); fix the id")
        unknown = [t for t in config.get("exit", {}).get("tasks", []) if t not in entry_ids]
        if unknown:
            raise ConfigError(f"config: exit.tasks: {unknown[0]!r} is not the id of a config task entry (ids: {', '.join(entry_ids)}); fix the id")
        self.tasks: dict[str, dict] = {}
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
        self._batches: dict[str, list[list[str]]] = {}
        self._batch_rows: dict[str, list[int]] = {}  # the rows each batch's probes read (0: not known)
        for position, entry in enumerate(config["tasks"]):
            _check_keys(entry, position)
            if entry["kind"] == "proteingym" and ("assays" in entry) == ("filter" in entry):
                raise ConfigError(f"config: tasks[{position}] ({entry['id']}): give a proteingym task either assays (a DMS_id list) or filter")
            if "filter" in entry:
                self._pending[entry["id"]] = (entry, position)
            else:
                self._add(self._expand(entry, position, entry.get("assays")), position)
        self.flags = RuleFlags(config)  # every rule's settings flags; their checks stop a bad config before any job

    def _add(self, tasks: list[dict], position: int) -> None:
        for task in tasks:
            name = task["embedding_set"]
            if task["id"] in self.tasks or self._made_by.setdefault(name, position) != position:
                clash = task["id"] if task["id"] in self.tasks else name
                raise ConfigError(f"config: tasks[{position}] makes {clash!r} a second time; give every task its own id and list each assay once")
            self.tasks[task["id"]] = task
            self.embedding_sets.setdefault(name, task["id"])

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
            self._add(self._expand(entry, position, list(chosen)), position)
            self._set_size.update(chosen)
            del self._pending[entry_id]

    def task(self, task: str) -> dict:
        """A task's plan, by id (a filtered entry's tasks are known once its checkpoint ran)."""
        if task not in self.tasks:
            self.expand_chosen_assays()
        return self.tasks[task]

    def _set_task(self, embedding_set: str) -> dict:
        """The task whose table an embedding set embeds."""
        if embedding_set not in self.embedding_sets:
            self.expand_chosen_assays()
        return self.tasks[self.embedding_sets[embedding_set]]

    def check_local_files(self) -> None:
        """Every task file that is not an official file key must exist before any job starts: nothing would make it."""
        for task in self.tasks.values():
            entry = task["entry"]
            for role, value in task["files"].items():
                if value not in sources.OFFICIAL_FILES and not Path(value).is_file():
                    key = role if role in entry else "assay_dir"
                    raise ConfigError(
                        f"config: tasks[{task['position']}] ({entry['id']}).{key}: file {value} does not exist "
                        f"(relative paths are read from the directory Snakemake runs in, {Path.cwd()}); fix the path"
                    )
        # A filter's assays are known after its checkpoint; what can be checked now is where they will be read from.
        for entry, position in self._pending.values():
            for key in ("assay_dir", "reference"):
                value = entry.get(key)
                if value is None or value in sources.OFFICIAL_FILES:
                    continue
                if not (Path(value).is_dir() if key == "assay_dir" else Path(value).is_file()):
                    raise ConfigError(
                        f"config: tasks[{position}] ({entry['id']}).{key}: {value} does not exist "
                        f"(relative paths are read from the directory Snakemake runs in, {Path.cwd()}); fix the path"
                    )

    @classmethod
    def from_config(cls, config: dict, schema_path: str | Path, chosen_assays: Callable[[str], str] | None = None) -> Plan:
        """Check ``config`` against the schema (one line per mistake, see ``check_config``), fill in its defaults, and plan it."""
        from snakemake.utils import validate  # planning runs under Snakemake

        check_config(config, load_schema(schema_path))
        validate(config, str(schema_path), set_default=True)
        plan = cls(config, chosen_assays)
        plan.check_local_files()
        return plan

    def _expand(self, entry: dict, position: int, dms_ids: list[str] | None) -> list[dict]:
        kind = entry["kind"]
        implied = FORMATS[kind].task_type
        task_type = entry.get("type") or implied
        if task_type is None:
            raise ConfigError(f"config: tasks[{position}] ({entry['id']}): a {kind} task needs a type (regression, classification or multilabel)")
        if implied is not None and task_type != implied:
            raise ConfigError(f"config: tasks[{position}] ({entry['id']}): a {kind} task is a {implied} task, not {task_type}; remove type")
        base = {"entry": entry, "position": position, "type": task_type, "files": {r: entry[r] for r in FORMATS[kind].file_roles if r in entry}}
        if kind != "proteingym":
            if "path" not in entry:
                raise ConfigError(f"config: tasks[{position}] ({entry['id']}): a {kind} task needs path")
            return [{**base, "id": entry["id"], "embedding_set": entry["id"], "dms_id": None, "scheme": None}]
        base["files"].setdefault("reference", DEFAULT_REFERENCE)
        tasks = []
        for dms_id in dms_ids:
            assay = f"{entry['assay_dir']}/{dms_id}.csv" if "assay_dir" in entry else sources.proteingym_assay_key(dms_id)
            if assay is None:
                raise ConfigError(
                    f"config: tasks[{position}] ({entry['id']}): no official file holds assay {dms_id!r}; set assay_dir to a directory "
                    "of ProteinGym assay CSVs ({DMS_id}.csv, e.g. the unpacked cv_folds_singles_substitutions.zip)"
                )
            for scheme in entry.get("fold_schemes", FOLD_SCHEMES):
                files = {**base["files"], "path": assay}
                tasks.append({**base, "files": files, "id": f"{dms_id}.{scheme}", "embedding_set": dms_id, "dms_id": dms_id, "scheme": scheme})
        return tasks

    # targets -----------------------------------------------------------------------------------
    def pairs(self) -> list[tuple[str, str]]:
        """Every (model, task) to run: each model on every task, or on the tasks of the config entries its ``tasks`` names."""
        self.expand_chosen_assays()
        return [
            (model, task) for model, entry in self.models.items() for task, plan in self.tasks.items()
            if "tasks" not in entry or plan["entry"]["id"] in entry["tasks"]
        ]

    def _proteingym_pairs(self) -> list[tuple[str, str]]:
        return [(m, t) for m, t in self.pairs() if self.task(t)["dms_id"]]

    def proteingym_selections(self) -> list[str]:
        return [f"{self.results}/selection/{m}/{t}.json" for m, t in self._proteingym_pairs()]

    def proteingym_predictions(self) -> list[str]:
        """Each ProteinGym selection's predictions, in ``proteingym_selections`` order (the merge pools them)."""
        return [f"{self.results}/probes/{m}/{t}.predictions.tsv.gz" for m, t in self._proteingym_pairs()]

    def proteingym_task_tables(self) -> list[str]:
        """Each ProteinGym selection's task table, in ``proteingym_selections`` order (its folds' training rows)."""
        return [f"{self.results}/tasks/{t}.tsv" for _, t in self._proteingym_pairs()]

    def selections(self) -> list[str]:
        return [f"{self.results}/selection/{m}/{t}.json" for m, t in self.pairs()]

    def figures(self) -> list[str]:
        return [f"{self.results}/figures/{m}/{t}.png" for m, t in self.pairs()]

    def exports(self) -> list[str]:
        """Every (model, task)'s export directory when ``export.enabled``, else none."""
        if not self.config["export"]["enabled"]:
            return []
        return [f"{self.results}/export/{m}/{t}" for m, t in self.pairs()]

    # depth diagnostics ---------------------------------------------------------------------------
    def head_models(self) -> list[str]:
        """Models whose own masked-LM head the depth diagnostics read: fair-esm ESM2 models, and
        transformers models of a family in ``MASKED_LM_FAMILIES`` (named by ``family`` or ``random.family``)."""
        return [
            m for m, e in self.models.items()
            if "name" in e or "checkpoint" in e or e.get("family", e.get("random", {}).get("family", "fair-esm")) in ("fair-esm", *MASKED_LM_FAMILIES)
        ]

    def lens_sets(self, model: str) -> list[str]:
        """The embedding sets whose sequences feed ``model``'s logit lens (``depth.lens_tasks``, as far as the model runs them)."""
        wanted = set(self.config["depth"]["lens_tasks"])
        return sorted({self.task(t)["embedding_set"] for m, t in self.pairs() if m == model and self.task(t)["entry"]["id"] in wanted})

    def zero_shot_sets(self, model: str) -> list[str]:
        """The ProteinGym assays ``model`` scores zero-shot (``depth.zero_shot``: every assay the model runs)."""
        if not self.config["depth"]["zero_shot"]:
            return []
        return sorted({self.task(t)["dms_id"] for m, t in self.pairs() if m == model and self.task(t)["dms_id"]})

    def depth_models(self) -> list[str]:
        """Head models with anything to diagnose under this config."""
        return [m for m in self.head_models() if self.lens_sets(m) or self.zero_shot_sets(m)]

    def depth_tasks(self, model: str) -> list[str]:
        """The tasks a model's depth files speak of: those whose sequences feed its lens or whose assay it scores zero-shot."""
        sets = set(self.lens_sets(model)) | set(self.zero_shot_sets(model))
        return [t for m, t in self.pairs() if m == model and self.task(t)["embedding_set"] in sets]

    def depth_selections(self, model: str) -> list[str]:
        """The selections of the tasks a model's depth files speak of (their deployed layers go beside the lens and zero-shot layers)."""
        return [f"{self.results}/selection/{model}/{t}.json" for t in self.depth_tasks(model)]

    def task_lens(self, model: str, task: str) -> list[str]:
        """The lens table of a task's sequences for ``model`` ([] when its lens does not run on them)."""
        found = self.task(task)["embedding_set"]
        return [f"{self.results}/depth/{model}/lens/{found}.tsv"] if found in self.lens_sets(model) else []

    def task_zero_shot(self, model: str, task: str) -> list[str]:
        """The long zero-shot table of a task's assay for ``model`` ([] when it is not scored zero-shot)."""
        found = self.task(task)["embedding_set"]
        return [f"{self.results}/depth/{model}/zero_shot/{found}.tsv"] if found in self.zero_shot_sets(model) else []

    def task_depth_figures(self) -> list[str]:
        """Per model and task with a probe and a depth diagnostic: the probe beside the lens and zero-shot curves."""
        return [f"{self.results}/figures/{m}/depth/{t}.png" for m in self.depth_models() for t in self.depth_tasks(m)]

    def assay_file(self, embedding_set: str) -> str:
        """A ProteinGym assay's file (for zero-shot scoring)."""
        return self.data_path(self._set_task(embedding_set)["files"]["path"])

    def assay_reference_file(self, embedding_set: str) -> str:
        """The reference table a ProteinGym assay's target comes from."""
        return self.data_path(self._set_task(embedding_set)["files"]["reference"])

    def probe_tables(self) -> list[str]:
        return [f"{self.results}/probes/{m}/{t}.tsv" for m, t in self.pairs()]

    def drawn(self) -> list[str]:
        """Every figure and manuscript table, all drawn from files under results/ (the ``figures`` target)."""
        depth = [f"{self.results}/figures/depth.png", *self.task_depth_figures()] if self.depth_models() else []
        return [
            f"{self.results}/figures/gain_vs_compute.png", f"{self.results}/figures/study", f"{self.results}/summary/tables",
            *self.figures(), *depth, *self.exit_figures(), *self.depth_exit_figures(),
        ]

    def final_targets(self) -> list[str]:
        proteingym = [f"{self.results}/summary/proteingym_supervised.csv"] if self.proteingym_selections() else []
        depth = [f"{self.results}/summary/depth.tsv"] if self.depth_models() else []
        return [
            f"{self.results}/summary/best_layers.tsv", f"{self.results}/summary/across_tasks.tsv",
            *proteingym, *self.drawn(), *self.exports(), *self.exit_targets(), *depth, *self.batch_tables(),
        ]

    # cluster batches ------------------------------------------------------------------------------
    def batches(self, model: str) -> list[list[str]]:
        """A model's embedding sets as the job groups a cluster runs them in.

        The sets whose rows are known while planning (the assays a filter chose) are packed first fit,
        largest first: a batch takes a set while the rows its probes read (each set's rows times its
        tasks) stay within ``schedule.batch_rows`` and it holds fewer than ``schedule.batch_sets``
        sets; a set over the budget is a batch of its own (``set_group``: split by task). Every other
        set follows as a batch of its own. The grouping is the same on every run of one config.
        """
        if model not in self._batches:
            s = self.config["schedule"]
            tasks = Counter(self.task(t)["embedding_set"] for m, t in self.pairs() if m == model)
            work = {name: self._set_size[name][0] * n for name, n in tasks.items() if name in self._set_size}
            batches: list[list[str]] = []
            loads: list[int] = []
            for name in sorted(work, key=work.get, reverse=True):  # stable: ties keep planning order
                k = next((k for k, b in enumerate(batches) if loads[k] + work[name] <= s["batch_rows"] and len(b) < s["batch_sets"]), None)
                if k is None:
                    batches.append([name])
                    loads.append(work[name])
                else:
                    batches[k].append(name)
                    loads[k] += work[name]
            unknown = [name for name in tasks if name not in work]
            self._batches[model] = batches + [[name] for name in unknown]
            self._batch_rows[model] = loads + [0] * len(unknown)
        return self._batches[model]

    def batch_of_set(self, model: str, embedding_set: str) -> int:
        return next(k for k, sets in enumerate(self.batches(model)) if embedding_set in sets)

    @staticmethod
    def batch_group(model: str, batch: int | str) -> str:
        """The job group of one batch: its sets' gathering, and their tasks' probes, selections and figures."""
        return f"batch.{model}.{batch}"

    def set_group(self, model: str, embedding_set: str) -> str | None:
        """The group of a set's gathering: its batch's, but none for a set whose probes alone read more rows than
        ``schedule.batch_rows``: gathered on its own, its tasks' jobs are then a group each (one batch id, not
        connected), so no submission grows past what one task needs."""
        k = self.batch_of_set(model, embedding_set)
        if self._batch_rows[model][k] > self.config["schedule"]["batch_rows"]:
            return None
        return self.batch_group(model, k)

    def task_group(self, model: str, task: str) -> str:
        return self.batch_group(model, self.batch_of_set(model, self.task(task)["embedding_set"]))

    def batch_selections(self, model: str, batch: int) -> list[str]:
        """The selections of one batch's tasks: its summary needs them all, which ties the batch's jobs into one group."""
        sets = set(self.batches(model)[batch])
        return [f"{self.results}/selection/{m}/{t}.json" for m, t in self.pairs() if m == model and self.task(t)["embedding_set"] in sets]

    def batch_tables(self) -> list[str]:
        """The best-layer table of every batch of more than one set: it needs the selections of all its sets, which
        ties their jobs into one group (one set's jobs are tied by its gathering already)."""
        return [f"{self.results}/summary/batches/{m}/{k}.tsv" for m in self.models for k, sets in enumerate(self.batches(m)) if len(sets) > 1]

    def probe_minutes(self, model: str, task: str) -> int:
        """Run time of one probe on one attempt: ``PROBE_MINUTES`` plus a minute per ``PROBE_MB_PER_MINUTE``
        of the task's embeddings, read from the store, or from its shards while they are not gathered
        yet (a cluster batch gathers and probes in one job). Not embedded yet: ``FileNotFoundError``
        naming the store, which Snakemake reads as "not known yet" while it plans."""
        store = self.embeddings(model, task)
        paths = [Path(store)] if Path(store).exists() else [Path(p) for p in self.embedding_shards(model, self.task(task)["embedding_set"])]
        if not all(p.exists() for p in paths):
            raise FileNotFoundError(errno.ENOENT, "not embedded yet", store)
        return PROBE_MINUTES + math.ceil(sum(p.stat().st_size for p in paths) / 1e6 / PROBE_MB_PER_MINUTE)

    # early exit ----------------------------------------------------------------------------------
    def exit_pairs(self) -> list[tuple[str, str]]:
        """Every (model, task) whose config entry ``exit.tasks`` names."""
        wanted = set(self.config.get("exit", {}).get("tasks", []))
        return [(m, t) for m, t in self.pairs() if self.task(t)["entry"]["id"] in wanted]

    def exit_tables(self) -> list[str]:
        return [f"{self.results}/exit/{m}/{t}.tsv" for m, t in self.exit_pairs()]

    def exit_targets(self) -> list[str]:
        """The exit summary, when ``exit.tasks`` names any task (its figures are in ``drawn``), and the head's exit
        summary, when ``exit.lens`` is on and a model's head runs the lens."""
        lens = [f"{self.results}/summary/exit_lens.tsv"] if self.exit_lens_tables() else []
        return ([f"{self.results}/summary/exit.tsv"] if self.exit_pairs() else []) + lens

    def exit_lens_tables(self) -> list[str]:
        """With ``exit.lens``: the head's exit on the logit lens of every model and lens set the depth diagnostics read
        (none when ``depth.lens_tasks`` is empty or no model has a head, as ``exit.tasks: []`` plans no probe exit)."""
        if not self.config.get("exit", {}).get("lens"):
            return []
        return [f"{self.results}/exit/{m}/lens/{s}.tsv" for m in self.depth_models() for s in self.lens_sets(m)]

    def exit_timings(self) -> list[str]:
        """Each exit (model, task)'s measured timing, unless ``exit.timing_sequences`` is 0."""
        return [path for m, t in self.exit_pairs() for path in self.exit_timing(m, t)]

    def exit_timing(self, model: str, task: str) -> list[str]:
        """The measured timing of one exit (model, task) ([] when ``exit.timing_sequences`` is 0: estimated time only)."""
        return [f"{self.results}/exit/{model}/timing/{task}.tsv"] if self.config.get("exit", {}).get("timing_sequences", 0) else []

    def task_variant_crop_flag(self, task: str) -> str:
        """``variant_crop_flag`` of the embedding set a task's sequences are embedded in."""
        return self.variant_crop_flag(self.task(task)["embedding_set"])

    def exit_figures(self) -> list[str]:
        return [f"{self.results}/figures/exit/{m}/{t}.png" for m, t in self.exit_pairs()]

    def model_exit_tables(self, model: str) -> list[str]:
        """One model's exit tables (its ``exit.tasks``)."""
        return [f"{self.results}/exit/{m}/{t}.tsv" for m, t in self.exit_pairs() if m == model]

    def depth_exit_figures(self) -> list[str]:
        """Per model with both depth diagnostics and early exit: the two laid out together (PNG; its PDF is made beside it)."""
        exiting = {m for m, _ in self.exit_pairs()}
        return [f"{self.results}/figures/{m}.depth_exit.png" for m in self.depth_models() if m in exiting]

    def lens_infos(self) -> list[str]:
        return [f"{self.results}/depth/{m}/lens/{s}.json" for m in self.depth_models() for s in self.lens_sets(m)]

    def zero_shot_infos(self) -> list[str]:
        return [f"{self.results}/depth/{m}/zero_shot/{s}.json" for m in self.depth_models() for s in self.zero_shot_sets(m)]

    def all_depth_selections(self) -> list[str]:
        return [path for m in self.depth_models() for path in self.depth_selections(m)]

    def closing_lines(self) -> list[str]:
        """What a finished run tells its user: where the summary is, and one line per task of this config."""
        path = Path(f"{self.results}/summary/best_layers.tsv")
        if not path.is_file():
            return []
        import pandas as pd  # only once the run is over

        from plmexit.probing import choice

        summary = pd.read_csv(path, sep="\t")
        summary = summary[summary["model"].isin(list(self.models)) & summary["task"].isin([t for _, t in self.pairs()])]
        lines = [f"plmexit: {len(summary)} tasks summarised in {path} (figures in {self.results}/figures/); the deployed layer of each:"]
        return lines + [f"  {choice.describe(row)}" for row in summary.to_dict("records")]

    # models ------------------------------------------------------------------------------------
    def test_model_checkpoint(self, model: str) -> str:
        """Where ``make-test-model`` writes a config-declared random model: a fair-esm checkpoint file, or a transformers directory."""
        r = self.models[model]["random"]
        name = families.test_model_name(r.get("family", families.DEFAULT_TEST_MODEL_FAMILY), r["layers"], r["dim"], r["heads"], r.get("seed", 0))
        return f"{self.results}/models/{model}/{name}"

    def model_checkpoint(self, model: str) -> list[str]:
        """The local file or directory the manifest depends on ([] for a download)."""
        entry = self.models[model]
        if "random" in entry:
            return [self.test_model_checkpoint(model)]
        return [entry[key] for key in ("checkpoint", "path") if key in entry]

    def model_source_flags(self, model: str) -> str:
        """``fetch-model`` flags naming where a model comes from: ``--name`` (and ``--url``), ``--checkpoint``,
        ``--hub`` with ``--revision``, or ``--path``; with ``--sha256`` or ``--family`` where the config gives them."""
        entry = self.models[model]
        random = entry.get("random", {}).get("family", "fair-esm")
        if "name" in entry:
            args = ["--name", entry["name"]] + (["--url", entry["url"]] if "url" in entry else [])
        elif "hub" in entry:
            args = ["--hub", entry["hub"], "--revision", entry["revision"]]
        elif "path" in entry or random != "fair-esm":
            args = ["--path", self.model_checkpoint(model)[0]]
        else:
            args = ["--checkpoint", self.model_checkpoint(model)[0]]
        if "sha256" in entry:
            args += ["--sha256", entry["sha256"]]
        if "family" in entry:
            args += ["--family", entry["family"]]
        return shlex.join(args)

    # data --------------------------------------------------------------------------------------
    def data_path(self, value: str) -> str:
        """Where a task file is read from: official files are fetched under results/data, anything else is a local path."""
        return f"{self.results}/data/{value}" if value in sources.OFFICIAL_FILES else value

    @staticmethod
    def official_file_pattern() -> str:
        """Wildcard pattern matching exactly the official file keys."""
        return "|".join(re.escape(key) for key in sorted(sources.OFFICIAL_FILES))

    def data_source_flags(self) -> str:
        """``fetch-data`` flags: a directory of copies (``--local-dir``), a mirror (``--base-url``), or none (the sources)."""
        args = []
        if self.data.get("local_dir"):
            args += ["--local-dir", self.data["local_dir"]]
        elif self.data.get("base_url"):
            args += ["--base-url", self.data["base_url"]]
        return shlex.join(args)

    # tasks -------------------------------------------------------------------------------------
    def _filtered(self, entry_id: str) -> dict:
        return next(entry for entry in self.config["tasks"] if entry["id"] == entry_id and "filter" in entry)

    def assay_reference(self, entry_id: str) -> str:
        """The reference table a filtered ProteinGym entry's checkpoint chooses assays from."""
        return self.data_path(self._filtered(entry_id).get("reference", DEFAULT_REFERENCE))

    def assay_filter_flags(self, entry_id: str) -> str:
        """``choose-assays`` flags of a filtered entry's ``filter`` (``--selection-type`` per type, ``--max-length``, ``--max-variants``)."""
        f = self._filtered(entry_id)["filter"]
        args = [a for t in f.get("selection_type", []) for a in ("--selection-type", t)]
        for key in ("max_length", "max_variants"):
            if key in f:
                args += ["--" + key.replace("_", "-"), str(f[key])]
        return shlex.join(args)

    def task_inputs(self, task: str) -> list[str]:
        return [self.data_path(v) for v in self.task(task)["files"].values()]

    def task_type(self, task: str) -> str:
        return self.task(task)["type"]

    def task_metric(self, task: str) -> str:
        return self.task(task)["entry"].get("metric") or DEFAULT_SELECTION_METRIC[self.task_type(task)]

    def embedding_table(self, embedding_set: str) -> str:
        """The task table an embedding set is made from (every task of the set has the same sequences)."""
        return f"{self.results}/tasks/{self._set_task(embedding_set)['id']}.tsv"

    def embeddings(self, model: str, task: str) -> str:
        return f"{self.results}/embeddings/{model}/{self.task(task)['embedding_set']}.h5"

    def cost(self, model: str, task: str) -> str:
        return f"{self.results}/cost/{model}/{self.task(task)['embedding_set']}.json"

    def task_kind(self, task: str) -> str:
        return self.task(task)["entry"]["kind"]

    def task_file_flags(self, task: str) -> str:
        """``prepare`` flags of a task's files, one per file role of its kind (``--path``, ``--test-path``, ``--reference``, ...)."""
        args = []
        for role, value in self.task(task)["files"].items():
            args += ["--" + role.replace("_", "-"), self.data_path(value)]
        return shlex.join(args)

    def task_option_flags(self, task: str) -> str:
        """``prepare`` flags of the options a task's config entry sets (and a ProteinGym task's assay and scheme)."""
        plan = self.task(task)
        entry = plan["entry"]
        args = []
        for key in TASK_OPTION_KEYS:
            if entry.get(key) is not None:
                args += ["--" + key.replace("_", "-"), str(entry[key])]
        if plan["dms_id"]:
            args += ["--dms-id", plan["dms_id"], "--fold-scheme", plan["scheme"]]
        return shlex.join(args)

    # steps -------------------------------------------------------------------------------------
    def is_variant_set(self, embedding_set: str) -> bool:
        """Whether an embedding set is one target's substitution variants (a ProteinGym assay)."""
        return self._set_task(embedding_set)["dms_id"] is not None

    def store_dtype(self, embedding_set: str) -> str:
        # Variant sets are stored in float32 whatever embed.dtype says: a substitution moves a pooled
        # vector by about 1/length, which float16 rounds away on long targets
        # (benchmarks/results/variant_precision_*.json).
        return VARIANT_DTYPE if self.is_variant_set(embedding_set) else self.config["embed"]["dtype"]

    def variant_crop_flag(self, embedding_set: str) -> str:
        """``--variant-crop`` for a variant set (embed and cost: one crop over its mutations), else nothing."""
        return "--variant-crop" if self.is_variant_set(embedding_set) else ""

    def shards(self, embedding_set: str) -> int:
        """How many embedding jobs a set is cut into: ``embed.shards``, or for a set of known size (an assay a filter
        chose) as many as its tokens need at ``embed.shard_tokens`` a shard (rows times the target's length and
        two special tokens: the most a crop embeds), at most ``embed.shards``."""
        e = self.config["embed"]
        if embedding_set not in self._set_size:
            return e["shards"]
        rows, length = self._set_size[embedding_set]
        return max(1, min(e["shards"], math.ceil(rows * (length + 2) / e["shard_tokens"])))

    def embedding_shards(self, model: str, embedding_set: str) -> list[str]:
        """Shard stores of one (model, embedding set), one Snakemake job each; gathered into its store."""
        n = self.shards(embedding_set)
        return [f"{self.results}/embeddings/{model}/{embedding_set}.shards/{k}-of-{n}.h5" for k in range(n)]

    def grid(self, key: str) -> str:
        """A probe grid of the config (``ridge_alphas``, ``logistic_cs``) as ``probe`` takes it: comma-separated."""
        return ",".join(str(value) for value in self.config["probe"][key])

    def baseline_features(self, task: str) -> str:
        """The feature baseline of a task's probes (``probe --baseline-features``), by its kind (``FORMATS``)."""
        return FORMATS[self.task_kind(task)].baseline

    def inner_split(self, task: str) -> str:
        """A ridge probe's inner split follows the task's fold scheme (``INNER_SPLIT_OF_SCHEME``); classifiers ignore it."""
        return INNER_SPLIT_OF_SCHEME[self.task(task)["scheme"]] if self.task_type(task) == "regression" else "loo"

def _check_model(entry: dict, position: int, entry_ids: list[str]) -> None:
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


def _check_keys(entry: dict, position: int) -> None:
    kind = entry["kind"]
    allowed = set(COMMON_KEYS) | set(FORMATS[kind].file_roles) | set(FORMATS[kind].options)
    extra = sorted(set(entry) - allowed)
    if extra:
        raise ConfigError(
            f"config: tasks[{position}] ({entry['id']}): key {extra[0]!r} does not apply to a {kind} task "
            f"(it takes {', '.join(sorted(allowed - {'id', 'kind'}))}); remove it"
        )


def load_schema(path: str | Path) -> dict:
    import yaml  # installed with Snakemake

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
