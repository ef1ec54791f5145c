rule summarize_layers:
    input:
        plan.selections(),
    output:
        "results/summary/best_layers.tsv",
    log:
        "results/logs/summarize_layers.log",
    conda:
        "../../envs/probe.yaml"
    shell:
        "plmexit summarize {input} --out {output} 2> {log}"


rule plot_layers:
    input:
        probes="results/probes/{model}/{task}.tsv",
        selection="results/selection/{model}/{task}.json",
    output:
        "results/figures/{model}/{task}.png",
    log:
        "results/logs/plot_layers/{model}/{task}.log",
    conda:
        "../../envs/probe.yaml"
    shell:
        "plmexit plot --probes {input.probes} --selection {input.selection} --out {output} 2> {log}"
