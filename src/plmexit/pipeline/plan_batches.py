"""Cluster batches: a model's embedding sets packed into the job groups a cluster runs them in, and a probe's run time.

Invariant: a model's ``BatchLayout`` is packed once, from the sets' rows known while planning (the
assays a filter chose) and the config's ``schedule``; every per-job question (a set's batch, its
group, a batch's selections) is then a dict lookup. The grouping is the same on every run of one config.
"""

from __future__ import annotations

import errno
import math
from dataclasses import dataclass
from pathlib import Path

# A probe's run time on a cluster (``probe_minutes``): a minute per 15 MB of embeddings on 8 CPUs is
# the slowest probe measured (benchmarks/README.md: logistic, 10 classes, 3,000 x 320 float32, 4.7 s
# per MB on one core) over 8 layers at once, times about 7 (float16 stores, slower nodes); plus 5
# minutes to start and read. ESM2-3B on ProteinGym's largest assay (16,897 variants, 6.4 GB): 7.2 hours.
PROBE_MINUTES, PROBE_MB_PER_MINUTE = 5, 15


@dataclass(frozen=True)
class BatchLayout:
    """One model's batches: ``batches[k]`` its sets, ``rows[k]`` the rows their probes read (0: not known),
    ``of_set`` each set's batch, ``tasks[k]`` the batch's tasks in planning order."""

    batches: list[list[str]]
    rows: list[int]
    of_set: dict[str, int]
    tasks: list[list[str]]


def pack(set_tasks: dict[str, int], set_rows: dict[str, int], batch_rows: int, batch_sets: int) -> tuple[list[list[str]], list[int]]:
    """First fit, largest first: ``set_tasks`` (set -> the tasks that read it, in planning order) of known
    ``set_rows`` go into batches whose probes read at most ``batch_rows`` rows (a set's rows times its
    tasks) and that hold fewer than ``batch_sets`` sets; a set over the budget is a batch of its own.
    Every set of unknown size follows as a batch of its own. Returns the batches and their rows."""
    work = {name: set_rows[name] * n for name, n in set_tasks.items() if name in set_rows}
    batches: list[list[str]] = []
    loads: list[int] = []
    for name in sorted(work, key=work.get, reverse=True):  # stable: ties keep planning order
        k = next((k for k, b in enumerate(batches) if loads[k] + work[name] <= batch_rows and len(b) < batch_sets), None)
        if k is None:
            batches.append([name])
            loads.append(work[name])
        else:
            batches[k].append(name)
            loads[k] += work[name]
    unknown = [name for name in set_tasks if name not in work]
    return batches + [[name] for name in unknown], loads + [0] * len(unknown)


def layout(set_tasks: dict[str, int], set_rows: dict[str, int], schedule: dict, model_tasks: list[tuple[str, str]]) -> BatchLayout:
    """A model's ``BatchLayout``; ``model_tasks`` is its (task, embedding set) list in planning order."""
    batches, rows = pack(set_tasks, set_rows, schedule["batch_rows"], schedule["batch_sets"])
    of_set = {name: k for k, sets in enumerate(batches) for name in sets}
    tasks: list[list[str]] = [[] for _ in batches]
    for task, name in model_tasks:
        tasks[of_set[name]].append(task)
    return BatchLayout(batches, rows, of_set, tasks)


def probe_minutes(store: str, shards: list[str]) -> int:
    """Run time of one probe on one attempt: ``PROBE_MINUTES`` plus a minute per ``PROBE_MB_PER_MINUTE``
    of its embeddings, read from the store, or from its shards while they are not gathered yet (a
    cluster batch gathers and probes in one job). Not embedded yet: ``FileNotFoundError`` naming the
    store, which Snakemake reads as "not known yet" while it plans."""
    paths = [Path(store)] if Path(store).exists() else [Path(p) for p in shards]
    if not all(p.exists() for p in paths):
        raise FileNotFoundError(errno.ENOENT, "not embedded yet", store)
    return PROBE_MINUTES + math.ceil(sum(p.stat().st_size for p in paths) / 1e6 / PROBE_MB_PER_MINUTE)
