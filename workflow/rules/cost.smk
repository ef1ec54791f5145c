# Times the model on the device that embeds (give this rule the embedding rule's resources).
# Like the embedding, one per embedding set ({task}).
rule measure_cost:
    input:
        model="<results>/models/{model}.json",
        task=lambda w: plan.embedding_table(w.task),
    output:
        "<results>/cost/{model}/{task}.json",
    log:
        "<results>/logs/measure_cost/{model}/{task}.log",
    conda:
        "../../envs/embed.yaml"
    threads: 2
    params:
        args=lambda w: plan.cost_args(w.task),
    shell:
        "plmexit --log {log} cost --model {input.model} --task {input.task} {params.args}"
        " --device auto --threads {threads} --out {output}"
