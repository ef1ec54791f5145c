"""The steps that make a task: put a pinned data file in place, fetch ProteinGym's released archives and
stage an assay out of one, choose ProteinGym assays by the reference table, and read a task's files
into a task table.

Invariant: as every module of ``plmexit.pipeline``: one function per CLI command, reading its
inputs, calling the computing modules and writing its outputs atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from plmexit.atomic import write_text
from plmexit.data import archives, loading, proteingym, sources, tasks
from plmexit.data.formats import FILE_FIELDS
from plmexit.download import sha256_file
from plmexit.errors import InputError
from plmexit.pipeline import reading
from plmexit.settings import ArchiveSettings

# The chosen list's columns beside DMS_id -> the reference table's columns they copy: an assay's size.
LISTED_COLUMNS = {"single_mutants": "DMS_number_single_mutants", "seq_len": "seq_len"}


def fetch_data(key: str, out: str | Path, local_dir: str | Path | None = None, base_url: str | None = None) -> str:
    """Put one pinned data file in place, hash-verified (downloaded, or from local copies)."""
    return sources.stage(key, out, local_dir, base_url)


def fetch_archive(archive: str, settings: ArchiveSettings, out: str | Path, info_out: str | Path) -> archives.FetchedArchive:
    """Put one of ProteinGym's released archives in place from where ``settings`` say, hash-verified or its
    hash recorded on first use (the returned record's ``warning`` says so; the command line prints it)."""
    return archives.fetch_archive(archive, settings.source(archive), out, info_out, settings.archive_hashes)


def stage_assay(archive: str | Path, archive_info: str | Path, reference: str | Path, dms_id: str, out: str | Path, info_out: str | Path) -> dict:
    """Stage one assay out of a fetched archive, checked against the reference table (see ``archives.stage_assay``)."""
    return archives.stage_assay(archive, archive_info, reference, dms_id, out, info_out)


def choose_assays(
    reference: str | Path, out: str | Path, selection_types: list[str] | None = None, max_length: int | None = None, max_variants: int | None = None,
) -> list[str]:
    """Write the DMS_ids of ``reference`` (``DMS_substitutions.csv``) that pass the filters, in the
    table's order, as a TSV with each assay's number of single mutants and target length (``DMS_id``,
    ``single_mutants``, ``seq_len``): the workflow's ``choose_assays`` checkpoint, whose list the
    planner expands into one task per assay and fold scheme, and whose sizes set the assay's
    embedding shards and cluster batch."""
    rows = proteingym.read_reference(reference)
    chosen = proteingym.select_assays(rows, selection_types, max_length, max_variants)
    if not chosen:
        wanted = {"selection_type": selection_types, "max_length": max_length, "max_variants": max_variants}
        said = ", ".join(f"{k}={v}" for k, v in wanted.items() if v)
        raise InputError(f"{reference}: no assay passes the filter ({said or 'none'}); loosen the task's filter in the config")
    lines = ["\t".join(["DMS_id", *LISTED_COLUMNS])]
    for dms_id in chosen:
        values = [rows[dms_id].get(column, "") for column in LISTED_COLUMNS.values()]
        for column, value in zip(LISTED_COLUMNS.values(), values):
            if not value.isdigit():
                raise InputError(f"{reference}: assay {dms_id}: {column} is {value!r}, not a count; use ProteinGym's own DMS_substitutions.csv")
        lines.append("\t".join([dms_id, *values]))
    write_text(out, "".join(f"{line}\n" for line in lines))
    return chosen


def _file_record(path: Path, look_up: bool = True) -> dict:
    """A file a task read: its path, sha256 and, when it is a pinned file (``look_up``), where that comes from (a third-party copy says so)."""
    found = sha256_file(path)
    origin = sources.pinned_origin(found) if look_up else None
    return {"path": str(path), "sha256": found, **({"pinned": origin} if origin else {})}


def prepare_task(spec: tasks.TaskSpec, out: str | Path, info_out: str | Path, provenance: str | Path | None = None) -> pd.DataFrame:
    """Read and validate a task's source files into a normalised task table, and say how it is split.

    ``info_out`` (JSON) records the split (official, the file's folds, or seeded
    cross-validation) and, for ProteinGym, the assay and fold scheme, for the summaries; a scheme
    whose folds plmexit built is named with ``proteingym.BUILT_SUFFIX`` (``fold_modulo_5_built``).
    A cross-validated task records how its folds were made (``folds``: random or homology); with
    homology folds, how MMseqs2 clustered it (``clustering``) and each id's cluster (``clusters``).
    Every file read is recorded with its sha256 (``files``: role -> path and sha256, and for a pinned
    file its repository, commit and path, ``third-party copy, ...`` for a copy); an assay staged
    from a ProteinGym archive also records where it came from (``source``: the ``provenance`` JSON
    ``stage-assay`` wrote, with the archive's source and sha256, the member and the checks it passed).
    """
    table = loading.load_task(spec)
    roles = {"path": spec.path, **{role: getattr(spec, role) for role in FILE_FIELDS if getattr(spec, role) is not None}}
    source = None
    if provenance is not None:
        source = reading.read_json(provenance, "`plmexit stage-assay`", ("sha256", "archive", "archive_sha256"))
    # An archive's assay has its origin in ``source``; that its bytes may equal a pinned copy's is no origin.
    files = {role: _file_record(path, look_up=not (role == "path" and source)) for role, path in roles.items()}
    if source is not None and source["sha256"] != files["path"]["sha256"]:
        raise InputError(f"{spec.path}: sha256 is {files['path']['sha256']}, but {provenance} staged {source['sha256']}; stage the assay again")
    info = {
        "task": spec.name, "format": spec.format, "type": spec.type, "split": table.attrs["split"], "n_sequences": len(table),
        "dms_id": spec.dms_id, "fold_scheme": table.attrs["fold_scheme"], "files": files, "source": source,
        "folds": table.attrs["folds"], "clustering": table.attrs["clustering"], "clusters": table.attrs["clusters"],
    }
    tasks.write_task_table(table, out)
    write_text(info_out, json.dumps(info, indent=2) + "\n")
    return table
