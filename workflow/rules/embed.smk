# GPU, memory and time come from the profile (profiles/slurm puts this rule on a GPU node);
# --device auto embeds on the GPU the job is given, on the CPU when there is none.
rule embed_task:
    input:
        model="results/models/{model}.json",
        task="results/tasks/{task}.tsv",
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
