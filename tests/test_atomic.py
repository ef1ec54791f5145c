"""Atomic outputs: a temporary name private to one writer, renamed into place only on success."""

from __future__ import annotations

import os
import socket

import pytest

from plmexit.atomic import atomic_path, temp_sibling


def test_temporary_name_is_hidden_and_private_to_host_and_process(tmp_path):
    """Two cluster jobs for one output (a dying attempt and its retry) may share a pid, not a host and pid."""
    tmp = temp_sibling(tmp_path / "out.h5")

    assert tmp.parent == tmp_path
    assert tmp.name == f".out.h5.tmp-{socket.gethostname()}-{os.getpid()}"


def test_failure_leaves_neither_output_nor_temporary_file(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")

    assert list(tmp_path.iterdir()) == []
