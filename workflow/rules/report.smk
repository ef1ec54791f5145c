rule summarize_layers:
    input:
        selections,
    output:
        best=report(
            "<results>/summary/best_layers.tsv",
            caption="../report/best_layers.rst",
            category="Tables",
            labels={"table": "best layer per model and task"},
        ),
        across=report(
            "<results>/summary/across_tasks.tsv",
            caption="../report/across_tasks.rst",
            category="Tables",
            labels={"table": "across tasks"},
        ),
    log:
        "<results>/logs/summarize_layers.log",
    conda:
        "../../envs/probe.yaml"
    params:
        summarize=plan.flags.summarize,
    shell:
        "plmexit summarize {input} {params.summarize}"
        " --out {output.best} --across-out {output.across} 2>> {log}"


rule summarize_proteingym:
    input:
        selections=proteingym_selections,
        predictions=proteingym_predictions,
        tables=proteingym_task_tables,
    output:
        merge="<results>/summary/proteingym_supervised.csv",
        variants=directory("<results>/summary/proteingym_predictions"),
    log:
        "<results>/logs/summarize_proteingym.log",
    conda:
        "../../envs/probe.yaml"
    # ProteinGym's model_name is each model's own name (fair-esm release, checkpoint stem), which
    # every selection carries from the model's manifest. The per-variant files are laid out as
    # ProteinGym's merge_supervised.py reads them (docs/results.md).
    shell:
        "plmexit summarize-proteingym {input.selections} --predictions {input.predictions} --task-tables {input.tables}"
        " --out {output.merge} --variants-out {output.variants} 2>> {log}"


# What the model jobs spent, per model and rule: every record Snakemake's benchmark: directives left under
# <results>/benchmarks (GPU- and CPU-hours from the extended records, --benchmark-extended). It runs after the
# summaries those jobs feed; the records are read, not inputs, so a missing one never reruns a job.
rule summarize_resources:
    input:
        resource_inputs,
    output:
        report(
            "<results>/summary/resources.tsv",
            caption="../report/resources.rst",
            category="Tables",
            labels={"table": "resources per model and rule"},
        ),
    log:
        "<results>/logs/summarize_resources.log",
    conda:
        "../../envs/probe.yaml"
    params:
        benchmarks=plan.benchmarks(),
        models=list(plan.models),
    shell:
        "plmexit summarize-resources --benchmarks {params.benchmarks} --models {params.models} --out {output} 2>> {log}"


rule plot_summary:
    input:
        "<results>/summary/best_layers.tsv",
    output:
        report(
            "<results>/figures/gain_vs_compute.png",
            caption="../report/gain_vs_compute.rst",
            category="Across tasks",
            labels={"figure": "gain against time saved"},
        ),
    log:
        "<results>/logs/plot_summary.log",
    conda:
        "../../envs/probe.yaml"
    shell:
        "plmexit plot-summary --summary {input} --out {output} 2>> {log}"


# The paper's figures across models (relative depth, heat maps, gain against FLOPs and time saved,
# how often the final layer wins) and its tables (Markdown and LaTeX), from summaries and probes only.
rule plot_study:
    input:
        summary="<results>/summary/best_layers.tsv",
        across="<results>/summary/across_tasks.tsv",
        probes=probe_tables,
    output:
        figures=report(
            directory("<results>/figures/study"),
            patterns=["{figure,[^/]+}.png", "tasks/{task,[^/]+}.png"],
            caption="../report/study.rst",
            category="Across models",
        ),
        tables=directory("<results>/summary/tables"),
    log:
        "<results>/logs/plot_study.log",
    conda:
        "../../envs/probe.yaml"
    shell:
        "plmexit plot-study --summary {input.summary} --across {input.across} --probes {input.probes}"
        " --figures-dir {output.figures} --tables-dir {output.tables} 2>> {log}"


# One model's depth diagnostics and early exit laid out together on the relative-depth axis, for
# a model with both (depth.* and exit.tasks); from the summaries and its exit tables only.
rule plot_depth_exit:
    input:
        summary="<results>/summary/best_layers.tsv",
        depth="<results>/summary/depth.tsv",
        exits=model_exit_tables,
    output:
        png=report(
            "<results>/figures/{model}.depth_exit.png",
            caption="../report/depth_exit.rst",
            category="Depth and early exit",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "depth diagnostics and early exit"},
        ),
        pdf="<results>/figures/{model}.depth_exit.pdf",
    log:
        "<results>/logs/plot_depth_exit/{model}.log",
    conda:
        "../../envs/probe.yaml"
    shell:
        "plmexit plot-depth-exit --model {wildcards.model} --summary {input.summary} --depth {input.depth}"
        " --exit-tables {input.exits} --out {output.png} --pdf-out {output.pdf} 2>> {log}"


# Every figure and table, redrawn from the files under <results> (docs/figures.md).
rule figures:
    input:
        drawn,
