"""How embeddings are made: the settings every store records, and their allowed values.

Invariant: nothing here imports torch, so the command line and the workflow can name and check
embedding settings without loading it; ``plmexit.embedding.engine`` does the work.
"""

from __future__ import annotations

from dataclasses import dataclass

from plmexit.errors import EmbedError
from plmexit.models.families import ESM2_MAX_RESIDUES

# "Final norm" is each family's norm after the last block (ESM2: emb_layer_norm_after; ESM-C: norm;
# T5: encoder.final_layer_norm); BERT and ALBERT have none (post-LN blocks), so both conventions
# are the same for them (models.families: final_norm).
LAYER_NORM_CONVENTIONS = {
    "raw": "hidden states as the model returns them: raw residual stream for layers 0..L-1, "
    "the final norm (ESM2: emb_layer_norm_after) applied to layer L only",
    "final": "the final norm (ESM2: emb_layer_norm_after) applied to every layer 0..L, so probing layer k equals "
    "shipping the first k blocks plus the final norm",
}
POOLING = "mean over residue positions (special tokens such as BOS and EOS, and padding, excluded)"
LONG_SEQUENCE_MODES = ("truncate", "window")
PRECISION_NAMES = ("float32", "bfloat16", "float16", "int8")
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


@dataclass(frozen=True)
class EmbedSettings:
    """How to embed; every field is recorded in the store."""

    max_tokens: int = 4096
    truncate: int = ESM2_MAX_RESIDUES
    layer_norm: str = "raw"
    device: str = "cpu"
    precision: str = "float32"
    long_sequences: str = "truncate"
    window: int = ESM2_MAX_RESIDUES
    overlap: int = 256

    def check(self) -> None:
        if self.layer_norm not in LAYER_NORM_CONVENTIONS:
            raise ValueError(f"unknown layer_norm {self.layer_norm!r}")
        if self.precision not in PRECISION_NAMES:
            raise ValueError(f"unknown precision {self.precision!r}; use one of {', '.join(PRECISION_NAMES)}")
        if self.long_sequences not in LONG_SEQUENCE_MODES:
            raise ValueError(f"unknown long_sequences mode {self.long_sequences!r}; use one of {', '.join(LONG_SEQUENCE_MODES)}")
        if self.long_sequences == "window" and not 0 <= self.overlap < self.window:
            raise EmbedError(
                f"embed.overlap {self.overlap} must be at least 0 and less than embed.window {self.window}; lower embed.overlap"
            )

    def long_sequence_description(self) -> str:
        if self.long_sequences == "window":
            return (
                f"sliding windows of {self.window} residues overlapping by {self.overlap} (each with its own BOS/EOS); "
                "per-residue states averaged over the windows covering them, then pooled"
            )
        return f"truncated to the first {self.truncate} residues"


def check_depth(depth: int | None, num_layers: int) -> int:
    """The depth an encoder's forward stops at: ``num_layers`` when None, else ``depth`` within ``0..num_layers``."""
    depth = num_layers if depth is None else depth
    if not 0 <= depth <= num_layers:
        raise ValueError(f"depth {depth} is outside 0..{num_layers}")
    return depth
