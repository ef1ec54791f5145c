# plmexit: how deep do you need to go? Embed every layer, probe it, choose the layer honestly.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml", set_default=True)


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/tasks.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/cost.smk"
include: "workflow/rules/probe.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        plan.final_targets(),
    default_target: True
