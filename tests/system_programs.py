"""Debian programs a test needs (SLURM, Chromium): found, installed with apt-get, or the test fails in CI and skips elsewhere."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

SEARCH_PATH = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"


def missing(programs: tuple[str, ...]) -> list[str]:
    return [name for name in programs if shutil.which(name, path=SEARCH_PATH) is None]


def _install(packages: tuple[str, ...], programs: tuple[str, ...]) -> str | None:
    """None once ``programs`` are there (installing ``packages`` with apt-get if need be), else why not."""
    if not missing(programs):
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"installing {' '.join(packages)} needs root and apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", *packages]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            return f"apt-get install {' '.join(packages)} failed: {done.stderr.strip()[-500:]}"
    return None if not missing(programs) else f"still missing after apt-get: {', '.join(missing(programs))}"


def require(packages: tuple[str, ...], programs: tuple[str, ...], purpose: str) -> None:
    """Make ``programs`` available or end the test: a failure under CI=true, a skip saying why elsewhere."""
    reason = _install(packages, programs)
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{purpose} needs {' '.join(packages)}: {reason}; CI=true requires them")
        pytest.skip(f"{purpose}: {reason}")
