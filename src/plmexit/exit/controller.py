"""The exit controller: walk the layers in order, leave at the first whose gate passes, else fall back.

Invariant: a controller only ever reads layers ``first_layer .. reference_layer``; a row whose gate
never passes leaves at ``reference_layer`` (the full depth ``L``, or the deployed layer), whose
prediction is the reference every disagreement is measured against, so a row that falls back never
disagrees. A threshold of ``inf`` never exits early (every row falls back). Only numpy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from plmexit.errors import InputError
from plmexit.settings import FALLBACKS, ControllerSettings  # noqa: F401 - re-exported: declared with the other settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Controller:
    """One gate at one threshold over layers ``first_layer .. reference_layer``."""

    gate: str
    threshold: float
    first_layer: int
    reference_layer: int

    def __post_init__(self):
        if not 0 <= self.first_layer <= self.reference_layer:
            raise InputError(
                f"exit.first_layer {self.first_layer} is past the reference layer {self.reference_layer}; "
                "lower exit.first_layer or fall back to full depth (exit.fallback: full)"
            )

    def exit_layers(self, scores: np.ndarray) -> np.ndarray:
        """``(n,)`` each row's exit layer, from gate ``scores`` ``(L + 1, n)``."""
        walked = scores[self.first_layer : self.reference_layer]  # the reference layer is where every row ends anyway
        passes = walked >= self.threshold
        first = np.argmax(passes, axis=0) + self.first_layer
        return np.where(passes.any(axis=0), first, self.reference_layer).astype(int)


def reference_layer(fallback: str, n_layers: int, deployed_layer: int | None) -> int:
    """The layer rows fall back to and are compared with: ``L`` for ``full``, the deployed layer for ``deployed``."""
    if fallback not in FALLBACKS:
        raise InputError(f"exit.fallback {fallback!r} is not one of {', '.join(FALLBACKS)}")
    if fallback == "full":
        return n_layers
    if deployed_layer is None:
        raise InputError("exit.fallback is 'deployed' but the task has no deployed layer (no layer carries a signal); use exit.fallback: full")
    return int(deployed_layer)


def at_layers(outputs: np.ndarray, layers: np.ndarray) -> np.ndarray:
    """Each row's output at its own layer: ``outputs[layers[i], i]``."""
    return outputs[np.asarray(layers, dtype=int), np.arange(outputs.shape[1])]


def warn_calibration(name: str, controllers: str, over: int, uncertified: int, total: int, settings: ControllerSettings, fallback: str) -> None:
    """Log what a reader of a test table must know: how many of ``total`` calibrated ``controllers`` went over the
    risk budget on test units (about ``delta`` of them may, when calibration and test units are exchangeable), and
    how many certified no threshold (their units all take ``fallback``)."""
    if over:
        log.warning(
            "%s: test disagreement above epsilon %.3g in %d of %d %s; expected in about delta (%.3g) of them "
            "when calibration and test units are exchangeable", name, settings.epsilon, over, total, controllers, settings.delta,
        )
    if uncertified:
        log.warning("%s: no threshold certified in %d of %d %s; %s", name, uncertified, total, controllers, fallback)
