"""Write examples/my_proteins.csv: made-up proteins with two labels, for the "Your own data" example.

The sequences are random (seeded) and the labels are computed from them, so the file holds no
fetched data and anyone can remake it byte for byte (``tests/test_examples.py`` checks that):

- ``charge``: net charge per residue at neutral pH (K, R count +1; D, E count -1), a regression
  target that amino-acid composition predicts;
- ``location``: ``secreted`` for proteins given a hydrophobic N-terminal stretch (a signal-peptide
  look-alike), ``cytosolic`` for the rest, a two-class target.

    python examples/make_example_task.py examples/my_proteins.csv
"""

from __future__ import annotations

import csv
import sys

import numpy as np

RESIDUES = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
HYDROPHOBIC = np.array(list("AILMFVW"))
N_PROTEINS = 120
SEED = 7


def make_rows(n: int = N_PROTEINS, seed: int = SEED) -> list[dict[str, str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        length = int(rng.integers(30, 90))
        # Composition differs from protein to protein, so charge varies widely.
        weights = rng.dirichlet(np.full(len(RESIDUES), 2.0))
        body = rng.choice(RESIDUES, size=length, p=weights)
        secreted = bool(rng.random() < 0.5)
        if secreted:
            body[:12] = rng.choice(HYDROPHOBIC, size=12)
        sequence = "M" + "".join(body)
        charge = (sum(sequence.count(c) for c in "KR") - sum(sequence.count(c) for c in "DE")) / len(sequence)
        rows.append({"name": f"prot{i:03d}", "sequence": sequence, "charge": f"{charge:.4f}", "location": "secreted" if secreted else "cytosolic"})
    return rows


def write(path: str) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["name", "sequence", "charge", "location"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(make_rows())


if __name__ == "__main__":
    write(sys.argv[1] if len(sys.argv) > 1 else "examples/my_proteins.csv")
