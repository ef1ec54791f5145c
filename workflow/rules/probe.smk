rule probe_layers:
    input:
        embeddings=lambda w: plan.embeddings(w.model, w.task),
        task="<results>/tasks/{task}.tsv",
    output:
        scores="<results>/probes/{model}/{task}.tsv",
        predictions="<results>/probes/{model}/{task}.predictions.tsv.gz",
    log:
        "<results>/logs/probe_layers/{model}/{task}.log",
    conda:
        "../../envs/probe.yaml"
    # Layers are probed in parallel, one process per thread (profiles/slurm: set-threads).
    threads: 2
    params:
        args=lambda w: plan.probe_args(w.task),
    shell:
        "plmexit --log {log} probe --embeddings {input.embeddings} --task {input.task} {params.args}"
        " --model-name {wildcards.model} --task-name {wildcards.task}"
        " --threads {threads} --out {output.scores} --predictions {output.predictions}"
