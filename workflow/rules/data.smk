# Official data files run on the submitting (login) node: compute nodes are often offline.
localrules:
    fetch_data,


# From its source repository, a mirror (data.base_url) or a directory of copies (data.local_dir).
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
        source=plan.data_source_flags(),
    shell:
        "plmexit fetch-data --file {wildcards.file} {params.source} --out {output} 2>> {log}"
