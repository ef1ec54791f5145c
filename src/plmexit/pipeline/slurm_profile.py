"""Install the shipped SLURM profile where Snakemake finds profiles by name, the site's values filled in.

Invariant: the installed profile is the repository's ``profiles/slurm/config.yaml`` with exactly its
``YOUR_*`` placeholders replaced (or, without a GPU type, its ``gres`` lines removed) and nothing
else changed, so the shipped profile stays the one source of every resource; it is written
atomically, never over an existing profile unless asked, and must parse with no placeholder left.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from plmexit.atomic import write_text
from plmexit.errors import ConfigError

PLACEHOLDERS = {"account": "YOUR_ACCOUNT", "partition": "YOUR_PARTITION", "gpu_type": "YOUR_GPU_TYPE"}
# What a site value may contain: SLURM account, partition and GRES type names.
SITE_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
ANY_GPU = "any"
STATUS_LINE = "# slurm-status-command: squeue"


def user_profile_dir(name: str) -> Path:
    """``<Snakemake's user config dir>/<name>``: where ``snakemake --profile NAME`` looks after the
    working directory (``$XDG_CONFIG_HOME/snakemake`` or ``~/.config/snakemake`` on Linux)."""
    from platformdirs import AppDirs  # Snakemake's own dependency, present wherever it runs

    return Path(AppDirs("snakemake", "snakemake").user_config_dir) / name


def _check(key: str, value: str) -> None:
    if not SITE_VALUE.match(value):
        raise ConfigError(f"--{key.replace('_', '-')} {value!r} is not a SLURM name (letters, digits, '_', '.', '+', '-'); give it as `sinfo` prints it")


def fill_profile(template: str, account: str, partition: str, gpu_type: str | None, squeue_status: bool) -> str:
    """The profile text with the site's values: ``gpu_type`` None drops every ``gres`` request (a
    cluster without GPUs), ``any`` asks for any GPU (``gpu:1``); ``squeue_status`` reads job states
    with squeue (a cluster without SLURM accounting)."""
    _check("account", account)
    _check("partition", partition)
    lines = []
    for line in template.splitlines():
        if gpu_type is None and line.strip().startswith("gres:"):
            continue
        if gpu_type == ANY_GPU:
            line = line.replace(f"gpu:{PLACEHOLDERS['gpu_type']}:1", "gpu:1")
        elif gpu_type is not None:
            _check("gpu_type", gpu_type)
            line = line.replace(PLACEHOLDERS["gpu_type"], gpu_type)
        if squeue_status and line.strip() == STATUS_LINE:
            line = line.replace(STATUS_LINE, STATUS_LINE[2:])
        lines.append(line.replace(PLACEHOLDERS["account"], account).replace(PLACEHOLDERS["partition"], partition))
    return "\n".join(lines) + "\n"


def install_profile(
    template: str | Path, account: str, partition: str, gpu_type: str | None, squeue_status: bool = False, name: str = "slurm", force: bool = False
) -> Path:
    """Write the filled profile to ``user_profile_dir(name)/config.yaml``; returns that path."""
    template = Path(template)
    if not template.is_file():
        raise ConfigError(f"{template}: no profile template there; run this from the plmexit repository or give --template profiles/slurm/config.yaml")
    text = fill_profile(template.read_text(), account, partition, gpu_type, squeue_status)
    left = sorted({p for p in PLACEHOLDERS.values() if p in text})
    if left:
        raise ConfigError(f"{template}: placeholder {', '.join(left)} left after filling in; the template has a placeholder this command does not know")
    try:
        yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{template}: the filled profile is not valid YAML ({' '.join(str(exc).split())}); fix the template") from None
    dest = user_profile_dir(name) / "config.yaml"
    if dest.exists() and not force:
        raise ConfigError(f"{dest}: a profile named {name!r} is already installed; pass --force to replace it or --name to install beside it")
    write_text(dest, text)
    return dest
