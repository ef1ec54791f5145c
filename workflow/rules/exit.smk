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
    benchmark:
        "<results>/benchmarks/exit_task/{model}/{task}.tsv"
    conda:
        "../../envs/probe.yaml"
    params:
        type=task_type,
        metric=task_metric,
        exit=plan.flags.exit,
    shell:
        "plmexit exit --embeddings {input.embeddings} --task {input.task} --probes {input.probes}"
        " --selection {input.selection} --cost {input.cost} --model-id {wildcards.model} --task-name {wildcards.task}"
        " --type {params.type} --metric {params.metric} {params.exit} --out {output.table} --info-out {output.info} 2>> {log}"


# The calibrated controllers inside a real forward (rows dropped as they exit), timed against full
# depth and the deployed layer on one fold's test sequences, with the embedding's settings and on
# its kind of device (give this rule the embedding rule's resources; profiles/default does).
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
    benchmark:
        "<results>/benchmarks/time_exit/{model}/{task}.tsv"
    conda:
        "../../envs/embed.yaml"
    threads: 2
    params:
        embed=plan.flags.embed,
        variant_crop=task_variant_crop_flag,
        timing=plan.flags.exit_timing,
    shell:
        "plmexit exit-timing --model {input.model} --task {input.task} --embeddings {input.embeddings}"
        " --probes {input.probes} --selection {input.selection} --exit-info {input.exit}"
        " {params.embed} {params.variant_crop} {params.timing} --device auto --threads {threads}"
        " --out {output.table} --info-out {output.info} 2>> {log}"


# Early exit of the model's own head (config exit.lens): the same gates and calibration on the logit
# lens of a masked sample of a lens set's sequences, per position and per sequence, against the
# final layer. Loads the model as logit_lens does (profiles/default gives it a GPU).
rule exit_lens:
    input:
        model="<results>/models/{model}.json",
        task=set_table,
    output:
        table="<results>/exit/{model}/lens/{set}.tsv",
        info="<results>/exit/{model}/lens/{set}.json",
    log:
        "<results>/logs/exit_lens/{model}/{set}.log",
    benchmark:
        "<results>/benchmarks/exit_lens/{model}/{set}.tsv"
    conda:
        "../../envs/embed.yaml"
    threads: 2
    params:
        lens_exit=plan.flags.lens_exit,
    shell:
        "plmexit lens-exit --model {input.model} --task {input.task} --task-name {wildcards.set}"
        " {params.lens_exit} --device auto --threads {threads} --out {output.table} --info-out {output.info} 2>> {log}"


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
        epsilon=plan.flags.summarize_exit,
    shell:
        "plmexit summarize-lens-exit {input} {params.epsilon} --out {output} 2>> {log}"


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
        epsilon=plan.flags.summarize_exit,
    shell:
        "plmexit summarize-exit {input.tables} --timings {input.timings} {params.epsilon}"
        " --out {output} 2>> {log}"


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
        "plmexit plot-exit --table {input.table} --timing {input.timing} --out {output} 2>> {log}"
