"""What a model sees of a task table's sequences: truncated, windowed, or one target's variants through one crop.

Invariant: embedding, cost measurement, exit timing and the compute estimate all cut a task's
sequences through ``embedded_sequences``, so the tokens timed, estimated and embedded are the same.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from plmexit.embedding import crops, options, pieces
from plmexit.errors import EmbedError, InputError

log = logging.getLogger(__name__)


def embedded_sequences(
    table, settings: options.EmbedSettings, variant_crop: bool, source: str | Path
) -> tuple[list[str], np.ndarray, options.EmbedSettings, crops.VariantCrop | None]:
    """What the model sees of a task table's sequences: ``(sequences, truncated, settings, crop)``.

    Without ``variant_crop``, as ``pieces.prepare_sequences``. With it, the table is one target's
    variants: all are cut through one ``crops.VariantCrop`` computed from the whole table (so every
    shard of it gets the same), with the settings that embed the crop; every position a ProteinGym
    mutant id names must lie inside it (``check_crop_covers``). ``truncated`` marks sequences not
    embedded whole.
    """
    sequences = list(table["sequence"])
    if not variant_crop or not sequences:
        prepared, truncated = pieces.prepare_sequences(sequences, settings)
        return prepared, truncated, settings, None
    crop = crops.variant_crop(sequences, settings, str(source))
    check_crop_covers(crop, list(table["id"]), source)
    truncated = np.full(len(sequences), crop.stop - crop.start < crop.length, dtype=bool)
    return crop.apply(sequences), truncated, crop.settings(settings), crop


def check_crop_covers(crop: crops.VariantCrop, ids: list[str], source: str | Path) -> None:
    """Every position named by a mutant id (``A24C:G30D``) lies inside the crop, else an ``EmbedError``.

    The crop covers every position where variants differ by construction; this catches what that
    cannot see, such as a substitution every variant shares. Every id is read: ids that are not
    mutants (a table that is not ProteinGym's, or a wild-type row) are skipped, and counted in one log line.
    """
    from plmexit.data import proteingym  # pandas, only for variant sets

    not_mutants = []
    for row, mutant in enumerate(ids, start=1):
        try:
            positions = proteingym.mutated_positions(mutant)
        except InputError:
            not_mutants.append(mutant)
            continue
        for position in positions:
            if not crop.covers(position - 1):
                raise EmbedError(
                    f"{source}: row {row} ({mutant}) mutates position {position}, outside residues {crop.start + 1}..{crop.stop} "
                    "that are embedded; set embed.long_sequences: window, which embeds every residue"
                )
    if not_mutants:
        log.info("%s: %d of %d ids are not ProteinGym mutants (first %r); the crop is checked against where sequences differ only for those",
                 source, len(not_mutants), len(ids), not_mutants[0])
