"""Early exit on the offline demo: layers and wall clock of full depth, a static layer and the calibrated controller.

A randomly initialised ESM2 (fair-esm's format; no real weights) embeds DeepLoc sequences (membrane
vs soluble by default); one logistic probe per layer is fitted on the training half at a fixed C
(the pipeline chooses C per layer and fold; here it is fixed to keep the run short). The controller
is calibrated on the training half only (inner out-of-fold probe outputs, Learn-then-Test at
``--epsilon``, ``--delta``) against the full-depth prediction, then run inside the forward on the
test half (``plmexit.exit.adaptive``), rows dropped from the batch as they exit. Timed on the same
test batches and device, interleaved, median of ``--repeats``:

- ``full_depth``: every block; ``static_layer``: stopped at the layer with the best out-of-fold
  accuracy on the training half (shallowest among ties);
- ``adaptive``: the calibrated controller; ``adaptive_one_deep``: the same, but the first row of
  every batch never exits early (one deep sequence per batch);
- ``sweep``: uncalibrated thresholds, to show wall clock against mean layers executed.

Gate overhead (probe, gate, the copy of pooled vectors to the host) is timed inside the forward.
The JSON records the machine, threads, date and command.

    python benchmarks/exit_wallclock.py --out exit_wallclock.json                     # 12 x 480 (35M shape), 400 sequences
    python benchmarks/exit_wallclock.py --quick --out quick.json                      # 6 x 320 (8M shape), 120 sequences: ~10 min on a loaded 2-core CPU
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import plmexit
from plmexit.embedding import engine
from plmexit.exit import adaptive, calibration, gates
from plmexit.exit.controller import Controller
from plmexit.exit.outputs import fold_outputs
from plmexit.models import fair_esm
from plmexit.probing.probes import refit_probe
from plmexit.settings import EmbedSettings

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "deeploc" / "deeploc_test_set.fasta"


def measure(loaded, sequences: list[str], labels: np.ndarray, args) -> dict:
    """Embed ``sequences`` (even rows train, odd rows test), fit a probe per layer and calibrate the controller on the
    training half, then time full depth, the static layer, the adaptive forward and the sweep on the test half's
    batches. ``args`` carries ``device``, ``precision``, ``max_tokens``, ``c``, ``gate``, ``epsilon``, ``delta``,
    ``repeats`` and ``seed`` (this script's options)."""
    classes = sorted(set(labels))
    train, test = np.arange(len(sequences)) % 2 == 0, np.arange(len(sequences)) % 2 == 1
    settings = EmbedSettings(max_tokens=args.max_tokens, device=args.device)
    encoder = engine.make_encoder(loaded, args.device, args.precision)
    L = encoder.num_layers
    X = np.zeros((L + 1, len(sequences), encoder.embed_dim), dtype=np.float32)
    for index, block in engine.embed_pooled(loaded, sequences, settings, encoder=encoder):
        X[:, index] = block
    rows_train, rows_test = np.flatnonzero(train), np.flatnonzero(test)
    cal, test_outputs = fold_outputs(lambda k: X[k], labels, "classification", classes, rows_train, rows_test, np.full(L + 1, args.c), 3, args.seed)
    oof_accuracy = [(np.asarray(classes)[cal[k].argmax(axis=1)] == labels[rows_train]).mean() for k in range(L + 1)]
    static = int(np.flatnonzero(np.isclose(oof_accuracy, max(oof_accuracy)))[0])
    grid = gates.threshold_grid(args.gate, 50, L)
    chosen = calibration.learn_then_test(cal, args.gate, "classification", grid, args.epsilon, args.delta, 1, L)
    probes = {k: refit_probe(X[k][rows_train], labels[rows_train], "classification", args.c) for k in range(L + 1)}
    batches = engine.device_batches(encoder, [sequences[i] for i in rows_test], settings)

    def timed(controller: Controller, forced=frozenset()) -> dict:
        rule = adaptive.ProbeExitRule(probes, controller, "classification", classes, forced=forced)
        return adaptive.time_forwards(encoder, batches, rule, static, "raw", args.device, args.repeats)

    calibrated = timed(chosen.controller)
    one_deep = timed(chosen.controller, frozenset({0}))
    scores = gates.gate_scores(test_outputs, args.gate, "classification")
    sweep = []
    for q in (0.25, 0.5, 0.75):
        threshold = float(np.quantile(scores[1:L], q))
        run = timed(Controller(args.gate, threshold, 1, L))
        sweep.append({"threshold": threshold, "mean_exit_layer": run["mean_exit_layer"], "layers_saved": run["layers_saved"],
                      "time_saved": run["time_saved"]["adaptive"], "gate_seconds": run["gate_seconds"], "seconds": run["seconds"]["adaptive"]})
    offline_layers = chosen.controller.exit_layers(scores)
    return {
        "n_train": int(train.sum()), "n_test": int(test.sum()),
        "device": args.device, "precision": encoder.precision, "max_tokens": args.max_tokens, "batches": len(batches),
        "batch_sizes": [int(t.shape[0]) for t, _ in batches], "batch_tokens": [int(t.numel()) for t, _ in batches],
        "probe_c": args.c, "gate": args.gate, "epsilon": args.epsilon, "delta": args.delta,
        "calibration": {"certified": chosen.certified, "threshold": chosen.controller.threshold, "n": chosen.n_calibration,
                        "tested": len(chosen.tested), "static_layer": static, "oof_accuracy_by_layer": [float(a) for a in oof_accuracy]},
        "test_disagreement_with_full_depth": float(gates.disagrees(test_outputs[offline_layers, np.arange(len(offline_layers))], test_outputs[L], "classification").mean()),
        "calibrated": calibrated, "one_deep_per_batch": one_deep, "sweep": sweep,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fasta", default=str(DATA))
    parser.add_argument("--labels", default="membrane", help="DeepLoc labels: membrane or location")
    parser.add_argument("--n", type=int, default=400, help="sequences (half train, half test)")
    parser.add_argument("--truncate", type=int, default=400)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--dim", type=int, default=480)
    parser.add_argument("--heads", type=int, default=20)
    parser.add_argument("--c", type=float, default=0.1, help="logistic C of every probe")
    parser.add_argument("--gate", default="probability")
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument("--delta", type=float, default=0.1)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="float32", help="the encoder's precision (default float32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="6 x 320 model, 120 sequences, 3 repeats")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.quick:
        args.layers, args.dim, args.heads, args.n, args.repeats = 6, 320, 20, 120, 3
    torch.set_num_threads(args.threads)
    from plmexit.data.datasets import read_deeploc  # here only: the data readers need Biopython, which gpu.py's GPU image may lack
    from plmexit.data.tasks import TaskSpec

    table, _ = read_deeploc(TaskSpec(name="deeploc", format="deeploc", path=Path(args.fasta), type="classification", localization=args.labels))
    rng = np.random.default_rng(args.seed)
    table = table.iloc[rng.permutation(len(table))[: args.n]].reset_index(drop=True)
    sequences = [s[: args.truncate] for s in table["sequence"]]
    labels = table["label"].astype(str).to_numpy()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = fair_esm.make_test_model(out_dir=Path(tmp), layers=args.layers, dim=args.dim, heads=args.heads, seed=args.seed)
        loaded = fair_esm.load_model(checkpoint, device=args.device)
    measured = measure(loaded, sequences, labels, args)
    result = {
        "benchmark": "exit_wallclock", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "task": {"fasta": args.fasta, "labels": args.labels, "n_train": measured.pop("n_train"), "n_test": measured.pop("n_test"), "truncate": args.truncate},
        "model": {"layers": args.layers, "dim": args.dim, "heads": args.heads, "random_init_seed": args.seed},
        **measured,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.get_device_name() if args.device.startswith("cuda") else None},
        "versions": {"python": platform.python_version(), "torch": str(torch.__version__), "fair_esm": fair_esm.fair_esm_version(), "plmexit": plmexit.__version__},
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    calibrated, one_deep = result["calibrated"], result["one_deep_per_batch"]
    print(json.dumps({k: result[k] for k in ("calibration", "test_disagreement_with_full_depth")} | {
        "calibrated": calibrated["time_saved"] | {"layers_saved": calibrated["layers_saved"], "gate_s": calibrated["gate_seconds"]},
        "one_deep": one_deep["time_saved"] | {"layers_saved": one_deep["layers_saved"]}, "sweep": result["sweep"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
