# What every layer already knows, from the model's own masked-LM head (config depth.*; fair-esm
# ESM2 models, transformers esm, bert, albert and esmc models). Run on the device that embeds (profiles/default
# gives these rules a GPU); on a cluster an assay's zero-shot job runs in its set's GPU batch (config schedule).
rule logit_lens:
    input:
        model="<results>/models/{model}.json",
        task=set_table,
    output:
        lens="<results>/depth/{model}/lens/{set}.tsv",
        skip="<results>/depth/{model}/lens/{set}.skip.tsv",
        exit="<results>/depth/{model}/lens/{set}.exit.tsv",
        info="<results>/depth/{model}/lens/{set}.json",
    log:
        "<results>/logs/logit_lens/{model}/{set}.log",
    benchmark:
        "<results>/benchmarks/logit_lens/{model}/{set}.tsv"
    conda:
        "../../envs/embed.yaml"
    threads: 2
    params:
        lens=plan.flags.lens,
    shell:
        "plmexit lens --model {input.model} --task {input.task} --task-name {wildcards.set}"
        " {params.lens} --device auto --threads {threads} --out {output.lens} --skip-out {output.skip} --exit-out {output.exit}"
        " --info-out {output.info} 2>> {log}"


rule zero_shot:
    input:
        model="<results>/models/{model}.json",
        assay=assay_file,
        reference=set_assay_reference,
    output:
        long="<results>/depth/{model}/zero_shot/{set}.tsv",
        scores="<results>/depth/{model}/zero_shot/{set}.csv",
        info="<results>/depth/{model}/zero_shot/{set}.json",
    log:
        "<results>/logs/zero_shot/{model}/{set}.log",
    benchmark:
        "<results>/benchmarks/zero_shot/{model}/{set}.tsv"
    group:
        set_gpu_batch
    conda:
        "../../envs/embed.yaml"
    threads: 2
    resources:
        runtime=zero_shot_runtime,
    params:
        zero_shot=plan.flags.zero_shot,
    shell:
        "plmexit zero-shot --model {input.model} --assay {input.assay} --reference {input.reference}"
        " --dms-id {wildcards.set} {params.zero_shot}"
        " --device auto --threads {threads} --out-long {output.long} --out-proteingym {output.scores}"
        " --info-out {output.info} 2>> {log}"


rule summarize_depth:
    input:
        lens=lens_infos,
        zero_shot=zero_shot_infos,
        selections=depth_selections,
    output:
        summary="<results>/summary/depth.tsv",
        curves="<results>/summary/depth_curves.tsv",
    log:
        "<results>/logs/summarize_depth.log",
    conda:
        "../../envs/probe.yaml"
    shell:
        "plmexit summarize-depth --lens {input.lens} --zero-shot {input.zero_shot}"
        " --selections {input.selections} --out {output.summary} --curves-out {output.curves} 2>> {log}"


rule plot_depth:
    input:
        curves="<results>/summary/depth_curves.tsv",
        summary="<results>/summary/depth.tsv",
    output:
        report(
            "<results>/figures/depth.png",
            caption="../report/depth.rst",
            category="Depth diagnostics",
            labels={"figure": "what every layer already knows"},
        ),
    log:
        "<results>/logs/plot_depth.log",
    conda:
        "../../envs/probe.yaml"
    shell:
        "plmexit plot-depth --curves {input.curves} --summary {input.summary} --out {output} 2>> {log}"
