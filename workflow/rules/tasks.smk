rule prepare_task:
    input:
        lambda w: plan.task_path(w.task),
    output:
        "results/tasks/{task}.tsv",
    params:
        args=lambda w: plan.prepare_args(w.task),
    log:
        "results/logs/prepare_task/{task}.log",
    conda:
        "../../envs/probe.yaml"
    shell:
        "plmexit prepare {params.args} --out {output} 2> {log}"
