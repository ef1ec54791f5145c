"""Homology-aware cross-validation folds: cluster a task's sequences with MMseqs2, then give whole clusters to folds.

Invariant: under ``folds: homology`` no cluster is split across folds (``assign_cluster_folds``
checks it), so a test sequence's close homologs, as MMseqs2 finds them, are never trained on
in that fold. MMseqs2 runs as the external program ``mmseqs`` (Debian package ``mmseqs2``)
through ``subprocess`` with an argument list, in a temporary directory that is removed
afterwards. This module knows nothing of torch.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from plmexit.data.formats import DEFAULT_HOMOLOGY_IDENTITY as DEFAULT_IDENTITY
from plmexit.data.formats import FOLD_METHODS  # noqa: F401 (re-exported: the fold methods beside their code)
from plmexit.errors import InputError, ToolError, one_line

log = logging.getLogger(__name__)

# Both sequences must be covered by 80% of the alignment (MMseqs2's default -c 0.8 with
# --cov-mode 0, which GraphPart's baseline also keeps): two chains count as homologs over their
# length, not because they share one domain, which would chain multi-domain proteins into
# one giant cluster.
COVERAGE = 0.8
COVERAGE_MODE = 0
# Connected components (BLASTclust-style single linkage) rather than MMseqs2's default greedy set
# cover: set cover links each member to its representative only, so two members of different
# clusters may still align above the threshold and land in different folds; with components,
# every pair MMseqs2 aligns above the thresholds ends up in one cluster. On DeepFRI's 1,919 EC
# test chains the largest cluster grows from 14 to 16 chains (1,297 -> 1,295 clusters).
CLUSTER_MODE = 1
# One thread: the prepare step is a one-core local job; clustering a few thousand sequences takes seconds.
THREADS = 1
PROGRAM = "mmseqs"
DEBIAN_PACKAGE = "mmseqs2"


@dataclass(frozen=True)
class Clustering:
    """How a task's sequences were clustered, as its task info records it."""

    method: str
    mmseqs_version: str
    min_seq_id: float
    coverage: float
    cov_mode: int
    cluster_mode: int
    n_sequences: int
    n_clusters: int
    largest_cluster: int
    singletons: int

    def to_json(self) -> dict:
        return asdict(self)


def _mmseqs() -> str:
    path = shutil.which(PROGRAM)
    if path is None:
        raise ToolError(
            f"folds: homology needs MMseqs2, but the program {PROGRAM!r} is not on PATH; install it "
            f"(Debian/Ubuntu: apt-get install {DEBIAN_PACKAGE}; conda: bioconda::mmseqs2) or set the task's folds: random"
        )
    return path


