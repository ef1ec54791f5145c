# Times the model on the device that embeds (give this rule the embedding rule's resources), with
# the embedding's settings, so that it times and counts exactly what was embedded. One per set.
rule measure_cost:
    input:
        model="<results>/models/{model}.json",
        task=set_table,
    output:
        "<results>/cost/{model}/{set}.json",
    log:
        "<results>/logs/measure_cost/{model}/{set}.log",
    benchmark:
        "<results>/benchmarks/measure_cost/{model}/{set}.tsv"
    conda:
        "../../envs/embed.yaml"
    threads: 2
    params:
        embed=plan.flags.embed,
        variant_crop=variant_crop_flag,
        cost=plan.flags.cost,
    shell:
        "plmexit cost --model {input.model} --task {input.task}"
        " {params.embed} {params.variant_crop} {params.cost} --device auto --threads {threads} --out {output} 2>> {log}"
