"""Model lifecycle in process: the registry's refresh (real proofs over real artifacts), the control
API through the real app (TestClient runs its lifespan), and export's guard on model names."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from contract.manifest import Manifest
from contract.modes import mode_slice
from service.app import create_app
from service.repository.registry import ModelRegistry, fingerprint
from service.settings import Settings
from service_fixtures import (
    CLASSIFIER_FEATURES,
    build_smoother,
    edit_initializer,
    fresh_repo,
    numpy_smooth,
    onnx_initializers,
    onnx_name,
    reseal,
)


class Proofs:
    """Records every proof the registry runs (its on_version hook)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int | None, bool]] = []

    def __call__(self, name, report) -> None:
        self.seen.append((name, report.version, report.ok))


def make_registry(repo: Path) -> tuple[ModelRegistry, Proofs]:
    proofs = Proofs()
    return ModelRegistry(repo, on_version=proofs), proofs


def publish_copy(repo: Path, name: str, source: int, target: int, change=None) -> Path:
    """A copy of version `source` published as `target` the way export publishes: prepared in a
    hidden directory (never visible under its number while incomplete), then renamed."""
    staged = repo / name / f".staging-{target}"
    shutil.copytree(repo / name / str(source), staged)
    manifest = Manifest.read(staged)
    manifest.version = target
    (staged / "manifest.json").write_text(manifest.to_json())
    if change is not None:
        change(staged)
    version_dir = repo / name / str(target)
    staged.rename(version_dir)
    return version_dir


def negate_kernel(version_dir: Path) -> None:
    """A hostile edit that keeps the manifest consistent (checksums and probe recomputed)."""
    edit_initializer(version_dir, onnx_name(version_dir, "kernel"), lambda k: -k)
    reseal(version_dir)


@pytest.fixture
def repo(tmp_path):
    return fresh_repo(tmp_path, models=("smoother",))


def test_unchanged_versions_are_not_proved_again(repo):
    registry, proofs = make_registry(repo)
    registry.refresh()
    first = registry.resolve("smoother")
    assert proofs.seen == [("smoother", 1, True)]
    plan = registry.refresh()
    assert proofs.seen == [("smoother", 1, True)] and not plan.changed
    assert registry.resolve("smoother") is first  # the same proven object and engine keep serving


def test_new_version_is_swapped_in_and_the_old_one_finishes(repo, tmp_path):
    registry, proofs = make_registry(repo)
    registry.refresh()
    in_flight = registry.resolve("smoother")  # a request that resolved version 1 before the reload
    version_dir = build_smoother(repo, tmp_path, kernel_size=5)  # the real export, publishing version 2
    assert version_dir.name == "2"
    plan = registry.refresh()
    assert plan.proved == [("smoother", 2)]
    served = registry.resolve("smoother")
    assert served.manifest.version == 2 and served.manifest.smoother.kernel_size == 5
    signal = np.random.default_rng(1).standard_normal((1, 1, 40)).astype(np.float32)
    old_kernel = onnx_initializers(repo / "smoother" / "1")[onnx_name(repo / "smoother" / "1", "kernel")]
    # the engine of the replaced version still answers (nothing closed it), and answers as version 1
    full = np.asarray(in_flight.engine.run(signal))  # the full correlation: each mode is a slice of it
    valid = full[..., mode_slice("valid", signal.shape[-1], old_kernel.size)]
    np.testing.assert_allclose(valid, numpy_smooth(signal, old_kernel, "valid"), atol=1e-5)
    assert registry.resolve("smoother", version=1) is in_flight  # older valid versions stay addressable


def test_tampered_version_is_refused_and_the_old_one_keeps_serving(repo):
    registry, proofs = make_registry(repo)
    registry.refresh()
    publish_copy(repo, "smoother", 1, 2, negate_kernel)
    plan = registry.refresh()
    assert [(n, v) for n, v, _ in plan.refused] == [("smoother", 2)]
    assert "constraints" in plan.refused[0][2] and "kernel" in plan.refused[0][2]
    assert registry.resolve("smoother").manifest.version == 1
    detail = registry.model("smoother").detail()
    refused = next(v for v in detail["versions"] if v["version"] == 2)
    assert refused["state"] == "refused" and refused["report"]["reason"].startswith("constraints")
    assert detail["serving_version"] == 1 and registry.ready
    registry.refresh()
    assert proofs.seen.count(("smoother", 2, False)) == 1  # refused once, not again on every poll


