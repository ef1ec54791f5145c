"""The roofline the engine benchmarks divide by: the device's matrix-multiply peak, measured and theoretical.

Invariant: no benchmark reports more than 100% of the measured peak. The measured peak is the best
rate of the best GEMMs this torch offers (``torch.mm``: MKL for float32 on an x86 CPU, oneDNN for
bfloat16; oneDNN's matmul over a prepacked weight, which plmexit's CPU float32 encoder runs; cuBLAS on
CUDA) over several sizes, on all the threads torch uses. A single 2048 x 2048 ``torch.mm`` is not a
machine's peak: on an AVX-512 EPYC oneDNN's matmul ran 1.2x MKL's, and the engine was reported at 150%
of such a "peak". ``check_fraction`` fails a benchmark whose engine exceeds the measured peak: either
the peak was not measured with the best GEMM or the FLOPs are miscounted.

The theoretical peak is cores x clock x FLOPs per cycle where the CPU's vector units and clock are
known (``cpu_theoretical``), and the datasheet's dense rate for known GPUs (``GPU_DATASHEET``). It is
reported beside the measured one, never used as the denominator: a VM hides the turbo clock, and the
FLOPs per cycle of a CPU family are an assumption the JSON states.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from plmexit.embedding.precision import cpu_flags

CPU_SIZES = (1024, 2048, 4096)
CPU_SIZES_QUICK = (512, 1024, 2048)
GPU_SIZES = (4096, 8192, 16384)
# Matmuls per timed call on CUDA (a launch and a synchronisation cost microseconds, an 8192^3 bf16 GEMM
# about 1.4 ms on an H100); on a CPU one matmul is milliseconds to seconds.
GPU_INNER = 10
# Dense (no structured sparsity) tensor-core bfloat16 and CUDA-core float32 FLOP/s, NVIDIA's datasheets,
# first match of the name wins (so "H100 PCIe" before "H100", the SXM part, "NVIDIA H100 80GB HBM3").
GPU_DATASHEET = {
    "H200": {"bfloat16": 989.4e12, "float16": 989.4e12, "float32": 66.9e12},
    "H100 NVL": {"bfloat16": 835.0e12, "float16": 835.0e12, "float32": 60.0e12},
    "H100 PCIe": {"bfloat16": 756.0e12, "float16": 756.0e12, "float32": 51.2e12},
    "H100": {"bfloat16": 989.4e12, "float16": 989.4e12, "float32": 66.9e12},
    "A100": {"bfloat16": 312.0e12, "float16": 312.0e12, "float32": 19.5e12},
}


class RooflineError(RuntimeError):
    """An engine measured above 100% of the peak: the peak or the FLOP count is wrong."""


def synchronize(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _best_seconds(run, device: str, repeats: int, inner: int) -> float:
    run()  # warm-up: allocation, kernel choice, weight packing
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(inner):
            run()
        synchronize(device)
        best = min(best, (time.perf_counter() - start) / inner)
    return best


def gemm_rate(device: str, dtype: torch.dtype, n: int, repeats: int) -> float:
    """FLOP/s of ``torch.mm`` of two (n x n) matrices in ``dtype`` on ``device``, best of ``repeats``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    inner = GPU_INNER if str(device).startswith("cuda") else 1
    return 2.0 * n**3 / _best_seconds(lambda: torch.mm(a, b), device, repeats, inner)


def onednn_rate(n: int, repeats: int, dtype: torch.dtype = torch.float32) -> float:
    """``gemm_rate`` through oneDNN's matmul over a prepacked (n x n) weight (``mkldnn::_linear_pointwise``,
    plmexit's CPU float32 matmul; ``fast_esm2._block_onednn``)."""
    a = torch.randn(n, n).to(dtype)
    packed = torch.ops.mkldnn._reorder_linear_weight(a, None)
    with torch.inference_mode():
        return 2.0 * n**3 / _best_seconds(lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], ""), "cpu", repeats, 1)


def measured_peak(device: str, dtype: torch.dtype, sizes: tuple[int, ...] | None = None, repeats: int = 3) -> dict:
    """The best FLOP/s of every GEMM tried (``torch.mm`` at each size, and oneDNN's prepacked matmul on a
    CPU): ``flops_per_s`` (the best), ``best`` (which), ``rates`` (all) and ``threads``."""
    cuda = str(device).startswith("cuda")
    sizes = sizes or (GPU_SIZES if cuda else CPU_SIZES)
    rates, errors = {}, {}
    for n in sizes:
        rates[f"torch.mm {n}"] = gemm_rate(device, dtype, n, repeats)
        if not cuda and torch.backends.mkldnn.is_available():
            try:
                rates[f"onednn prepacked {n}"] = onednn_rate(n, repeats, dtype)
            except RuntimeError as error:  # a build or dtype oneDNN's prepacked op does not take
                errors[f"onednn prepacked {n}"] = str(error).splitlines()[0]
    best = max(rates, key=rates.get)
    return {"flops_per_s": rates[best], "best": best, "rates": rates, "errors": errors, "dtype": str(dtype).removeprefix("torch."),
            "threads": None if cuda else torch.get_num_threads(), "repeats": repeats,
            "library": "cuBLAS (torch.mm)" if cuda else f"torch.mm (MKL: {torch.backends.mkl.is_available()}) and oneDNN (prepacked weight)"}