def _run(arguments: list[str], what: str) -> str:
    try:
        done = subprocess.run(arguments, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ToolError(f"MMseqs2 ({arguments[0]}) could not be started for {what}: {one_line(exc)}") from None
    if done.returncode != 0:
        said = one_line(done.stderr or done.stdout or "no output", 300)
        raise ToolError(f"MMseqs2 failed ({what}, exit {done.returncode}): {said}; fix what it says (`{' '.join(arguments[:2])} -h` lists its options) or set the task's folds: random")
    return done.stdout


def cluster_sequences(sequences: list[str] | pd.Series, identity: float = DEFAULT_IDENTITY) -> tuple[np.ndarray, Clustering]:
    """Cluster ``sequences`` with ``mmseqs easy-cluster``; each sequence's cluster (0..n-1, numbered by
    their first member in input order) and how the clustering was made."""
    if not 0 < identity <= 1:
        raise InputError(f"homology_identity is {identity}; expected a fraction in (0, 1], e.g. {DEFAULT_IDENTITY}")
    sequences = list(sequences)
    program = _mmseqs()
    version = _run([program, "version"], "version").strip()
    with tempfile.TemporaryDirectory(prefix="plmexit-mmseqs-") as directory:
        work = Path(directory)
        # Headers are row numbers: MMseqs2 keeps a header's first word as the id, and a task's
        # own ids may hold spaces or repeat after truncation.
        (work / "input.fasta").write_text("".join(f">{i}\n{s}\n" for i, s in enumerate(sequences)))
        _run(
            [
                program, "easy-cluster", str(work / "input.fasta"), str(work / "result"), str(work / "tmp"),
                "--min-seq-id", str(identity), "-c", str(COVERAGE), "--cov-mode", str(COVERAGE_MODE),
                "--cluster-mode", str(CLUSTER_MODE), "--threads", str(THREADS), "-v", "1",
            ],
            f"clustering {len(sequences)} sequences",
        )
        table = pd.read_csv(work / "result_cluster.tsv", sep="\t", header=None, names=["representative", "member"], dtype=int)
    if sorted(table["member"]) != list(range(len(sequences))):
        raise ToolError(f"MMseqs2 {version} clustered {table['member'].nunique()} of {len(sequences)} sequences; expected every one once")
    representative = table.set_index("member")["representative"].sort_index().to_numpy()
    # Clusters numbered by first appearance: the same sequences in the same order give the same numbers.
    _, first, clusters = np.unique(representative, return_index=True, return_inverse=True)
    clusters = np.argsort(np.argsort(first))[clusters]
    sizes = np.bincount(clusters)
    return clusters, Clustering(
        method="mmseqs easy-cluster", mmseqs_version=version, min_seq_id=identity, coverage=COVERAGE, cov_mode=COVERAGE_MODE,
        cluster_mode=CLUSTER_MODE, n_sequences=len(sequences), n_clusters=len(sizes), largest_cluster=int(sizes.max()),
        singletons=int((sizes == 1).sum()),
    )


def assign_cluster_folds(clusters: np.ndarray, labels: np.ndarray | None, n_folds: int, seed: int) -> np.ndarray:
    """Seeded k-fold assignment of whole clusters: scikit-learn's ``StratifiedGroupKFold`` where
    ``labels`` are given and some class has ``n_folds`` members (classes spread alike over folds),
    else ``GroupKFold`` (the largest clusters first, each into the smallest fold so far)."""
    clusters = np.asarray(clusters)
    n_clusters = len(np.unique(clusters))
    if n_folds < 2:
        raise InputError(f"cv_folds is {n_folds}; cross-validation needs at least 2 folds")
    if n_clusters < n_folds:
        raise InputError(
            f"{len(clusters)} sequences form {n_clusters} MMseqs2 clusters, fewer than {n_folds} folds; "
            "lower probe.cv_folds, raise the task's homology_identity, or set folds: random"
        )
    rng = np.random.default_rng(seed)
    # GroupKFold without shuffling breaks ties between equal-sized clusters by their label's order; a
    # seeded relabelling makes that order (and so the folds) depend on the seed.
    groups = rng.permutation(n_clusters)[np.unique(clusters, return_inverse=True)[1]]
    counts = pd.Series(labels).value_counts() if labels is not None else None
    if counts is not None and counts.max() >= n_folds:
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=int(rng.integers(2**31 - 1)))
        y = labels
        if counts.min() < n_folds:
            log.warning(
                "class %r has %d members, fewer than %d folds, so it is missing from some test folds "
                "(set min_class_size to %d to drop such classes)", counts.idxmin(), counts.min(), n_folds, n_folds,
            )
    else:
        splitter, y = GroupKFold(n_splits=n_folds), None
    folds = np.full(len(clusters), -1, dtype=int)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")  # logged above
        for fold, (_, test) in enumerate(splitter.split(np.zeros(len(clusters)), y, groups)):
            folds[test] = fold
    split = pd.DataFrame({"cluster": clusters, "fold": folds}).groupby("cluster")["fold"].nunique()
    if (folds < 0).any() or (split > 1).any():
        raise RuntimeError(f"cluster {split.idxmax()} was split across folds; this is a bug, please report it")
    sizes = np.bincount(folds, minlength=n_folds)
    if (sizes == 0).any():
        raise InputError(
            f"{len(clusters)} sequences in {n_clusters} MMseqs2 clusters left fold {int(np.argmin(sizes))} of {n_folds} empty; "
            "lower probe.cv_folds, raise the task's homology_identity, or set folds: random"
        )
    largest = int(np.bincount(np.unique(clusters, return_inverse=True)[1]).max())
    if largest > len(clusters) / n_folds:
        log.warning(
            "the largest MMseqs2 cluster holds %d of %d sequences, more than a fold's share (%d folds): fold sizes %s",
            largest, len(clusters), n_folds, ", ".join(map(str, sizes)),
        )
    return folds
