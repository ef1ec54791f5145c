# Official data files run on the submitting (login) node: compute nodes are often offline.
localrules:
    fetch_data,


rule fetch_data:
    output:
        "<results>/data/{file}",
    log:
        "<results>/logs/fetch_data/{file}.log",
    wildcard_constraints:
        file=plan.official_file_pattern(),
    conda:
        "../../envs/probe.yaml"
    params:
        args=lambda w: plan.fetch_data_args(w.file),
    shell:
        "plmexit --log {log} fetch-data {params.args} --out {output}"
