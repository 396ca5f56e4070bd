"""Model lifecycle end to end: `monoserve serve` as real uvicorn processes while versions are
exported, tampered with, loaded and unloaded under a client that hammers it; several workers
converging with /metrics summed across them; SIGTERM draining a request in flight."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from service_fixtures import build_smoother, copy_version, fresh_repo, numpy_smooth, onnx_initializers, onnx_name
from test_reload import negate_kernel, publish_copy
from test_service_e2e import free_port, start_server, stop, wait_ready

ONE_WORKER = ("--workers", "1")  # the flag wins over a MONOSERVE_WORKERS left in the environment
DEADLINE_S = 60  # a failure timeout, not a performance bound (bench/reload.py measures)
SIGNAL = [1.0, 2.0, 4.0, 8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 3.0, 5.0, 1.0]


class Hammer:
    """A client sending /smooth requests back to back from a thread, recording every outcome."""

    def __init__(self, base: str, headers: dict[str, str] | None = None):
        self.base, self.headers = base, headers or {}
        self.outcomes: list[tuple[float, int | str, int | None]] = []  # (time, status or error, version)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(f"{self.base}/smooth", json={"signal": SIGNAL}, headers=self.headers)
                    version = response.json().get("version") if response.status_code == 200 else None
                    self.outcomes.append((time.monotonic(), response.status_code, version))
                except httpx.HTTPError as exc:
                    self.outcomes.append((time.monotonic(), type(exc).__name__, None))

    def __enter__(self) -> "Hammer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def failures(self) -> list:
        return [o for o in self.outcomes if o[1] != 200]

    def versions(self) -> Counter:
        return Counter(o[2] for o in self.outcomes)

    def first_time_of(self, version: int) -> float | None:
        return next((o[0] for o in self.outcomes if o[2] == version), None)


def wait_for(condition, what: str, timeout: float = DEADLINE_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def served_version(base: str, headers: dict | None = None) -> int | None:
    response = httpx.post(f"{base}/smooth", json={"signal": SIGNAL}, headers=headers or {}, timeout=30)
    return response.json()["version"] if response.status_code == 200 else None


def samples(base: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of metric `name` (its full sample name) in a /metrics scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{base}/metrics").text
    return [(sample.labels, sample.value) for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == name]


def smoother_checkpoint(directory: Path, kernel_size: int) -> Path:
    """A smoother checkpoint (made before any client thread runs: torch compiles code on import)."""
    import torch

    from models.checkpoint import save_checkpoint
    from models.smoother import MonotoneSmoother, SmootherConfig

    torch.manual_seed(1)
    model = MonotoneSmoother(SmootherConfig(kernel_size=kernel_size, init_decay=0.3))
    return save_checkpoint(directory / "smoother-k5.ckpt", model, metrics={})


def kernel_of(version_dir: Path) -> np.ndarray:
    return onnx_initializers(version_dir)[onnx_name(version_dir, "kernel")]


def test_exported_version_is_served_while_polling_and_a_tampered_one_is_refused(tmp_path):
    repo = fresh_repo(tmp_path, models=("smoother",))
    checkpoint = smoother_checkpoint(tmp_path, kernel_size=5)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_server(repo, port, *ONE_WORKER, env={"MONOSERVE_POLL_INTERVAL_S": "0.5"})
    try:
        wait_ready(process, base)
        with Hammer(base) as hammer:
            wait_for(lambda: len(hammer.outcomes) > 20, "the client to get going")
            exported = subprocess.run([sys.executable, "-m", "export", str(checkpoint), "--repo", str(repo), "--name",
                                       "smoother", "--formats", "onnx,torchscript"],
                                      capture_output=True, text=True, timeout=600)  # the real export, while serving
            published = time.monotonic()
            assert exported.returncode == 0, exported.stderr
            version_dir = repo / "smoother" / "2"
            assert exported.stdout.splitlines()[0] == str(version_dir)
            wait_for(lambda: hammer.first_time_of(2), "version 2 to serve")
            picked_up = hammer.first_time_of(2) - published

            publish_copy(repo, "smoother", 2, 3, negate_kernel)  # checksums and probe recomputed
            report = wait_for(lambda: _version_state(base, 3), "version 3 to be refused")
            assert report["state"] == "refused" and report["report"]["reason"].startswith("constraints")
            time.sleep(1.0)  # several more polls: it stays refused, version 2 keeps serving
        assert hammer.failures() == [], hammer.failures()[:5]
        after = [o for o in hammer.outcomes if o[0] >= published + picked_up]
        assert {o[2] for o in after} == {2}, "a version 2 answer was followed by another version"
        assert 3 not in hammer.versions() and hammer.versions()[1] > 0
        answer = httpx.post(f"{base}/smooth", json={"signal": SIGNAL, "mode": "same"}).json()
        np.testing.assert_allclose(answer["smoothed"], numpy_smooth(np.asarray(SIGNAL), kernel_of(version_dir), "same"),
                                   atol=1e-5)
        detail = httpx.get(f"{base}/models/smoother").json()
        assert detail["serving_version"] == 2 and detail["versions"][0]["version"] == 3
        assert samples(base, "monoserve_load_refusals_total") == [({"model": "smoother", "step": "constraints"}, 1.0)]
        assert samples(base, "monoserve_serving_version") == [({"model": "smoother"}, 2.0)]
    finally:
        log = stop(process)
    assert "refused smoother/3: constraints" in log


def _version_state(base: str, version: int) -> dict | None:
    detail = httpx.get(f"{base}/models/smoother").json()
    return next((v for v in detail["versions"] if v["version"] == version), None)


def test_load_and_unload_through_the_control_api(tmp_path):
    repo = fresh_repo(tmp_path, models=("smoother", "classifier"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    reader, admin = {"Authorization": "Bearer reader"}, {"Authorization": "Bearer admin"}
    process = start_server(repo, port, *ONE_WORKER, env={"MONOSERVE_POLL_INTERVAL_S": "0", "MONOSERVE_API_TOKEN": "reader",
                                            "MONOSERVE_ADMIN_TOKEN": "admin"})
    try:
        wait_ready(process, base)
        with Hammer(base, reader) as hammer:
            wait_for(lambda: len(hammer.outcomes) > 20, "the client to get going")
            copy_version(repo, "smoother", 1, 2)
            time.sleep(0.5)
            assert served_version(base, reader) == 1  # polling is off
            assert httpx.post(f"{base}/v2/repository/models/smoother/load").status_code == 401
            assert httpx.post(f"{base}/v2/repository/models/smoother/load", headers=reader).status_code == 401
            response = httpx.post(f"{base}/v2/repository/models/smoother/load", headers=admin, timeout=60)
            assert response.status_code == 200 and response.json()["serving_version"] == 2, response.text
            assert served_version(base, reader) == 2  # at once
            wait_for(lambda: hammer.first_time_of(2), "the client to get version 2")
        assert hammer.failures() == [], hammer.failures()[:5]
        assert set(hammer.versions()) == {1, 2}

        index = httpx.post(f"{base}/v2/repository/index", headers=admin).json()
        assert [(r["name"], r["version"], r["state"]) for r in index] == [
            ("classifier", "1", "READY"), ("smoother", "1", "READY"), ("smoother", "2", "READY")]
        assert httpx.post(f"{base}/v2/repository/models/smoother/unload", headers=admin).status_code == 200
        gone = httpx.post(f"{base}/smooth", json={"signal": SIGNAL}, headers=reader)
        assert gone.status_code == 404 and "unloaded" in gone.json()["error"]
        assert httpx.get(f"{base}/readyz").status_code == 200
        assert httpx.post(f"{base}/v2/repository/models/smoother/load", headers=admin).status_code == 200
        assert served_version(base, reader) == 2
    finally:
        stop(process)


def test_default_service_refuses_every_control_call_and_keeps_serving(tmp_path):
    """Started as the README says (no token): load, unload and index answer 403 and say how to open
    the control API; the models keep serving and the poller still loads a new version."""
    repo = fresh_repo(tmp_path, models=("smoother",))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_server(repo, port, *ONE_WORKER, env={"MONOSERVE_POLL_INTERVAL_S": "0.5", "MONOSERVE_ADMIN_TOKEN": "",
                                                         "MONOSERVE_UNSAFE_CONTROL_LOOPBACK": "false"})
    try:
        wait_ready(process, base)
        for path in ("index", "models/smoother/unload", "models/smoother/load", "models/nope/load"):
            for headers in ({}, {"Authorization": "Bearer anything"}):
                response = httpx.post(f"{base}/v2/repository/{path}", headers=headers)
                assert response.status_code == 403, (path, response.text)
                assert "MONOSERVE_ADMIN_TOKEN" in response.json()["error"]
        assert served_version(base, {}) == 1  # the unload was refused: still serving
        copy_version(repo, "smoother", 1, 2)  # polling keeps working with the control API closed
        wait_for(lambda: served_version(base, {}) == 2, "the poller to serve version 2")
    finally:
        stop(process)


def test_unsafe_loopback_setting_opens_control_to_a_local_caller(tmp_path):
    repo = fresh_repo(tmp_path, models=("smoother",))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_server(repo, port, *ONE_WORKER, env={"MONOSERVE_POLL_INTERVAL_S": "0", "MONOSERVE_ADMIN_TOKEN": "",
                                                         "MONOSERVE_UNSAFE_CONTROL_LOOPBACK": "true"})
    try:
        wait_ready(process, base)
        assert httpx.post(f"{base}/v2/repository/models/smoother/unload").status_code == 200  # from 127.0.0.1
        assert httpx.post(f"{base}/v2/repository/models/smoother/load").status_code == 200
        assert served_version(base, {}) == 1
    finally:
        stop(process)


def test_empty_repository_becomes_ready_once_a_model_is_exported(tmp_path):
    repo = tmp_path / "empty-repo"
    repo.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_server(repo, port, *ONE_WORKER, env={"MONOSERVE_POLL_INTERVAL_S": "0.5"})
    try:
        wait_for(lambda: _status(f"{base}/healthz") == 200, "the server to start")
        assert _status(f"{base}/readyz") == 503
        build_smoother(repo, tmp_path)  # the real export into the running service's repository
        wait_for(lambda: _status(f"{base}/readyz") == 200, "ready after the export")
        assert served_version(base) == 1
    finally:
        stop(process)


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return None


def test_workers_converge_and_metrics_count_across_workers(tmp_path):
    repo = fresh_repo(tmp_path, models=("smoother",))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_server(repo, port, "--workers", "2", env={"MONOSERVE_POLL_INTERVAL_S": "0.5"})
    sent = 0
    try:
        wait_ready(process, base)
        publish_copy(repo, "smoother", 1, 2)

        def converged() -> bool:
            nonlocal sent
            versions = []
            for _ in range(12):  # a fresh connection each: the kernel spreads them over the workers
                versions.append(served_version(base))
                sent += 1
            return set(versions) == {2}

        wait_for(converged, "every worker to serve version 2")
        # each worker reports its serving version (a pid label): two workers, both on version 2
        versions = samples(base, "monoserve_serving_version")
        assert len(versions) == 2 and {labels["pid"] for labels, _ in versions} and {v for _, v in versions} == {2.0}, versions
        for _ in range(30):
            assert served_version(base) == 2
            sent += 1
        for _ in range(5):  # whichever worker answers the scrape, it counts the requests of both
            counted = [v for labels, v in samples(base, "monoserve_requests_total")
                       if labels == {"route": "/smooth", "model": "smoother", "status": "200"}]
            assert counted == [sent]
    finally:
        stop(process)


def test_sigterm_drains_a_request_in_flight_and_refuses_new_connections(tmp_path):
    repo = fresh_repo(tmp_path, models=("smoother",))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_server(repo, port, *ONE_WORKER)  # with N workers uvicorn's supervisor holds the socket
    try:
        wait_ready(process, base)
        body = ('{"signal": ' + str(SIGNAL) + ', "mode": "same"}').encode()
        head = (f"POST /smooth HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(head + body[:10])  # the request is in flight: its body is still arriving
            time.sleep(0.5)
            process.send_signal(signal.SIGTERM)
            wait_for(lambda: _refused(port), "new connections to be refused")
            assert process.poll() is None  # still draining the request in flight
            sock.sendall(body[10:])
            response = _read_response(sock)
        status_line, _, rest = response.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 200"), response[:300]
        assert b'"version":1' in rest
        process.wait(timeout=30)
        # uvicorn re-raises the signal once it has shut down gracefully: the exit says "terminated"
        assert process.returncode in (0, -signal.SIGTERM)
    finally:
        log = stop(process)
    assert "Application shutdown complete" in log  # the lifespan's shutdown ran after the drain


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def _read_response(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
