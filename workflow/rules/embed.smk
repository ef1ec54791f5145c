# {task} here is an embedding set: the tasks that share its sequences (a ProteinGym assay's three
# fold schemes) share it. One job per shard (embed.shards); a killed job resumes from its finished
# parts when rerun; the shards are gathered into the set's store.
# GPU, memory and time come from the profile (profiles/slurm puts this rule on a GPU node);
# --device auto embeds on the GPU the job is given, on the CPU when there is none.
rule embed_shard:
    input:
        model="<results>/models/{model}.json",
        task=lambda w: plan.embedding_table(w.task),
    output:
        temp("<results>/embeddings/{model}/{task}.shards/{shard}-of-{shards}.h5"),
    log:
        "<results>/logs/embed_shard/{model}/{task}/{shard}-of-{shards}.log",
    conda:
        "../../envs/embed.yaml"
    threads: 2
    params:
        args=lambda w: plan.embed_args(w.task),
    shell:
        "plmexit --log {log} embed --model {input.model} --task {input.task} {params.args} --shard {wildcards.shard}"
        " --device auto --threads {threads} --out {output}"


rule gather_embeddings:
    input:
        lambda w: plan.embedding_shards(w.model, w.task),
    output:
        "<results>/embeddings/{model}/{task}.h5",
    log:
        "<results>/logs/gather_embeddings/{model}/{task}.log",
    conda:
        "../../envs/embed.yaml"
    shell:
        "plmexit --log {log} gather-embeddings --out {output} {input}"
