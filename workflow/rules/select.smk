# The layer chosen for one (model, task) without its test rows, and the task's figure drawn from it: the
# metric against layer, and beside it on one relative-depth axis the lens and zero-shot curves of the
# task's sequences where the depth diagnostics ran on them (docs/results.md). One job, one process:
# the figure draws the selection, and the study has thousands of tasks.
rule select_layer:
    input:
        probes="<results>/probes/{model}/{task}.tsv",
        predictions="<results>/probes/{model}/{task}.predictions.tsv.gz",
        baselines="<results>/probes/{model}/{task}.baselines.tsv",
        baseline_predictions="<results>/probes/{model}/{task}.baselines.predictions.tsv.gz",
        cost=task_cost,
        info="<results>/tasks/{task}.json",
        lens=task_lens,
        zero_shot=task_zero_shot,
    output:
        selection="<results>/selection/{model}/{task}.json",
        figure=report(
            "<results>/figures/{model}/{task}.png",
            caption="../report/task_layers.rst",
            category="Per model and task",
            subcategory="{model}",
            labels={"model": "{model}", "task": "{task}"},
        ),
    log:
        "<results>/logs/select_layer/{model}/{task}.log",
    group:
        task_batch
    conda:
        "../../envs/probe.yaml"
    params:
        type=task_type,
        metric=task_metric,
        select=plan.flags.select,
    shell:
        "plmexit select --probes {input.probes} --predictions {input.predictions} --cost {input.cost}"
        " --task-info {input.info} --type {params.type} --metric {params.metric}"
        " {params.select} --out {output.selection}"
        " --baselines {input.baselines} --baseline-predictions {input.baseline_predictions}"
        " --figure {output.figure} --lens {input.lens} --zero-shot {input.zero_shot} 2>> {log}"


# The best layers of one cluster batch's tasks (config schedule), as soon as the batch is done, for a
# batch of more than one embedding set: it needs every selection of the batch, which makes the batch
# one job group, one submission.
rule summarize_batch:
    input:
        batch_selections,
    output:
        "<results>/summary/batches/{model}/{batch}.tsv",
    log:
        "<results>/logs/summarize_batch/{model}/{batch}.log",
    group:
        batch_group
    conda:
        "../../envs/probe.yaml"
    shell:
        "plmexit summarize {input} --out {output} 2>> {log}"
