# Data files and ProteinGym's archives are fetched on the submitting (login) node: compute nodes are often offline.
localrules:
    fetch_data,
    fetch_archive,
    stage_assay,


# A pinned file (a git blob at a fixed commit, sha256-verified): from its source repository, a
# mirror (data.base_url) or a directory of copies (data.local_dir).
rule fetch_data:
    output:
        "<results>/data/{file}",
    log:
        "<results>/logs/fetch_data/{file}.log",
    wildcard_constraints:
        file=plan.pinned_file_pattern(),
    conda:
        "../../envs/probe.yaml"
    params:
        source=plan.data_source_flags(),
    shell:
        "plmexit fetch-data --file {wildcards.file} {params.source} --out {output} 2>> {log}"


# One of ProteinGym's released archives, from its published URL or a local path (data.proteingym_*):
# sha256-verified against plmexit's pin, or recorded on first use in data.archive_hashes, with a warning.
rule fetch_archive:
    output:
        archive="<results>/data/archives/{archive}.zip",
        info="<results>/data/archives/{archive}.json",
    log:
        "<results>/logs/fetch_archive/{archive}.log",
    wildcard_constraints:
        archive=plan.archive_pattern(),
    conda:
        "../../envs/probe.yaml"
    params:
        archive=plan.flags.archive,
    shell:
        "plmexit fetch-archive --archive {wildcards.archive} {params.archive} --out {output.archive} --info-out {output.info} 2>> {log}"


# One assay out of an archive, checked against the reference table (DMS_id, row count, every
# variant's wild type); its sha256 and origin go into the JSON that prepare copies into the task info.
rule stage_assay:
    input:
        archive="<results>/data/archives/{archive}.zip",
        info="<results>/data/archives/{archive}.json",
        reference=archive_assay_reference,
    output:
        assay="<results>/data/archives/{archive}/{dms_id}.csv",
        info="<results>/data/archives/{archive}/{dms_id}.json",
    log:
        "<results>/logs/stage_assay/{archive}/{dms_id}.log",
    wildcard_constraints:
        archive=plan.archive_pattern(),
        dms_id=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    conda:
        "../../envs/probe.yaml"
    shell:
        "plmexit stage-assay --archive {input.archive} --archive-info {input.info} --reference {input.reference}"
        " --dms-id {wildcards.dms_id} --out {output.assay} --info-out {output.info} 2>> {log}"
