"""Artifact files: the one checksum helper, and the one way the service reads an artifact.

Hashing streams in blocks, so a large file never sits in memory just to be hashed. Reading for a
proof (`read_checked`) decides everything it can before reading a byte (the file is inside the
version directory, a regular file, not larger than the cap, the size the manifest says), then
hashes the bytes while reading them into the buffer that is returned: the bytes a caller parses
are exactly the bytes that were hashed, whatever happens to the file meanwhile.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

BLOCK_BYTES = 1 << 20  # read in 1 MiB blocks
DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024  # per file; the service's MONOSERVE_MAX_ARTIFACT_BYTES


class FileRefusedError(ValueError):
    """A listed file that may not be read or does not match the manifest; the message names it."""


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def inside(path: Path, root: Path) -> bool:
    """True when `path`, with every symlink resolved, lies strictly inside `root` (also resolved)."""
    resolved, base = path.resolve(), root.resolve()
    return base in resolved.parents


def check_inside(path: Path, root: Path, label: str) -> None:
    if not inside(path, root):
        raise FileRefusedError(f"{label}: resolves to {path.resolve()}, outside {root.resolve()} (symlink or '..')")


def read_checked(
    directory: Path, relative: str, *, size: int | None, sha256: str | None, max_bytes: int, keep: bool = True,
) -> tuple[bytes | None, str, int]:
    """Read REL inside DIRECTORY as the manifest describes it: (bytes or None, sha256 hex, size).

    Refused (FileRefusedError, naming the file) when it resolves outside `directory`, is not a
    regular file, is larger than `max_bytes`, or its size differs from `size`, all decided from
    fstat before reading; then when the bytes read differ in length from that fstat (changed while
    read) or their sha256 differs from `sha256`. `keep=False` hashes without keeping the bytes.
    """
    path = directory / relative
    check_inside(path, directory, relative)
    # O_NOFOLLOW: the resolved file, not a symlink swapped in since; O_NONBLOCK: a FIFO cannot hang us.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path.resolve(), flags)
    except FileNotFoundError:
        raise FileRefusedError(f"{relative}: file missing") from None
    except OSError as exc:
        raise FileRefusedError(f"{relative}: cannot be opened: {exc.strerror or exc}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise FileRefusedError(f"{relative}: not a regular file")
    with os.fdopen(fd, "rb", buffering=0) as handle:
        if info.st_size > max_bytes:
            raise FileRefusedError(f"{relative}: {info.st_size} bytes, over the {max_bytes}-byte limit per file "
                                   "(MONOSERVE_MAX_ARTIFACT_BYTES); not read")
        if size is not None and info.st_size != size:
            raise FileRefusedError(f"{relative}: size {info.st_size} bytes, manifest says {size} (truncated or altered)")
        digest = hashlib.sha256()
        buffer = bytearray(info.st_size) if keep else None
        view = memoryview(buffer) if buffer is not None else None
        scratch = bytearray(min(BLOCK_BYTES, max(info.st_size, 1)))
        total = 0
        while True:
            if view is not None and total < info.st_size:
                count = handle.readinto(view[total:total + BLOCK_BYTES])
                block = view[total:total + count]
            else:  # not kept, or the file grew past its fstat size: read past it to notice
                count = handle.readinto(scratch)
                block = memoryview(scratch)[:count]
            if not count:
                break
            digest.update(block)
            total += count
            if total > info.st_size:
                break
        if total != info.st_size:
            raise FileRefusedError(f"{relative}: changed while being read ({total} bytes read, {info.st_size} expected)")
        hexdigest = digest.hexdigest()
        if sha256 is not None and hexdigest != sha256:
            raise FileRefusedError(f"{relative}: sha256 {hexdigest} does not match the manifest's {sha256}")
        return (bytes(buffer) if buffer is not None else None), hexdigest, total
