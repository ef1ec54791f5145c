"""Atomic file creation: write to a temporary sibling, rename into place on success.

Invariant: a path handed out by ``atomic_path`` either becomes the destination in full, by one
``os.replace``, or is deleted. Readers therefore never see a half-written output, and a hard kill
(SIGKILL, a lost node) leaves at most a hidden ``.tmp-<host>-<pid>`` sibling that no rule reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Iterator


def temp_sibling(dest: Path) -> Path:
    """Hidden temporary path in the destination's directory (same file system, so rename is atomic).

    Host and process id make it private to one writer: on a cluster two jobs for the same output
    (a cancelled attempt still dying on one node, its retry on another) can share a process id.
    """
    return dest.with_name(f".{dest.name}.tmp-{socket.gethostname()}-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; move it onto ``dest`` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(dest)
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(dest: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text)


def write_json(dest: str | os.PathLike, data) -> None:
    """Write ``data`` to ``dest`` atomically as indented JSON; numpy scalars (anything with ``item()``) as Python numbers."""
    write_text(dest, json.dumps(data, indent=2, default=_json_scalar) + "\n")


def _json_scalar(value):
    if callable(getattr(value, "item", None)):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


@contextlib.contextmanager
def atomic_directory(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory to fill; it replaces ``dest`` (and any earlier ``dest``) only if the block succeeds.

    A reader sees the old directory or the new one, never a mix: the old one is moved aside, the
    new one renamed in, then the old one deleted.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(dest)
    old = tmp.with_name(tmp.name + "-old")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
