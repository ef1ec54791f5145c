# plmexit: how deep do you need to go? Embed every layer, probe it, choose the layer honestly.
import os
import sys

from snakemake.utils import min_version

from plmexit.errors import ConfigError
from plmexit.pipeline.planning import Plan
from plmexit.pipeline.snakemake_speed import plan_faster

min_version("9.13")  # path variables (<results>)

# Job environments (`--sdm conda`, envs/*.yaml) install plmexit editable from this checkout, whose
# path pip reads from here: jobs run the code Snakemake plans with.
os.environ.update(PLMEXIT_CHECKOUT=os.path.abspath(workflow.basedir))


# The default config, unless the command line names one: configs are not merged, so a config
# that leaves out `models` is an error, never a silent download of the default model.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# Input and parameter functions (they ask the plan made below when a job is planned).
include: "workflow/rules/common.smk"


# `snakemake --report results/report.html`: this page first, then every figure and table marked
# report() in the rules, each with its caption from workflow/report/.
report: "workflow/report/workflow.rst"


# The config is checked against the schema (defaults filled in) and planned; every decision that
# depends on it lives in plmexit.pipeline.planning.Plan, and rules only ask it.
try:
    plan = Plan.from_config(
        config,
        f"{workflow.basedir}/workflow/schemas/config.schema.yaml",
        chosen_assays=chosen_assays,
    )
except ConfigError as error:
    sys.exit(str(error))  # one line naming the key, not a traceback


include: "workflow/rules/models.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/tasks.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/cost.smk"
include: "workflow/rules/probe.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/depth.smk"
include: "workflow/rules/exit.smk"


rule all:
    default_target: True
    input:
        final_targets,


onsuccess:
    print("\n".join(plan.closing_lines()))
