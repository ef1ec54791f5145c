"""The task formats: one registry of every config ``kind`` and what it takes.

Invariant: this table is the only place a format is described. The planner (which tasks a config
entry makes and which files they read), the command line (``prepare --format``), the loader
(which reader reads it) and a test of the config schema all read it. It imports only the
standard library, so planning a workflow does not load pandas or the readers; a reader is named
as ``module:function`` and imported when a task of its kind is read.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Format:
    kind: str
    task_type: str | None  # the task type a benchmark implies; None where the config states it (csv, fasta)
    file_roles: tuple[str, ...]  # config keys (and `prepare` flags) naming its files; values are local paths or pinned file keys
    options: tuple[str, ...]  # other config keys it accepts, beyond COMMON_KEYS
    reader: str  # "module:function" returning (reader's table, split description or None)
    # The feature baseline its probes must beat (plmexit.probing.baselines): "onehot" for a variant set, else "composition".
    baseline: str = "composition"
    # How a cross-validated task of this kind is folded unless its entry says (plmexit.data.homology.FOLD_METHODS):
    # DeepFRI's EC chains are only 95%-identity non-redundant, so random folds would put close homologs on both sides.
    default_folds: str = "random"


# Options of the kinds that can be cross-validated (no official split in their files): how folds are made.
FOLD_KEYS = ("folds", "homology_identity")
# The values of ``folds``: seeded k-fold of sequences, or of whole MMseqs2 clusters (plmexit.data.homology).
FOLD_METHODS = ("random", "homology")
# Minimum sequence identity for two sequences to share a cluster: 30%, the threshold of GraphPart
# (the homology partitioning tool of the DeepLoc 2.0 group; graph-part/graph-part README and its
# MMseqs2 baseline benchmarking/baselines/homology_partition_mmseqs2.py, easy-cluster --min-seq-id 0.3),
# about where sequence identity stops implying homology (the "twilight zone").
DEFAULT_HOMOLOGY_IDENTITY = 0.3


FORMATS = {
    f.kind: f
    for f in (
        Format("csv", None, ("path", "test_path"), ("sequence_column", "label_column", "id_column", "fold_column", *FOLD_KEYS), "plmexit.data.tasks:read_csv_task"),
        Format("fasta", None, ("path", "test_path"), ("label_regex", *FOLD_KEYS), "plmexit.data.tasks:read_fasta_task"),
        Format("proteingym", "regression", ("reference",), ("assays", "filter", "assay_dir", "archive", "fold_schemes"), "plmexit.data.proteingym:read_assay", baseline="onehot"),
        Format("deeploc", "classification", ("path", "test_path"), ("labels", *FOLD_KEYS), "plmexit.data.datasets:read_deeploc"),
        Format("deepfri_ec", "multilabel", ("path", "annotations", "ids_path", "test_ids_path"), FOLD_KEYS, "plmexit.data.datasets:read_deepfri_ec", default_folds="homology"),
        Format("deepsol", "classification", ("path", "labels_path", "test_path", "test_labels_path"), FOLD_KEYS, "plmexit.data.datasets:read_deepsol"),
        Format("flip", "regression", ("path",), ("split",), "plmexit.data.datasets:read_flip"),
    )
}
# Keys every task entry may have, whatever its kind.
COMMON_KEYS = ("id", "kind", "type", "metric", "max_sequences", "min_class_size")
TASK_TYPES = ("regression", "classification", "multilabel")
# Every file role of any format, besides ``path`` (the main file all but proteingym have): TaskSpec's file fields.
FILE_FIELDS = tuple(dict.fromkeys(role for f in FORMATS.values() for role in f.file_roles if role != "path"))
