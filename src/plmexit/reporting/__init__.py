"""Figures drawn from the pipeline's tables."""
