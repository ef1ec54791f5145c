# A ridge probe's inner split follows the task's fold scheme (whole mutated positions under
# ProteinGym's modulo and contiguous schemes, leave-one-out otherwise); classifiers always use
# stratified inner folds. On a cluster it runs in its batch's job group (config schedule), for as long
# as its embeddings' size says (Plan.probe_minutes; memory from the profile). The chance predictor and a
# feature baseline (plan.baseline_features: the variant's one-hot for ProteinGym sets, amino-acid
# composition and length otherwise) go through the same folds in the same job.
rule probe_layers:
    input:
        embeddings=task_embeddings,
        task="<results>/tasks/{task}.tsv",
    output:
        scores="<results>/probes/{model}/{task}.tsv",
        predictions="<results>/probes/{model}/{task}.predictions.tsv.gz",
        baselines="<results>/probes/{model}/{task}.baselines.tsv",
        baseline_predictions="<results>/probes/{model}/{task}.baselines.predictions.tsv.gz",
    log:
        "<results>/logs/probe_layers/{model}/{task}.log",
    benchmark:
        "<results>/benchmarks/probe_layers/{model}/{task}.tsv"
    group:
        task_batch
    conda:
        "../../envs/probe.yaml"
    # Layers are probed in parallel, one process per thread (profiles/default: set-threads).
    threads: 2
    resources:
        runtime=probe_runtime,
    params:
        type=task_type,
        metric=task_metric,
        grid=plan.flags.probe,
        inner_split=inner_split,
        baseline_features=baseline_features,
    shell:
        "plmexit probe --embeddings {input.embeddings} --task {input.task} --type {params.type}"
        " --metric {params.metric} {params.grid} --inner-split {params.inner_split} --model-id {wildcards.model}"
        " --task-name {wildcards.task} --threads {threads} --out {output.scores} --predictions {output.predictions}"
        " --baseline-features {params.baseline_features} --baselines-out {output.baselines}"
        " --baseline-predictions {output.baseline_predictions} 2>> {log}"
