"""What a cluster executor would submit for a dry run: Snakemake's own DAG, jobs and job groups.

Run as ``python tests/submissions.py OUT.jsonl SNAKEMAKE_ARGS... --dry-run``: Snakemake's command
line, run in this process with its dry-run executor's ``printjob`` wrapped to write one JSON line
per submission (a job, or a group of jobs) to OUT.jsonl. A group's CPUs, memory and run time are
computed exactly as ``GroupJob.resources`` computes them for a remote executor
(``GroupResources.basic_layered`` with ``run_local=False``: the dry run itself executes locally,
where Snakemake would sum a group's levels instead of layering them); the SLURM plugin submits
these as ``--cpus-per-task``, ``--mem`` and ``--time``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

from snakemake.cli import main
from snakemake.executors import dryrun
from snakemake.resources import GroupResources


def record(job) -> dict:
    if job.is_group():
        resources = GroupResources.basic_layered(
            toposorted_jobs=job.toposorted, constraints=job.global_resources, run_local=False,
            additive_resources=["runtime"], sortby=["runtime"],
        )
        members = list(job.jobs)
    else:
        resources, members = dict(job.resources.items()), [job]
    return {
        "group": job.groupid if job.is_group() else None,
        # As Workflow.is_local decides under a remote executor (the dry run executes everything locally).
        "local": not job.is_group() and (job.rule.name in job.rule.workflow._localrules or job.rule.norun),
        "rules": dict(Counter(member.rule.name for member in members)),
        "cpus": resources.get("_cores"),
        "mem_mb": resources.get("mem_mb"),
        "runtime": resources.get("runtime"),
        "gres": resources.get("gres"),  # a string resource: the same for every job of a group, or Snakemake refuses the group
        "gpu": resources.get("gpu"),  # GPUs: summed within a layer of a group, the widest layer's asked for
    }


if __name__ == "__main__":
    out = open(sys.argv[1], "w")
    printjob = dryrun.Executor.printjob

    def printjob_and_record(self, job):
        out.write(json.dumps(record(job), default=str) + "\n")
        printjob(self, job)

    dryrun.Executor.printjob = printjob_and_record
    try:
        main(sys.argv[2:])
    finally:
        out.close()
