"""End to end: `monoserve serve` as a real uvicorn process: start, ready, /smooth, /classify, shutdown."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from service_fixtures import fresh_repo, numpy_smooth, onnx_initializers, onnx_name

STARTUP_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(repo: Path, port: int, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "monoserve.cli", "serve", "--repo", str(repo), "--host", "127.0.0.1",
               "--port", str(port), *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "MONOSERVE_DEFAULT_CLASSIFIER": "classifier",
                                 # no gRPC port unless a test asks for one: servers of tests run at once never share 8001
                                 "MONOSERVE_GRPC_PORT": "0", **(env or {})})


def wait_ready(process: subprocess.Popen, base: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{process.stdout.read()}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not become ready in time")


def stop(process: subprocess.Popen) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return process.stdout.read() if process.stdout else ""


@dataclass
class RunningServer:
    process: subprocess.Popen
    port: int
    base: str
    output: str = ""  # what it printed, once stopped


@contextlib.contextmanager
def running_server(repo: Path, *extra: str, env: dict[str, str] | None = None,
                   ready: Callable[[subprocess.Popen, str], None] = None) -> Iterator[RunningServer]:
    """`monoserve serve` on a free port, yielded once `ready` (default: GET /readyz answers 200); stopped
    afterwards, with its output in `.output` for the caller's checks."""
    port = free_port()
    server = RunningServer(start_server(repo, port, *extra, env=env), port, f"http://127.0.0.1:{port}")
    try:
        (ready or wait_ready)(server.process, server.base)
        yield server
    finally:
        server.output = stop(server.process)


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (uvicorn's supervisor and its worker processes)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        children = Path(f"/proc/{current}/task/{current}/children")
        if children.exists():
            queue += [int(child) for child in children.read_text().split()]
    return found


def serving_processes(pid: int) -> list[int]:
    """The processes that answer requests: the workers when uvicorn supervises several (spawned by
    multiprocessing; a resource tracker may be there too, and serves nothing), else `pid` itself."""
    workers = [child for child in process_tree(pid)[1:]
               if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes() and b"resource_tracker" not in
               Path(f"/proc/{child}/cmdline").read_bytes()]
    return workers or [pid]


def libtorch_mapped(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return fresh_repo(tmp_path_factory.mktemp("e2e"))


def test_serve_end_to_end(repo):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_server(repo, port)
    try:
        wait_ready(process, base)
        assert httpx.get(f"{base}/healthz").json() == {"status": "alive"}

        signal_2d = np.random.default_rng(0).standard_normal((3, 200))
        response = httpx.post(f"{base}/smooth", json={"signal": signal_2d.tolist(), "mode": "causal"})
        assert response.status_code == 200, response.text
        version_dir = repo / "smoother" / "1"
        kernel = onnx_initializers(version_dir)[onnx_name(version_dir, "kernel")]
        np.testing.assert_allclose(np.asarray(response.json()["smoothed"]), numpy_smooth(signal_2d, kernel, "causal"), atol=1e-5)

        buffer = io.BytesIO()
        np.save(buffer, signal_2d.astype(np.float32)[None])
        response = httpx.post(f"{base}/smooth?mode=same", content=buffer.getvalue(),
                              headers={"content-type": "application/x-npy", "accept": "application/x-npy"})
        assert response.status_code == 200 and np.load(io.BytesIO(response.content)).shape == (1, 3, 200)

        response = httpx.post(f"{base}/classify", json={"instances": [[1, 2, 3, 4], [0, 0, 0, 0]]})
        assert response.status_code == 200, response.text
        assert response.json()["labels"] == ["spam"] and len(response.json()["scores"]) == 2

        bad = httpx.post(f"{base}/smooth", content=b"{oops", headers={"content-type": "application/json"})
        assert bad.status_code == 400 and "malformed JSON" in bad.json()["error"]
        assert "monoserve_requests_total" in httpx.get(f"{base}/metrics").text

        # The ONNX path of the real server never loaded torch: no libtorch is mapped into the
        # process that serves (and, with several workers, into none of them; see the negative control below).
        serving = serving_processes(process.pid)
        assert serving, "found no process serving"
        assert not [pid for pid in serving if libtorch_mapped(pid)]
    finally:
        output = stop(process)
    assert process.returncode == 0, output
    assert "Application startup complete" in output and "Finished server process" in output


def test_serve_refuses_cuda_without_cuda_and_a_missing_repo(repo, tmp_path):
    from service.compute.engines import onnx_cuda_available

    missing = subprocess.run([sys.executable, "-m", "monoserve.cli", "serve", "--repo", str(tmp_path / "nope")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    if onnx_cuda_available():
        pytest.skip("this machine has CUDA")
    cuda = subprocess.run([sys.executable, "-m", "monoserve.cli", "serve", "--repo", str(repo), "--device", "cuda",
                           "--port", str(free_port())], capture_output=True, text=True, timeout=60)
    assert cuda.returncode == 2 and "--device cuda" in cuda.stderr and "CUDAExecutionProvider" in cuda.stderr


@pytest.mark.slow
def test_make_models_trains_exports_and_the_service_proves_them(tmp_path):
    """`make models` on the bundled data (the default models of `make serve`), then the proof and a request."""
    root = Path(__file__).resolve().parents[1]
    repo, checkpoints = tmp_path / "repo", tmp_path / "ckpt"
    command = ["make", "--no-print-directory", "-C", str(root), "models", f"REPO={repo}", f"CKPT_DIR={checkpoints}",
               f"PYTHON={sys.executable}"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("not retraining") == 2
    for name in ("smoother", "classifier"):
        verify = subprocess.run([sys.executable, "-m", "monoserve.cli", "verify", str(repo / name / "1")],
                                capture_output=True, text=True, timeout=120)
        assert verify.returncode == 0 and "PASSED" in verify.stdout, verify.stdout + verify.stderr

    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    with TestClient(create_app(Settings(repo=repo, device="cpu"))) as client:
        assert client.get("/readyz").status_code == 200
        features = client.get("/models/classifier").json()["versions"][0]["classifier"]["features"]
        instance = {f["name"]: 0.5 for f in features}
        body = client.post("/classify", json={"instances": [instance]}).json()
        assert body["labels"] == ["spam"] and 0.0 <= body["scores"][0] <= 1.0
        nile = client.post("/smooth", json={"signal": [1120.0, 1160.0, 963.0, 1210.0, 1160.0], "mode": "causal"}).json()
        assert len(nile["smoothed"]) == 5


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc")
def test_the_libtorch_check_inspects_the_workers_and_can_fail(repo):
    """Negative control for the check above: with the TorchScript engine and two workers, libtorch is
    mapped into the worker processes, which the check finds, while uvicorn's supervisor has none."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_server(repo, port, "--engine", "torchscript", "--workers", "2", "--device", "cpu")
    try:
        wait_ready(process, base)
        workers = serving_processes(process.pid)
        assert len(workers) >= 2 and process.pid not in workers
        assert all(libtorch_mapped(pid) for pid in workers)
        assert not libtorch_mapped(process.pid)  # the supervisor: inspecting it could never fail
    finally:
        stop(process)


def test_host_port_and_repo_come_from_the_environment_and_flags_override(repo):
    env_port, flag_port = free_port(), free_port()
    command = [sys.executable, "-m", "monoserve.cli", "serve", "--port", str(flag_port)]
    env = {**os.environ, "MONOSERVE_HOST": "127.0.0.1", "MONOSERVE_PORT": str(env_port), "MONOSERVE_REPO": str(repo),
           "MONOSERVE_DEFAULT_CLASSIFIER": "classifier"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        wait_ready(process, f"http://127.0.0.1:{flag_port}")  # the flag won over MONOSERVE_PORT
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{env_port}/readyz", timeout=2)
        assert httpx.get(f"http://127.0.0.1:{flag_port}/models", timeout=5).json()  # the repository from MONOSERVE_REPO
    finally:
        stop(process)
    bad = subprocess.run([sys.executable, "-m", "monoserve.cli", "serve"], capture_output=True, text=True, timeout=60,
                         env={**env, "MONOSERVE_PORT": "70000"})
    assert bad.returncode == 2 and "MONOSERVE_" in bad.stderr and "port" in bad.stderr
