"""The probe grids and inner splits the command line offers, re-exported from ``plmexit.settings``.

Invariant: ``probes.ProbeSettings`` and ``ridge`` take these from here (declared in ``plmexit.settings``); the
command line builds every subcommand's parser in every ``plmexit`` process, and importing scipy
and scikit-learn for these defaults cost each pipeline step over a second of start-up.
"""

from __future__ import annotations

from plmexit.settings import DEFAULT_LOGISTIC_CS, DEFAULT_RIDGE_ALPHAS, INNER_SPLITS  # noqa: F401 - re-exported
