# ProteinGym assays chosen by a filter on the reference table: the list decides which tasks exist,
# so it is a checkpoint (Snakemake re-evaluates the DAG once it is written) and nothing is read
# while planning; its list carries each assay's single mutants, which size the cluster batches.
# Cheap, as is reading a task's files into its table (seconds, one CSV or FASTA; homology folds add
# one single-threaded MMseqs2 clustering, about 20 s for DeepFRI's 1,919 EC chains): both run on the
# submitting node, not as hundreds of cluster jobs.
localrules:
    choose_assays,
    prepare_task,


checkpoint choose_assays:
    input:
        assay_reference,
    output:
        "<results>/assays/{entry}.tsv",
    log:
        "<results>/logs/choose_assays/{entry}.log",
    conda:
        "../../envs/probe.yaml"
    params:
        filter=assay_filter_flags,
    shell:
        "plmexit choose-assays --reference {input} {params.filter} --out {output} 2>> {log}"


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
        prepare=plan.flags.prepare,
    shell:
        "plmexit prepare --name {wildcards.task} --format {params.kind} --type {params.type} {params.files}"
        " {params.options} {params.prepare} --out {output.table} --info-out {output.info} 2>> {log}"
