"""The calibrated controller inside a real forward pass, and its wall clock beside full depth and a static layer.

Invariant: ``ProbeExitRule`` decides exactly what ``Controller.exit_layers`` decides on the same
per-layer probe outputs (it calls the same ``gates`` on one layer at a time, keeping each row's
patience count), so the calibration's guarantee is about the exits this forward takes. Rows are
dropped from the batch as they leave (``Encoder.pooled_exiting``), so one deep sequence runs the
late blocks alone instead of holding the batch. Timings synchronise the device before and after,
as ``embedding.cost.measure_depth_seconds`` does; gate time (probe, score, the copy of pooled
vectors to the host) is measured inside the forward and reported as overhead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from plmexit.exit import gates
from plmexit.exit.controller import Controller
from plmexit.exit.outputs import probe_outputs
from plmexit.probing.linear import LinearProbe


@dataclass
class ProbeExitRule:
    """An ``embedding.exiting.ExitRule`` from per-layer probes and a controller: layer ``k``'s probe reads the
    pooled vectors, the gate scores them, rows at or past ``first_layer`` whose score passes leave."""

    probes: dict[int, LinearProbe]
    controller: Controller
    task_type: str
    classes: list[str] | None = None
    tolerance: float = 0.0
    forced: frozenset[int] = frozenset()  # batch rows that never leave early (a deep sequence, for timing)
    synchronize: object = None
    gate_seconds: float = 0.0

    def __post_init__(self):
        self.reset()

    def reset(self) -> None:
        """Forget the previous batch's patience state."""
        self.previous: dict[int, np.ndarray] = {}
        self.run: dict[int, float] = {}

    def __call__(self, layer: int, pooled: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if self.synchronize:
            self.synchronize()
        start = time.perf_counter()
        leave = self._decide(layer, pooled, rows)
        self.gate_seconds += time.perf_counter() - start
        return torch.as_tensor(leave, device=pooled.device)

    def _decide(self, layer: int, pooled: torch.Tensor, rows: torch.Tensor) -> np.ndarray:
        c = self.controller
        n = len(rows)
        patience = c.gate == "patience"
        if layer >= c.reference_layer or (layer < c.first_layer and not patience) or not np.isfinite(c.threshold):
            return np.zeros(n, dtype=bool)
        out = probe_outputs(self.probes[layer], pooled.cpu().numpy(), self.classes)  # (n, K) or (n,)
        ids = rows.cpu().numpy()
        if patience:
            score = np.zeros(n)
            for j, i in enumerate(ids):
                i = int(i)
                if i in self.previous and not gates.disagrees(out[j], self.previous[i], self.task_type, self.tolerance):
                    score[j] = self.run[i] + 1
                self.previous[i], self.run[i] = out[j], score[j]
        else:
            score = gates.gate_scores(out[None], c.gate, self.task_type, self.tolerance)[0]
        leave = (score >= c.threshold) & (layer >= c.first_layer)
        if self.forced:
            leave &= ~np.isin(ids, list(self.forced))
        return leave


def synchronizer(device: str):
    return torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)


def exit_batches(encoder, batches, rule: ProbeExitRule, layer_norm: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each batch's ``(exit layers (B,), pooled vectors at them (B, E))``, rows dropped as they leave."""
    results = []
    for tokens, weights in batches:
        rule.reset()
        layers, vectors = encoder.pooled_exiting(tokens, weights, layer_norm, rule, rule.controller.reference_layer)
        results.append((layers.cpu().numpy(), vectors.cpu().numpy()))
    return results


def time_runs(encoder, batches, rules: dict[str, ProbeExitRule], static_layer: int, layer_norm: str, device: str, repeats: int) -> dict:
    """Median wall-clock seconds over ``repeats`` of the same ``batches``: ``full_depth``, ``static_layer`` and one
    exiting forward per entry of ``rules``, interleaved so drifting load hits each alike (one warm-up run of each first).

    Returns ``seconds`` (per run), ``gate_seconds`` (per rule, inside its forward) and ``layers`` (per rule, each
    batch row's exit layer in the last repeat).
    """
    sync = synchronizer(device)

    def full():
        for tokens, weights in batches:
            encoder.pooled(tokens, weights, layer_norm).cpu()

    def static():
        for tokens, weights in batches:
            encoder.pooled(tokens, weights, layer_norm, static_layer).cpu()

    def exiting(rule):
        return lambda: exit_batches(encoder, batches, rule, layer_norm)

    for rule in rules.values():
        rule.synchronize = sync
    runs = {"full_depth": full, "static_layer": static, **{name: exiting(rule) for name, rule in rules.items()}}
    for run in runs.values():
        run()  # warm-up
    seconds = {name: [] for name in runs}
    gate = {name: [] for name in rules}
    layers = {}
    for _ in range(repeats):
        for name, run in runs.items():
            if name in rules:
                rules[name].gate_seconds = 0.0
            sync()
            start = time.perf_counter()
            result = run()
            sync()
            seconds[name].append(time.perf_counter() - start)
            if name in rules:
                gate[name].append(rules[name].gate_seconds)
                layers[name] = np.concatenate([r[0] for r in result])
    return {
        "seconds": {name: float(np.median(v)) for name, v in seconds.items()},
        "gate_seconds": {name: float(np.median(v)) for name, v in gate.items()},
        "layers": layers,
        "repeats": repeats,
    }


def time_forwards(encoder, batches, rule: ProbeExitRule, static_layer: int, layer_norm: str, device: str, repeats: int) -> dict:
    """Median wall-clock seconds over ``repeats`` of the same ``batches``: full depth, the static layer and the
    exiting forward; the exiting forward's gate seconds; and its mean exit layer (one warm-up run first)."""
    timed = time_runs(encoder, batches, {"adaptive": rule}, static_layer, layer_norm, device, repeats)
    median, layers = timed["seconds"], timed["layers"]["adaptive"]
    return {
        "seconds": median,
        "gate_seconds": timed["gate_seconds"]["adaptive"],
        "time_saved": {name: 1.0 - median[name] / median["full_depth"] for name in ("static_layer", "adaptive")},
        "mean_exit_layer": float(layers.mean()),
        "layers_saved": float(1.0 - layers.mean() / encoder.num_layers),
        "exit_histogram": [int(c) for c in np.bincount(layers, minlength=encoder.num_layers + 1)],
        "repeats": repeats,
    }
