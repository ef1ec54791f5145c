wildcard_constraints:
    entry=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    model=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    task=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    set=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    shard=r"\d+",
    shards=r"\d+",
    batch=r"\d+",


# Input and parameter functions: each takes a job's wildcards and asks the plan
# ({task} is a task, {set} an embedding set: the tasks that share sequences, such as a
# ProteinGym assay's three fold schemes; {entry} a config task entry whose assays a filter
# chooses). Functions that list tasks wait for the choose_assays checkpoint.
def chosen_assays(entry):
    """The assay list the choose_assays checkpoint wrote for a ProteinGym entry with a filter."""
    return checkpoints.choose_assays.get(entry=entry).output[0]


def final_targets(wildcards):
    return plan.final_targets()


def drawn(wildcards):
    return plan.drawn()


def resource_inputs(wildcards):
    return plan.resource_inputs()


def probe_tables(wildcards):
    return plan.probe_tables()


def selections(wildcards):
    return plan.selections()


def proteingym_selections(wildcards):
    return plan.proteingym_selections()


def proteingym_predictions(wildcards):
    return plan.proteingym_predictions()


def proteingym_task_tables(wildcards):
    return plan.proteingym_task_tables()


def assay_reference(wildcards):
    return plan.assay_reference(wildcards.entry)


def archive_assay_reference(wildcards):
    return plan.assay_reference_file(wildcards.dms_id)


def assay_filter_flags(wildcards):
    return plan.assay_filter_flags(wildcards.entry)


def task_files(wildcards):
    return plan.task_inputs(wildcards.task)


def task_kind(wildcards):
    return plan.task_kind(wildcards.task)


def task_type(wildcards):
    return plan.task_type(wildcards.task)


def task_metric(wildcards):
    return plan.task_metric(wildcards.task)


def task_file_flags(wildcards):
    return plan.task_file_flags(wildcards.task)


def task_option_flags(wildcards):
    return plan.task_option_flags(wildcards.task)


def inner_split(wildcards):
    return plan.inner_split(wildcards.task)


def baseline_features(wildcards):
    return plan.baseline_features(wildcards.task)


def task_embeddings(wildcards):
    return plan.embeddings(wildcards.model, wildcards.task)


def task_cost(wildcards):
    return plan.cost(wildcards.model, wildcards.task)


def set_table(wildcards):
    return plan.embedding_table(wildcards.set)


def set_shards(wildcards):
    return plan.embedding_shards(wildcards.model, wildcards.set)


def store_dtype(wildcards):
    return plan.store_dtype(wildcards.set)


def variant_crop_flag(wildcards):
    return plan.variant_crop_flag(wildcards.set)


def model_checkpoint(wildcards):
    return plan.model_checkpoint(wildcards.model)


def model_source_flags(wildcards):
    return plan.model_source_flags(wildcards.model)


def exit_tables(wildcards):
    return plan.exit_tables()


def exit_timings(wildcards):
    return plan.exit_timings()


def exit_timing(wildcards):
    return plan.exit_timing(wildcards.model, wildcards.task)


def task_variant_crop_flag(wildcards):
    return plan.task_variant_crop_flag(wildcards.task)


def exit_lens_tables(wildcards):
    return plan.exit_lens_tables()


def model_exit_tables(wildcards):
    return plan.model_exit_tables(wildcards.model)


def lens_infos(wildcards):
    return plan.lens_infos()


def zero_shot_infos(wildcards):
    return plan.zero_shot_infos()


def depth_selections(wildcards):
    return plan.all_depth_selections()


def assay_file(wildcards):
    return plan.assay_file(wildcards.set)


def set_assay_reference(wildcards):
    return plan.assay_reference_file(wildcards.set)


def task_lens(wildcards):
    return plan.task_lens(wildcards.model, wildcards.task)


def task_zero_shot(wildcards):
    return plan.task_zero_shot(wildcards.model, wildcards.task)


# Cluster batches (config schedule): the job group of a model's embedding set, of a task (its set's),
# and of a batch ({batch}: its index among the model's batches); the selections a batch summarizes.
def set_batch(wildcards):
    return plan.set_group(wildcards.model, wildcards.set)


def task_batch(wildcards):
    return plan.task_group(wildcards.model, wildcards.task)


def batch_group(wildcards):
    return plan.batch_group(wildcards.model, wildcards.batch)


def batch_selections(wildcards):
    return plan.batch_selections(wildcards.model, int(wildcards.batch))


# A probe's run time in minutes, from its embeddings' size (or its shards', gathered in the same batch).
def probe_runtime(wildcards, attempt):
    return plan.probe_minutes(wildcards.model, wildcards.task) * attempt


# GPU batches (config schedule.gpu_batch_minutes): the job group of a set's GPU jobs, and of a GPU batch
# ({batch}: its index among the model's GPU batches); what a batch's table reads and waits for; each GPU
# job's run time in minutes, from the tokens it runs.
def set_gpu_batch(wildcards):
    return plan.gpu_group(wildcards.model, wildcards.set)


def gpu_batch_group(wildcards):
    return plan.gpu_batch_group(wildcards.model, wildcards.batch)


def gpu_batch_shard_records(wildcards):
    return plan.gpu_batch_shard_records(wildcards.model, int(wildcards.batch))


def gpu_batch_costs(wildcards):
    return plan.gpu_batch_costs(wildcards.model, int(wildcards.batch))


def gpu_batch_zero_shot(wildcards):
    return plan.gpu_batch_zero_shot(wildcards.model, int(wildcards.batch))


def embed_runtime(wildcards, attempt):
    return plan.gpu_minutes("embed_shard", wildcards.model, wildcards.set) * attempt


def cost_runtime(wildcards, attempt):
    return plan.gpu_minutes("measure_cost", wildcards.model, wildcards.set) * attempt


def zero_shot_runtime(wildcards, attempt):
    return plan.gpu_minutes("zero_shot", wildcards.model, wildcards.set) * attempt


def gpu_table_runtime(wildcards, attempt):
    return plan.gpu_table_minutes() * attempt


# Snakemake repeats work while it plans: a function's signature read on every call, a job group checked
# and readied once per job in it, a job's command formatted three times to describe it; and Python looks
# for reference cycles in the growing DAG thousands of times. Once, or rarely, is enough
# (plmexit.pipeline.snakemake_speed).
plan_faster()