def test_half_written_version_is_refused_then_proved_once_complete(repo):
    registry, proofs = make_registry(repo)
    registry.refresh()
    target = repo / "smoother" / "2"
    target.mkdir()  # a publisher that writes in place, file by file
    shutil.copy(repo / "smoother" / "1" / "model.onnx", target / "model.onnx")
    plan = registry.refresh()
    assert plan.refused and plan.refused[0][:2] == ("smoother", 2) and "manifest" in plan.refused[0][2]
    registry.refresh()
    assert proofs.seen.count(("smoother", 2, False)) == 1  # unchanged: not proved again
    for item in (repo / "smoother" / "1").iterdir():  # the rest of the files arrive
        if not (target / item.name).exists():
            shutil.copy(item, target / item.name)
    manifest = (target / "manifest.json").read_text().replace('"version": 1', '"version": 2')
    (target / "manifest.json").write_text(manifest)
    plan = registry.refresh()
    assert plan.proved == [("smoother", 2)]
    assert registry.resolve("smoother").manifest.version == 2


def test_version_changed_while_proved_is_refused_and_retried(repo, monkeypatch):
    import service.repository.registry as registry_module

    real_prove = registry_module.prove_version
    touched = []

    def prove_then_touch(version_dir, **kwargs):
        result = real_prove(version_dir, **kwargs)
        if not touched:  # a publisher still writing while the first proof ran
            (Path(version_dir) / "README.txt").write_text("late file")
            touched.append(version_dir)
        return result

    monkeypatch.setattr(registry_module, "prove_version", prove_then_touch)
    registry, proofs = make_registry(repo)
    plan = registry.refresh()
    assert plan.refused and "stable" in plan.refused[0][2] and not registry.ready
    plan = registry.refresh()  # it held still since: proved again, and serves
    assert plan.proved == [("smoother", 1)] and registry.ready


def test_file_edited_in_place_is_proved_again(repo):
    registry, proofs = make_registry(repo)
    publish_copy(repo, "smoother", 1, 2)
    registry.refresh()
    assert registry.resolve("smoother").manifest.version == 2
    with open(repo / "smoother" / "2" / "model.onnx", "ab") as handle:
        handle.write(b"\0")  # the served artifact changes on disk
    plan = registry.refresh()
    assert plan.refused and plan.refused[0][:2] == ("smoother", 2) and "checksums" in plan.refused[0][2]
    assert registry.resolve("smoother").manifest.version == 1


def test_vanished_versions_and_models_are_unloaded(repo):
    registry, _ = make_registry(repo)
    publish_copy(repo, "smoother", 1, 2)
    registry.refresh()
    shutil.rmtree(repo / "smoother" / "2")
    plan = registry.refresh()
    assert plan.removed == [("smoother", 2)] and registry.resolve("smoother").manifest.version == 1
    shutil.rmtree(repo / "smoother")
    plan = registry.refresh()
    assert plan.removed == [("smoother", 1)] and registry.models == {} and not registry.ready
    assert "holds no models" in registry.not_ready_reasons()[0]


def test_empty_repository_becomes_ready(tmp_path):
    repo = tmp_path / "empty"
    repo.mkdir()
    registry, _ = make_registry(repo)
    registry.refresh()
    assert not registry.ready
    shutil.copytree(fresh_repo(tmp_path / "source", models=("smoother",)) / "smoother", repo / "smoother")
    registry.refresh()
    assert registry.ready and registry.resolve("smoother").manifest.version == 1


def test_a_model_directory_being_staged_is_not_a_model_yet(repo):
    registry, proofs = make_registry(repo)
    registry.refresh()
    (repo / "newcomer" / ".tmp-export").mkdir(parents=True)  # export of a new name in progress
    registry.refresh()
    assert "newcomer" not in registry.models and registry.ready and len(proofs.seen) == 1


def test_readiness_after_start_ignores_a_new_model_that_never_served(repo):
    registry, _ = make_registry(repo)
    registry.refresh()
    assert registry.ready
    shutil.copytree(repo / "smoother", repo / "broken")
    (repo / "broken" / "1" / "manifest.json").write_text("{}")  # a new name whose only version is refused
    registry.refresh()
    assert registry.model("broken").reason and registry.ready  # reported, but the pod keeps serving
    assert registry.not_ready_reasons() == []
    with open(repo / "smoother" / "1" / "model.onnx", "ab") as handle:
        handle.write(b"\0")  # a model that served loses its only valid version: that is a fault
    registry.refresh()
    assert not registry.ready and "smoother" in registry.not_ready_reasons()[0]


