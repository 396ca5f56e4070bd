"""Files of a version: read once, streamed, capped before reading, never outside the repository."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from contract.files import FileRefusedError, read_checked, sha256_file
from contract.manifest import FileEntry, Manifest
from service.repository.prover import prove_version
from service_fixtures import copy_version, fresh_repo

GIB = 1 << 30


def _write(path, data: bytes):
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_sha256_file_streams_to_the_same_digest(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)  # more than one block, not a multiple of it
    digest = _write(tmp_path / "f", data)
    assert sha256_file(tmp_path / "f") == digest


def test_read_checked_returns_exactly_the_hashed_bytes(tmp_path):
    data = os.urandom(1 << 21)
    digest = _write(tmp_path / "a.bin", data)
    kept, got, size = read_checked(tmp_path, "a.bin", size=len(data), sha256=digest, max_bytes=len(data))
    assert kept == data and got == digest and size == len(data)
    kept, got, _ = read_checked(tmp_path, "a.bin", size=len(data), sha256=digest, max_bytes=len(data), keep=False)
    assert kept is None and got == digest


@pytest.mark.parametrize("size, sha, match", [
    (5, None, "size 4 bytes, manifest says 5"),
    (4, "0" * 64, "sha256 .* does not match"),
])
def test_read_checked_refuses_what_the_manifest_does_not_describe(tmp_path, size, sha, match):
    _write(tmp_path / "a.bin", b"abcd")
    with pytest.raises(FileRefusedError, match=match):
        read_checked(tmp_path, "a.bin", size=size, sha256=sha, max_bytes=100)


def test_the_cap_is_checked_before_reading_a_byte(tmp_path):
    path = tmp_path / "huge.bin"
    with open(path, "wb") as handle:  # sparse: 3 GiB that takes no disk and would take 3 GiB of memory
        handle.truncate(3 * GIB)
    with pytest.raises(FileRefusedError, match=r"huge.bin: 3221225472 bytes, over the 1024-byte limit"):
        read_checked(tmp_path, "huge.bin", size=3 * GIB, sha256="0" * 64, max_bytes=1024)


def test_symlinks_and_dotdot_that_leave_the_directory_are_refused(tmp_path):
    inside, outside = tmp_path / "version", tmp_path / "secret"
    inside.mkdir()
    _write(outside, b"password")
    (inside / "link.onnx").symlink_to(outside)
    with pytest.raises(FileRefusedError, match="link.onnx: resolves to .*secret, outside"):
        read_checked(inside, "link.onnx", size=None, sha256=None, max_bytes=100)
    with pytest.raises(FileRefusedError, match=r"\.\./secret: resolves to"):
        read_checked(inside, "../secret", size=None, sha256=None, max_bytes=100)
    (inside / "sub").mkdir()
    with pytest.raises(FileRefusedError, match="sub: not a regular file"):
        read_checked(inside, "sub", size=None, sha256=None, max_bytes=100)
    with pytest.raises(FileRefusedError, match="absent: file missing"):
        read_checked(inside, "absent", size=None, sha256=None, max_bytes=100)


# -- through the prover -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return fresh_repo(tmp_path_factory.mktemp("files"), models=("smoother",))


def _list_file(version, name: str, size: int, sha256: str, fmt: str = "pt2") -> None:
    manifest = Manifest.read(version)
    manifest.files = [f for f in manifest.files if f.format != fmt] + [FileEntry(path=name, format=fmt, sha256=sha256, size=size)]
    (version / "manifest.json").write_text(manifest.to_json())


def test_a_listed_multi_gb_file_is_refused_before_it_is_read(repo):
    version = copy_version(repo, "smoother", 1, 2)
    with open(version / "model.pt2", "wb") as handle:
        handle.truncate(3 * GIB)
    _list_file(version, "model.pt2", 3 * GIB, "0" * 64)
    report, proven = prove_version(version, max_file_bytes=256 << 20)
    assert proven is None and report.failed_step.step == "checksums"
    assert "model.pt2: 3221225472 bytes, over the 268435456-byte limit per file" in report.reason


def test_a_file_symlinked_outside_the_version_is_refused(repo, tmp_path):
    version = copy_version(repo, "smoother", 1, 3)
    outside = tmp_path / "elsewhere.onnx"
    outside.write_bytes((version / "model.onnx").read_bytes())
    (version / "model.onnx").unlink()
    (version / "model.onnx").symlink_to(outside)
    report, proven = prove_version(version)
    assert proven is None and report.failed_step.step == "checksums"
    assert "model.onnx: resolves to" in report.reason and "outside" in report.reason


def test_a_version_directory_that_resolves_outside_the_repository_is_refused(repo, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    import shutil

    shutil.copytree(repo / "smoother" / "1", elsewhere / "4")
    manifest = Manifest.read(elsewhere / "4")
    manifest.version = 4
    (elsewhere / "4" / "manifest.json").write_text(manifest.to_json())
    (repo / "smoother" / "4").symlink_to(elsewhere / "4")
    report, proven = prove_version(repo / "smoother" / "4")
    assert proven is None and report.failed_step.step == "manifest"
    assert "version directory" in report.reason and "outside" in report.reason
    honest, _ = prove_version(elsewhere / "4", repo=elsewhere.parent)  # the same files, in place: fine
    assert honest.failed_step.step == "manifest"  # ... except the name: 'elsewhere' is not 'smoother'
    assert "name 'smoother' does not match" in honest.reason


def test_verify_reads_its_cap_from_the_environment(repo):
    version = copy_version(repo, "smoother", 1, 5)
    env = {**os.environ, "MONOSERVE_MAX_ARTIFACT_BYTES": "1000"}
    result = subprocess.run([sys.executable, "-m", "monoserve.cli", "verify", str(version)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "over the 1000-byte limit" in result.stdout


def test_the_engine_runs_the_bytes_that_were_hashed_not_the_file_rewritten_since(repo, tmp_path, monkeypatch):
    """TOCTOU: model.onnx is swapped for a negated-kernel graph right after it was hashed; the proof and the
    engine work on the hashed bytes, so the version serves the original kernel."""
    import numpy as np

    import service.repository.prover as prover
    from service_fixtures import edit_initializer, onnx_initializers

    version = copy_version(repo, "smoother", 1, 6)
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "model.onnx").write_bytes((version / "model.onnx").read_bytes())
    edit_initializer(evil, "kernel", lambda k: -k)
    real = prover.read_checked

    def read_then_swap(directory, relative, **options):
        result = real(directory, relative, **options)
        if relative == "model.onnx":
            (directory / relative).write_bytes((evil / "model.onnx").read_bytes())
        return result

    monkeypatch.setattr(prover, "read_checked", read_then_swap)
    report, proven = prove_version(version)
    assert report.ok, report.render()
    kernel = onnx_initializers(repo / "smoother" / "1")["kernel"].reshape(-1)
    assert (onnx_initializers(version)["kernel"].reshape(-1) == -kernel).all()  # the file on disk was swapped
    x = np.zeros((1, 1, 3), dtype=np.float32)
    x[0, 0, 1] = 1.0
    assert (proven.engine.run(x) >= 0).all()  # an impulse through the hashed (positive) kernel
    np.testing.assert_allclose(proven.engine.run(x)[0, 0, 1:1 + kernel.size][::-1], kernel, rtol=1e-6)


def test_a_running_service_refuses_files_outside_or_over_the_cap_and_keeps_serving(tmp_path):
    import httpx

    from test_service_e2e import free_port, start_server, stop, wait_ready

    repo = fresh_repo(tmp_path / "served", models=("smoother",))
    linked = copy_version(repo, "smoother", 1, 2)  # model.onnx is a symlink to a copy outside the repository
    outside = tmp_path / "outside.onnx"
    outside.write_bytes((linked / "model.onnx").read_bytes())
    (linked / "model.onnx").unlink()
    (linked / "model.onnx").symlink_to(outside)
    big = copy_version(repo, "smoother", 1, 3)  # lists a sparse 3 GiB file
    with open(big / "model.pt2", "wb") as handle:
        handle.truncate(3 * GIB)
    _list_file(big, "model.pt2", 3 * GIB, "0" * 64)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_server(repo, port, env={"MONOSERVE_MAX_ARTIFACT_BYTES": str(64 << 20)})
    try:
        wait_ready(process, base)
        assert httpx.post(f"{base}/smooth", json={"signal": [1.0, 2.0, 3.0]}).json()["version"] == 1
        versions = {v["version"]: v for v in httpx.get(f"{base}/models/smoother").json()["versions"]}
        assert versions[2]["state"] == "refused" and "model.onnx: resolves to" in versions[2]["report"]["reason"]
        assert versions[3]["state"] == "refused"
        assert "model.pt2: 3221225472 bytes, over the 67108864-byte limit" in versions[3]["report"]["reason"]
    finally:
        stop(process)
