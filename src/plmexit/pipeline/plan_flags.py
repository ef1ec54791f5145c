"""The settings and flags a rule's ``params:`` take from the plan: a task's type, metric, files and options,
a set's storage precision and crop, a model's source, the probe grids.

Invariant: each is computed from one task, set or model of the plan (a lookup, never a scan), and
written as the ``plmexit`` subcommand takes it (flags through ``shlex.join``). ``StepArguments`` is a
part of ``planning.Plan``: it reads the host's ``config``, ``data``, ``models``, ``results``,
``task(id)``, ``is_variant_set(set)``, ``model_checkpoint(model)``, ``data_path(value)``, ``task_provenance(task)`` and ``_filtered(entry id)``.
"""

from __future__ import annotations

import re
import shlex

from plmexit.data import sources
from plmexit.data.formats import FORMATS

# A ridge probe's inner split mimics the outer one: ProteinGym's modulo and contiguous folds hold out
# whole mutated positions, so inner folds do too (leave-one-out over variants would reward
# features that memorise positions); random folds and non-ProteinGym tasks (no scheme) use
# exact leave-one-out. Values are ``plmexit probe --inner-split`` choices.
INNER_SPLIT_OF_SCHEME = {"fold_random_5": "loo", "fold_modulo_5": "modulo", "fold_contiguous_5": "contiguous", None: "loo"}
# Storage precision of variant sets (ProteinGym assays), whatever embed.dtype says (see StepArguments.store_dtype).
VARIANT_DTYPE = "float32"
# Config task-entry keys that become ``prepare`` options (``--label-column`` ...), as they are spelled.
TASK_OPTION_KEYS = ("sequence_column", "label_column", "id_column", "fold_column", "label_regex", "split", "labels", "max_sequences", "min_class_size", "folds", "homology_identity")


class StepArguments:
    """The per-task, per-set and per-model settings of the rules (a part of ``planning.Plan``)."""

    # models -------------------------------------------------------------------------------------
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
    @staticmethod
    def pinned_file_pattern() -> str:
        """Wildcard pattern matching exactly the pinned file keys."""
        return "|".join(re.escape(key) for key in sorted(sources.PINNED_FILES))

    @staticmethod
    def archive_pattern() -> str:
        """Wildcard pattern matching exactly the names of ProteinGym's released archives."""
        return "|".join(re.escape(name) for name in sorted(sources.PROTEINGYM_ARCHIVES))

    def data_source_flags(self) -> str:
        """``fetch-data`` flags: a directory of copies (``--local-dir``), a mirror (``--base-url``), or none (the sources)."""
        args = []
        if self.data.get("local_dir"):
            args += ["--local-dir", self.data["local_dir"]]
        elif self.data.get("base_url"):
            args += ["--base-url", self.data["base_url"]]
        return shlex.join(args)

    # tasks -------------------------------------------------------------------------------------
    def assay_filter_flags(self, entry_id: str) -> str:
        """``choose-assays`` flags of a filtered entry's ``filter`` (``--selection-type`` per type, ``--max-length``, ``--max-variants``)."""
        f = self._filtered(entry_id)["filter"]
        args = [a for t in f.get("selection_type", []) for a in ("--selection-type", t)]
        for key in ("max_length", "max_variants"):
            if key in f:
                args += ["--" + key.replace("_", "-"), str(f[key])]
        return shlex.join(args)

    def task_type(self, task: str) -> str:
        return self.task(task).type

    def task_metric(self, task: str) -> str:
        return self.task(task).metric

    def task_kind(self, task: str) -> str:
        return self.task(task).kind

    def task_file_flags(self, task: str) -> str:
        """``prepare`` flags of a task's files, one per file role of its kind (``--path``, ``--test-path``, ``--reference``, ...)."""
        args = []
        for role, value in self.task(task).files.items():
            args += ["--" + role.replace("_", "-"), self.data_path(value)]
        return shlex.join(args)

    def task_option_flags(self, task: str) -> str:
        """``prepare`` flags of the options a task's config entry sets (and a ProteinGym task's assay and scheme)."""
        plan = self.task(task)
        args = []
        for key in TASK_OPTION_KEYS:
            if plan.entry.get(key) is not None:
                args += ["--" + key.replace("_", "-"), str(plan.entry[key])]
        if plan.dms_id:
            args += ["--dms-id", plan.dms_id, "--fold-scheme", plan.scheme]
        if provenance := self.task_provenance(task):
            args += ["--provenance", provenance]
        return shlex.join(args)

    # steps -------------------------------------------------------------------------------------
    def store_dtype(self, embedding_set: str) -> str:
        # Variant sets are stored in float32 whatever embed.dtype says: a substitution moves a pooled
        # vector by about 1/length, which float16 rounds away on long targets
        # (benchmarks/results/variant_precision_*.json).
        return VARIANT_DTYPE if self.is_variant_set(embedding_set) else self.config["embed"]["dtype"]

    def variant_crop_flag(self, embedding_set: str) -> str:
        """``--variant-crop`` for a variant set (embed and cost: one crop over its mutations), else nothing."""
        return "--variant-crop" if self.is_variant_set(embedding_set) else ""

    def task_variant_crop_flag(self, task: str) -> str:
        """``variant_crop_flag`` of the embedding set a task's sequences are embedded in."""
        return self.variant_crop_flag(self.task(task).embedding_set)

    def grid(self, key: str) -> str:
        """A probe grid of the config (``ridge_alphas``, ``logistic_cs``) as ``probe`` takes it: comma-separated."""
        return ",".join(str(value) for value in self.config["probe"][key])

    def baseline_features(self, task: str) -> str:
        """The feature baseline of a task's probes (``probe --baseline-features``), by its kind (``FORMATS``)."""
        return FORMATS[self.task_kind(task)].baseline

    def inner_split(self, task: str) -> str:
        """A ridge probe's inner split follows the task's fold scheme (``INNER_SPLIT_OF_SCHEME``); classifiers ignore it."""
        plan = self.task(task)
        return INNER_SPLIT_OF_SCHEME[plan.scheme] if plan.type == "regression" else "loo"
