"""How a model turns one piece of residues into token ids, as data every backend fills in.

Invariant: every supported family puts exactly one token per residue, between a fixed ``prefix``
(``<cls>``, ``[CLS]``, or nothing for T5) and a fixed ``suffix`` (``<eos>``, ``[SEP]``, ``</s>``), so
residue ``i`` of a piece sits at position ``len(prefix) + i`` and pooling weights can be placed
without running the tokenizer per batch. The model modules build a ``TokenScheme`` from the
model's own tokenizer and tests check it against that tokenizer on whole sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Residue letters a protein sequence may hold (the 20 standard, X, and the rare B O U Z).
RESIDUES = "ACDEFGHIKLMNPQRSTVWYXBOUZ"


@dataclass(frozen=True)
class TokenScheme:
    """``prefix`` + one id per residue + ``suffix``, padded with ``padding_idx``.

    ``table`` maps an ASCII code to a token id (``unk_idx`` for letters the model does not know).
    """

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    padding_idx: int
    table: np.ndarray  # (128,) int64

    @classmethod
    def from_mapping(cls, residue_ids: dict[str, int], unk_idx: int, prefix, suffix, padding_idx: int) -> "TokenScheme":
        table = np.full(128, unk_idx, dtype=np.int64)
        for letter, index in residue_ids.items():
            table[ord(letter)] = index
        return cls(tuple(int(i) for i in prefix), tuple(int(i) for i in suffix), int(padding_idx), table)

    @property
    def specials(self) -> int:
        """Special tokens every piece carries (counted in token budgets and costs)."""
        return len(self.prefix) + len(self.suffix)

    def encode(self, residues: str) -> np.ndarray:
        """Token ids of ``residues`` alone (no special tokens)."""
        codes = np.frombuffer(residues.encode("ascii"), dtype=np.uint8)
        return self.table[codes & 0x7F]
