"""The steps that read a model's own head at every layer: logit lens on a task, zero-shot scoring of an assay.

Invariant: as every module of ``plmexit.pipeline`` (one function per CLI command, reading inputs,
calling the computing modules in ``plmexit.depth``, writing outputs atomically); the model is
loaded only by ``depth.loading.load_masked_lm``, the one place that knows which backend a manifest names.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from plmexit.atomic import atomic_path, write_text
from plmexit.data import proteingym, tasks
from plmexit.depth import lens, zero_shot
from plmexit.depth.loading import load_masked_lm, provenance
from plmexit.models import manifest as model_manifests

log = logging.getLogger(__name__)


def _write_tsv(table: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.8g")


def lens_task(
    model: str | Path, task: str | Path, out: str | Path, skip_out: str | Path, exit_out: str | Path, info_out: str | Path,
    task_name: str, sample: int = 64, mask_fraction: float = lens.DEFAULT_MASK_FRACTION, seed: int = 0,
    device: str = "cpu", engine: str = "exact", max_tokens: int = 4096, skip_blocks: bool = True,
) -> lens.LensResult:
    """Logit lens, block skipping and exit consistency on a seeded masked sample of a task's sequences.

    Writes three long TSVs, each led by ``model, task`` (the model's id from its manifest): ``out`` (``lens, layer, metric, value``),
    ``skip_out`` (``block, layer, metric, value``; header only with ``skip_blocks=False``),
    ``exit_out`` (``layer, n_positions, fraction, cumulative_fraction``), and ``info_out`` JSON:
    the sample, the masking, the summary numbers and the model's provenance.
    """
    lens.check_sampling(sample, mask_fraction)
    table = tasks.read_task_table(task)
    manifest = model_manifests.read_manifest(model)
    lm = load_masked_lm(manifest, model, device, engine)
    masked = lens.mask_sample(list(table["id"]), list(table["sequence"]), sample, mask_fraction, seed, lm.max_residues)
    result = lens.analyse(lm, masked, max_tokens, skip_blocks)
    for frame, path in ((result.lens, out), (result.skip, skip_out), (result.exit, exit_out)):
        _write_tsv(pd.concat([pd.DataFrame({"model": manifest["id"], "task": task_name}, index=frame.index), frame], axis=1), path)
    info = {"task": task_name, **result.summary, "sample_ids": masked.ids, **provenance(lm, manifest, device, engine)}
    write_text(info_out, json.dumps(info, indent=2) + "\n")
    return result


def zero_shot_assay(
    model: str | Path, assay: str | Path, reference: str | Path, dms_id: str, out_long: str | Path, out_proteingym: str | Path,
    info_out: str | Path, calibration_fraction: float = 0.2, seed: int = 0, device: str = "cpu",
    engine: str = "exact", batch_size: int | None = None,
) -> zero_shot.ZeroShotScores:
    """Score a ProteinGym assay at every layer (masked and wild-type marginals, calibrated DoLa and SLED).

    Writes ``out_long`` (TSV ``model, dms_id, layer, method, subset, metric, value``; the model's id
    from its manifest), ``out_proteingym`` (ProteinGym's per-assay zero-shot CSV, one score column
    per layer and method named from the model's own name, see ``zero_shot.proteingym_table``) and ``info_out`` (JSON: what the model read, the calibration
    choices, provenance).
    """
    table, target, mutations = proteingym.read_zero_shot_assay(assay, reference, dms_id)
    manifest = model_manifests.read_manifest(model)
    lm = load_masked_lm(manifest, model, device, engine)
    batch_size = batch_size or zero_shot.default_batch_size(device)
    scores, plan = zero_shot.score_variants(
        lm, target, mutations, table["DMS_score"].to_numpy(), calibration_fraction, seed, batch_size, source=str(assay),
    )
    binary = table["DMS_score_bin"].to_numpy() if "DMS_score_bin" in table.columns else None
    long = zero_shot.metrics_table(scores, table["DMS_score"].to_numpy(), binary)
    long.insert(0, "dms_id", dms_id)
    long.insert(0, "model", manifest["id"])
    _write_tsv(long, out_long)
    with atomic_path(out_proteingym) as tmp:
        zero_shot.proteingym_table(table, scores, manifest["name"], lm.num_layers).to_csv(tmp, index=False, float_format="%.8g")
    info = {
        "dms_id": dms_id, "n_variants": len(table), "n_mutated_positions": len(plan.positions),
        "scoring": plan.info(), "batch_size": batch_size, "calibration": scores.choices, "has_DMS_score_bin": binary is not None,
        **provenance(lm, manifest, device, engine),
    }
    write_text(info_out, json.dumps(info, indent=2) + "\n")
    return scores