def test_a_broken_model_at_start_keeps_the_service_unready(repo):
    shutil.copytree(repo / "smoother", repo / "broken")
    (repo / "broken" / "1" / "manifest.json").write_text("{}")
    registry, _ = make_registry(repo)
    registry.refresh()
    assert not registry.ready and "broken" in registry.not_ready_reasons()[0]


def test_fingerprint_sees_rename_and_in_place_edits(repo):
    version_dir = repo / "smoother" / "1"
    before = fingerprint(version_dir)
    assert before == fingerprint(version_dir)
    (version_dir / "extra.txt").write_text("x")
    assert fingerprint(version_dir) != before
    assert fingerprint(repo / "smoother" / "missing") is None


# -- the control API through the app -------------------------------------------------------------
ADMIN = {"Authorization": "Bearer admin"}


def make_client(repo: Path, **overrides) -> TestClient:
    """An app with the control API opened by an admin token, which the client sends by default."""
    values = dict(repo=repo, device="cpu", cpu_threads=1, poll_interval_s=0, default_classifier="classifier",
                  admin_token="admin")
    return TestClient(create_app(Settings(**{**values, **overrides})), headers=ADMIN)


def smooth(client: TestClient, headers: dict | None = None):
    return client.post("/smooth", json={"signal": [1.0, 2.0, 3.0, 4.0, 5.0] * 4}, headers=headers or {})


def test_control_api_index_load_unload(tmp_path):
    repo = fresh_repo(tmp_path, models=("smoother", "classifier"))
    with make_client(repo) as client:
        rows = client.post("/v2/repository/index").json()
        assert rows == [{"name": "classifier", "version": "1", "state": "READY", "reason": ""},
                        {"name": "smoother", "version": "1", "state": "READY", "reason": ""}]
        publish_copy(repo, "smoother", 1, 2)
        assert smooth(client).json()["version"] == 1  # polling is off: nothing changes by itself
        response = client.post("/v2/repository/models/smoother/load")
        assert response.status_code == 200, response.text
        assert response.json()["serving_version"] == 2
        assert smooth(client).json()["version"] == 2  # at once

        publish_copy(repo, "smoother", 1, 3, negate_kernel)
        response = client.post("/v2/repository/models/smoother/load")
        assert response.status_code == 400
        body = response.json()
        assert "version 3 was refused: constraints" in body["error"] and body["serving_version"] == 2
        assert smooth(client).json()["version"] == 2
        detail = client.get("/models/smoother").json()
        assert [v["state"] for v in detail["versions"]] == ["refused", "serving", "serving"]
        metrics = client.get("/metrics").text
        assert 'monoserve_load_refusals_total{model="smoother",step="constraints"} 1.0' in metrics
        assert 'monoserve_model_version_events_total{event="refused",model="smoother"} 1.0' in metrics
        assert 'monoserve_serving_version{model="smoother"} 2.0' in metrics
        ready_rows = client.post("/v2/repository/index", json={"ready": True}).json()
        assert {(r["name"], r["version"]) for r in ready_rows} == {("classifier", "1"), ("smoother", "1"), ("smoother", "2")}

        assert client.post("/v2/repository/models/smoother/unload").status_code == 200
        response = smooth(client)
        assert response.status_code == 404 and "unloaded" in response.json()["error"]
        assert client.get("/readyz").status_code == 200  # the classifier serves: an unloaded model is not a fault
        index = client.post("/v2/repository/index").json()
        assert {"name": "smoother", "version": "", "state": "UNAVAILABLE", "reason": "unloaded"} in index
        assert client.post("/v2/repository/models/smoother/load").status_code == 400  # v3 is still refused
        assert smooth(client).json()["version"] == 2  # but it serves again

        assert client.post("/v2/repository/models/nope/load").status_code == 404
        assert client.post("/v2/repository/models/nope/unload").status_code == 404
        bad = client.post("/v2/repository/models/smoother/load", json={"parameters": {"config": "{}"}})
        assert bad.status_code == 400 and "parameters" in bad.json()["error"]
        assert client.post("/v2/repository/index", content=b"[1]").status_code == 400


CONTROL_CALLS = ("/v2/repository/index", "/v2/repository/models/smoother/load", "/v2/repository/models/smoother/unload")


def test_control_api_is_closed_by_default(tmp_path):
    repo = fresh_repo(tmp_path, models=("smoother",))
    with make_client(repo, admin_token=None) as client:
        for path in CONTROL_CALLS:
            for headers in ({}, ADMIN):
                response = client.post(path, headers=headers)
                assert response.status_code == 403, (path, response.text)
                assert "MONOSERVE_ADMIN_TOKEN" in response.json()["error"]
        assert smooth(client).status_code == 200  # still served, the model was not unloaded
    with make_client(repo, admin_token=None, api_token="reader") as client:  # an API token alone opens nothing
        reader = {"Authorization": "Bearer reader"}
        assert client.post("/v2/repository/models/smoother/unload", headers=reader).status_code == 403
        assert smooth(client, reader).status_code == 200


