rule select_layer:
    input:
        probes="<results>/probes/{model}/{task}.tsv",
        predictions="<results>/probes/{model}/{task}.predictions.tsv.gz",
        cost=lambda w: plan.cost(w.model, w.task),
        embeddings=lambda w: plan.embeddings(w.model, w.task),
        info="<results>/tasks/{task}.json",
    output:
        "<results>/selection/{model}/{task}.json",
    log:
        "<results>/logs/select_layer/{model}/{task}.log",
    conda:
        "../../envs/probe.yaml"
    params:
        args=lambda w: plan.select_args(w.task),
    shell:
        "plmexit --log {log} select --probes {input.probes} --predictions {input.predictions} --cost {input.cost}"
        " --embeddings {input.embeddings} --task-info {input.info} {params.args} --out {output}"
