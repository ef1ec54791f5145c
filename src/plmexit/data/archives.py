"""ProteinGym's released archives: fetch one, hash-verified; stage one assay out of it, checked against the reference table.

Invariant: an archive is used only after its sha256 matched: the one plmexit pins for its release
(``sources.PROTEINGYM_ARCHIVES``), or for any other URL or local file the one recorded in the
hashes file on its first use (recorded there and warned about, so the user commits it and later
runs verify against it). An assay is staged byte for byte as the archive holds it, and only after
its DMS_id, row count and every variant's wild type agreed with the reference table; the staged
file's sha256 and where it came from go into its info JSON, which ``prepare`` copies into the task info.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import logging
import shutil
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from plmexit.atomic import atomic_path, write_json, write_text
from plmexit.data import proteingym, sources
from plmexit.download import download, sha256_file
from plmexit.errors import DownloadError, InputError

log = logging.getLogger(__name__)

HASHES_HEADER = "# sha256 of ProteinGym archives plmexit cannot pin, recorded on first use by `plmexit fetch-archive`; commit this file\n"
HASH_COLUMNS = ("source", "sha256", "recorded")


@dataclass(frozen=True)
class FetchedArchive:
    """What ``fetch_archive`` put in place: the archive, where from, its sha256 and who vouches for it."""

    archive: str
    source: str
    sha256: str
    hash_from: str  # the pin (sources.PROTEINGYM_HASH_SOURCE) or the hashes file that recorded it
    warning: str | None  # set when the hash was recorded now, on first use

    def to_json(self) -> dict:
        return asdict(self)


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://", "file://"))


def read_hashes(path: str | Path) -> dict[str, str]:
    """The hashes file as ``{source: sha256}`` (empty when it does not exist yet)."""
    path = Path(path)
    if not path.is_file():
        return {}
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    if not lines:
        return {}
    if lines[0].split("\t") != list(HASH_COLUMNS):
        raise InputError(f"{path}: not plmexit's archive hashes file (header {', '.join(HASH_COLUMNS)}); fix or move data.archive_hashes")
    return {row["source"]: row["sha256"] for row in csv.DictReader(lines, delimiter="\t")}


def record_hash(path: str | Path, source: str, sha256: str) -> None:
    """Add ``source``'s sha256 to the hashes file, under a lock (two fetches may record at once)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        if not handle.read().strip():
            handle.write(HASHES_HEADER + "\t".join(HASH_COLUMNS) + "\n")
        handle.write(f"{source}\t{sha256}\t{time.strftime('%Y-%m-%d', time.gmtime())}\n")


def fetch_archive(archive: str, source: str, out: str | Path, info_out: str | Path, hashes: str | Path) -> FetchedArchive:
    """Put ProteinGym's ``archive`` (``cv_folds_singles_substitutions``, ...) at ``out`` from ``source`` (its URL or a local path).

    The sha256 must be the one plmexit pins when ``source`` is the pinned release's published URL,
    or the one ``hashes`` recorded for ``source``; a local file of the pinned release passes by its
    pinned hash. Otherwise the archive is used, its sha256 recorded in ``hashes`` and the returned
    ``warning`` says so. A mismatch is an error that leaves nothing at ``out``.
    """
    if archive not in sources.PROTEINGYM_ARCHIVES:
        raise InputError(f"unknown ProteinGym archive {archive!r}; use one of {', '.join(sources.PROTEINGYM_ARCHIVES)}")
    pinned = sources.PROTEINGYM_ARCHIVES[archive]
    recorded = read_hashes(hashes).get(source)
    expected, hash_from = (pinned.sha256, sources.PROTEINGYM_HASH_SOURCE) if source == pinned.url() else (recorded, str(hashes))
    with atomic_path(out) as tmp:
        if _is_url(source):
            found = download(source, tmp)
        else:
            if not Path(source).is_file():
                raise InputError(f"{source}: no such file; set {pinned.setting} to ProteinGym's {pinned.filename} (its URL or a local path)")
            shutil.copyfile(source, tmp)
            found = sha256_file(tmp)  # the bytes that will be used
        warning = None
        if expected is not None and found != expected:
            fix = "the download is corrupt or the archive changed" if hash_from != str(hashes) else f"if the new archive is intended, delete its line from {hashes}"
            raise DownloadError(f"{source}: sha256 is {found}, expected {expected} ({hash_from}); {fix}; nothing was written")
        if expected is None and found == pinned.sha256:
            hash_from = sources.PROTEINGYM_HASH_SOURCE  # a local copy of the pinned release
        elif expected is None:
            record_hash(hashes, source, found)
            warning = (
                f"{source}: sha256 {found} is not one plmexit pins (ProteinGym {sources.PROTEINGYM_RELEASE}'s {pinned.filename}); "
                f"recorded in {hashes} on first use: commit that file, so later runs verify the archive against it"
            )
        fetched = FetchedArchive(archive=archive, source=source, sha256=found, hash_from=hash_from, warning=warning)
        write_json(info_out, fetched.to_json())
    log.info("fetched %s from %s (sha256 %s, %s)", archive, source, found, hash_from)
    return fetched


