# Official data files run on the submitting (login) node: compute nodes are often offline.
localrules:
    fetch_data,


rule fetch_data:
    output:
        "<results>/data/{file}",
    params:
        args=lambda w: plan.fetch_data_args(w.file),
    wildcard_constraints:
        file=plan.official_file_pattern(),
    log:
        "<results>/logs/fetch_data/{file}.log",
    conda:
        "../../envs/probe.yaml"
    shell:
        "plmexit --log {log} fetch-data {params.args} --out {output}"
