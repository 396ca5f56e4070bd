"""monoserve.client against a real `monoserve serve` process (and, for Retry-After, a real HTTP
server that answers 503 a set number of times)."""

from __future__ import annotations

import asyncio
import email.utils
import http.server
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from monoserve import client as mc
from service_fixtures import CLASSIFIER_FEATURES, MULTILABEL_LABELS, fresh_repo
from test_service_e2e import running_server

TOKEN = "client-test-token"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = fresh_repo(tmp_path_factory.mktemp("client"))
    # A model whose only version fails its proof: the service answers 503 for it.
    broken = fresh_repo(tmp_path_factory.mktemp("broken"), models=("smoother",)) / "smoother"
    broken.rename(repo / "broken")
    (repo / "broken" / "1" / "manifest.json").write_text(
        (repo / "broken" / "1" / "manifest.json").read_text().replace('"name": "smoother"', '"name": "broken"'))
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"tampered")
    return repo


def smoother_served(process, base: str) -> None:
    """/readyz stays 503 here (the broken model): wait for the smoother instead."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/models/smoother", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.2)
    raise AssertionError("the smoother was not served in time")


@pytest.fixture(scope="module")
def server(repo):
    env = {"MONOSERVE_API_TOKEN": TOKEN, "MONOSERVE_DEFAULT_SMOOTHER": "smoother"}
    with running_server(repo, env=env, ready=smoother_served) as running:
        yield running.base
    assert running.process.returncode == 0, running.output


@pytest.fixture(scope="module")
def client(server):
    with mc.Client(server, token=TOKEN, retries=2, max_retry_wait=0.05) as c:
        yield c


def raw_smooth(server: str, signal: np.ndarray, **params) -> dict:
    response = httpx.post(f"{server}/smooth", json={"signal": signal.tolist(), **params},
                          headers={"authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    return response.json()


def test_importable_without_torch_or_the_service():
    code = "import sys, monoserve.client; bad = [m for m in ('torch', 'service', 'fastapi', 'onnxruntime') if m in sys.modules]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("shape", [(50,), (3, 40), (2, 3, 64)])
def test_smooth_npy_and_json_agree_with_the_service(client, server, shape):
    signal = np.random.default_rng(len(shape)).standard_normal(shape)
    expected = raw_smooth(server, signal, mode="causal")
    for use_json in (False, True):
        result = client.smooth(signal, mode="causal", json=use_json)
        assert isinstance(result, mc.SmoothResult) and result.smoothed.dtype == np.float32
        assert (result.model, result.version, result.mode) == ("smoother", 1, "causal")
        np.testing.assert_array_equal(result.smoothed, np.asarray(expected["smoothed"], dtype=np.float32))


def test_classify_npy_json_and_feature_objects(client):
    rows = np.random.default_rng(1).standard_normal((9, len(CLASSIFIER_FEATURES))).astype(np.float32)
    by_npy = client.classify(rows, model="classifier")
    by_json = client.classify(rows, model="classifier", json=True)
    by_name = client.classify([dict(zip(CLASSIFIER_FEATURES, map(float, row))) for row in rows], model="classifier", json=True)
    assert by_npy.labels == by_json.labels == ["spam"] and by_npy.scores.shape == (9,)
    np.testing.assert_array_equal(by_npy.scores, by_json.scores)
    np.testing.assert_array_equal(by_npy.scores, by_name.scores)
    assert by_npy.threshold == by_json.threshold and by_npy.version == 1
    if by_json.decisions is not None:  # the service's own decision per instance, when it sends one
        assert by_json.decisions == [["spam"] if score >= by_json.threshold else [] for score in by_json.scores]
    multi = client.classify(np.ones((2, 3)), model="multilabel")
    assert multi.labels == MULTILABEL_LABELS and multi.scores.shape == (2, 2)
    with pytest.raises(ValueError, match="need json=True"):
        client.classify([{"clicks": 1.0}], model="classifier")


def test_typed_errors_carry_the_service_message(client, server):
    with pytest.raises(mc.NotFoundError) as unknown:
        client.smooth([1.0, 2.0], model="no-such-model")
    assert unknown.value.status == 404 and "unknown model 'no-such-model'" in unknown.value.message
    with pytest.raises(mc.BadRequestError) as wrong:
        client.classify(np.ones((2, 3)), model="classifier")
    assert "needs 4 features" in wrong.value.message and wrong.value.body["expected"] == 4
    with pytest.raises(mc.BadRequestError, match="unknown mode"):
        client.smooth([1.0, 2.0, 3.0], mode="sideways", json=True)
    with mc.Client(server) as anonymous, pytest.raises(mc.UnauthorizedError, match="missing API token"):
        anonymous.smooth([1.0, 2.0])


def test_unavailable_model_is_retried_then_raised(client, server):
    """The broken model answers 503 (no Retry-After): retried `retries` times, counted by the service."""
    def count_503() -> float:
        metrics = httpx.get(f"{server}/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                   if line.startswith("monoserve_requests_total{") and 'route="/smooth"' in line and 'status="503"' in line)

    before = count_503()
    with pytest.raises(mc.UnavailableError) as caught:
        client.smooth([1.0, 2.0, 3.0], model="broken")
    assert caught.value.status == 503 and "no valid version" in caught.value.message
    assert count_503() - before == 3  # the first try + 2 retries


class Flaky(http.server.BaseHTTPRequestHandler):
    """503 + Retry-After for the first `failures` POSTs, then a /smooth answer."""

    failures = 0
    retry_after = "1"
    seen: list[float] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers["content-length"]))
        Flaky.seen.append(time.monotonic())
        if len(Flaky.seen) <= Flaky.failures:
            body, status, headers = b'{"error": "queue full"}', 503, {"Retry-After": Flaky.retry_after}
        else:
            body, status, headers = b'{"model": "m", "version": 3, "mode": "same", "smoothed": [1.5]}', 200, {}
        self.send_response(status)
        for name, value in {"content-type": "application/json", "content-length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def flaky():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Flaky.seen = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_retry_after_is_honoured_sync_and_async(flaky):
    Flaky.failures, Flaky.retry_after = 2, "0.4"
    with mc.Client(flaky, retries=3) as c:
        assert c.smooth([1.0], json=True).smoothed.tolist() == [1.5]
    gaps = np.diff(Flaky.seen)
    assert len(Flaky.seen) == 3 and (gaps >= 0.39).all()

    async def run() -> mc.SmoothResult:
        async with mc.AsyncClient(flaky, retries=3) as ac:
            return await ac.smooth([1.0], json=True)

    Flaky.seen = []
    assert asyncio.run(run()).version == 3
    assert len(Flaky.seen) == 3 and (np.diff(Flaky.seen) >= 0.39).all()


def test_retries_are_bounded(flaky):
    Flaky.failures, Flaky.retry_after = 100, "3600"  # an hour: capped by max_retry_wait
    start = time.monotonic()
    with mc.Client(flaky, retries=2, max_retry_wait=0.1) as c, pytest.raises(mc.UnavailableError, match="queue full"):
        c.smooth([1.0], json=True)
    assert len(Flaky.seen) == 3 and time.monotonic() - start < 10


def test_async_client_against_the_service(server):
    signal = np.random.default_rng(3).standard_normal((4, 128)).astype(np.float32)
    expected = raw_smooth(server, signal)

    async def run():
        async with mc.AsyncClient(server, token=TOKEN) as ac:
            results = await asyncio.gather(*(ac.smooth(signal) for _ in range(4)),
                                           ac.classify(np.zeros((1, 4)), model="classifier", json=True))
            with pytest.raises(mc.NotFoundError):
                await ac.smooth(signal, model="smoother", version=9)
            return results

    *smoothed, classified = asyncio.run(run())
    for result in smoothed:
        np.testing.assert_array_equal(result.smoothed, np.asarray(expected["smoothed"], dtype=np.float32))
    assert classified.scores.shape == (1,) and classified.labels == ["spam"]


def test_retry_after_parsing():
    assert mc.retry_after_seconds("2", 1, 10) == 2
    assert mc.retry_after_seconds("120", 1, 10) == 10
    assert mc.retry_after_seconds(None, 1, 10) == pytest.approx(0.1)
    assert mc.retry_after_seconds("soon", 3, 10) == pytest.approx(0.4)
    assert mc.retry_after_seconds("-5", 1, 10) == 0
    future = email.utils.formatdate(time.time() + 3, usegmt=True)
    assert 1.0 <= mc.retry_after_seconds(future, 1, 10) <= 3.5
