# The model a user ships (opt-in: export.enabled, or ask for one directory by path): the first k
# blocks of the model (k the deployed layer) in the format it came in, the probe refitted on every
# training row at the deploy fold's hyperparameter, and a model card. `plmexit predict --export DIR`
# runs it on new sequences.
rule export_model:
    input:
        model="<results>/models/{model}.json",
        embeddings=task_embeddings,
        task="<results>/tasks/{task}.tsv",
        selection="<results>/selection/{model}/{task}.json",
        cost=task_cost,
    output:
        directory("<results>/export/{model}/{task}"),
    log:
        "<results>/logs/export_model/{model}/{task}.log",
    benchmark:
        "<results>/benchmarks/export_model/{model}/{task}.tsv"
    conda:
        "../../envs/embed.yaml"
    params:
        type=task_type,
    shell:
        "plmexit export --model {input.model} --embeddings {input.embeddings} --task {input.task}"
        " --selection {input.selection} --cost {input.cost} --type {params.type} --out {output} 2>> {log}"
