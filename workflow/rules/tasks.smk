# The task's files (a flag per file role of its kind) and its kind's options (csv columns, a FASTA
# label pattern, a ProteinGym assay and scheme, ...) come from the config entry.
rule prepare_task:
    input:
        task_files,
    output:
        table="<results>/tasks/{task}.tsv",
        info="<results>/tasks/{task}.json",
    log:
        "<results>/logs/prepare_task/{task}.log",
    conda:
        "../../envs/probe.yaml"
    params:
        kind=task_kind,
        type=task_type,
        files=task_file_flags,
        options=task_option_flags,
        cv_folds=config["probe"]["cv_folds"],
        seed=config["seed"],
    shell:
        "plmexit --log {log} prepare --name {wildcards.task} --format {params.kind} --type {params.type} {params.files}"
        " {params.options} --cv-folds {params.cv_folds} --seed {params.seed} --out {output.table} --info-out {output.info}"
