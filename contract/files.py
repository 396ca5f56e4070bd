"""Artifact files: the one checksum helper, used by export (to write the manifest) and the service.

Hashing streams in blocks, so a large file never sits in memory just to be hashed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK_BYTES = 1 << 20  # read in 1 MiB blocks


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()
