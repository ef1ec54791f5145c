"""Cluster batches: a model's embedding sets packed into the job groups a cluster runs them in, and the run times they ask for.

Invariant: a model's ``BatchLayout`` (CPU steps) and ``GpuLayout`` (GPU steps) are packed once, from the
sets' sizes known while planning (the assays a filter chose: rows and target length) and the config's
``schedule``; every per-job question (a set's batch, its group, a batch's inputs, a GPU job's run time)
is then a lookup. The grouping is the same on every run of one config. Standard library only.
"""

from __future__ import annotations

import errno
import math
import re
from dataclasses import dataclass
from pathlib import Path

from plmexit.models.families import ESM2_MAX_RESIDUES

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


def first_fit(work: dict[str, int], budget: int, most: int | None = None) -> tuple[list[list[str]], list[int]]:
    """First fit, largest first: each item of ``work`` (name -> its load) goes into the first batch it fits,
    at most ``budget`` in all and fewer than ``most`` items; an item over the budget is a batch of its own.
    Ties keep ``work``'s order. Returns the batches and their loads."""
    batches: list[list[str]] = []
    loads: list[int] = []
    for name in sorted(work, key=work.get, reverse=True):  # stable: ties keep planning order
        k = next((k for k, b in enumerate(batches) if loads[k] + work[name] <= budget and (most is None or len(b) < most)), None)
        if k is None:
            batches.append([name])
            loads.append(work[name])
        else:
            batches[k].append(name)
            loads[k] += work[name]
    return batches, loads


def pack(set_tasks: dict[str, int], set_rows: dict[str, int], batch_rows: int, batch_sets: int) -> tuple[list[list[str]], list[int]]:
    """``first_fit``: ``set_tasks`` (set -> the tasks that read it, in planning order) of known ``set_rows`` go
    into batches whose probes read at most ``batch_rows`` rows (a set's rows times its tasks) and that hold
    fewer than ``batch_sets`` sets; a set over the budget is a batch of its own. Every set of unknown size
    follows as a batch of its own. Returns the batches and their rows."""
    work = {name: set_rows[name] * n for name, n in set_tasks.items() if name in set_rows}
    batches, loads = first_fit(work, batch_rows, batch_sets)
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


# GPU batches (config schedule.gpu_batch_minutes, schedule.gpu_tflops). A GPU job's run time is its start
# plus the FLOPs of its forward passes (two per parameter per token) at ``gpu_tflops``; the tokens are
# known while planning for the assays a filter chose (single mutants and target length, from the list).
# A job's start: the job's environment, torch and CUDA up, the model read (ESM2-3B: 11 GB, two minutes
# from a shared file system at 100 MB/s) and its outputs written.
GPU_START_MINUTES = 3
# A GPU batch's table (summarize_gpu_batch), the last job of its group: reading a few JSON files.
GPU_TABLE_MINUTES = 1
# What a GPU job of a set whose size is not known while planning asks for (every set but the assays a
# filter chose; such a set is in no GPU batch): the SLURM profile's run times before GPU batches.
GPU_MINUTES_UNKNOWN = {"embed_shard": 240, "measure_cost": 60, "zero_shot": 240}
# A model whose config entry does not tell its size (a local checkpoint; a name or hub id without fair-esm's
# size token) is counted as ESM2-3B: the largest model of the study, so an ESM2 asks for no less than it needs.
PARAMETERS_UNKNOWN = 3e9
# fair-esm's names (and hub ids copying them) carry the size: esm2_t36_3B_UR50D, esm1v_t33_650M_UR90S_1.
_SIZE_TOKEN = re.compile(r"_(\d+(?:\.\d+)?)([MB])(?:_|$)")


def block_parameters(layers: int, dim: int) -> int:
    """Weights of a transformer's blocks: attention 4 dim^2 and feed-forward 8 dim^2 each (ESM2-3B: 2.8 billion)."""
    return 12 * layers * dim**2


def model_parameters(entry: dict) -> float:
    """Parameters of a config model entry, as far as the entry tells: a random model's ``block_parameters``,
    fair-esm's size token in its name or hub id, else ``PARAMETERS_UNKNOWN``."""
    if "random" in entry:
        return block_parameters(entry["random"]["layers"], entry["random"]["dim"])
    found = _SIZE_TOKEN.search(str(entry.get("name") or entry.get("hub") or "").rsplit("/", 1)[-1])
    if found is None:
        return PARAMETERS_UNKNOWN
    return float(found.group(1)) * (1e6 if found.group(2) == "M" else 1e9)


def gpu_minutes(tokens: float, parameters: float, tflops: float) -> int:
    """Run time of one GPU job: ``GPU_START_MINUTES`` and its forward FLOPs (2 x parameters x tokens) at ``tflops``."""
    return GPU_START_MINUTES + math.ceil(2 * parameters * tokens / (tflops * 1e12) / 60)


def gpu_job_tokens(rows: int, length: int, shards: int, cost_sequences: int) -> dict[str, float]:
    """Tokens the model runs in each GPU job of a set of ``rows`` sequences of ``length`` (an assay's variants):
    an embedding shard its share of the rows (two special tokens each, as ``Plan.shards`` counts them); the
    cost timing ``cost_sequences`` forwards of one sequence (its sample times the repeats and warm-up); zero-shot
    one masked copy per mutated position (at most the rows and the length) through the model's window, and
    the wild type."""
    window = min(length, ESM2_MAX_RESIDUES) + 2
    return {
        "embed_shard": rows * (length + 2) / shards,
        "measure_cost": cost_sequences * window,
        "zero_shot": min(rows, length) * window + length + 2,
    }


@dataclass(frozen=True)
class GpuLayout:
    """One model's GPU batches: ``batches[k]`` its sets, ``minutes[k]`` the run time of their GPU jobs one after
    another (its table's not included), ``of_set`` each batched set's batch. A set of unknown size, or one whose jobs alone take longer
    than the limit, is in no batch: each of its jobs is a submission of its own."""

    batches: list[list[str]]
    minutes: list[int]
    of_set: dict[str, int]


def gpu_layout(set_minutes: dict[str, int], limit: int) -> GpuLayout:
    """``first_fit`` of a model's sets of known size (set -> the minutes of all its GPU jobs) within ``limit``
    minutes a batch, its table's ``GPU_TABLE_MINUTES`` included; a set over the limit stays out of every batch."""
    budget = limit - GPU_TABLE_MINUTES
    batches, loads = first_fit(set_minutes, budget)
    kept = [(b, m) for b, m in zip(batches, loads) if m <= budget]
    of_set = {name: k for k, (sets, _) in enumerate(kept) for name in sets}
    return GpuLayout([b for b, _ in kept], [m for _, m in kept], of_set)
