"""The one bounded walk of a version directory (the registry's fingerprint, the signature's bounds).

A version directory holds a handful of files. A hostile one may hold a chain of thousands of
nested folders (os.walk recurses: Python's stack ends at about 1,000 levels) or tens of
thousands of empty folders walked again on every poll. This walk is iterative (an explicit stack,
no recursion) and checks its limits as it goes, so it stops at the first folder past a limit,
having looked at no more than the limits allow:

- depth: folders nested more than MAX_DEPTH levels below the version directory;
- folders: more than MAX_DIRS folders in all;
- files: more than MAX_FILES regular files (the signature's limit, contract.signing.MAX_FILES);
- entries: more than MAX_ENTRIES entries of any kind (files, folders, links, FIFOs...).

Links are never followed (lstat); what each entry is, is left to the caller. stdlib only.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

MAX_DEPTH = 8
MAX_DIRS = 64
MAX_FILES = 256
MAX_ENTRIES = 1024
MAX_SHOWN_PATH = 120  # characters of a path in a message (a 2,000-deep path is cut)


@dataclass(frozen=True)
class WalkLimits:
    max_depth: int = MAX_DEPTH
    max_dirs: int = MAX_DIRS
    max_files: int = MAX_FILES
    max_entries: int = MAX_ENTRIES


class WalkRefused(ValueError):
    """The directory is past a limit; the message names the limit and where it was reached."""


def _shown(relative: str) -> str:
    return relative if len(relative) <= MAX_SHOWN_PATH else relative[:MAX_SHOWN_PATH] + f"... ({len(relative)} chars)"


def bounded_walk(root: str | Path, limits: WalkLimits = WalkLimits()) -> Iterator[tuple[str, os.stat_result]]:
    """(path relative to `root`, lstat result) of every entry below `root`, folders before their
    contents, each folder's entries in name order; WalkRefused at the first limit passed (OSError
    when a folder cannot be listed)."""
    root = os.fspath(root)
    stack: list[tuple[str, int]] = [(root, 0)]
    folders = files = entries = 0
    while stack:
        directory, depth = stack.pop()
        with os.scandir(directory) as listing:
            names = []
            for entry in listing:
                entries += 1
                if entries > limits.max_entries:
                    raise WalkRefused(f"the version directory holds more than {limits.max_entries} entries: refused "
                                      "without walking further")
                names.append(entry)
        names.sort(key=lambda entry: entry.name)
        children = []
        for entry in names:
            relative = os.path.relpath(entry.path, root)
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                folders += 1
                if depth + 1 > limits.max_depth:
                    raise WalkRefused(f"the version directory holds folders nested more than {limits.max_depth} levels deep "
                                      f"(at {_shown(relative)}): refused without walking further")
                if folders > limits.max_dirs:
                    raise WalkRefused(f"the version directory holds more than {limits.max_dirs} folders: refused "
                                      "without walking further")
                children.append((entry.path, depth + 1))
            elif stat.S_ISREG(info.st_mode):
                files += 1
                if files > limits.max_files:
                    raise WalkRefused(f"the version directory holds more than {limits.max_files} files: refused "
                                      "without walking further")
            yield relative, info
        stack.extend(reversed(children))


def bounded_listing(directory: str | Path, max_entries: int = MAX_ENTRIES) -> list[os.DirEntry]:
    """The entries of one folder (not below it), in name order; WalkRefused past `max_entries`
    (a model folder with a million entries is not listed on every poll)."""
    listed: list[os.DirEntry] = []
    with os.scandir(directory) as listing:
        for entry in listing:
            if len(listed) >= max_entries:
                raise WalkRefused(f"{_shown(os.fspath(directory))} holds more than {max_entries} entries: refused "
                                  "without listing further")
            listed.append(entry)
    return sorted(listed, key=lambda entry: entry.name)
