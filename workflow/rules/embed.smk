# One job per shard of an embedding set (embed.shards); a killed job resumes from its finished
# parts when rerun; the shards are gathered into the set's store. A ProteinGym assay is stored in
# float32 and embedded through one crop over its mutations (--variant-crop).
# GPU and memory come from the workflow profile (profiles/default gives this rule a GPU), the run time
# from the shard's tokens (config schedule); on a cluster a shard runs in its set's GPU batch, with the
# set's cost timing and zero-shot job. --device auto embeds on the GPU the job is given, on the CPU when
# there is none.
rule embed_shard:
    input:
        model="<results>/models/{model}.json",
        task=set_table,
    output:
        shard=temp("<results>/embeddings/{model}/{set}.shards/{shard}-of-{shards}.h5"),
        # What this run embedded, in how many seconds on which device: kept (the shard is not), for the GPU batch's table.
        record="<results>/embeddings/{model}/{set}.shards/{shard}-of-{shards}.json",
    log:
        "<results>/logs/embed_shard/{model}/{set}/{shard}-of-{shards}.log",
    benchmark:
        "<results>/benchmarks/embed_shard/{model}/{set}/{shard}-of-{shards}.tsv"
    group:
        set_gpu_batch
    conda:
        "../../envs/embed.yaml"
    threads: 2
    resources:
        runtime=embed_runtime,
    params:
        dtype=store_dtype,
        embed=plan.flags.embed,
        variant_crop=variant_crop_flag,
    shell:
        "plmexit embed --model {input.model} --task {input.task} --dtype {params.dtype}"
        " {params.embed} {params.variant_crop} --shard {wildcards.shard} --shards {wildcards.shards}"
        " --device auto --threads {threads} --out {output.shard} --record-out {output.record} 2>> {log}"


# On a cluster, in the batch's job group with the set's probes (config schedule), but for a set over the
# batch's row budget, gathered on its own.
rule gather_embeddings:
    input:
        set_shards,
    output:
        "<results>/embeddings/{model}/{set}.h5",
    log:
        "<results>/logs/gather_embeddings/{model}/{set}.log",
    benchmark:
        "<results>/benchmarks/gather_embeddings/{model}/{set}.tsv"
    group:
        set_batch
    conda:
        "../../envs/embed.yaml"
    shell:
        "plmexit gather-embeddings --out {output} {input} 2>> {log}"
