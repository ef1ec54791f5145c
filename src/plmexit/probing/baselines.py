"""Baselines a layer must beat: the chance predictor and a probe on features that need no language model.

Invariant: a baseline goes through the very procedure a layer does. The feature baselines
(``onehot``, ``composition``) are ``probes.probe_layer`` on their feature matrix with the task's
``ProbeSettings``: the same standardise + ridge/logistic, inner splits, grid and deploy fold.
The chance predictor is fitted on each fold's training rows only (training mean for regression,
majority class for classification, training class frequencies for multi-label: scikit-learn's
``DummyRegressor(strategy="mean")``, ``DummyClassifier(strategy="most_frequent")`` and
``DummyClassifier(strategy="prior")``); it has nothing to choose, so its inner score and
hyperparameter are NaN. Baselines do no file I/O.
"""

from __future__ import annotations

import numpy as np

from plmexit.errors import InputError
from plmexit.probing import probes
from plmexit.probing.folds import FoldFit, fit_parts

CHANCE = "chance"
ONEHOT = "onehot"
COMPOSITION = "composition"
# Which feature baseline a task gets: one-hot of the variant for a variant set (sequences that
# differ from one wild type at a few positions), amino-acid composition plus length for a set of
# distinct proteins (where a position means nothing across rows).
FEATURE_BASELINES = (ONEHOT, COMPOSITION)
# The 20 standard amino acids, as composition counts them; other letters (X, U, B, ...) count
# towards the length only.
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
# The one-hot's end-of-sequence and padding symbols (ProteinNPT's <eos> and <pad> tokens): never residue letters.
END, PAD = "\x03", "\x00"


def onehot_features(sequences) -> np.ndarray:
    """One-hot of each sequence's residue at each position ``(n, D)``, keeping only the columns that vary over the rows.

    ProteinGym's supervised one-hot baseline (ProteinNPT, ``aa_embeddings: One_hot_encoding``)
    one-hot encodes every token of the sequence over the ESM-1b alphabet, ``(L + 2) x 33`` columns
    with the BOS and EOS tokens, shorter sequences right-padded; this encodes the same symbols (the
    end and the padding too, so variants of different lengths get ProteinNPT's columns). Standardisation maps a column
    that is constant over all rows to 0 on every row (StandardScaler's scale 1, its mean
    subtracted), so such a column changes no fit and no prediction; dropping it is exact, and
    leaves a few columns per mutated position instead of ``33 (L + 2)``. Columns are ordered by
    position, then by residue letter.
    """
    sequences = [str(s) for s in sequences]
    if not sequences:
        return np.zeros((0, 0))
    width = max(len(s) for s in sequences) + 1
    letters = np.array([list((s + END).ljust(width, PAD)) for s in sequences])  # (n, L + 1) characters
    columns = []
    for position in np.flatnonzero((letters != letters[0]).any(axis=0)):
        for letter in np.unique(letters[:, position]):
            columns.append(letters[:, position] == letter)
    if not columns:
        return np.zeros((len(sequences), 0))
    return np.stack(columns, axis=1).astype(np.float64)


def composition_features(sequences) -> np.ndarray:
    """Each sequence's fraction of each of the 20 standard amino acids, then its length ``(n, 21)``."""
    rows = []
    for sequence in sequences:
        sequence = str(sequence)
        if not sequence:
            raise InputError("an empty sequence has no amino-acid composition; drop it from the task table")
        rows.append([sequence.count(a) / len(sequence) for a in AMINO_ACIDS] + [len(sequence)])
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(AMINO_ACIDS) + 1)


FEATURES = {ONEHOT: onehot_features, COMPOSITION: composition_features}


def chance_fits(y: np.ndarray, folds: np.ndarray, settings: probes.ProbeSettings) -> list[FoldFit]:
    """The chance predictor per evaluation fold and on the deploy fold, in ``probes.probe_layer``'s layout.

    Fitted on the training rows only (the deploy fold on ``folds.deploy_rows``, as a layer's): their mean (regression), their most frequent class, the
    smallest label among ties as ``DummyClassifier`` breaks them (classification), or their
    frequency of each class as every row's probability (multi-label).
    """
    fits = []
    for fold, train, test in fit_parts(folds):
        if settings.task_type == "regression":
            predictions = np.full(len(test), np.asarray(y[train], dtype=np.float64).mean())
        elif settings.task_type == "classification":
            classes, counts = np.unique(y[train], return_counts=True)
            predictions = np.repeat(classes[np.argmax(counts)], len(test))
        else:
            predictions = np.tile(np.asarray(y[train], dtype=np.float64).mean(axis=0), (len(test), 1))
        fits.append(FoldFit(fold, test, predictions, float("nan"), float("nan"), float("nan")))
    return fits


def probe_baselines(
    sequences, y: np.ndarray, folds: np.ndarray, settings: probes.ProbeSettings, features: str, positions: np.ndarray | None = None,
) -> dict[str, list[FoldFit]]:
    """``{CHANCE: fits, features: fits}``: the chance predictor and the ``features`` baseline probed as a layer is."""
    if features not in FEATURES:
        raise InputError(f"baseline features {features!r} are not one of {', '.join(FEATURES)} (--baseline-features)")
    X = FEATURES[features](sequences)
    if X.shape[1] == 0:
        # Every sequence is the same: one constant column, which probe_layer reports as carrying no signal.
        X = np.zeros((len(X), 1))
    return {CHANCE: chance_fits(y, folds, settings), features: probes.probe_layer(X, y, folds, settings, positions)}
