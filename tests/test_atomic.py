"""Atomic outputs: a temporary name private to one writer, renamed into place only on success."""

from __future__ import annotations

import os
import socket

import pytest

from plmexit.atomic import atomic_directory, atomic_path, temp_sibling


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


def test_a_directory_replaces_the_old_one_whole_or_not_at_all(tmp_path):
    dest = tmp_path / "export"
    with atomic_directory(dest) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_directory(dest) as tmp:
            (tmp / "b.txt").write_text("half")
            raise RuntimeError("killed mid-write")
    assert sorted(p.name for p in dest.iterdir()) == ["a.txt"]
    with atomic_directory(dest) as tmp:
        (tmp / "c.txt").write_text("second")
    assert sorted(p.name for p in dest.iterdir()) == ["c.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no temporary or old siblings left
