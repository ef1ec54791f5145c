rule select_layer:
    input:
        probes="<results>/probes/{model}/{task}.tsv",
        predictions="<results>/probes/{model}/{task}.predictions.tsv.gz",
        baselines="<results>/probes/{model}/{task}.baselines.tsv",
        baseline_predictions="<results>/probes/{model}/{task}.baselines.predictions.tsv.gz",
        cost=task_cost,
        info="<results>/tasks/{task}.json",
    output:
        "<results>/selection/{model}/{task}.json",
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
        " {params.select} --out {output}"
        " --baselines {input.baselines} --baseline-predictions {input.baseline_predictions} 2>> {log}"


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
