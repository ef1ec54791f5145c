"""Where every file of a run goes: the workflow's targets, and the paths a job's inputs name.

Invariant: a path is ``<results>/...`` with the same pattern as the rule that writes it; a list of
targets keeps the planning order of ``TaskIndex.pairs``; a job's inputs are looked up, never scanned
for. ``TargetPaths`` is a part of ``planning.Plan``: it reads the host's ``config``, ``models``,
``results``, ``index``, ``pairs()``, ``task(id)``, ``_set_task(set)``, ``shards(set)``,
``depth_models()``, ``lens_sets(model)``, ``zero_shot_sets(model)``, ``depth_tasks(model)``,
``exit_pairs()``, ``batches(model)``, ``batch_layout(model)`` and ``gpu_layout(model)``.
"""

from __future__ import annotations

from pathlib import Path

from plmexit.data import sources
from plmexit.models import families
from plmexit.pipeline.plan_tasks import DEFAULT_REFERENCE


class TargetPaths:
    """The workflow's targets and the paths of a job's inputs (a part of ``planning.Plan``)."""

    # per job -----------------------------------------------------------------------------------
    def data_path(self, value: str) -> str:
        """Where a task file is read from: pinned files and archive assays are staged under results/data, anything else is a local path."""
        return f"{self.results}/data/{sources.data_key_path(value)}" if sources.is_data_key(value) else value

    def task_provenance(self, task: str) -> str | None:
        """What ``stage-assay`` wrote beside a task's assay staged from a ProteinGym archive (None for any other file)."""
        path = self.task(task).files.get("path", "")
        return self.data_path(path)[: -len(".csv")] + ".json" if sources.is_archive_assay_key(path) else None

    def task_inputs(self, task: str) -> list[str]:
        provenance = self.task_provenance(task)
        return [self.data_path(v) for v in self.task(task).files.values()] + ([provenance] if provenance else [])

    def embedding_table(self, embedding_set: str) -> str:
        """The task table an embedding set is made from (every task of the set has the same sequences)."""
        return f"{self.results}/tasks/{self._set_task(embedding_set).id}.tsv"

    def embeddings(self, model: str, task: str) -> str:
        return f"{self.results}/embeddings/{model}/{self.task(task).embedding_set}.h5"

    def cost(self, model: str, task: str) -> str:
        return f"{self.results}/cost/{model}/{self.task(task).embedding_set}.json"

    def embedding_shards(self, model: str, embedding_set: str) -> list[str]:
        """Shard stores of one (model, embedding set), one Snakemake job each; gathered into its store."""
        n = self.shards(embedding_set)
        return [f"{self.results}/embeddings/{model}/{embedding_set}.shards/{k}-of-{n}.h5" for k in range(n)]

    def assay_reference(self, entry_id: str) -> str:
        """The reference table a filtered ProteinGym entry's checkpoint chooses assays from."""
        return self.data_path(self._filtered(entry_id).get("reference", DEFAULT_REFERENCE))

    def assay_file(self, embedding_set: str) -> str:
        """A ProteinGym assay's file (for zero-shot scoring)."""
        return self.data_path(self._set_task(embedding_set).files["path"])

    def assay_reference_file(self, embedding_set: str) -> str:
        """The reference table a ProteinGym assay's target comes from."""
        return self.data_path(self._set_task(embedding_set).files["reference"])

    def task_lens(self, model: str, task: str) -> list[str]:
        """The lens table of a task's sequences for ``model`` ([] when its lens does not run on them)."""
        found = self.task(task).embedding_set
        return [f"{self.results}/depth/{model}/lens/{found}.tsv"] if self.index.has_lens(model, found) else []

    def task_zero_shot(self, model: str, task: str) -> list[str]:
        """The long zero-shot table of a task's assay for ``model`` ([] when it is not scored zero-shot)."""
        found = self.task(task).embedding_set
        return [f"{self.results}/depth/{model}/zero_shot/{found}.tsv"] if self.index.has_zero_shot(model, found) else []

    def batch_selections(self, model: str, batch: int) -> list[str]:
        """The selections of one batch's tasks: its summary needs them all, which ties the batch's jobs into one group."""
        return [f"{self.results}/selection/{model}/{t}.json" for t in self.batch_layout(model).tasks[batch]]

    def gpu_batch_shard_records(self, model: str, batch: int) -> list[str]:
        """The records of one GPU batch's embedding shards (``embed --record-out``; the shards themselves are temporary):
        the batch's table reads them."""
        return [path.removesuffix(".h5") + ".json" for s in self.gpu_layout(model).batches[batch] for path in self.embedding_shards(model, s)]

    def gpu_batch_costs(self, model: str, batch: int) -> list[str]:
        """The cost timings of one GPU batch's sets: the batch's table reads them."""
        return [f"{self.results}/cost/{model}/{s}.json" for s in self.gpu_layout(model).batches[batch]]

    def gpu_batch_zero_shot(self, model: str, batch: int) -> list[str]:
        """The zero-shot scores of one GPU batch's assays that ``model`` scores: the batch's table waits for them,
        which, with the shards' records and cost timings it reads, ties the batch's GPU jobs into one group."""
        if model not in self.depth_models():
            return []
        return [f"{self.results}/depth/{model}/zero_shot/{s}.json" for s in self.gpu_layout(model).batches[batch] if self.index.has_zero_shot(model, s)]

    def exit_timing(self, model: str, task: str) -> list[str]:
        """The measured timing of one exit (model, task) ([] when ``exit.timing_sequences`` is 0: estimated time only)."""
        return [f"{self.results}/exit/{model}/timing/{task}.tsv"] if self.config.get("exit", {}).get("timing_sequences", 0) else []

    def model_exit_tables(self, model: str) -> list[str]:
        """One model's exit tables (its ``exit.tasks``)."""
        return [f"{self.results}/exit/{m}/{t}.tsv" for m, t in self.exit_pairs() if m == model]

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

    # targets -----------------------------------------------------------------------------------
    def proteingym_selections(self) -> list[str]:
        return [f"{self.results}/selection/{m}/{t}.json" for m, t in self.index.proteingym_pairs]

    def proteingym_predictions(self) -> list[str]:
        """Each ProteinGym selection's predictions, in ``proteingym_selections`` order (the merge pools them)."""
        return [f"{self.results}/probes/{m}/{t}.predictions.tsv.gz" for m, t in self.index.proteingym_pairs]

    def proteingym_task_tables(self) -> list[str]:
        """Each ProteinGym selection's task table, in ``proteingym_selections`` order (its folds' training rows)."""
        return [f"{self.results}/tasks/{t}.tsv" for _, t in self.index.proteingym_pairs]

    def selections(self) -> list[str]:
        return [f"{self.results}/selection/{m}/{t}.json" for m, t in self.pairs()]

    def figures(self) -> list[str]:
        """Every (model, task)'s figure (drawn by its selection's job, beside its depth curves where it has them)."""
        return [f"{self.results}/figures/{m}/{t}.png" for m, t in self.pairs()]

    def probe_tables(self) -> list[str]:
        return [f"{self.results}/probes/{m}/{t}.tsv" for m, t in self.pairs()]

    def exports(self) -> list[str]:
        """Every (model, task)'s export directory when ``export.enabled``, else none."""
        if not self.config["export"]["enabled"]:
            return []
        return [f"{self.results}/export/{m}/{t}" for m, t in self.pairs()]

    def depth_selections(self, model: str) -> list[str]:
        """The selections of the tasks a model's depth files speak of (their deployed layers go beside the lens and zero-shot layers)."""
        return [f"{self.results}/selection/{model}/{t}.json" for t in self.depth_tasks(model)]

    def all_depth_selections(self) -> list[str]:
        return [path for m in self.depth_models() for path in self.depth_selections(m)]

    def lens_infos(self) -> list[str]:
        return [f"{self.results}/depth/{m}/lens/{s}.json" for m in self.depth_models() for s in self.lens_sets(m)]

    def zero_shot_infos(self) -> list[str]:
        return [f"{self.results}/depth/{m}/zero_shot/{s}.json" for m in self.depth_models() for s in self.zero_shot_sets(m)]

    def exit_tables(self) -> list[str]:
        return [f"{self.results}/exit/{m}/{t}.tsv" for m, t in self.exit_pairs()]

    def exit_figures(self) -> list[str]:
        return [f"{self.results}/figures/exit/{m}/{t}.png" for m, t in self.exit_pairs()]

    def exit_timings(self) -> list[str]:
        """Each exit (model, task)'s measured timing, unless ``exit.timing_sequences`` is 0."""
        return [path for m, t in self.exit_pairs() for path in self.exit_timing(m, t)]

    def exit_lens_tables(self) -> list[str]:
        """With ``exit.lens``: the head's exit on the logit lens of every model and lens set the depth diagnostics read
        (none when ``depth.lens_tasks`` is empty or no model has a head, as ``exit.tasks: []`` plans no probe exit)."""
        if not self.config.get("exit", {}).get("lens"):
            return []
        return [f"{self.results}/exit/{m}/lens/{s}.tsv" for m in self.depth_models() for s in self.lens_sets(m)]

    def exit_targets(self) -> list[str]:
        """The exit summary, when ``exit.tasks`` names any task (its figures are in ``drawn``), and the head's exit
        summary, when ``exit.lens`` is on and a model's head runs the lens."""
        lens = [f"{self.results}/summary/exit_lens.tsv"] if self.exit_lens_tables() else []
        return ([f"{self.results}/summary/exit.tsv"] if self.exit_pairs() else []) + lens

    def depth_exit_figures(self) -> list[str]:
        """Per model with both depth diagnostics and early exit: the two laid out together (PNG; its PDF is made beside it)."""
        exiting = {m for m, _ in self.exit_pairs()}
        return [f"{self.results}/figures/{m}.depth_exit.png" for m in self.depth_models() if m in exiting]

    def batch_tables(self) -> list[str]:
        """The best-layer table of every batch of more than one set: it needs the selections of all its sets, which
        ties their jobs into one group (one set's jobs are tied by its gathering already)."""
        return [f"{self.results}/summary/batches/{m}/{k}.tsv" for m in self.models for k, sets in enumerate(self.batches(m)) if len(sets) > 1]

    def benchmarks(self) -> str:
        """Where Snakemake's benchmark records of the model jobs go: ``<results>/benchmarks/{rule}/...``, each beside its job's
        log (the log's path under ``benchmarks/`` in place of ``logs/``, ``.tsv`` in place of ``.log``)."""
        return f"{self.results}/benchmarks"

    def resources_summary(self) -> str:
        return f"{self.results}/summary/resources.tsv"

    def resource_inputs(self) -> list[str]:
        """What every benchmarked job feeds (embedding, cost and probes the best layers; lens and zero-shot the depth
        summary; early exit its summaries; exports): the resource summary runs after them, reading the records they
        left, which are not its inputs, so that a missing record (a job run before records were kept) never reruns a job."""
        depth = [f"{self.results}/summary/depth.tsv"] if self.depth_models() else []
        return [f"{self.results}/summary/best_layers.tsv", *depth, *self.exit_targets(), *self.exports()]

    def gpu_batch_tables(self) -> list[str]:
        """The table of every GPU batch: it needs every shard's record, cost timing and zero-shot score of the batch,
        which ties the batch's GPU jobs into one group, one submission."""
        return [f"{self.results}/summary/gpu_batches/{m}/{k}.tsv" for m in self.models for k in range(len(self.gpu_layout(m).batches))]

    def drawn(self) -> list[str]:
        """Every figure and manuscript table, all drawn from files under results/ (the ``figures`` target)."""
        depth = [f"{self.results}/figures/depth.png"] if self.depth_models() else []
        return [
            f"{self.results}/figures/gain_vs_compute.png", f"{self.results}/figures/study", f"{self.results}/summary/tables",
            *self.figures(), *depth, *self.exit_figures(), *self.depth_exit_figures(),
        ]

    def final_targets(self) -> list[str]:
        proteingym = [f"{self.results}/summary/proteingym_supervised.csv"] if self.proteingym_selections() else []
        depth = [f"{self.results}/summary/depth.tsv"] if self.depth_models() else []
        return [
            f"{self.results}/summary/best_layers.tsv", f"{self.results}/summary/across_tasks.tsv",
            *proteingym, self.resources_summary(), *self.drawn(), *self.exports(), *self.exit_targets(), *depth, *self.batch_tables(),
            *self.gpu_batch_tables(),
        ]

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
