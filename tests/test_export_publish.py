"""Atomic publication: staging cleanup and racing publishers (stdlib only, no torch)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from export.errors import ExportInputError
from export.publish import check_repository_writable, existing_versions, next_version, publish, staging_directory


def test_next_version_ignores_staging_and_other_entries(tmp_path):
    model_dir = tmp_path / "m"
    assert next_version(model_dir) == 1
    for name in ("1", "3", ".tmp-abc", "notes", "10x"):
        (model_dir / name).mkdir(parents=True)
    (model_dir / "7").write_text("a file, not a version")
    assert existing_versions(model_dir) == [1, 3]
    assert next_version(model_dir) == 4


def test_racing_publishers_all_get_distinct_versions(tmp_path):
    """Many threads finish staging at once and publish: each gets its own number, and the manifest
    inside each version names that version (finalize reruns after a lost race)."""
    repo, name, writers = tmp_path / "repo", "m", 12
    barrier = threading.Barrier(writers)
    results: list[tuple[int, Path]] = []
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            with staging_directory(repo, name) as staging:
                (staging / "payload").write_text(str(index))

                def finalize(version: int) -> None:
                    (staging / "manifest.json").write_text(json.dumps({"version": version, "writer": index}))

                barrier.wait()
                results.append(publish(staging, repo / name, finalize))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(version for version, _ in results) == list(range(1, writers + 1))
    assert sorted(os.listdir(repo / name)) == sorted(str(v) for v in range(1, writers + 1))
    writers_seen = set()
    for version, path in results:
        manifest = json.loads((path / "manifest.json").read_text())
        assert manifest["version"] == version
        assert (path / "payload").read_text() == str(manifest["writer"])
        writers_seen.add(manifest["writer"])
    assert writers_seen == set(range(writers))


def test_staging_is_removed_with_the_directories_it_created_on_failure(tmp_path):
    repo = tmp_path / "a" / "b" / "repo"
    with pytest.raises(RuntimeError):
        with staging_directory(repo, "m") as staging:
            (staging / "model.onnx").write_bytes(b"half")
            raise RuntimeError("boom")
    assert not (tmp_path / "a").exists()


def test_staging_keeps_existing_directories_and_versions(tmp_path):
    (tmp_path / "repo" / "m" / "1").mkdir(parents=True)
    with pytest.raises(KeyboardInterrupt):
        with staging_directory(tmp_path / "repo", "m"):
            raise KeyboardInterrupt
    assert os.listdir(tmp_path / "repo" / "m") == ["1"]


def test_repository_below_a_file_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ExportInputError, match="not a directory"):
        check_repository_writable(blocker / "repo")
    with pytest.raises(ExportInputError, match="not writable|cannot create"):
        with staging_directory(blocker / "repo", "m"):
            pass
