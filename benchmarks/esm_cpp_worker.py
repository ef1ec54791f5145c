"""esm-cpp side of ``embed_peers.py``: run in a separate venv that has ``esm-cpp`` (not plmexit's).

Reads a JSON request on stdin ``{"safetensors", "modes", "sequences", "warmup"}``; for each mode
(``fp32``, ``int8``: ``Model.quantize_weights()``, per-channel int8 weights with int8 activations)
it embeds every sequence with ``forward_with_hidden_states`` (one sequence at a time: the only
esm-cpp call that returns hidden states, so no padding) and mean-pools each layer over residues,
and times ``forward_scheduled`` on the same sequences (packed batches, logits only: esm-cpp's
fastest call, which runs every block plus the LM head). Each is warmed up on ``warmup`` first.
Writes ``{mode: {"pooled": (L + 1, N, E) as nested lists, "hidden_states_s", "scheduled_logits_s"}}``
as JSON on stdout. Threads: ``ESM_NUM_THREADS`` (esm-cpp reads it at the first model load).

    echo '{...}' | /work/venv-bench-precision/bin/python benchmarks/esm_cpp_worker.py
"""

from __future__ import annotations

import json
import sys
import time

import esm_cpp
import numpy as np


def main() -> int:
    request = json.load(sys.stdin)
    tokenizer = esm_cpp.Tokenizer()
    ids = [np.asarray(tokenizer.encode(s, add_special=True, truncate=False), dtype=np.int32) for s in request["sequences"]]
    warm = [np.asarray(tokenizer.encode(s, add_special=True, truncate=False), dtype=np.int32) for s in request["warmup"]]
    result = {"isa": esm_cpp.current_isa(), "version": esm_cpp.__version__, "threads": esm_cpp.Model.num_threads}
    for mode in request["modes"]:
        model = esm_cpp.Model.load_from_safetensors(request["safetensors"])
        if mode == "int8":
            model.quantize_weights()

        def pooled_all(batch):
            out = []
            for t in batch:
                _, hidden = model.forward_with_hidden_states(t)
                out.append(np.stack([np.asarray(h).reshape(len(t), -1)[1:-1].mean(axis=0) for h in hidden]))
            return np.stack(out, axis=1)  # (L + 1, N, E)

        pooled_all(warm)
        begin = time.perf_counter()
        pooled = pooled_all(ids)
        hidden_s = time.perf_counter() - begin
        model.forward_scheduled(warm)
        begin = time.perf_counter()
        model.forward_scheduled(ids)
        scheduled_s = time.perf_counter() - begin
        result[mode] = {"pooled": pooled.tolist(), "hidden_states_s": hidden_s, "scheduled_logits_s": scheduled_s}
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
