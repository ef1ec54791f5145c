"""Hash-verified downloads from a local HTTP server: nothing half-written is ever left behind."""

from __future__ import annotations

import hashlib
import socket

import pytest

from plmexit.download import download, sha256_file
from plmexit.errors import DownloadError

PAYLOAD = b"plmexit test payload\n" * 1000
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_sha256_file_exact_values(write_file):
    assert sha256_file(write_file("empty", b"")) == EMPTY_SHA256
    assert sha256_file(write_file("abc", b"abc")) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    big = bytes(range(256)) * 10_000  # 2.4 MiB: spans several read chunks
    assert sha256_file(write_file("big", big)) == hashlib.sha256(big).hexdigest()


def test_download_with_the_right_hash(http_server, tmp_path, files_under):
    (http_server.directory / "file.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "cache" / "sub" / "file.bin"

    found = download(http_server.url("file.bin"), dest, PAYLOAD_SHA256)

    assert found == PAYLOAD_SHA256
    assert dest.read_bytes() == PAYLOAD
    assert files_under(tmp_path / "cache") == ["sub/file.bin"]


def test_download_without_a_hash_returns_it(http_server, tmp_path):
    (http_server.directory / "file.bin").write_bytes(PAYLOAD)

    assert download(http_server.url("file.bin"), tmp_path / "file.bin") == PAYLOAD_SHA256


def test_download_accepts_an_upper_case_hash(http_server, tmp_path):
    (http_server.directory / "file.bin").write_bytes(PAYLOAD)

    assert download(http_server.url("file.bin"), tmp_path / "file.bin", PAYLOAD_SHA256.upper()) == PAYLOAD_SHA256


def test_download_with_a_wrong_hash_leaves_nothing(http_server, tmp_path, files_under):
    (http_server.directory / "file.bin").write_bytes(PAYLOAD)
    cache = tmp_path / "cache"

    with pytest.raises(DownloadError, match=rf"file\.bin: sha256 is {PAYLOAD_SHA256}, expected {'0' * 64}; .*nothing was written"):
        download(http_server.url("file.bin"), cache / "file.bin", "0" * 64)

    assert files_under(cache) == []  # no destination and no hidden .tmp sibling


def test_failed_download_keeps_an_existing_destination(http_server, tmp_path):
    (http_server.directory / "file.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"previous good copy")

    with pytest.raises(DownloadError, match=r"sha256 is"):
        download(http_server.url("file.bin"), dest, "0" * 64)

    assert dest.read_bytes() == b"previous good copy"
    assert [p.name for p in tmp_path.iterdir() if p.name != "served"] == ["file.bin"]


def test_download_404(http_server, tmp_path, files_under):
    with pytest.raises(DownloadError, match=r"could not download http://127\.0\.0\.1:\d+/missing\.bin \(HTTP Error 404"):
        download(http_server.url("missing.bin"), tmp_path / "cache" / "missing.bin")

    assert files_under(tmp_path / "cache") == []


def test_download_connection_refused(tmp_path, files_under, monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(DownloadError, match=rf"could not download http://127\.0\.0\.1:{port}/x\.bin .*check the URL"):
        download(f"http://127.0.0.1:{port}/x.bin", tmp_path / "cache" / "x.bin", timeout=5)

    assert files_under(tmp_path / "cache") == []
