# Downloads run on the submitting (login) node: compute nodes are often offline.
localrules:
    fetch_model,


rule make_test_model:
    output:
        "<results>/models/{model}/{stem}.pt",
    log:
        "<results>/logs/make_test_model/{model}/{stem}.log",
    wildcard_constraints:
        stem=r"esm2_t\d+_\d+d_\d+h_seed\d+_random",
    conda:
        "../../envs/embed.yaml"
    params:
        args=lambda w: plan.test_model_args(w.model),
        outdir=lambda w: plan.test_model_dir(w.model),
    shell:
        "plmexit --log {log} make-test-model {params.args} --out {params.outdir}"


rule fetch_model:
    input:
        lambda w: plan.model_checkpoint(w.model),
    output:
        "<results>/models/{model}.json",
    log:
        "<results>/logs/fetch_model/{model}.log",
    conda:
        "../../envs/embed.yaml"
    params:
        args=lambda w: plan.fetch_model_args(w.model),
    shell:
        "plmexit --log {log} fetch-model {params.args} --out {output}"
