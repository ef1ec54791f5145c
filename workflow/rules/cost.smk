# Times the model on the device that embeds (give this rule the embedding rule's resources), with
# the embedding's settings, so that it times and counts exactly what was embedded. One per set; on a
# cluster it runs in the set's GPU batch (config schedule).
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
    group:
        set_gpu_batch
    conda:
        "../../envs/embed.yaml"
    threads: 2
    resources:
        runtime=cost_runtime,
    params:
        embed=plan.flags.embed,
        variant_crop=variant_crop_flag,
        cost=plan.flags.cost,
    shell:
        "plmexit cost --model {input.model} --task {input.task}"
        " {params.embed} {params.variant_crop} {params.cost} --device auto --threads {threads} --out {output} 2>> {log}"


# A GPU batch's measured throughput (a row per embedding shard and cost timing: device, tokens, seconds,
# tokens/s, TFLOP/s, the figure config schedule.gpu_tflops stands for), as soon as the batch is done. It
# reads the shards' records, not the shards (temporary: gone once gathered), and waits for every zero-shot
# job of the batch too, which ties the batch's GPU jobs into one job group, one submission (its batch asks for
# the GPU its jobs use).
rule summarize_gpu_batch:
    input:
        shards=gpu_batch_shard_records,
        costs=gpu_batch_costs,
        zero_shot=gpu_batch_zero_shot,
    output:
        "<results>/summary/gpu_batches/{model}/{batch}.tsv",
    log:
        "<results>/logs/summarize_gpu_batch/{model}/{batch}.log",
    group:
        gpu_batch_group
    conda:
        "../../envs/probe.yaml"
    resources:
        runtime=gpu_table_runtime,
    shell:
        "plmexit summarize-gpu-batch --shards {input.shards} --costs {input.costs} --out {output} 2>> {log}"
