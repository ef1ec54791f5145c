# Per-sequence early exit from the per-layer probes (config exit.*): each outer fold's controller
# calibrated on its training rows, reported on its test rows beside every static layer and
# Hart et al.'s test-swept threshold.
rule exit_task:
    input:
        embeddings=task_embeddings,
        task="<results>/tasks/{task}.tsv",
        probes="<results>/probes/{model}/{task}.tsv",
        selection="<results>/selection/{model}/{task}.json",
        cost=task_cost,
    output:
        table="<results>/exit/{model}/{task}.tsv",
        info="<results>/exit/{model}/{task}.json",
    log:
        "<results>/logs/exit_task/{model}/{task}.log",
    conda:
        "../../envs/probe.yaml"
    params:
        type=task_type,
        metric=task_metric,
        gates=" ".join(config["exit"]["gates"]),
        epsilon=config["exit"]["epsilon"],
        delta=config["exit"]["delta"],
        fallback=config["exit"]["fallback"],
        n_thresholds=config["exit"]["n_thresholds"],
        max_patience=config["exit"]["max_patience"],
        first_layer=config["exit"]["first_layer"],
        tolerance=config["exit"]["tolerance"],
        inner_folds=config["probe"]["inner_folds"],
        seed=config["seed"],
    shell:
        "plmexit --log {log} exit --embeddings {input.embeddings} --task {input.task} --probes {input.probes}"
        " --selection {input.selection} --cost {input.cost} --model-id {wildcards.model} --task-name {wildcards.task}"
        " --type {params.type} --metric {params.metric} --gates {params.gates} --epsilon {params.epsilon} --delta {params.delta}"
        " --fallback {params.fallback} --n-thresholds {params.n_thresholds} --max-patience {params.max_patience}"
        " --first-layer {params.first_layer} --tolerance {params.tolerance} --inner-folds {params.inner_folds}"
        " --seed {params.seed} --out {output.table} --info-out {output.info}"


# The calibrated controllers inside a real forward (rows dropped as they exit), timed against full
# depth and the deployed layer on one fold's test sequences, with the embedding's settings and on
# its kind of device (give this rule the embedding rule's resources; profiles/slurm does).
rule time_exit:
    input:
        model="<results>/models/{model}.json",
        task="<results>/tasks/{task}.tsv",
        embeddings=task_embeddings,
        probes="<results>/probes/{model}/{task}.tsv",
        selection="<results>/selection/{model}/{task}.json",
        exit="<results>/exit/{model}/{task}.json",
    output:
        table="<results>/exit/{model}/timing/{task}.tsv",
        info="<results>/exit/{model}/timing/{task}.json",
    log:
        "<results>/logs/time_exit/{model}/{task}.log",
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
        variant_crop=task_variant_crop_flag,
        sample_sequences=config["exit"]["timing_sequences"],
        repeats=config["exit"]["timing_repeats"],
        seed=config["seed"],
    shell:
        "plmexit --log {log} exit-timing --model {input.model} --task {input.task} --embeddings {input.embeddings}"
        " --probes {input.probes} --selection {input.selection} --exit-info {input.exit}"
        " --max-tokens {params.max_tokens} --truncate {params.truncate} --layer-norm {params.layer_norm}"
        " --precision {params.precision} --long-sequences {params.long_sequences} --window {params.window}"
        " --overlap {params.overlap} {params.variant_crop} --sample-sequences {params.sample_sequences}"
        " --repeats {params.repeats} --seed {params.seed} --device auto --threads {threads}"
        " --out {output.table} --info-out {output.info}"


# Early exit of the model's own head (config exit.lens): the same gates and calibration on the logit
# lens of a masked sample of a lens set's sequences, per position and per sequence, against the
# final layer. Loads the model as logit_lens does (profiles/slurm gives it a GPU).
rule exit_lens:
    input:
        model="<results>/models/{model}.json",
        task=set_table,
    output:
        table="<results>/exit/{model}/lens/{set}.tsv",
        info="<results>/exit/{model}/lens/{set}.json",
    log:
        "<results>/logs/exit_lens/{model}/{set}.log",
    conda:
        "../../envs/embed.yaml"
    threads: 2
    params:
        sample=config["exit"]["lens_sample"],
        mask_fraction=config["depth"]["mask_fraction"],
        calibration_fraction=config["exit"]["lens_calibration_fraction"],
        gates=" ".join(config["exit"]["gates"]),
        epsilon=config["exit"]["epsilon"],
        delta=config["exit"]["delta"],
        n_thresholds=config["exit"]["n_thresholds"],
        max_patience=config["exit"]["max_patience"],
        first_layer=config["exit"]["first_layer"],
        seed=config["seed"],
    shell:
        "plmexit --log {log} lens-exit --model {input.model} --task {input.task} --task-name {wildcards.set}"
        " --sample {params.sample} --mask-fraction {params.mask_fraction} --calibration-fraction {params.calibration_fraction}"
        " --gates {params.gates} --epsilon {params.epsilon} --delta {params.delta} --n-thresholds {params.n_thresholds}"
        " --max-patience {params.max_patience} --first-layer {params.first_layer} --seed {params.seed}"
        " --device auto --threads {threads} --out {output.table} --info-out {output.info}"


rule summarize_exit_lens:
    input:
        exit_lens_tables,
    output:
        "<results>/summary/exit_lens.tsv",
    log:
        "<results>/logs/summarize_exit_lens.log",
    conda:
        "../../envs/probe.yaml"
    params:
        epsilon=config["exit"]["epsilon"],
    shell:
        "plmexit --log {log} summarize-lens-exit {input} --epsilon {params.epsilon} --out {output}"


rule summarize_exit:
    input:
        tables=exit_tables,
        timings=exit_timings,
    output:
        "<results>/summary/exit.tsv",
    log:
        "<results>/logs/summarize_exit.log",
    conda:
        "../../envs/probe.yaml"
    params:
        epsilon=config["exit"]["epsilon"],
    shell:
        "plmexit --log {log} summarize-exit {input.tables} --timings {input.timings} --epsilon {params.epsilon}"
        " --out {output}"


rule plot_exit:
    input:
        table="<results>/exit/{model}/{task}.tsv",
        timing=exit_timing,
    output:
        report(
            "<results>/figures/exit/{model}/{task}.png",
            caption="../report/exit.rst",
            category="Early exit",
            subcategory="{model}",
            labels={"model": "{model}", "task": "{task}"},
        ),
    log:
        "<results>/logs/plot_exit/{model}/{task}.log",
    conda:
        "../../envs/probe.yaml"
    shell:
        "plmexit --log {log} plot-exit --table {input.table} --timing {input.timing} --out {output}"
