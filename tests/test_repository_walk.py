"""Hostile publisher, round three: a version folder cannot stop the repository poller.

A 2,000-deep chain of folders (os.walk recursed until Python's stack ran out, on every poll, before
any version loaded) and thousands of empty folders inside one version directory: that version is
refused alone, with its reason in /models/{name} and in monoserve_load_refusals_total{step=
"directory"}; every other version and model keeps loading, and startup succeeds (contract.walk).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

from contract.manifest import Manifest
from contract.signing import SignatureError, check_bounds
from contract.walk import MAX_DEPTH, MAX_DIRS, MAX_ENTRIES, WalkRefused, bounded_walk
from service.repository.registry import ModelRegistry, fingerprint
from service_fixtures import copy_version, fresh_repo
from test_service_e2e import running_server

CHAIN_DEPTH = 2000


def deep_chain(top: Path, depth: int) -> None:
    """`depth` nested folders below `top`, made relative to each parent's descriptor (the whole path
    would be longer than PATH_MAX)."""
    top.mkdir(parents=True, exist_ok=True)
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def remove_chain(top: Path) -> None:
    """Remove a chain made by deep_chain without recursion (shutil.rmtree would recurse 2,000 deep)."""
    fds = [os.open(top, os.O_RDONLY)]
    with contextlib.ExitStack() as closing:
        while True:
            try:
                fds.append(os.open("d", os.O_RDONLY, dir_fd=fds[-1]))
            except FileNotFoundError:
                break
        for fd in fds:
            closing.callback(os.close, fd)
        for parent in reversed(fds[:-1]):
            os.rmdir("d", dir_fd=parent)


@pytest.fixture
def chain(tmp_path):
    made: list[Path] = []

    def make(top: Path, depth: int = CHAIN_DEPTH) -> Path:
        deep_chain(top, depth)
        made.append(top)
        return top

    yield make
    for top in made:
        remove_chain(top)


def test_the_walk_stops_at_the_first_folder_past_a_limit_without_recursion(tmp_path, chain):
    top = chain(tmp_path / "version" / "hostile")
    with pytest.raises(WalkRefused, match=f"nested more than {MAX_DEPTH} levels deep"):
        list(bounded_walk(tmp_path / "version"))
    wide = tmp_path / "wide"
    for index in range(20_200):
        (wide / f"{index:05d}").mkdir(parents=True)
    seen = []
    with pytest.raises(WalkRefused, match=f"more than {MAX_ENTRIES} entries"):  # listing stops at the limit
        for relative, _ in bounded_walk(wide):
            seen.append(relative)
    assert not seen
    few = tmp_path / "few"
    for index in range(MAX_DIRS + 36):
        (few / f"{index:03d}" / "inner").mkdir(parents=True)
    with pytest.raises(WalkRefused, match=f"more than {MAX_DIRS} folders"):
        for relative, _ in bounded_walk(few):
            seen.append(relative)
    assert len(seen) <= MAX_DIRS  # stopped as it went, not after walking every folder
    with pytest.raises(SignatureError, match="nested more than"):
        check_bounds(top.parent, 1 << 20)


def test_a_deep_version_folder_is_refused_alone_and_every_other_version_and_model_loads(tmp_path, chain):
    repo = fresh_repo(tmp_path, models=("smoother", "classifier"))
    copy_version(repo, "smoother", 1, 2)
    chain(repo / "smoother" / "2" / "nested")
    copy_version(repo, "smoother", 1, 3)
    refused = []
    registry = ModelRegistry(repo, on_version=lambda name, report: refused.append((name, report.failed_step and
                                                                                   report.failed_step.step)))
    registry.load()
    smoother = registry.models["smoother"]
    assert sorted(smoother.served) == [1, 3] and smoother.latest.manifest.version == 3
    reason = smoother.reports[2].reason
    assert reason.startswith("directory: the version directory holds folders nested more than")
    assert registry.models["classifier"].served and registry.ready
    assert ("smoother", "directory") in refused
    before = fingerprint(repo / "smoother" / "2")
    registry.refresh()  # unchanged: not proved (nor counted) again
    assert fingerprint(repo / "smoother" / "2") == before and refused.count(("smoother", "directory")) == 1


def test_serve_starts_beside_a_2000_deep_folder_and_keeps_loading_new_versions(tmp_path, chain):
    repo = fresh_repo(tmp_path, models=("smoother", "classifier"))
    copy_version(repo, "smoother", 1, 2)
    chain(repo / "smoother" / "2" / "nested")
    with running_server(repo, "--workers", "1", env={"MONOSERVE_POLL_INTERVAL_S": "0.3"}) as server:
        detail = httpx.get(f"{server.base}/models/smoother", timeout=10).json()
        versions = {item["version"]: item for item in detail["versions"]}
        assert versions[2]["state"] == "refused" and "nested more than" in versions[2]["report"]["reason"]
        assert detail["serving_version"] == 1
        metrics = httpx.get(f"{server.base}/metrics", timeout=10).text
        assert 'monoserve_load_refusals_total{model="smoother",step="directory"} 1.0' in metrics
        # a good version published while the hostile one sits there is served by the poller
        staged = repo / "smoother" / ".staging"
        shutil.copytree(repo / "smoother" / "1", staged)
        manifest = Manifest.read(staged)
        manifest.version = 3
        (staged / "manifest.json").write_text(manifest.to_json())
        os.rename(staged, repo / "smoother" / "3")  # published atomically, as export does
        deadline = time.monotonic() + 60  # a failure timeout, not a performance bound
        while time.monotonic() < deadline:
            if httpx.get(f"{server.base}/models/smoother", timeout=10).json()["serving_version"] == 3:
                break
            time.sleep(0.3)
        assert httpx.get(f"{server.base}/models/smoother", timeout=10).json()["serving_version"] == 3
        assert httpx.get(f"{server.base}/models/classifier", timeout=10).json()["state"] == "serving"
    assert "RecursionError" not in server.output


def test_a_crowded_or_oddly_named_model_folder_never_stops_the_others(tmp_path):
    """A model folder is listed with a bound too (ModelRegistry._plan_model): past it that model keeps
    what it serves and says why, the others load. A folder named '²' ('²'.isdigit() is true but
    int('²') fails) once made every poll raise; non-ASCII digits are not version numbers."""
    from service.repository.registry import MAX_MODEL_ENTRIES

    repo = fresh_repo(tmp_path, models=("smoother", "classifier"))
    (repo / "classifier" / "²").mkdir()
    (repo / "classifier" / "\u0663").mkdir()  # ARABIC-INDIC DIGIT THREE: int() reads it as 3
    registry = ModelRegistry(repo)
    registry.load()
    assert sorted(registry.models["classifier"].reports) == [1] and registry.ready
    served = registry.models["smoother"]
    for index in range(MAX_MODEL_ENTRIES + 1):
        (repo / "smoother" / f"junk{index}").touch()
    copy_version(repo, "classifier", 1, 2)
    registry.refresh()
    assert registry.models["smoother"] is served and served.latest.manifest.version == 1  # kept as it was
    assert registry.models["classifier"].latest.manifest.version == 2  # the others load on
    fresh = ModelRegistry(repo)
    fresh.load()  # a first load: the crowded model is listed with its reason, the others serve
    assert f"more than {MAX_MODEL_ENTRIES} entries" in fresh.models["smoother"].reason
    assert fresh.models["classifier"].latest.manifest.version == 2
