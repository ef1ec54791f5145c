"""How embeddings are made: what every store records beside its settings (``plmexit.settings.EmbedSettings``).

Invariant: nothing here imports torch, so the command line and the workflow can name and check
embedding settings without loading it; ``plmexit.embedding.engine`` does the work.
"""

from __future__ import annotations

from plmexit.settings import (  # noqa: F401 - re-exported: declared once with the other settings
    ESM2_MAX_RESIDUES,
    LAYER_NORM_CONVENTIONS,
    LONG_SEQUENCE_MODES,
    PRECISION_NAMES,
    EmbedSettings,
)

POOLING = "mean over residue positions (special tokens such as BOS and EOS, and padding, excluded)"
# What each precision computes. A reduced precision runs only where the device computes it natively
# (``engine.resolve_precision``); elsewhere the forward runs in float32, with the reason logged and
# recorded in the store (``precision`` is what ran, ``precision_requested`` what the config asked).
PRECISION_DESCRIPTIONS = {
    "float32": "every operation in float32",
    "bfloat16": "weights and activations in bfloat16 (GPUs with bf16; CPUs with AVX512-BF16 or AMX), pooling in float32",
    "float16": "weights and activations in float16 (GPUs; CPUs with AVX512-FP16 or AMX-FP16), pooling in float32",
    "int8": "CPU only: the linear layers' weights int8 (per output channel), their inputs quantised to int8 per "
    "batch at run time (dynamic quantisation), except each block's attention output projection; embeddings, "
    "layer norms, attention, the attention output projection and pooling in float32",
}
# Precisions measured to move probe results beyond fold-to-fold noise on real tasks
# (benchmarks/precision_science.py, benchmarks/results/precision_science_*.json); using one logs
# this warning. Why: a single substitution moves a mean-pooled vector by about 1/length of its
# scale (0.35% on 286-residue BLAT_ECOLX), the same size as bf16's (~0.5%) and int8's (~1%)
# rounding of it, so variant-effect probes lose signal; whole-protein tasks (DeepLoc) differ by
# far more than that between proteins.
_VARIANT_RISK = (
    "on variant sets (one target's substitutions) its rounding is as large as a substitution's effect on the pooled "
    "vector and it moved BLAT_ECOLX probe scores and the deployed layer beyond fold-to-fold noise "
    "(benchmarks/results/precision_science_*.json); use float32 for ProteinGym-style tasks"
)
# int8 also moved DeepLoc membrane-vs-soluble's deployed layer (0 to 2, outside fp32's one-standard-error
# ties; per-layer scores and the gain within fold noise) on a quick run (random ESM2-8M architecture,
# 69 proteins: benchmarks/results/precision_science_deeploc_quick_2026-11-30_cpu2_loaded.json);
# bf16 and fp16 left both DeepLoc tasks unchanged.
_INT8_WHOLE_PROTEIN_RISK = (
    "; on DeepLoc (membrane vs soluble) it also moved the deployed layer outside fp32's ties, though no layer's score "
    "or the gain moved beyond fold noise: check the chosen layer against a float32 run before relying on it"
)
PRECISION_SCIENCE_WARNINGS: dict[str, str] = {"bfloat16": _VARIANT_RISK, "int8": _VARIANT_RISK + _INT8_WHOLE_PROTEIN_RISK}


def check_depth(depth: int | None, num_layers: int) -> int:
    """The depth an encoder's forward stops at: ``num_layers`` when None, else ``depth`` within ``0..num_layers``."""
    depth = num_layers if depth is None else depth
    if not 0 <= depth <= num_layers:
        raise ValueError(f"depth {depth} is outside 0..{num_layers}")
    return depth
