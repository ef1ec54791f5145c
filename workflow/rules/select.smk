rule select_layer:
    input:
        probes="results/probes/{model}/{task}.tsv",
        predictions="results/probes/{model}/{task}.predictions.tsv.gz",
        cost="results/cost/{model}/{task}.json",
        embeddings="results/embeddings/{model}/{task}.h5",
    output:
        "results/selection/{model}/{task}.json",
    params:
        args=lambda w: plan.select_args(w.task),
    log:
        "results/logs/select_layer/{model}/{task}.log",
    conda:
        "../../envs/probe.yaml"
    shell:
        "plmexit select --probes {input.probes} --predictions {input.predictions} --cost {input.cost}"
        " --embeddings {input.embeddings} {params.args} --out {output} 2> {log}"
