"""Exceptions for expected failures.

Invariant: every exception raised on bad user input is a ``PlmexitError`` whose message is one
line naming the file, row or key, what was found, what was expected and how to fix it. The CLI
prints exactly that line and exits 1; anything else is a bug and keeps its traceback.
"""


def one_line(exc: BaseException, limit: int = 400) -> str:
    """A third-party exception's message collapsed onto one line and cut at ``limit``, for quoting."""
    return " ".join(str(exc).split())[:limit]


class PlmexitError(Exception):
    """Base class for errors caused by input, configuration or the environment."""


class InputError(PlmexitError):
    """A task file (CSV, FASTA, task table) is malformed."""


class ModelError(PlmexitError):
    """A model checkpoint is missing, corrupt, not allowed or does not match its hash."""


class EmbedError(PlmexitError):
    """Embedding cannot proceed on this device (for example a sequence too long for its memory)."""


class StoreError(PlmexitError):
    """An embedding store is missing, incomplete or does not match its task."""


class DownloadError(PlmexitError):
    """A download failed or did not match its expected hash."""


class ConfigError(PlmexitError):
    """The config passes its schema but is inconsistent (for example two entries share an id)."""


class ToolError(PlmexitError):
    """A system program plmexit runs (MMseqs2) is missing or failed."""


class SelectionError(InputError):
    """A selection JSON (``plmexit select``) is unreadable, lacks a key or holds a value of another type."""


class MissingExtraError(PlmexitError):
    """Code that needs one of plmexit's pip extras (``hub``: transformers models; ``workflow``: planning) ran without its packages."""

    @classmethod
    def of(cls, extra: str, needs: str, exc: ModuleNotFoundError) -> "MissingExtraError":
        """The one line for ``exc`` (an import of the extra's packages failed): what needs them and how to install them."""
        missing = (exc.name or "a package it names").split(".")[0]
        return cls(f"{needs} need plmexit's {extra} extra, and {missing} is not installed: pip install 'plmexit[{extra}]' (in a checkout: pip install -e '.[{extra}]')")