def test_control_api_needs_the_admin_token(tmp_path):
    repo = fresh_repo(tmp_path, models=("smoother",))
    with make_client(repo, api_token="reader") as client:
        reader = {"Authorization": "Bearer reader"}
        for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}, reader):
            response = client.post("/v2/repository/models/smoother/unload", headers=headers)
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer", response.text
        assert smooth(client, reader).status_code == 200  # still served
        assert client.post("/v2/repository/models/smoother/load", headers=ADMIN).status_code == 200
        assert client.post("/v2/repository/index", headers=ADMIN).status_code == 200
    # the operator's explicit choice: the API token unlocks the control API too
    with make_client(repo, api_token="reader", control_accepts_api_token=True) as client:
        reader = {"Authorization": "Bearer reader"}
        assert client.post("/v2/repository/index", headers=reader).status_code == 200
        assert client.post("/v2/repository/index", headers=ADMIN).status_code == 200
        assert client.post("/v2/repository/index", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_unsafe_loopback_setting_opens_to_loopback_callers_only(tmp_path):
    from service.pipeline.control import check_control_access, is_loopback

    repo = fresh_repo(tmp_path, models=("smoother",))
    with make_client(repo, admin_token=None, unsafe_control_loopback=True) as client:  # TestClient's peer: "testclient"
        response = client.post("/v2/repository/index")
        assert response.status_code == 403 and "loopback" in response.json()["error"]
    settings = Settings(repo=repo, unsafe_control_loopback=True)
    for host in ("127.0.0.1", "127.9.0.1", "::1", "::ffff:127.0.0.1"):
        assert is_loopback(host)
        check_control_access(settings, None, host)  # no exception: allowed
    for host in ("10.0.0.1", "192.168.1.5", "::ffff:10.0.0.1", "localhost.evil", "", None):
        assert not is_loopback(host)
    # the same rule for gRPC peers (context.peer())
    from service.pipeline.control import grpc_peer_host

    assert grpc_peer_host("ipv4:127.0.0.1:50051") == "127.0.0.1" and grpc_peer_host("ipv6:[::1]:50051") == "::1"
    assert grpc_peer_host("ipv4:10.1.2.3:4") == "10.1.2.3" and grpc_peer_host("unix:/tmp/sock") is None
    assert grpc_peer_host(None) is None


def test_readyz_reports_a_new_model_that_never_served(tmp_path):
    repo = fresh_repo(tmp_path, models=("smoother",))
    with make_client(repo) as client:
        shutil.copytree(repo / "smoother", repo / "broken")
        (repo / "broken" / "1" / "manifest.json").write_text("{}")
        assert client.post("/v2/repository/models/broken/load").status_code == 400
        response = client.get("/readyz")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["models"] == {"smoother": 1} and "manifest" in body["unavailable"]["broken"]


def test_reload_drops_the_batcher_of_a_removed_version(tmp_path):
    repo = fresh_repo(tmp_path, models=("classifier",))
    instance = {"instances": [[0.5, 0.1, 0.2, 1.0]]}
    assert len(instance["instances"][0]) == len(CLASSIFIER_FEATURES)
    with make_client(repo) as client:
        service = client.app.state.service
        first = client.post("/classify", json=instance)
        assert first.status_code == 200 and first.json()["version"] == 1
        version_1 = set(service.batchers)
        assert len(version_1) == 1  # the dynamic batcher of version 1
        publish_copy(repo, "classifier", 1, 2)
        assert client.post("/v2/repository/models/classifier/load").status_code == 200
        assert set(service.batchers) == version_1  # version 1 still serves (by number): its batcher stays
        second = client.post("/classify", json=instance)
        assert second.status_code == 200 and second.json()["version"] == 2
        assert second.json()["scores"] == first.json()["scores"]  # the same weights, copied
        both = set(service.batchers)
        assert len(both) == 2
        shutil.rmtree(repo / "classifier" / "1")
        assert client.post("/v2/repository/models/classifier/load").status_code == 200
        assert set(service.batchers) == both - version_1  # version 1's batcher went with it
        assert client.post("/classify", json=instance).json()["version"] == 2
        assert client.post("/classify", json={**instance, "version": 1}).status_code == 404


def test_poller_picks_up_a_new_version(tmp_path):
    repo = fresh_repo(tmp_path, models=("smoother",))
    with make_client(repo, poll_interval_s=0.2) as client:
        publish_copy(repo, "smoother", 1, 2)
        deadline = time.monotonic() + 30
        while smooth(client).json()["version"] != 2:
            assert time.monotonic() < deadline, "the poller did not serve version 2"
            time.sleep(0.1)
        assert client.get("/models").json()["lifecycle"]["poll_interval_s"] == 0.2


# -- export guards names ---------------------------------------------------------------------------
@pytest.fixture
def classifier_checkpoint(tmp_path) -> Path:
    from models.checkpoint import save_checkpoint
    from models.classifier import ClassifierConfig, MonotoneClassifier

    config = ClassifierConfig(feature_names=["a", "b"], labels=["spam"], hidden=[4], scope="all", method="reparam")
    return save_checkpoint(tmp_path / "other.ckpt", MonotoneClassifier(config), metrics={})


def test_export_refuses_another_kind_under_a_name(repo, classifier_checkpoint):
    from export.core import export_checkpoint
    from export.errors import KindConflictError

    with pytest.raises(KindConflictError, match=r"'smoother' already holds another kind \(version 1 is a smoother\)"):
        export_checkpoint(classifier_checkpoint, repo, name="smoother", formats=("onnx",))
    assert sorted(p.name for p in (repo / "smoother").iterdir()) == ["1"]  # nothing published, no staging left
    result = export_checkpoint(classifier_checkpoint, repo, name="smoother", formats=("onnx",), replace_kind=True)
    assert result.version_dir == repo / "smoother" / "2" and result.manifest.kind == "classifier"


def test_export_cli_exits_1_on_another_kind(repo, classifier_checkpoint):
    command = [sys.executable, "-m", "export", str(classifier_checkpoint), "--repo", str(repo), "--name", "smoother",
               "--formats", "onnx"]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ}, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "already holds another kind" in result.stderr and "--replace-kind" in result.stderr
    assert sorted(p.name for p in (repo / "smoother").iterdir()) == ["1"]


