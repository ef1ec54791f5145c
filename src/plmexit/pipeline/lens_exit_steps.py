"""The head's exit step: the exit gates and Learn-then-Test on the logit lens of a task's masked sample, and their summary.

Invariant: as every module of ``plmexit.pipeline`` (one function per CLI command, reading inputs,
calling the computing modules in ``plmexit.exit`` and ``plmexit.depth``, writing outputs
atomically); the model is loaded by ``depth.loading.load_masked_lm`` and the sample drawn by
``depth.lens.mask_sample``, as the lens diagnostics do (same seed and size: the same positions).
The controllers are calibrated on a seeded part of the sampled sequences and reported on the
others, never on a sequence they were calibrated on; the reference is the final layer's prediction.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from plmexit.atomic import write_json, write_text
from plmexit.data import tasks
from plmexit.errors import InputError
from plmexit.exit import calibration, gates
from plmexit.exit.controller import warn_calibration
from plmexit.pipeline.reading import read_tsv
from plmexit.settings import LensExitSettings  # noqa: F401 - re-exported: declared with the other settings

log = logging.getLogger(__name__)

# One row per static layer (every test position read there) and per gate and unit (position or sequence) calibrated.
# n_calibration, n_test: sequences (the exchangeable unit of both controllers); position_risk: the mean over test
# sequences of each one's fraction of disagreeing masked positions (the per-position controller's certified risk).
LENS_EXIT_COLUMNS = [
    "model", "set", "gate", "unit", "kind", "layer", "threshold", "certified", "n_calibration", "n_test", "disagreement",
    "position_risk", "sequence_disagreement", "accuracy", "final_accuracy", "mean_layer", "layers_saved", "fraction_early",
]

SUMMARY_COLUMNS = [
    "model", "set", "gate", "unit", "threshold", "certified", "n_calibration", "n_test", "risk", "over_epsilon", "disagreement",
    "position_risk", "sequence_disagreement", "accuracy", "final_accuracy", "mean_layer", "layers_saved", "fraction_early",
]
UNITS = ("position", "sequence")


def lens_exit_task(
    model: str | Path, task: str | Path, out: str | Path, info_out: str | Path, set_name: str, settings: LensExitSettings,
    device: str = "cpu", engine: str = "exact", max_tokens: int = 4096,
) -> pd.DataFrame:
    """Per gate, a per-position and a per-sequence controller on the logit lens of a seeded masked sample of a task's sequences.

    Writes ``out`` (TSV, ``LENS_EXIT_COLUMNS``: every static layer and each calibrated controller on the test
    sequences' masked positions) and ``info_out`` (JSON: the settings, the sample, which sequences calibrate,
    the thresholds tested in sequence with their p-values, provenance).
    """
    from plmexit.depth import lens  # torch and the model only in this step, not in the summary
    from plmexit.depth.loading import load_masked_lm, provenance
    from plmexit.exit import lens_exit
    from plmexit.models import manifest as model_manifests

    lens.check_sampling(settings.sample, settings.mask_fraction)
    calibration.check_budget(settings.epsilon, settings.delta)
    for gate in settings.gates:
        gates.check_gate(gate, "classification")
    lens_exit.calibration_split(settings.sample, settings.calibration_fraction, settings.seed)  # settings it cannot split, before the model loads
    table = tasks.read_task_table(task)
    manifest = model_manifests.read_manifest(model)
    lm = load_masked_lm(manifest, model, device, engine)
    masked = lens.mask_sample(list(table["id"]), list(table["sequence"]), settings.sample, settings.mask_fraction, settings.seed, lm.max_residues)
    is_cal = lens_exit.calibration_split(len(masked.ids), settings.calibration_fraction, settings.seed)
    probs, truth, sequence = lens_exit.lens_outputs(lm, masked, max_tokens)
    L = lm.num_layers
    first_layer = min(settings.first_layer, L)
    needed = calibration.smallest_certifiable(settings.epsilon, settings.delta)
    if is_cal.sum() < needed:
        log.warning("%s/%s: %d calibration sequences cannot certify any threshold, per position or per sequence, at epsilon %.3g, delta %.3g (it takes %d); "
                    "raise exit.lens_sample", manifest["id"], set_name, is_cal.sum(), settings.epsilon, settings.delta, needed)
    n_cal_positions, n_test_positions = int(is_cal[sequence].sum()), int((~is_cal[sequence]).sum())
    n_test_sequences = len(np.unique(sequence[~is_cal[sequence]]))
    rows = [
        {"model": manifest["id"], "set": set_name, "gate": "-", "unit": "-", "kind": "static", "n_calibration": 0, "n_test": n_test_sequences, **numbers}
        for numbers in lens_exit.static_lens_layers(probs, truth, sequence, is_cal)
    ]
    details = []
    for gate in settings.gates:
        found = lens_exit.calibrate_lens_exit(
            probs, truth, sequence, gate, settings.epsilon, settings.delta, settings.calibration_fraction, settings.seed,
            settings.n_thresholds, settings.max_patience, first_layer,
        )
        for unit in UNITS:
            numbers = dict(found[unit])
            details.append({"gate": gate, "unit": unit, "certified": numbers["certified"], "threshold": numbers["threshold"], "tested": numbers.pop("tested")})
            rows.append({"model": manifest["id"], "set": set_name, "gate": gate, "unit": unit, "kind": "calibrated", **numbers})
    result = pd.DataFrame(rows, columns=LENS_EXIT_COLUMNS)
    calibrated = result[result.kind == "calibrated"]
    risk = np.where(calibrated.unit == "sequence", calibrated.sequence_disagreement, calibrated.position_risk)
    warn_calibration(
        f"{manifest['id']}/{set_name}", "head-exit controllers", int((risk > settings.epsilon).sum()),
        int((~calibrated.certified.astype(bool)).sum()), len(calibrated), settings, "those units all run to the final layer",
    )
    write_text(out, result.to_csv(sep="\t", index=False, float_format="%.6g"))
    info = {
        "set": set_name, "n_layers": L, "settings": asdict(settings), **masked.info(),
        "n_calibration_positions": n_cal_positions, "n_test_positions": n_test_positions, "smallest_certifiable": needed,
        "calibration_ids": [masked.ids[i] for i in np.flatnonzero(is_cal)], "test_ids": [masked.ids[i] for i in np.flatnonzero(~is_cal)],
        "reference": "the final layer's top-1 residue at each masked position (the model's own output)",
        "lens": "standard logit lens: the final norm, then the model's own head, on each layer's state at a masked position",
        "units": {
            "position": "each masked position exits at the first layer whose gate passes there; it disagrees when its top-1 differs from the final layer's; "
                        "its risk (position_risk) is the mean over sequences of each sequence's fraction of disagreeing masked positions",
            "sequence": "a sequence exits at the first layer where the gate passes at every one of its masked positions; it disagrees when any of them does",
        },
        "guarantee": "Learn-then-Test, fixed-sequence testing from the most conservative threshold over the calibration sequences (the "
                     "exchangeable unit; positions of one sequence are dependent): exact binomial p-values for the per-sequence risk (0/1 per "
                     "sequence), Hoeffding-Bentkus p-values for the per-position risk (a [0, 1] fraction per sequence); with probability at "
                     "least 1 - delta over the calibration sequences, each controller's risk <= epsilon on sequences exchangeable with them "
                     "(not the position-weighted disagreement, nor any one sequence's)",
        "compute": "only the sequence unit saves forward compute (a sequence leaves the network); layers_saved = 1 - mean exit layer / L of the unit",
        "controllers": details,
        **provenance(lm, manifest, device, engine),
    }
    write_json(info_out, info)
    return result



def summarize_lens_exit_tables(tables: list[str | Path], epsilon: float, out: str | Path) -> pd.DataFrame:
    """The calibrated controllers of every head-exit table, one row each, with the risk they were calibrated to
    (per position: ``position_risk``; per sequence: ``sequence_disagreement``) and whether it exceeds ``epsilon`` on test."""
    parts = []
    for path in tables:
        part = read_tsv(path, "head-exit table", "`plmexit lens-exit`")
        if list(part.columns) != LENS_EXIT_COLUMNS:
            raise InputError(f"{path}: columns {list(part.columns)} are not {LENS_EXIT_COLUMNS}; rerun `plmexit lens-exit`")
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=LENS_EXIT_COLUMNS)
    calibrated = frame[frame["kind"] == "calibrated"].copy()
    calibrated["risk"] = np.where(calibrated["unit"] == "sequence", calibrated["sequence_disagreement"], calibrated["position_risk"])
    calibrated["over_epsilon"] = calibrated["risk"] > epsilon
    summary = calibrated.sort_values(["model", "set", "gate", "unit"])[SUMMARY_COLUMNS]
    write_text(out, summary.to_csv(sep="\t", index=False, float_format="%.6g"))
    return summary
