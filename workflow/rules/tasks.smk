rule prepare_task:
    input:
        lambda w: plan.task_inputs(w.task),
    output:
        table="<results>/tasks/{task}.tsv",
        info="<results>/tasks/{task}.json",
    log:
        "<results>/logs/prepare_task/{task}.log",
    conda:
        "../../envs/probe.yaml"
    params:
        args=lambda w: plan.prepare_args(w.task),
    shell:
        "plmexit --log {log} prepare {params.args} --out {output.table} --info-out {output.info}"
