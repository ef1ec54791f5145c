"""What a run's model jobs spent, from Snakemake's benchmark records: wall, GPU- and CPU-hours per model and rule.

Invariant: one record per job, the TSV Snakemake's ``benchmark:`` wrote after the job's last successful
attempt (it writes none for a failed attempt and overwrites the file when the job runs again).
GPU-hours are wall seconds times the GPUs the job requested (its recorded ``gpu`` or ``gres``
resource), CPU-hours wall seconds times its threads; both come from Snakemake's extended record
(``--benchmark-extended``: its ``threads`` and ``resources`` columns) and are missing (NaN) for a job
recorded without them. Snakemake's own measured CPU time is summed beside them as it is.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pandas as pd

from plmexit.errors import InputError

COLUMNS = [
    "model", "rule", "jobs", "wall_hours", "gpus", "gpu_hours", "threads", "cpu_hours", "cpu_time_hours", "unsampled_jobs", "max_rss_mb",
]
# Snakemake's basic record: wall seconds ("s") first, then memory, I/O and CPU measured by psutil ("NA" when the
# job ended before the first sample); the extended record adds, among others, the job's threads and resources.
REQUIRED = ("s", "max_rss", "cpu_time")


def gpu_count(resources: dict) -> int:
    """GPUs a job asked for: Snakemake's ``gpu`` resource of a job submitted to SLURM, else the GPUs of a SLURM
    ``gres`` (``gpu``, ``gpu:N``, ``gpu:TYPE`` or ``gpu:TYPE:N``, comma-separated with other resources), else none.

    A SLURM job's record carries the site profile's ``slurm_*`` resources. A job run by the local executor holds no
    GPU: its ``gpu`` resource (profiles/default gives the model rules one everywhere) is only a count Snakemake
    schedules by, and the record does not say whether ``--device auto`` found a device, so it counts none.
    """
    submitted = any(str(key).startswith("slurm_") for key in resources)
    if submitted and resources.get("gpu") not in (None, 0, "0"):
        return int(resources["gpu"])
    count = 0
    for item in str(resources.get("gres") or "").split(","):
        parts = item.strip().split(":")
        if parts[0] == "gpu":
            count += int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
    return count


def _number(value, path: Path, column: str) -> float:
    if isinstance(value, str) and value.strip() in ("NA", "-", ""):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{path}: column {column!r} holds {value!r}, not a number; rerun the job to rewrite its benchmark record") from None


def read_record(path: str | Path) -> dict:
    """One job's record: wall seconds, measured CPU seconds and peak RSS (MB) summed or maxed over its rows (one per
    ``repeat``), and its threads and GPUs from the extended columns (NaN without them)."""
    path = Path(path)
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: not a Snakemake benchmark record ({exc}); delete it, or rerun its job") from None
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing or table.empty:
        what = f"no column {', '.join(map(repr, missing))}" if missing else "no rows"
        raise InputError(f"{path}: not a Snakemake benchmark record ({what}); delete it, or rerun its job")
    seconds = [_number(v, path, "s") for v in table["s"]]
    cpu = [_number(v, path, "cpu_time") for v in table["cpu_time"]]
    rss = [_number(v, path, "max_rss") for v in table["max_rss"]]
    threads = gpus = math.nan
    if "threads" in table.columns and "resources" in table.columns:
        row = table.iloc[0]
        threads = _number(row["threads"], path, "threads")
        try:
            resources = ast.literal_eval(row["resources"])
        except (ValueError, SyntaxError):
            raise InputError(f"{path}: column 'resources' is not a Snakemake resources record: {row['resources'][:80]!r}; rerun its job") from None
        gpus = gpu_count(resources)
    sampled = [c for c in cpu if not math.isnan(c)]
    return {
        "seconds": sum(seconds),
        "cpu_seconds": sum(sampled) if sampled else math.nan,
        "unsampled": len(cpu) - len(sampled),
        "max_rss_mb": max((r for r in rss if not math.isnan(r)), default=math.nan),
        "threads": threads,
        "gpus": gpus,
    }


def _values(series: pd.Series) -> str:
    """The distinct counts a group's jobs had (``1``, ``2;8``), or empty when unrecorded."""
    if series.isna().any():
        return ""
    return ";".join(str(v) for v in sorted({int(v) for v in series}))


def _hours(seconds: pd.Series, per_job: pd.Series) -> float:
    """Σ seconds × per_job / 3600, NaN when any job's count is unrecorded (a partial sum would read as a total)."""
    return float((seconds * per_job).sum() / 3600) if per_job.notna().all() else math.nan


def summarize(records: pd.DataFrame) -> pd.DataFrame:
    """Per model and rule: jobs, wall hours, GPU-hours, CPU-hours (wall × threads), measured CPU hours, jobs Snakemake
    could not sample, peak RSS. ``records``: one row per job, ``model``, ``rule`` and ``read_record``'s fields."""
    rows = []
    if records.empty:
        return pd.DataFrame(rows, columns=COLUMNS)
    for (model, rule), jobs in records.groupby(["model", "rule"], sort=True):
        rows.append({
            "model": model, "rule": rule, "jobs": len(jobs),
            "wall_hours": float(jobs["seconds"].sum() / 3600),
            "gpus": _values(jobs["gpus"]), "gpu_hours": _hours(jobs["seconds"], jobs["gpus"]),
            "threads": _values(jobs["threads"]), "cpu_hours": _hours(jobs["seconds"], jobs["threads"]),
            "cpu_time_hours": float(jobs["cpu_seconds"].sum() / 3600),  # pandas skips the unsampled (NaN)
            "unsampled_jobs": int(jobs["unsampled"].sum()),
            "max_rss_mb": float(jobs["max_rss_mb"].max()),
        })
    return pd.DataFrame(rows, columns=COLUMNS)
