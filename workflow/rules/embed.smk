# {task} here is an embedding set: the tasks that share its sequences (a ProteinGym assay's three fold schemes) share it.
rule embed_task:
    input:
        model="results/models/{model}.json",
        task=lambda w: plan.embedding_table(w.task),
    output:
        "results/embeddings/{model}/{task}.h5",
    params:
        args=plan.embed_args(),
    threads: 2
    log:
        "results/logs/embed_task/{model}/{task}.log",
    conda:
        "../../envs/embed.yaml"
    shell:
        "plmexit embed --model {input.model} --task {input.task} {params.args}"
        " --device auto --threads {threads} --out {output} 2> {log}"
