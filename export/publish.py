"""Atomic publication of a model version in a Triton-layout repository (stdlib only).

Everything is written into a staging directory inside ``REPO/NAME/`` (``.tmp-<uuid>``, a name the
service ignores because it is not an integer), then the staging directory is renamed to the next
integer version. ``rename(2)`` refuses to replace a non-empty directory, so two exporters racing for
the same number cannot both win: the loser re-numbers and tries again. A failed export removes its
staging directory, and the directories it created on the way (``NAME``, ``REPO``, ...) when empty.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable, Iterator

from export.errors import ExportInputError, KindConflictError

logger = logging.getLogger(__name__)

STAGING_PREFIX = ".tmp-"
MAX_PUBLISH_ATTEMPTS = 1000


def existing_versions(model_dir: Path) -> list[int]:
    """Integer-named subdirectories of `model_dir`, ascending (staging and other names are ignored)."""
    if not model_dir.is_dir():
        return []
    versions = []
    for entry in model_dir.iterdir():
        if entry.name.isdigit() and entry.is_dir():
            versions.append(int(entry.name))
    return sorted(versions)


def published_kinds(model_dir: Path) -> dict[int, str]:
    """The kind each published version's manifest.json declares (versions without a readable one are skipped)."""
    kinds = {}
    for version in existing_versions(model_dir):
        try:
            kind = json.loads((model_dir / str(version) / "manifest.json").read_text(encoding="utf-8")).get("kind")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(kind, str):
            kinds[version] = kind
    return kinds


def check_kind(model_dir: Path, kind: str, replace_kind: bool = False) -> None:
    """Refuse to publish a `kind` under a name whose versions are of another kind: the new version
    would become the name's default and every client of the old kind would lose it."""
    others = {v: k for v, k in published_kinds(model_dir).items() if k != kind}
    if not others:
        return
    listed = ", ".join(f"version {v} is a {k}" for v, k in sorted(others.items()))
    if replace_kind:
        logger.warning("publishing a %s under %r, which holds another kind (%s): --replace-kind", kind, model_dir.name, listed)
        return
    raise KindConflictError(
        f"model name {model_dir.name!r} already holds another kind ({listed}); refusing to publish a {kind} "
        f"under it: choose another --name, or pass --replace-kind to make it a {kind} from now on")


def next_version(model_dir: Path) -> int:
    versions = existing_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def check_repository_writable(repo: Path) -> None:
    """Fail early (before any heavy work) when `repo` cannot hold a new model version.

    Looks at the nearest existing ancestor without creating anything: it must be a writable
    directory. (Root passes every permission check; creating the staging directory later is the
    final word and fails with the same error type.)
    """
    probe = repo
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ExportInputError(f"model repository {repo} is not usable: {probe} exists and is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ExportInputError(f"model repository {repo} is not writable (no write permission on {probe})")


def _fsync_tree(root: Path) -> None:
    """Flush every file and directory under `root` so a renamed version survives a crash."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for filename in filenames:
            fd = os.open(os.path.join(dirpath, filename), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse fsync on directories
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def staging_directory(repo: Path, name: str) -> Iterator[Path]:
    """Create ``REPO/NAME/.tmp-<uuid>/`` and remove it (and the parents it created) unless published.

    The caller publishes with `publish`, which renames the directory away; whatever is left at
    exit (an exception, KeyboardInterrupt, SystemExit from a signal handler) is deleted.
    """
    model_dir = repo / name
    created: list[Path] = []
    missing = [d for d in (*reversed(model_dir.parents), model_dir) if not d.exists()]
    try:
        for directory in missing:
            if not directory.exists():
                try:
                    directory.mkdir()
                    created.append(directory)
                except FileExistsError:
                    pass  # a concurrent export created it first
    except OSError as exc:
        _remove_empty(created)
        raise ExportInputError(f"cannot create model directory {model_dir}: {exc}") from exc
    staging = model_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    try:
        staging.mkdir()  # not tempfile.mkdtemp: its 0700 mode would make the version unreadable to others
    except OSError as exc:
        _remove_empty(created)
        raise ExportInputError(f"model repository {repo} is not writable: cannot create {staging}: {exc}") from exc
    try:
        yield staging
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
            _remove_empty(created)


def _remove_empty(created: list[Path]) -> None:
    for directory in reversed(created):
        with contextlib.suppress(OSError):  # not empty: another export is using it; keep it
            directory.rmdir()


def publish(staging: Path, model_dir: Path, finalize: Callable[[int], None]) -> tuple[int, Path]:
    """Rename `staging` to the next free integer version under `model_dir`; returns (version, path).

    `finalize(version)` runs before each attempt to write the version-dependent files (the manifest
    names its own version); a lost race re-numbers, finalizes again and retries.
    """
    for _attempt in range(MAX_PUBLISH_ATTEMPTS):
        version = next_version(model_dir)
        target = model_dir / str(version)
        finalize(version)
        _fsync_tree(staging)
        try:
            os.rename(staging, target)
        except OSError as exc:
            # EEXIST/ENOTEMPTY: another export took this number first (a non-empty directory).
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) or target.exists():
                logger.info("version %s of %s was taken concurrently; trying the next number", version, model_dir.name)
                continue
            raise
        _fsync_dir(model_dir)
        return version, target
    raise RuntimeError(f"could not publish into {model_dir} after {MAX_PUBLISH_ATTEMPTS} attempts")
