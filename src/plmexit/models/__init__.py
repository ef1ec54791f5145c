"""Protein language models: resolving, verifying and loading checkpoints (fair-esm), and the tiny random models tests use."""
