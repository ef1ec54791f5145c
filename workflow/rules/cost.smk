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
    conda:
        "../../envs/embed.yaml"
    threads: 2
    params:
        max_tokens=config["embed"]["max_tokens"],
        truncate=config["embed"]["truncate"],
        layer_norm=config["embed"]["layer_norm"],
        precision=config["embed"]["precision"],
        long_sequences=config["embed"]["long_sequences"],
        window=config["embed"]["window"],
        overlap=config["embed"]["overlap"],
        variant_crop=variant_crop_flag,
        sample_sequences=config["cost"]["sample_sequences"],
        repeats=config["cost"]["repeats"],
        seed=config["seed"],
    shell:
        "plmexit --log {log} cost --model {input.model} --task {input.task}"
        " --max-tokens {params.max_tokens} --truncate {params.truncate} --layer-norm {params.layer_norm}"
        " --precision {params.precision} --long-sequences {params.long_sequences} --window {params.window}"
        " --overlap {params.overlap} {params.variant_crop} --sample-sequences {params.sample_sequences}"
        " --repeats {params.repeats} --seed {params.seed} --device auto --threads {threads} --out {output}"
