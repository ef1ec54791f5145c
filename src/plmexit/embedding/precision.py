"""Which compute precision a forward pass really runs in, on this device, and int8 linear layers.

Invariant: a reduced precision runs only where the device computes it natively; anywhere else the
forward runs in float32 and ``Resolved.reason`` says why. bf16 and fp16 emulated on a CPU without
the instructions are slower than float32 and less exact, so falling back loses nothing; int8 needs
torch's quantised CPU kernels (x86 or ARM). The store records ``Resolved.ran``, never only what the
config asked for.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from plmexit.embedding.options import PRECISION_SCIENCE_WARNINGS
from plmexit.settings import PRECISION_NAMES

log = logging.getLogger(__name__)

# The dtype of weights and activations outside int8's quantised matmuls (int8 keeps them float32).
DTYPES = dict(zip(PRECISION_NAMES, (torch.float32, torch.bfloat16, torch.float16, torch.float32)))
# CPU feature flags (Linux /proc/cpuinfo names) that compute each reduced precision natively.
CPU_FLAGS = {"bfloat16": ("avx512_bf16", "amx_bf16"), "float16": ("avx512_fp16", "amx_fp16")}
QUANTIZED_ENGINES = ("x86", "fbgemm", "onednn", "qnnpack")
# int8 keeps each block's attention output projection in float32 (``FastEncoder``'s "out"; in a
# model run through its own forward, the module paths ending in ATTENTION_OUTPUT_PROJECTIONS). Its input, the
# attention output, has the widest spread of scales between tokens, so one int8 scale per batch
# (dynamic quantisation) rounds most tokens coarsely; keeping it float32 took the largest deviation
# from fp32 over 13 layers from 1.52% to 1.04% (BLAT_ECOLX variants) and 1.62% to 1.10% (DeepLoc),
# below esm-cpp int8's 1.27% / 1.39%, for 1/12 of the block's matmul work in float32 (about 10% of
# int8's throughput), on a random ESM2-35M architecture (benchmarks/results/int8_choice_*.json).
# Keeping the FFN output (fc2) float32 instead barely helped (1.49% / 1.58%) at a third of the work.
INT8_FLOAT32_LINEARS = ("out",)
ATTENTION_OUTPUT_PROJECTIONS = (
    "attention.output.dense",  # ESM, BERT
    "attention.dense",  # ALBERT
    "SelfAttention.o",  # T5, Ankh
    "self_attn.o_proj",  # ESM-C
    "self_attn.out_proj",  # fair-esm ESM2 (embed.engine: reference)
)


@dataclass(frozen=True)
class Resolved:
    """``requested``: what the settings asked for; ``ran``: what the forward computes in; ``reason``:
    why they differ ("" when they do not)."""

    requested: str
    ran: str
    reason: str = ""

    def attrs(self) -> dict:
        return {"precision": self.ran, "precision_requested": self.requested, "precision_fallback_reason": self.reason}


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, as on macOS), plus
    what torch's own CPU probes report (they also work where /proc is absent)."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags.update(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported", "amx_fp16": "_is_amx_fp16_supported",
              "avx512_vnni": "_is_vnni_supported"}
    for flag, probe in probes.items():
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            flags.add(flag)
    return frozenset(flags)


def resolve(requested: str, device: str, flags: frozenset[str] | None = None) -> Resolved:
    """What ``requested`` runs as on ``device``: itself where the device computes it natively, else
    float32 with the reason. ``flags`` overrides the CPU's flags (tests)."""
    if requested not in PRECISION_NAMES:
        raise ValueError(f"unknown precision {requested!r}; use one of {', '.join(PRECISION_NAMES)}")
    if requested == "float32":
        return Resolved(requested, requested)
    if device.startswith("cuda"):
        if requested == "int8":
            return Resolved(requested, "float32", "int8 is CPU-only (torch's dynamic quantised linear kernels); use bfloat16 or float16 on a GPU")
        if requested == "bfloat16" and not torch.cuda.is_bf16_supported():
            return Resolved(requested, "float32", f"{torch.cuda.get_device_name(device)} has no bfloat16 arithmetic; use float16")
        return Resolved(requested, requested)
    if device != "cpu":
        return Resolved(requested, requested)  # e.g. mps: the device's own rules apply
    flags = cpu_flags() if flags is None else flags
    if requested == "int8":
        engines = [e for e in QUANTIZED_ENGINES if e in torch.backends.quantized.supported_engines]
        if not engines:
            return Resolved(requested, "float32", "this torch build has no quantised CPU kernels (x86, fbgemm, onednn or qnnpack)")
        return Resolved(requested, requested)
    if not any(flag in flags for flag in CPU_FLAGS[requested]):
        return Resolved(
            requested, "float32",
            f"this CPU has none of {', '.join(CPU_FLAGS[requested])}, so {requested} would be emulated (slower than float32 and less exact)",
        )
    return Resolved(requested, requested)


