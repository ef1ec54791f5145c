"""Variant crops: the one stretch of a variant set's target through which every variant is embedded.

Invariant: a variant set (one target's substitutions, every sequence one length) is cut through
one ``VariantCrop`` over its mutated positions, computed from all of a task's sequences, so no
mutation is cut away, every variant sees the same stretch, and every shard job of a task gets the
same crop. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from plmexit.embedding.options import EmbedSettings
from plmexit.errors import EmbedError

# Rows compared at once when finding where variants differ: bounds memory to this many x length bytes.
_DIFF_CHUNK_ROWS = 4096


@dataclass(frozen=True)
class VariantCrop:
    """The one stretch of a variant set's target through which every variant is embedded.

    A variant set is one target with substitutions, so every sequence has the same length and the
    variants differ only at mutated positions. Cutting all of them at the same place keeps them
    comparable (their pooled vectors differ only through the mutations), and placing the cut over
    the mutated positions keeps every mutation in view. ``start``/``stop`` are 0-based half-open
    residue positions; ``windowed`` is True when the stretch is wider than the model's window and
    is embedded as overlapping windows of ``window`` residues (``pieces.window_starts``).
    """

    length: int
    start: int
    stop: int
    n_mutated: int
    windowed: bool
    window: int
    overlap: int

    def apply(self, sequences: list[str]) -> list[str]:
        return [s[self.start : self.stop] for s in sequences]

    def settings(self, settings: EmbedSettings) -> EmbedSettings:
        """The settings that embed the cropped sequences: windows when the crop is wider than the window."""
        if self.windowed and settings.long_sequences == "truncate":
            return replace(settings, long_sequences="window", window=self.window, overlap=self.overlap)
        return settings

    def covers(self, position: int) -> bool:
        """Whether 0-based ``position`` is embedded."""
        return self.start <= position < self.stop

    def describe(self) -> str:
        where = f"residues {self.start + 1}..{self.stop} (1-based, inclusive) of the {self.length}-residue target"
        how = f" as windows of {self.window} overlapping by {self.overlap}" if self.windowed else ""
        return f"every variant embedded through the same crop, {where}{how}, covering the {self.n_mutated} positions where variants differ"

    def attrs(self) -> dict:
        return {
            "variant_crop": True, "crop_start": self.start, "crop_stop": self.stop, "crop_convention": "0-based half-open residue positions",
            "crop_windowed": self.windowed, "crop_window": self.window, "crop_overlap": self.overlap, "n_mutated_positions": self.n_mutated,
        }


def mutated_span(sequences: list[str], source: str) -> tuple[int, int, int]:
    """``(first, last + 1, count)`` of the 0-based positions where any sequence differs from the
    first (``(0, 0, 0)`` when none do); sequences of unequal length are an ``EmbedError``."""
    length = len(sequences[0])
    for i, sequence in enumerate(sequences):
        if len(sequence) != length:
            raise EmbedError(
                f"{source}: row {i + 1} has {len(sequence)} residues but row 1 has {length}; a variant crop needs one target's "
                "substitution variants (all one length): drop --variant-crop for a set of different proteins"
            )
    first = np.frombuffer(sequences[0].encode("ascii"), dtype=np.uint8)
    differs = np.zeros(length, dtype=bool)
    for chunk in range(0, len(sequences), _DIFF_CHUNK_ROWS):
        rows = sequences[chunk : chunk + _DIFF_CHUNK_ROWS]
        block = np.frombuffer("".join(rows).encode("ascii"), dtype=np.uint8).reshape(len(rows), length)
        differs |= (block != first).any(axis=0)
    positions = np.flatnonzero(differs)
    if positions.size == 0:
        return 0, 0, 0
    return int(positions[0]), int(positions[-1]) + 1, int(positions.size)


def variant_crop(sequences: list[str], settings: EmbedSettings, source: str) -> VariantCrop:
    """The crop every variant of a variant set is embedded through (see ``VariantCrop``).

    Deterministic and computed from all of a task's sequences, so every shard job gets the same.
    Truncate mode: the whole target when it fits the window (``settings.truncate``); else a window
    centred on the span of mutated positions, moved inside the target; else, when the span is wider
    than the window, exactly the span, embedded as overlapping windows. Window mode already embeds
    every residue, so its crop is the whole target.
    """
    length = len(sequences[0])
    lo, hi, n_mutated = mutated_span(sequences, source)
    if settings.long_sequences == "window":
        return VariantCrop(length, 0, length, n_mutated, length > settings.window, settings.window, settings.overlap)
    width = settings.truncate
    # Windows over a crop wider than truncate overlap by embed.overlap, but at most half a window:
    # truncate may be set below the default overlap, which is sized for full 1022-residue windows.
    overlap = min(settings.overlap, width // 2)
    if length <= width:
        return VariantCrop(length, 0, length, n_mutated, False, width, overlap)
    if hi - lo <= width:
        start = min(max((lo + hi - width) // 2, 0), length - width)
        return VariantCrop(length, start, start + width, n_mutated, False, width, overlap)
    return VariantCrop(length, lo, hi, n_mutated, True, width, overlap)
