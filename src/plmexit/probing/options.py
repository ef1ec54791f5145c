"""The probe settings the command line offers, in a module that imports nothing heavy.

Invariant: ``probes.ProbeSettings`` and ``ridge`` take these from here, so the two never differ; the
command line builds every subcommand's parser in every ``plmexit`` process, and importing scipy
and scikit-learn for these defaults cost each pipeline step over a second of start-up.
"""

from __future__ import annotations

# Regularisation grids wide enough for standardised features of any ESM2 width (320 to 5120).
# Half-decade steps, written as the config schema writes its defaults (tests/test_config.py holds
# the schema, the command line and these to one value), so `plmexit probe` run by hand fits the
# pipeline's grid.
DEFAULT_RIDGE_ALPHAS = (0.1, 0.316, 1.0, 3.16, 10.0, 31.6, 100.0, 316.0, 1000.0, 3160.0, 10000.0, 31600.0, 100000.0)
DEFAULT_LOGISTIC_CS = (0.0001, 0.001, 0.01, 0.1, 1.0, 10.0)  # 10^-4 .. 10^1, one decade apart
# How a ridge probe's training part is split to choose alpha and score the layer: exact
# leave-one-out over variants, or K folds of whole mutated positions built by the rule of
# ProteinGym's modulo or contiguous scheme (``folds.inner_groups``).
INNER_SPLITS = ("loo", "modulo", "contiguous")