def _member(bundle: zipfile.ZipFile, archive_path: Path, archive: sources.Archive, dms_id: str, filename: str) -> str:
    """The archive member of an assay: ``{archive}/{DMS_filename}`` as published, or the one member of that file name."""
    published = archive.member(filename)
    names = bundle.namelist()
    if published in names:
        return published
    found = [n for n in names if n.rsplit("/", 1)[-1] == filename and not n.startswith("__MACOSX/")]
    if len(found) != 1:
        raise InputError(f"{archive_path}: no member {published} for assay {dms_id} ({len(found)} of that file name); is it ProteinGym's {archive.filename}?")
    return found[0]


def check_assay(table: pd.DataFrame, target: str, dms_id: str, where: str, count_column: str, expected_rows: int) -> None:
    """An assay file against its reference row: its row count, and every variant's wild type is ``target_seq``.

    ``where`` names the file in messages. Each mutant's from-residues must be ``target_seq``'s
    (``proteingym.parse_mutant``), and ``mutated_sequence`` must be ``target_seq`` with the mutant
    applied: equivalently, its wild type (the mutant undone) is ``target_seq``.
    """
    missing = [c for c in ("mutant", "mutated_sequence", "DMS_score") if c not in table.columns]
    if missing:
        raise InputError(f"{where}: assay {dms_id} has no column {missing[0]} (found {', '.join(table.columns)}); is it ProteinGym's assay file?")
    if len(table) != expected_rows:
        raise InputError(
            f"{where}: assay {dms_id} has {len(table)} variants, but the reference table's {count_column} is {expected_rows}; "
            "the archive and the reference table are of different ProteinGym releases"
        )
    for row, (mutant, sequence) in enumerate(zip(table["mutant"].astype(str), table["mutated_sequence"].astype(str)), start=2):
        mutations = proteingym.parse_mutant(mutant, target, where, row, dms_id)
        if proteingym.apply_mutant(target, mutations) == sequence:
            continue
        wild = list(sequence)
        for w, position, _ in mutations:
            if position <= len(wild):
                wild[position - 1] = w
        differ = next((i for i, (a, b) in enumerate(zip(wild, target)) if a != b), None)
        said = (f"has {len(sequence)} residues, target_seq {len(target)}" if differ is None
                else f"has {wild[differ]} at position {differ + 1} (mutant undone), target_seq has {target[differ]}")
        raise InputError(f"{where}: row {row} ({mutant}): the wild type of mutated_sequence is not target_seq of {dms_id}: it {said}")


def stage_assay(archive_path: str | Path, archive_info: str | Path, reference: str | Path, dms_id: str, out: str | Path, info_out: str | Path) -> dict:
    """Stage assay ``dms_id`` out of a fetched archive (``fetch_archive``'s zip and info JSON), checked against ``reference``.

    Writes the member's bytes to ``out`` and to ``info_out`` where they came from: the archive, its
    source and sha256, the member, the staged file's sha256 and the checks it passed. Returns that record.
    """
    archive_path = Path(archive_path)
    fetched = json.loads(Path(archive_info).read_text())
    archive = sources.PROTEINGYM_ARCHIVES[fetched["archive"]]
    rows = proteingym.read_reference(reference)
    if dms_id not in rows:
        raise InputError(f"{reference}: no assay {dms_id!r}; check the DMS_id against the reference table's DMS_id column")
    row = rows[dms_id]
    with zipfile.ZipFile(archive_path) as bundle:
        member = _member(bundle, archive_path, archive, dms_id, row.get("DMS_filename") or f"{dms_id}.csv")
        data = bundle.read(member)
    where = f"{archive_path}:{member}"
    try:
        table = pd.read_csv(io.BytesIO(data), dtype={"mutant": str, "mutated_sequence": str})
    except (ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{where}: not a readable CSV ({exc})") from None
    check_assay(table, row["target_seq"], dms_id, where, archive.count_column, int(row[archive.count_column]))
    record = {
        "dms_id": dms_id, "file": member, "sha256": hashlib.sha256(data).hexdigest(), "variants": len(table),
        "archive": archive.filename, "archive_source": fetched["source"], "archive_sha256": fetched["sha256"], "archive_hash_from": fetched["hash_from"],
        "reference": str(reference), "reference_sha256": sha256_file(reference),
        "checked": f"DMS_id in the reference table, {archive.count_column} rows, every mutated_sequence's wild type is target_seq",
    }
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
        write_text(info_out, json.dumps(record, indent=2) + "\n")
    log.info("staged %s from %s (sha256 %s)", dms_id, where, record["sha256"])
    return record
