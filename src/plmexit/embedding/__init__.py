"""Per-layer pooled embeddings: the settings, the encoder, the HDF5 store, and what each depth costs."""
