"""Hash-verified downloads.

Invariant: the destination appears only after the whole file has arrived and its sha256 matched
(when one is expected); a failed or mismatching download leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path

from plmexit.atomic import atomic_path
from plmexit.errors import DownloadError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_PROGRESS_EVERY_S = 10.0


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: str | Path, sha256: str | None = None, timeout: float = 60.0) -> str:
    """Download ``url`` to ``dest``; verify ``sha256`` if given. Returns the file's sha256."""
    dest = Path(dest)
    digest = hashlib.sha256()
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0)
                done, last = 0, time.monotonic()
                for block in iter(lambda: response.read(_CHUNK), b""):
                    out.write(block)
                    digest.update(block)
                    done += len(block)
                    if time.monotonic() - last > _PROGRESS_EVERY_S:
                        last = time.monotonic()
                        log.info("downloading %s: %.1f of %.1f MB", url, done / 1e6, total / 1e6)
        except (urllib.error.URLError, OSError) as exc:
            raise DownloadError(f"could not download {url} ({exc}); check the URL and the network, or use a local copy") from None
        found = digest.hexdigest()
        if sha256 is not None and found != sha256.lower():
            raise DownloadError(
                f"{url}: sha256 is {found}, expected {sha256}; the download is corrupt or the "
                "source changed; nothing was written, retry or fix the configured sha256"
            )
    log.info("downloaded %s to %s (sha256 %s)", url, dest, found)
    return found
