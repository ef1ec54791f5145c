"""Install the shipped SLURM profile where Snakemake finds profiles by name, the site's values filled in.

Invariant: the installed profile holds only the site (executor settings, account, partitions);
every rule's threads, memory, run time and GPUs stay in the workflow's own profile
(``profiles/default/``), which Snakemake loads by itself and which wins over this one key by key.
So ``config.yaml`` is the repository's ``profiles/slurm/config.yaml`` with exactly its placeholders
(account, GPUs per node) filled in and its squeue line uncommented if asked, and ``partitions.yaml`` beside it
names the CPU and GPU partitions for the plugin's partition selection; both are written atomically,
never over an installed profile unless asked, and must parse with no placeholder left.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from plmexit.atomic import write_text
from plmexit.errors import ConfigError

PLACEHOLDERS = {"account": "YOUR_ACCOUNT", "gpus": "YOUR_GPUS"}
PARTITIONS_FILE = "partitions.yaml"
# What a site value may contain: SLURM account and partition names.
SITE_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
# The template's commented-out line for job states from squeue (a cluster without accounting).
STATUS_LINE = "# slurm-status-command: squeue"


def user_profile_dir(name: str) -> Path:
    """``<Snakemake's user config dir>/<name>``: where ``snakemake --profile NAME`` looks after the
    working directory (``$XDG_CONFIG_HOME/snakemake`` or ``~/.config/snakemake`` on Linux)."""
    from platformdirs import AppDirs  # Snakemake's own dependency, present wherever it runs

    return Path(AppDirs("snakemake", "snakemake").user_config_dir) / name


def _check(option: str, value: str) -> None:
    if not SITE_VALUE.match(value):
        raise ConfigError(f"{option} {value!r} is not a SLURM name (letters, digits, '_', '.', '+', '-'); give it as `sinfo` prints it")


def partitions(cpu_partition: str, gpu_partition: str | None, gpus: int | None) -> dict:
    """The plugin's partition file (``--slurm-partition-config``): the CPU partition with no GPUs,
    the GPU partition with ``gpus`` a job may ask for (1 unless given). One partition named for
    both takes every job; without a GPU partition there is only the CPU one."""
    _check("--cpu-partition", cpu_partition)
    if gpu_partition is None:
        if gpus is not None:
            raise ConfigError(f"--gpus {gpus} needs --gpu-partition: the partition whose nodes have the GPUs")
        return {"partitions": {cpu_partition: {"max_gpu": 0}}}
    _check("--gpu-partition", gpu_partition)
    if gpus is not None and gpus < 1:
        raise ConfigError(f"--gpus {gpus}: give the GPUs one job may use on a node of the GPU partition, 1 or more")
    table = {} if gpu_partition == cpu_partition else {cpu_partition: {"max_gpu": 0}}
    table[gpu_partition] = {"max_gpu": gpus or 1}
    return {"partitions": table}


def fill_profile(template: str | Path, account: str, gpus: int, squeue_status: bool) -> str:
    """The profile text with the site's account and the GPUs one job or group may ask for (0: a
    cluster without GPUs, where no job asks for one); ``squeue_status`` reads job states with squeue
    (a cluster without SLURM accounting)."""
    template = Path(template)
    if not template.is_file():
        raise ConfigError(f"{template}: no profile template there; run this from the plmexit repository or give --template profiles/slurm/config.yaml")
    _check("--account", account)
    text = template.read_text()
    missing = [p for p in (*PLACEHOLDERS.values(), *([STATUS_LINE] if squeue_status else [])) if p not in text]
    if missing:
        raise ConfigError(f"{template}: {', '.join(missing)} missing; restore the template from the repository's profiles/slurm/config.yaml")
    if squeue_status:
        text = text.replace(STATUS_LINE, STATUS_LINE[2:])
    text = text.replace(PLACEHOLDERS["account"], account).replace(PLACEHOLDERS["gpus"], str(gpus))
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{template}: the filled profile is not valid YAML ({' '.join(str(exc).split())}); fix the template") from None
    if not isinstance(parsed, dict) or parsed.get("slurm-partition-config") != PARTITIONS_FILE:
        raise ConfigError(f"{template}: the profile must say `slurm-partition-config: {PARTITIONS_FILE}` (the file install-profile writes beside it)")
    return text


def install_profile(
    template: str | Path,
    account: str,
    cpu_partition: str,
    gpu_partition: str | None = None,
    gpus: int | None = None,
    squeue_status: bool = False,
    name: str = "slurm",
    force: bool = False,
) -> Path:
    """Write the filled profile to ``user_profile_dir(name)/config.yaml`` and its partitions to
    ``partitions.yaml`` beside it; returns the profile's path."""
    table = partitions(cpu_partition, gpu_partition, gpus)
    text = fill_profile(template, account, gpus=max(entry["max_gpu"] for entry in table["partitions"].values()), squeue_status=squeue_status)
    directory = user_profile_dir(name)
    dest = directory / "config.yaml"
    if dest.exists() and not force:
        raise ConfigError(f"{dest}: a profile named {name!r} is already installed; pass --force to replace it or --name to install beside it")
    # The partitions first: a profile that exists always names a partition file that does too.
    write_text(directory / PARTITIONS_FILE, yaml.safe_dump(table, sort_keys=False))
    write_text(dest, text)
    return dest
