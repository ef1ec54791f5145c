"""What fair-esm's ``scripts/extract.py`` computes: the reference plmexit's encoder is tested and benchmarked against.

Invariant: this is fair-esm's own batching, batch converter and forward, in fp32, untouched;
only tests and benchmarks import this module.
"""

from __future__ import annotations

import numpy as np
import torch

from plmexit.models import fair_esm
from plmexit.models.fair_esm import LoadedModel
from plmexit.models.families import ESM2_MAX_RESIDUES

# fair-esm's extract.py: 4096 tokens per batch, counting each sequence as its length + 1.
REFERENCE_TOKS_PER_BATCH = 4096
REFERENCE_EXTRA_TOKS_PER_SEQ = 1


@torch.no_grad()
def reference_pooled(
    loaded: LoadedModel,
    sequences: list[str],
    device: str = "cpu",
    toks_per_batch: int = REFERENCE_TOKS_PER_BATCH,
    truncation_seq_length: int = ESM2_MAX_RESIDUES,
    layer_norm: str = "raw",
) -> np.ndarray:
    """``(L + 1, N, E)``: exactly what fair-esm's ``scripts/extract.py --include mean --repr_layers
    0..L`` computes (its batching, batch converter and forward, fp32, mean over positions
    ``1..len``), with ``layer_norm="final"`` applying the final layer norm per position first."""
    model, alphabet = loaded.model, loaded.alphabet
    layers = list(range(model.num_layers + 1))
    converter = alphabet.get_batch_converter(truncation_seq_length)
    out = np.zeros((len(layers), len(sequences), model.embed_dim), dtype=np.float32)
    for batch in fair_esm.fair_esm_batch_indices(sequences, toks_per_batch, REFERENCE_EXTRA_TOKS_PER_SEQ):
        _, strs, toks = converter([(str(i), sequences[i]) for i in batch])
        result = model(toks.to(device), repr_layers=layers, return_contacts=False)
        representations = {}
        for layer, t in result["representations"].items():
            if layer_norm == "final" and layer != layers[-1]:
                t = model.emb_layer_norm_after(t)
            representations[layer] = t.to(device="cpu")
        for row, index in enumerate(batch):
            truncate_len = min(truncation_seq_length, len(strs[row]))
            for layer, t in representations.items():
                out[layer, index] = t[row, 1 : truncate_len + 1].mean(0).clone().numpy()
    return out
