"""plmexit: how deep do you need to go? Layer-wise probing of protein language models."""

__version__ = "0.1.0"