def resolve_and_log(requested: str, device: str) -> Resolved:
    """``resolve``, logging a fallback, and the science warning of a precision that moves probe results."""
    resolved = resolve(requested, device)
    if resolved.reason:
        log.warning("embed.precision %s on %s: running float32 instead, because %s", requested, device, resolved.reason)
    if resolved.ran in PRECISION_SCIENCE_WARNINGS:
        log.warning("embed.precision %s: %s", resolved.ran, PRECISION_SCIENCE_WARNINGS[resolved.ran])
    return resolved


def reduce_range() -> bool:
    """Whether int8 activations use 7 bits: torch's x86/fbgemm kernels need it without VNNI, where
    16-bit intermediate sums can saturate (as torch's default qconfig decides)."""
    return "avx512_vnni" not in cpu_flags() and "avx_vnni" not in cpu_flags()


def quantize_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Pack a float (out, in) weight as symmetric per-output-channel int8 for ``torch.ops.quantized.linear_dynamic``."""
    weight = weight.detach().to(torch.float32).contiguous()
    scale = (weight.abs().amax(dim=1).clamp_min(1e-12) / 127.0).to(torch.float64)
    with warnings.catch_warnings():
        # torch 2.10+ marks quantised tensor creation deprecated (moving to torchao); the kernels
        # are current, and a replacement is a one-function change here when they go.
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*deprecated")
        qweight = torch.quantize_per_channel(weight, scale, torch.zeros(len(scale), dtype=torch.int64), 0, torch.qint8)
    return torch.ops.quantized.linear_prepack(qweight, None if bias is None else bias.detach().to(torch.float32).contiguous())


def linear_int8(x: torch.Tensor, packed: torch.Tensor, reduce: bool) -> torch.Tensor:
    """``x @ W.T + b`` with ``x`` quantised to uint8 per call (per tensor) and ``W`` int8 per channel."""
    return torch.ops.quantized.linear_dynamic(x, packed, reduce)


class Int8Linear(torch.nn.Module):
    """An ``nn.Linear`` as ``linear_int8`` over its weights packed by ``quantize_linear`` (the int8 of
    ``FastEncoder``). ``weight()`` is a method returning the int8 weight, as on torch's dynamic
    quantised ``Linear``, which transformers' code already tells apart from a float weight."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = quantize_linear(linear.weight, linear.bias)
        self.reduce = reduce_range()

    def weight(self) -> torch.Tensor:
        return torch.ops.quantized.linear_unpack(self.packed)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_int8(x, self.packed, self.reduce)


def keeps_float32(name: str) -> bool:
    """Whether the linear layer at module path ``name`` stays float32 under int8 (an attention output projection)."""
    return name.endswith(ATTENTION_OUTPUT_PROJECTIONS)


def quantize_module(module: torch.nn.Module) -> torch.nn.Module:
    """Every ``nn.Linear`` in ``module`` replaced in place by ``Int8Linear``, except the attention output
    projections (``INT8_FLOAT32_LINEARS``)."""
    for name, child in list(module.named_modules()):
        for attr, linear in list(child.named_children()):
            if type(linear) is torch.nn.Linear and not keeps_float32(f"{name}.{attr}" if name else attr):
                setattr(child, attr, Int8Linear(linear))
    return module
