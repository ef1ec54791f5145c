"""Snakemake's command line with the SLURM plugin's status polls at most ``POLL_SECONDS`` apart, for the test cluster.

Run as ``python tests/slurm_polls.py SNAKEMAKE_ARGS...``: the same as ``python -m snakemake SNAKEMAKE_ARGS...``
but for the wait between two rounds of status checks. The plugin (snakemake-executor-plugin-slurm 2.x) waits
10 s longer after every round in which no job finished, up to 180 s, and has no option to cap it; the test
cluster is one node whose jobs take seconds, so between two stages of a run the machine sat idle for up to
half a minute. Every wait the plugin chooses is capped here, nothing else.
"""

from __future__ import annotations

import sys

from snakemake.cli import main
from snakemake_executor_plugin_slurm import Executor

POLL_SECONDS = 3

interval = Executor.next_seconds_between_status_checks
Executor.next_seconds_between_status_checks = property(interval.fget, lambda self, seconds: interval.fset(self, min(seconds, POLL_SECONDS)))

if __name__ == "__main__":
    main(sys.argv[1:])
