rule select_layer:
    input:
        probes="<results>/probes/{model}/{task}.tsv",
        predictions="<results>/probes/{model}/{task}.predictions.tsv.gz",
        cost=task_cost,
        info="<results>/tasks/{task}.json",
    output:
        "<results>/selection/{model}/{task}.json",
    log:
        "<results>/logs/select_layer/{model}/{task}.log",
    conda:
        "../../envs/probe.yaml"
    params:
        type=task_type,
        metric=task_metric,
        tolerance=config["select"]["tolerance"],
        bootstrap=config["select"]["bootstrap"],
        seed=config["seed"],
    shell:
        "plmexit --log {log} select --probes {input.probes} --predictions {input.predictions} --cost {input.cost}"
        " --task-info {input.info} --type {params.type} --metric {params.metric}"
        " --tolerance {params.tolerance} --bootstrap {params.bootstrap} --seed {params.seed} --out {output}"