def test_fingerprint_sees_an_edit_that_restores_size_and_mtime(repo):
    version_dir = repo / "smoother" / "1"
    target = version_dir / "model.onnx"
    before = fingerprint(version_dir)
    stat = target.stat()
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    time.sleep(0.01)
    target.write_bytes(bytes(data))  # same size
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the old mtime put back
    assert target.stat().st_size == stat.st_size and target.stat().st_mtime_ns == stat.st_mtime_ns
    assert fingerprint(version_dir) != before  # the ctime moved: it cannot be set back


def test_server_gives_workers_a_metrics_directory_and_restores_the_environment(repo, monkeypatch):
    """The serving process with 2 workers hands them a fresh PROMETHEUS_MULTIPROC_DIR for the run,
    then removes it and leaves its environment as it was; with 1 worker it sets nothing."""
    import uvicorn

    from service import server
    from service.settings import get_settings

    seen = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: seen.append(os.environ.get("PROMETHEUS_MULTIPROC_DIR")))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setenv("MONOSERVE_REPO", str(repo))
    try:
        for workers in ("2", "1"):
            monkeypatch.setenv("MONOSERVE_WORKERS", workers)
            get_settings.cache_clear()
            assert server.main() == 0
            assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    finally:
        get_settings.cache_clear()
    assert seen[0] and Path(seen[0]).name.startswith("monoserve-metrics-") and seen[1] is None
    assert not Path(seen[0]).exists()


def test_control_api_bodies_are_small_json_objects(tmp_path):
    repo = fresh_repo(tmp_path, models=("smoother",))
    with make_client(repo) as client:
        too_big = client.post("/v2/repository/index", content=b" " * (70 * 1024),
                              headers={"content-type": "application/json"})
        assert too_big.status_code == 413 and "exceeds 65536 bytes" in too_big.json()["error"]
        chunked = client.post("/v2/repository/index", content=iter([b"{" + b" " * 40_000, b" " * 40_000 + b"}"]))
        assert chunked.status_code == 413, chunked.text
        malformed = client.post("/v2/repository/index", content=b"{not json")
        assert malformed.status_code == 400 and "malformed JSON" in malformed.json()["error"]
        not_object = client.post("/v2/repository/index", content=b"[1]")
        assert not_object.status_code == 400 and "JSON object" in not_object.json()["error"]
        assert client.post("/v2/repository/index", content=b"").status_code == 200
