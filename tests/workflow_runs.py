"""Run the repository's real Snakefile from tests: a config with its data paths pointed at the shared
data, and snakemake as a subprocess of this interpreter (so it finds this environment's plmexit)."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def snakemake_env(extra_path: str | None = None) -> dict[str, str]:
    """This environment with its interpreter's scripts (plmexit, snakemake) first on PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "PATH": f"{extra_path}{os.pathsep}{path}" if extra_path else path}


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args]


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile in ``workdir`` with this interpreter's snakemake and plmexit.

    No timeout: a run takes what the machine's load makes it take, and its failure is its own log,
    not an expired limit; CI's job limit catches a hang.
    """
    return subprocess.run(snakemake_command(workdir, *args), capture_output=True, text=True, env=snakemake_env())


def write_config(workdir: Path, shared_data: Path, edit=None, name: str = "test.yaml") -> Path:
    """A shipped config with its local copies of the pinned files pointed at the shared data, optionally edited."""
    config = yaml.safe_load((REPO / "config" / name).read_text())
    if config.get("data", {}).get("local_dir") == "../shared/data":
        config["data"]["local_dir"] = str(shared_data)
    if edit is not None:
        edit(config)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# Three ProteinGym assays of the reference table; a filter keeps the two of at most 240 residues (161 and 238).
FILTER_REFERENCE = ["A0A1I9GEU1_NEIME_Kennouche_2019", "BLAT_ECOLX_Stiffler_2015", "GFP_AEQVI_Sarkisyan_2016"]
FILTER_CHOSEN = ["A0A1I9GEU1_NEIME_Kennouche_2019", "GFP_AEQVI_Sarkisyan_2016"]


def write_filter_config(workdir: Path, shared_data: Path) -> Path:
    """A tiny random model on the assays a filter chooses from a cut of ProteinGym's reference table
    (``FILTER_CHOSEN``): sizes known from the checkpoint's list, so they are one batch and one GPU batch
    (config schedule). An assay's shards go by its tokens: 922 x 163 = 150,286 is one shard, 1,084 x 240 =
    260,160 two."""
    reference = pd.read_csv(shared_data / "proteingym/reference_files/DMS_substitutions.csv")
    reference[reference["DMS_id"].isin(FILTER_REFERENCE)].to_csv(workdir / "reference.csv", index=False)
    config = {
        "seed": 0,
        "models": [{"id": "tiny", "random": {"layers": 2, "dim": 32, "heads": 4, "seed": 0}}],
        "tasks": [{
            "id": "short", "kind": "proteingym", "filter": {"max_length": 240}, "reference": "reference.csv",
            "assay_dir": str(shared_data / "proteingym/cv_folds_singles_substitutions"), "fold_schemes": ["fold_random_5"], "max_sequences": 60,
        }],
        "embed": {"shards": 3, "shard_tokens": 200_000},
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def file_stamps(results: Path, kept=lambda parts: True) -> dict[str, tuple[int, bytes]]:
    """Every file under ``results`` whose relative path parts pass ``kept``, with its mtime and bytes."""
    return {
        str(p.relative_to(results)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(results.rglob("*")) if p.is_file() and kept(p.relative_to(results).parts)
    }


@dataclasses.dataclass
class PipelineRun:
    """The shared run's working directory and config, or why it failed: Snakemake's exit status and log tail."""

    workdir: Path
    config: Path
    error: str | None = None
    reported_to: str | None = None

    def result(self, user: str) -> tuple[Path, Path]:
        """(workdir, config), or the run's failure: its log in full for the first ``user`` (a test's or a
        fixture's id) that asks, and for the rest one line naming that first one."""
        if self.error is None:
            return self.workdir, self.config
        if self.reported_to is not None:
            pytest.fail(f"the shared pipeline run (conftest.py's pipeline_run) failed; Snakemake's log is in the error of {self.reported_to}", pytrace=False)
        self.reported_to = user
        pytest.fail(self.error, pytrace=False)

    @classmethod
    def of(cls, run: subprocess.CompletedProcess, workdir: Path, config: Path, seconds: float) -> PipelineRun:
        """The outcome of ``run``, Snakemake on ``config`` in ``workdir``; when it failed, the last 60 lines of its
        log and the tail of each failed job's own log (the real error) make the message."""
        if run.returncode == 0:
            return cls(workdir, config)
        log = run.stdout + run.stderr
        error = (
            f"the shared pipeline run (snakemake --configfile {config}) failed: snakemake exited {run.returncode} after {seconds:.0f} s.\n"
            "The last 60 lines of its log:\n" + "\n".join(log.splitlines()[-60:]) + "\n" + failed_jobs_logs(workdir, log)
        )
        return cls(workdir, config, error)


def failed_jobs_logs(workdir: Path, log: str, lines: int = 20) -> str:
    """The last ``lines`` of each failed job's own log that Snakemake's ``log`` names (where the real error is)."""
    tails = []
    for name in dict.fromkeys(re.findall(r"^\s+log: (.+?) \(check log file", log, re.M)):
        for path in name.split(", "):
            file = workdir / path
            if file.is_file():
                tails.append(f"--- {path} (last {lines} lines) ---\n" + "\n".join(file.read_text(errors="replace").splitlines()[-lines:]))
    return "\n".join(tails)
