"""``plmexit scan``: one CSV task and one model without writing a config: the config, the workflow's run, its answer.

Invariant: scan decides nothing the workflow decides. It writes an ordinary config (``<results>/config.yaml``,
checked against the schema and planned before Snakemake starts, so ``snakemake --cores N --configfile
<results>/config.yaml`` in the checkout reruns exactly this run), runs the checkout's Snakefile through Snakemake's API
in the current directory (as ``snakemake`` run there would),
and returns the workflow's own closing lines (``Plan.closing_lines``); ``--export`` copies the workflow's
export directory (``export.enabled``).
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import sys
from pathlib import Path

import plmexit
from plmexit.atomic import atomic_directory, write_text
from plmexit.data.tasks import read_csv_text
from plmexit.errors import ConfigError, InputError, PlmexitError, ToolError
from plmexit.models import manifest as model_manifests
from plmexit.pipeline.planning import Plan

log = logging.getLogger(__name__)


def checkout() -> Path:
    """The plmexit checkout this package runs from (its Snakefile and schema), as `pip install -e .` leaves it."""
    root = Path(plmexit.__file__).resolve().parents[2]
    if not (root / "Snakefile").is_file():
        raise PlmexitError(
            f"plmexit scan runs the workflow of a plmexit checkout, but this plmexit is installed from {root}, which has no Snakefile; "
            "install it from a clone (`pip install -e '.[workflow]'` in the repository)"
        )
    return root


def scan_config(
    data: str | Path,
    label: str,
    model: str,
    results: str | Path,
    task_type: str | None = None,
    sequence_column: str = "sequence",
    id_column: str | None = None,
    export: bool = False,
) -> dict:
    """The config of one ``csv`` task (``data``'s ``label`` column) and one model (``model_manifests.source_of``).

    Columns are checked here (a one-line ``InputError`` naming the file, the flag and the columns there are), the
    rest of the file by the workflow's ``prepare`` step. ``task_type`` None: regression when every label is a
    number, else classification (logged). Paths (results too) are absolute, so the config runs from any directory.
    """
    path = Path(data)
    if not path.is_file():
        raise InputError(f"{path}: no such file; give the CSV of your sequences and labels")
    raw = read_csv_text(path, path)
    for flag, column in (("--label", label), ("--sequence-column", sequence_column), ("--id-column", id_column)):
        if column is not None and column not in raw.columns:
            raise InputError(f"{path}: no column {column!r} for {flag} (columns: {', '.join(raw.columns)}); name one of them")
    source = model_manifests.source_of(model)
    source = {key: (str(Path(value).resolve()) if key in ("checkpoint", "path") else value) for key, value in source.items()}
    if task_type is None:
        task_type = "regression" if _all_numbers(raw[label]) else "classification"
        log.info("%s: labels in column %r are %s, so the task is %s (--type to say otherwise)", path, label,
                 "numbers" if task_type == "regression" else "not all numbers", task_type)
    task = {"id": model_manifests.config_id(f"{path.stem}_{label}", "task"), "kind": "csv", "type": task_type,
            "path": str(path.resolve()), "label_column": label, "sequence_column": sequence_column}
    if id_column is not None:
        task["id_column"] = id_column
    config = {"pathvars": {"results": str(Path(results).resolve())}, "models": [{"id": model_manifests.model_id(source), **source}], "tasks": [task]}
    if export:
        config["export"] = {"enabled": True}
    return config


def _all_numbers(values) -> bool:
    """Whether every label given is a number (empty cells are the prepare step's to report)."""
    given = [v for v in values if v.strip()]
    try:
        [float(v) for v in given]
    except ValueError:
        return False
    return bool(given)


def scan(
    data: str | Path,
    label: str,
    model: str,
    results: str | Path,
    cores: int,
    task_type: str | None = None,
    sequence_column: str = "sequence",
    id_column: str | None = None,
    export: str | Path | None = None,
) -> list[str]:
    """Write ``scan_config``'s config to ``<results>/config.yaml``, run the workflow on it with ``cores`` local cores,
    copy the export into ``export`` when given, and return the workflow's closing lines (the answer of each task)."""
    import yaml  # installed with Snakemake, which scan runs

    root = checkout()
    config = scan_config(data, label, model, results, task_type, sequence_column, id_column, export=export is not None)
    plan = Plan.from_config(copy.deepcopy(config), root / "workflow" / "schemas" / "config.schema.yaml")  # one line per mistake, before any job
    config_file = Path(results) / "config.yaml"
    write_text(config_file, yaml.safe_dump(config, sort_keys=False))
    log.info("wrote %s; `snakemake --snakefile %s --cores %d --configfile %s` reruns this scan", config_file, root / "Snakefile", cores, config_file)
    run_workflow(root / "Snakefile", config_file, cores, Path(results))
    if export is not None:
        (exported,) = plan.exports()
        with atomic_directory(export) as tmp:
            shutil.copytree(exported, tmp, dirs_exist_ok=True)
    return plan.closing_lines()


def run_workflow(snakefile: Path, config_file: Path, cores: int, results: Path) -> None:
    """Snakemake's local run of ``snakefile`` on ``config_file`` in this directory, as `snakemake --cores N` runs it,
    without the Snakefile's closing lines (``scan`` returns them). Its jobs run this interpreter's ``plmexit``."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, ExecutionSettings, OutputSettings, ResourceSettings

    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    snakemake_log = logging.getLogger("snakemake")
    propagate, snakemake_log.propagate = snakemake_log.propagate, False  # Snakemake's own handler writes its progress, once
    try:
        with SnakemakeApi(OutputSettings(printshellcmds=True, show_failed_logs=True)) as api:
            try:
                workflow = api.workflow(
                    resource_settings=ResourceSettings(cores=cores), config_settings=ConfigSettings(configfiles=[config_file]),
                    snakefile=snakefile, workdir=Path.cwd(),
                )
                workflow.dag().execute_workflow(executor="local", execution_settings=ExecutionSettings(no_hooks=True))
            except SystemExit as exc:  # the Snakefile's config check; scan's own check found nothing, so this is unexpected
                raise ConfigError(str(exc.code)) from None
            except Exception as exc:  # noqa: BLE001 - Snakemake raises its own types; it has printed them
                api.print_exception(exc)
                raise ToolError(f"the workflow stopped ({type(exc).__name__}); Snakemake's messages above and the job logs under {results}/logs/ say why") from None
    finally:
        snakemake_log.propagate = propagate