def _cpuinfo_blocks() -> list[dict[str, str]]:
    """One dict per logical processor of /proc/cpuinfo (none where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return [{k.strip(): v.strip() for k, _, v in (line.partition(":") for line in block.splitlines())} for block in text.strip().split("\n\n")]


def _cpuinfo() -> dict[str, str]:
    blocks = _cpuinfo_blocks()
    return blocks[0] if blocks else {}


def physical_cores() -> int:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo: SMT siblings share one core's vector units."""
    pairs = {(b.get("physical id"), b.get("core id", str(i))) for i, b in enumerate(_cpuinfo_blocks())}
    return len(pairs) or os.cpu_count() or 1


def cpu_clock_hz() -> tuple[float | None, str]:
    """The CPU's maximum clock and where it came from: cpufreq's ``cpuinfo_max_freq`` (the turbo limit);
    where a VM hides it, /proc/cpuinfo's ``cpu MHz`` (the nominal clock, which turbo may exceed)."""
    try:
        return float(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) * 1e3, "cpufreq cpuinfo_max_freq (maximum)"
    except (OSError, ValueError):
        pass
    mhz = _cpuinfo().get("cpu MHz")
    if mhz:
        return float(mhz) * 1e6, "/proc/cpuinfo cpu MHz (nominal; no cpufreq in this VM, so turbo may run faster)"
    return None, "no clock exposed"


def cpu_flops_per_cycle(dtype: str, vendor: str, family: int, flags: frozenset[str]) -> tuple[float | None, str]:
    """Dense FLOPs per cycle per core for ``dtype`` and what the number assumes (None where unknown)."""
    amd, intel = vendor == "AuthenticAMD", vendor == "GenuineIntel"
    if "avx512f" in flags and (intel or (amd and family >= 0x1A)):
        fp32, units = 64.0, "two 512-bit FMA units (server Xeon, Zen 5), 16 lanes x 2 FLOPs each"
    elif "avx512f" in flags and amd:
        fp32, units = 32.0, "Zen 4: AVX-512 on two 256-bit FMA units, 16 FLOPs each"
    elif "fma" in flags and "avx2" in flags:
        fp32, units = 32.0, "two 256-bit FMA units, 8 lanes x 2 FLOPs each"
    else:
        return None, f"vector units of this {vendor or 'unknown'} CPU not in the table"
    if dtype == "float32":
        return fp32, units
    if dtype == "bfloat16" and "amx_bf16" in flags:
        return 1024.0, "AMX: one TDPBF16PS tile multiply, 1,024 bf16 FLOPs per cycle per core"
    if dtype == "bfloat16" and "avx512_bf16" in flags:
        return 2 * fp32, f"AVX512-BF16 (VDPBF16PS: two products per fp32 lane) on {units}"
    return None, f"no native {dtype} matmul instructions in this CPU's flags"


def cpu_theoretical(dtype: str) -> dict:
    """Cores torch runs on (its threads, at most the physical cores) x clock x FLOPs per cycle per core."""
    info = _cpuinfo()
    cores = physical_cores()
    used = min(cores, torch.get_num_threads())
    clock, clock_source = cpu_clock_hz()
    per_cycle, basis = cpu_flops_per_cycle(dtype, info.get("vendor_id", ""), int(info.get("cpu family", "0") or 0), cpu_flags())
    flops = used * clock * per_cycle if clock and per_cycle else None
    return {"flops_per_s": flops, "cores_used": used, "physical_cores": cores, "clock_hz": clock, "clock_source": clock_source,
            "flops_per_cycle_per_core": per_cycle, "basis": basis, "model_name": info.get("model name")}


def gpu_theoretical(dtype: str, device: str) -> dict:
    name = torch.cuda.get_device_name(device)
    for key, peaks in GPU_DATASHEET.items():
        if key in name:
            return {"flops_per_s": peaks.get(dtype), "basis": f"NVIDIA datasheet, {key}, dense (no sparsity)", "device_name": name}
    return {"flops_per_s": None, "basis": f"{name} not in the datasheet table", "device_name": name}


def roofline(device: str, dtype: torch.dtype, sizes: tuple[int, ...] | None = None, repeats: int = 3) -> dict:
    """Measured and theoretical peak of ``dtype`` on ``device``, and their ratio."""
    measured = measured_peak(device, dtype, sizes, repeats)
    name = str(dtype).removeprefix("torch.")
    theoretical = gpu_theoretical(name, device) if str(device).startswith("cuda") else cpu_theoretical(name)
    ratio = measured["flops_per_s"] / theoretical["flops_per_s"] if theoretical["flops_per_s"] else None
    result = {"measured": measured, "theoretical": theoretical, "measured_over_theoretical": ratio}
    if ratio is not None and ratio > 1.0 and theoretical.get("clock_hz"):
        # A CPU's nominal clock understates a boosting core: the clock the measured GEMM implies at the stated
        # FLOPs per cycle, which the theoretical figure would need.
        result["implied_clock_hz"] = theoretical["clock_hz"] * ratio
        result["theoretical_note"] = (
            "the measured GEMM beats the theoretical peak at the nominal clock: the cores ran faster than it (boost), "
            "so the theoretical figure is a floor here; the measured peak is the one fractions are checked against"
        )
    return result


def check_fraction(fraction: float, what: str) -> None:
    """Raise ``RooflineError`` when ``fraction`` of the measured peak is above 1."""
    if fraction > 1.0:
        raise RooflineError(
            f"{what} ran at {fraction:.0%} of the measured matmul peak, above 100%: the peak was not measured with this machine's "
            "best GEMM, or the FLOPs are miscounted; the JSON was written for inspection"
        )
