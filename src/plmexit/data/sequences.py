"""Sequences to predict on: a CSV (a ``sequence`` column, an optional ``id`` column) or a FASTA file.

Invariant: ``read_sequences`` returns unique ids and upper-case sequences in the ESM alphabet, or
raises an ``InputError`` naming the file and row; it knows nothing of models or tasks.
"""

from __future__ import annotations

from pathlib import Path

from plmexit.data.tasks import ESM_RESIDUES, read_csv_text, read_fasta_records
from plmexit.errors import InputError

SUFFIXES = {".csv": "csv", ".fasta": "fasta", ".fa": "fasta", ".faa": "fasta"}


def read_sequences(path: str | Path) -> tuple[list[str], list[str]]:
    """``(ids, sequences)`` of a ``.csv`` (columns ``sequence`` and optionally ``id``; ids default to
    ``row<N>``, N the line in the file) or ``.fasta``/``.fa``/``.faa`` file (ids are the record ids)."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"{path}: input must end in {', '.join(SUFFIXES)} (a CSV with a 'sequence' column, or FASTA)")
    if not path.is_file():
        raise InputError(f"{path}: input file does not exist")
    if kind == "csv":
        raw = read_csv_text(path, path)
        if "sequence" not in raw.columns:
            raise InputError(f"{path}: no 'sequence' column (columns: {', '.join(raw.columns)}); name the column of sequences 'sequence'")
        ids = list(raw["id"]) if "id" in raw.columns else [f"row{i + 2}" for i in range(len(raw))]
        sequences = [s.strip() for s in raw["sequence"]]
        where = [f"row {i + 2}" for i in range(len(raw))]
    else:
        table = read_fasta_records(path, lambda *_: "")
        ids, sequences, where = list(table["id"]), list(table["sequence"]), [w.split(": ", 1)[1] for w in table["where"]]
    if not sequences:
        raise InputError(f"{path}: no sequences")
    seen = set()
    for identifier, sequence, place in zip(ids, sequences, where):
        unknown = set(sequence) - ESM_RESIDUES
        if not sequence or unknown:
            found = "an empty sequence" if not sequence else f"characters {''.join(sorted(unknown))!r} outside the ESM alphabet"
            raise InputError(f"{path}: {place} ({identifier}): {found}; give upper-case amino-acid codes")
        if identifier in seen:
            raise InputError(f"{path}: {place}: id {identifier!r} appears twice; make ids unique")
        seen.add(identifier)
    return ids, sequences
