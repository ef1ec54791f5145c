from plmexit.models import families  # the family registry (no torch)


# Downloads run on the submitting (login) node: compute nodes are often offline.
localrules:
    fetch_model,


rule make_test_model:
    output:
        "<results>/models/{model}/esm2_t{layers}_{dim}d_{heads}h_seed{seed}_random.pt",
    log:
        "<results>/logs/make_test_model/{model}/esm2_t{layers}_{dim}d_{heads}h_seed{seed}_random.log",
    wildcard_constraints:
        layers=r"\d+",
        dim=r"\d+",
        heads=r"\d+",
        seed=r"\d+",
    conda:
        "../../envs/embed.yaml"
    shell:
        "plmexit make-test-model --layers {wildcards.layers} --dim {wildcards.dim} --heads {wildcards.heads}"
        " --seed {wildcards.seed} --out $(dirname {output}) 2>> {log}"


# A random transformers model of one family, as a model directory in the published layout.
rule make_test_model_directory:
    output:
        directory(
            "<results>/models/{model}/{family}_t{layers}_{dim}d_{heads}h_seed{seed}_random"
        ),
    log:
        "<results>/logs/make_test_model/{model}/{family}_t{layers}_{dim}d_{heads}h_seed{seed}_random.log",
    wildcard_constraints:
        family=families.wildcard_pattern(families.HUB_TEST_MODEL_FAMILIES),
        layers=r"\d+",
        dim=r"\d+",
        heads=r"\d+",
        seed=r"\d+",
    conda:
        "../../envs/embed.yaml"
    shell:
        "plmexit make-test-model --family {wildcards.family} --layers {wildcards.layers} --dim {wildcards.dim}"
        " --heads {wildcards.heads} --seed {wildcards.seed} --out $(dirname {output}) 2>> {log}"


# A fair-esm release by name (downloaded into the torch hub cache), a local checkpoint, a
# transformers model pinned to a hub commit, or a local transformers directory.
rule fetch_model:
    input:
        model_checkpoint,
    output:
        "<results>/models/{model}.json",
    log:
        "<results>/logs/fetch_model/{model}.log",
    conda:
        "../../envs/embed.yaml"
    params:
        source=model_source_flags,
    shell:
        "plmexit fetch-model --id {wildcards.model} {params.source} --out {output} 2>> {log}"
