"""Embedding ESM2 weights from the transformers (hub) layout: plmexit against its fair-esm path and
against the plain transformers forward that users write by hand.

One random ESM2 (ESM2-35M architecture on CPU) is written in fair-esm's format and converted to
the transformers ``EsmForMaskedLM`` layout (``plmexit convert-model``), so every path runs the same
weights on the same BLAT_ECOLX variants, in fp32, in the same process:

- ``hub``: ``plmexit.embedding.engine.embed_pooled`` over the hub-layout model (``models.hub``, its
  ``FastEncoder``), what ``plmexit embed`` runs for it;
- ``fair_esm``: the same over the fair-esm checkpoint;
- ``hooked``: plmexit's generic encoder (the model's own transformers forward, pooled by block
  hooks), what families without a fast path run;
- ``hand_sdpa`` / ``hand_eager``: ``EsmModel.from_pretrained(..., attn_implementation=...)``,
  ``tokenizer(batch, padding=True)``, ``model(**inputs, output_hidden_states=True)``, then each
  layer's masked mean over residues, as a user writes it by hand (same sequences per batch as ours).

The sequences are cut into chunks and the paths take turns chunk by chunk (the order rotating,
and reversed every other chunk), so machine load hits all alike; each path first embeds one cold
batch (warm-up, not counted). Tokens/s count every piece's residues plus its special tokens.
Pooled outputs are checked equal across paths (max relative difference recorded).

    python benchmarks/embed_hub.py --threads 1 --n 168 --chunk 14 --out embed_hub.json   # as committed: about 6 minutes on one core
    python benchmarks/embed_hub.py --n 400 --chunk 56 --out embed_hub.json                # ~400 variants, torch's threads
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import transformers

import plmexit
from plmexit.embedding import engine
from plmexit.models import fair_esm, hub
from plmexit.models import manifest as model_manifest
from plmexit.settings import EmbedSettings

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BLAT = DATA / "proteingym" / "cv_folds_singles_substitutions" / "BLAT_ECOLX_Stiffler_2015.csv"
ARCH = ("ESM2-35M", 12, 480, 20)


def hand_written(directory: Path, attn: str, device: str = "cpu", dtype: torch.dtype | None = None):
    """What a user writes with transformers alone: returns ``embed(sequences) -> (L + 1, N, E)`` float32 on the host;
    ``dtype`` (default the checkpoint's, float32) is the model's, the pooling is float32."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    model = transformers.EsmModel.from_pretrained(directory, attn_implementation=attn, add_pooling_layer=False,
                                               **({"dtype": dtype} if dtype else {})).eval().to(device)

    @torch.inference_mode()
    def embed(sequences: list[str]) -> np.ndarray:
        inputs = tokenizer(sequences, return_tensors="pt", padding=True).to(device)
        hidden = torch.stack(model(**inputs, output_hidden_states=True).hidden_states).float()  # (L + 1, B, T, E)
        mask = inputs["attention_mask"].clone()
        mask[:, 0] = 0  # <cls>
        mask[torch.arange(len(sequences), device=mask.device), inputs["attention_mask"].sum(1) - 1] = 0  # <eos>
        mask = mask[None, :, :, None].to(hidden.dtype)
        return ((hidden * mask).sum(2) / mask.sum(2)).cpu().numpy()

    return embed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=112, help="BLAT_ECOLX variants to embed (default 112: 8 batches of 14)")
    parser.add_argument("--chunk", type=int, default=28, help="sequences per alternating chunk (default 28: 2 batches of 14)")
    parser.add_argument("--max-tokens", type=int, default=4096, help="plmexit's padded tokens per batch (default 4096)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--layers", type=int, default=ARCH[1], help=f"model layers (default {ARCH[1]}, {ARCH[0]})")
    parser.add_argument("--dim", type=int, default=ARCH[2], help=f"model width (default {ARCH[2]})")
    parser.add_argument("--heads", type=int, default=ARCH[3], help=f"attention heads (default {ARCH[3]})")
    parser.add_argument("--paths", default="hub,fair_esm,hooked,hand_sdpa,hand_eager", help="comma-separated paths to run")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    n_layers, dim, heads = args.layers, args.dim, args.heads
    arch = ARCH[0] if (n_layers, dim, heads) == ARCH[1:] else "custom"
    sequences = pd.read_csv(BLAT)["mutated_sequence"].tolist()[: args.n]
    chunks = [sequences[i : i + args.chunk] for i in range(0, len(sequences), args.chunk)]
    settings = EmbedSettings(max_tokens=args.max_tokens)
    batch_size = args.max_tokens // (len(sequences[0]) + 2)  # all variants share one length: ours puts this many in a batch

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = fair_esm.make_test_model(n_layers, dim, heads, 0, tmp)
        directory = hub.convert_fair_esm_checkpoint(checkpoint, Path(tmp) / "hub")
        fair = model_manifest.load(model_manifest.resolve(checkpoint=checkpoint))
        hub_loaded = model_manifest.load(model_manifest.resolve(path=directory))
        hooked_loaded = model_manifest.load(model_manifest.resolve(path=directory))

        def ours(loaded, encoder):
            def embed(chunk):
                out = np.zeros((n_layers + 1, len(chunk), dim), dtype=np.float32)
                for index, block in engine.embed_pooled(loaded, chunk, settings, encoder=encoder):
                    out[:, index] = block
                return out

            return embed

        def batched(embed_batch):
            return lambda chunk: np.concatenate([embed_batch(chunk[i : i + batch_size]) for i in range(0, len(chunk), batch_size)], axis=1)

        from plmexit.embedding.generic import HookedEncoder

        builders = {
            "hub": lambda: ours(hub_loaded, engine.make_encoder(hub_loaded, "cpu", "float32")),
            "fair_esm": lambda: ours(fair, engine.make_encoder(fair, "cpu", "float32")),
            "hooked": lambda: ours(hooked_loaded, HookedEncoder(hooked_loaded, "cpu", "float32")),
            "hand_sdpa": lambda: batched(hand_written(directory, "sdpa")),
            "hand_eager": lambda: batched(hand_written(directory, "eager")),
        }
        paths = args.paths.split(",")
        runners = {name: builders[name]() for name in paths}
        times = {name: [] for name in paths}
        outputs = {name: [] for name in paths}
        for name in paths:  # warm-up: one cold batch each
            runners[name](sequences[:batch_size])
        for i, chunk in enumerate(chunks):
            # Rotate the order, and reverse it every other chunk, so no path always follows the same one
            # (a path run right after the hand-written ones inherits their freed memory and cold caches).
            order = paths[i % len(paths) :] + paths[: i % len(paths)]
            order = order[::-1] if i % 2 else order
            for name in order:
                begin = time.perf_counter()
                outputs[name].append(runners[name](chunk))
                times[name].append(time.perf_counter() - begin)
                print(f"chunk {i + 1}/{len(chunks)} {name}: {times[name][-1]:.2f} s", file=sys.stderr)

    tokens = sum(len(s) + 2 for s in sequences)
    rate = {k: tokens / sum(v) for k, v in times.items()}
    median_chunk_rate = {k: float(np.median([sum(len(s) + 2 for s in c) / t for c, t in zip(chunks, v)])) for k, v in times.items()}
    pooled = {k: np.concatenate(v, axis=1) for k, v in outputs.items()}
    base = pooled[paths[0]]
    scale = np.abs(base).max(axis=-1, keepdims=True)
    diff = {k: float((np.abs(v - base) / scale).max()) for k, v in pooled.items()}
    ratios = {}
    if "hub" in rate:
        ratios = {f"hub_over_{k}": rate["hub"] / rate[k] for k in rate if k != "hub"}
        ratios.update({f"hub_over_{k}_median_chunk": median_chunk_rate["hub"] / median_chunk_rate[k] for k in rate if k != "hub"})
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    result = {
        "benchmark": "embed_hub",
        "date": datetime.date.today().isoformat(),
        "device": "cpu",
        "device_name": cpu,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average_at_end": os.getloadavg()},
        "versions": {"python": platform.python_version(), "torch": str(torch.__version__), "transformers": transformers.__version__,
                     "fair_esm": fair_esm.fair_esm_version(), "plmexit": plmexit.__version__},
        "model": f"{arch} architecture, random weights ({n_layers} layers, width {dim}, {heads} heads), fp32",
        "layers_pooled": n_layers + 1,
        "sequences": len(sequences),
        "tokens": tokens,
        "chunks": len(chunks),
        "hand_written_batch_sequences": batch_size,
        "tokens_per_s": rate,
        "median_chunk_tokens_per_s": median_chunk_rate,
        "ratios": ratios,
        "max_rel_diff_to_" + paths[0]: diff,
        "chunk_seconds": times,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("tokens_per_s", "median_chunk_tokens_per_s", "ratios", "max_rel_diff_to_" + paths[0])}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
