rule select_layer:
    input:
        "results/probes/{model}/{task}.tsv",
    output:
        "results/selection/{model}/{task}.json",
    params:
        args=lambda w: plan.select_args(w.task),
    log:
        "results/logs/select_layer/{model}/{task}.log",
    conda:
        "../../envs/probe.yaml"
    shell:
        "plmexit select --probes {input} {params.args} --out {output} 2> {log}"
