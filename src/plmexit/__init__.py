"""plmexit: how deep do you need to go? Layer-wise probing of protein language models.

Beside the command line and the workflow, one function is public from Python::

    ids, X = plmexit.read_layer("OUT.h5", 6)   # a store from `plmexit embed`: ids and (sequences, dim) float32

(``plmexit.embedding.store.read_embedded_layer``). It is imported on first use, so ``import plmexit``
(which every ``plmexit`` process does) loads neither h5py nor numpy.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "read_layer":
        from plmexit.embedding.store import read_embedded_layer

        return read_embedded_layer
    raise AttributeError(f"module 'plmexit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return ["__version__", "read_layer"]
