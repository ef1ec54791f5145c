"""Before anything is submitted: the tokens each model will embed, and the GPU-hours they cost.

Invariant: the tokens are those ``embed`` will run, counted by the embedding's own functions
(``embedding.inputs.embedded_sequences`` for truncation, windows and a ProteinGym assay's crop, then
``pieces.work_tokens``) on the tasks as ``prepare`` reads them; only the task files are read,
nothing is embedded. Hours are tokens over a throughput the user gives or that a previous run's
cost files measured (``sample_tokens / seconds`` at full depth, on the device that run used).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd

from plmexit.data import loading, proteingym, sources
from plmexit.data.tasks import TaskSpec
from plmexit.embedding import pieces
from plmexit.embedding.inputs import embedded_sequences
from plmexit.errors import ConfigError
from plmexit.pipeline.planning import DEFAULT_REFERENCE, TASK_OPTION_KEYS, Plan
from plmexit.settings import EmbedSettings

# A config entry's option key -> the TaskSpec field it sets (the rest are spelled alike).
SPEC_FIELD = {"labels": "localization"}


def local_file(plan: Plan, value: str) -> Path:
    """Where a task file can be read now: a pinned file from data.local_dir or, once fetched (or staged from its archive), from
    <results>/data; any other value is the path itself."""
    if value in sources.PINNED_FILES and plan.data.get("local_dir"):
        path = Path(plan.data["local_dir"]) / value
    else:
        path = Path(plan.data_path(value))
    if not path.is_file():
        raise ConfigError(
            f"{path}: not there yet; fetch the task files first (`snakemake --cores 1 --until fetch_data stage_assay` downloads them on this node, "
            "submitting nothing) or stage them"
        )
    return path


def task_spec(plan: Plan, task: str) -> TaskSpec:
    """The ``TaskSpec`` the ``prepare`` rule builds for ``task`` (same files, options, folds and seed)."""
    t = plan.task(task)
    entry = t.entry
    files = {role: local_file(plan, value) for role, value in t.files.items()}
    options = {SPEC_FIELD.get(key, key): entry[key] for key in TASK_OPTION_KEYS if entry.get(key) is not None}
    return TaskSpec(
        name=task, format=t.kind, type=t.type, dms_id=t.dms_id, fold_scheme=t.scheme,
        cv_folds=plan.config["probe"]["cv_folds"], seed=plan.config["seed"],
        **files, **options,
    )


def embed_settings(plan: Plan) -> EmbedSettings:
    e = plan.config["embed"]
    return EmbedSettings(
        max_tokens=e["max_tokens"], truncate=e["truncate"], layer_norm=e["layer_norm"], precision=e["precision"],
        long_sequences=e["long_sequences"], window=e["window"], overlap=e["overlap"],
    )


def set_tokens(plan: Plan, embedding_set: str) -> tuple[int, int]:
    """``(sequences, tokens)`` one model embeds for an embedding set (two special tokens a piece, as ESM2, BERT and ESM-C)."""
    task = plan.embedding_sets[embedding_set]
    spec = task_spec(plan, task)
    table = loading.load_task(spec)
    sequences, _, settings, _ = embedded_sequences(table, embed_settings(plan), plan.is_variant_set(embedding_set), spec.path)
    return len(sequences), pieces.work_tokens(sequences, settings)


def choose_now(plan: Plan, directory: Path):
    """A ``chosen_assays`` for the plan that applies each filtered entry's filter to its reference table
    here, as the ``choose_assays`` checkpoint will (``proteingym.select_assays``)."""

    def chosen(entry_id: str) -> str:
        entry = plan._filtered(entry_id)
        reference = proteingym.read_reference(local_file(plan, entry.get("reference", DEFAULT_REFERENCE)))
        f = entry["filter"]
        ids = proteingym.select_assays(reference, f.get("selection_type"), f.get("max_length"), f.get("max_variants"))
        path = directory / f"{entry_id}.txt"
        path.write_text("".join(f"{i}\n" for i in ids))
        return str(path)

    return chosen


def measured_throughput(plan: Plan, model: str) -> tuple[float, str] | None:
    """Tokens per second of ``model`` at full depth over a previous run's cost files, and the devices they ran on."""
    files = sorted(Path(plan.results, "cost", model).glob("*.json"))
    if not files:
        return None
    costs = [json.loads(f.read_text()) for f in files]
    tokens = sum(c["sample_tokens"] for c in costs)
    seconds = sum(c["seconds"][-1] for c in costs)
    devices = sorted({f"{c['device_name']} ({c['precision']})" for c in costs})
    return tokens / seconds, f"measured: {len(files)} cost files of {plan.results}, {', '.join(devices)}"


def estimate(plan: Plan, throughput: dict[str, float]) -> pd.DataFrame:
    """One row per model: embedding sets, sequences and tokens to embed, and the hours at the given
    throughput (tokens/s; else the previous run's measured one; else none)."""
    unknown = sorted(set(throughput) - set(plan.models))
    if unknown:
        raise ConfigError(f"--tokens-per-second {unknown[0]}: no model of that id in the config (ids: {', '.join(plan.models)})")
    with tempfile.TemporaryDirectory() as tmp:
        plan.chosen_assays = choose_now(plan, Path(tmp))
        pairs = plan.pairs()
    counted: dict[str, tuple[int, int]] = {}
    rows = []
    for model in plan.models:
        sets = sorted({plan.task(t).embedding_set for m, t in pairs if m == model})
        for s in sets:
            if s not in counted:
                counted[s] = set_tokens(plan, s)
        sequences = sum(counted[s][0] for s in sets)
        tokens = sum(counted[s][1] for s in sets)
        if model in throughput:
            rate, source = throughput[model], "given"
        else:
            rate, source = measured_throughput(plan, model) or (float("nan"), "none: give --tokens-per-second MODEL=N")
        rows.append({
            "model": model, "embedding_sets": len(sets), "sequences": sequences, "tokens": tokens,
            "tokens_per_second": rate, "gpu_hours": tokens / rate / 3600, "throughput": source,
        })
    return pd.DataFrame(rows)

