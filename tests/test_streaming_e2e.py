"""Streaming smoothing against a real `monoserve serve` process: WebSocket /smooth/stream and /smooth
with a carried state, each checked against one-shot /smooth of the whole signal (hypothesis cuts
random signals into random chunks, every mode, both transports, both formats); a reload while
streams are open; and the edge's bounds (stream cap, idle stream, oversized frame, bad frames,
forged and foreign states, a client that never reads), each answered as documented while the server
keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from monoserve.client import BadRequestError, Client, PayloadTooLargeError, VersionGoneError
from service_fixtures import KERNEL_SIZE, build_smoother, fresh_repo
from test_service_e2e import running_server, serving_processes

TOKEN = "stream-test-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
SECRET = "a shared stream secret, 32 bytes+"
IDLE_S = 6.0  # also the HTTP stream states' idle rule: long enough for the slower tests' steps on a loaded machine
MAX_OPEN = 4
MAX_FRAME = 1024 * 1024
ENV = {"MONOSERVE_API_TOKEN": TOKEN, "MONOSERVE_STREAM_SECRET": SECRET, "MONOSERVE_STREAM_IDLE_TIMEOUT_S": str(IDLE_S),
       "MONOSERVE_STREAM_MAX_OPEN": str(MAX_OPEN), "MONOSERVE_STREAM_MAX_FRAME_BYTES": str(MAX_FRAME),
       "MONOSERVE_POLL_INTERVAL_S": "0.5"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = fresh_repo(tmp_path_factory.mktemp("stream-e2e"))
    with running_server(repo, env=ENV) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with Client(server.base, token=TOKEN) as client:
        yield client


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def ws_url(server, query: str = "") -> str:
    return server.base.replace("http://", "ws://") + "/smooth/stream" + (f"?{query}" if query else "")


def closed_with(ws) -> tuple[int, str]:
    """Read until the server closes; its close code and reason."""
    try:
        while True:
            ws.recv(timeout=30)
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, exc
        return exc.rcvd.code, exc.rcvd.reason


def still_serves(server) -> None:
    response = httpx.post(f"{server.base}/smooth", json={"signal": [1.0, 2.0, 3.0]}, headers=AUTH)
    assert response.status_code == 200, response.text


def one_shot(client: Client, signal: np.ndarray, mode: str, version: int | None = None) -> np.ndarray:
    return client.smooth(signal, mode=mode, version=version).smoothed


def metric(server, name: str, **labels: str) -> float:
    text = httpx.get(f"{server.base}/metrics", headers=AUTH).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{key}="{value}"' in line for key, value in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


# -- the promise ------------------------------------------------------------------------------
TRANSPORTS = [("websocket", False), ("websocket", True), ("http", False), ("http", True)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), mode=st.sampled_from(["causal", "same", "valid"]), channels=st.integers(1, 4),
       transport=st.sampled_from(TRANSPORTS))
def test_streamed_output_equals_one_shot(client, data, mode, channels, transport):
    length = data.draw(st.integers(KERNEL_SIZE if mode == "valid" else 1, 150), label="length")
    sizes = data.draw(st.lists(st.integers(0, 60), min_size=0, max_size=10), label="sizes")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    signal = (rng.standard_normal((channels, length)) * 5 + rng.uniform(-100, 100, (channels, 1))).astype(np.float32)
    chunks, start = [], 0
    for size in sizes:
        chunks.append(signal[:, start : start + size])
        start += size
    if start < length:
        chunks.append(signal[:, start:])
    name, use_json = transport
    outputs = list(client.stream_smooth(iter(chunks), mode=mode, transport=name, json=use_json, window=3))
    assert len(outputs) == len(chunks) + 1  # one answer per chunk, then the tail
    streamed = np.concatenate(outputs, axis=1)
    expected = one_shot(client, signal, mode)
    assert streamed.shape == expected.shape
    np.testing.assert_allclose(streamed, expected, rtol=1e-6, atol=1e-6 * float(np.abs(signal).max()))


def test_websocket_frames_and_handshake(server, client):
    """The handshake names the pinned version; a frame may carry a last signal with the end."""
    signal = np.random.default_rng(3).standard_normal((2, 40)).astype(np.float32)
    with connect(ws_url(server, "mode=same"), additional_headers=AUTH) as ws:
        assert ws.response.headers["x-model"] == "smoother" and ws.response.headers["x-model-version"] == "1"
        assert ws.response.headers["x-kernel-size"] == str(KERNEL_SIZE)
        ws.send(json.dumps({"signal": signal[:, :3].tolist()}))
        first = json.loads(ws.recv(timeout=10))
        assert first["model"] == "smoother" and first["version"] == 1
        assert np.asarray(first["smoothed"]).shape in ((2, 0), (2,))  # 3 samples: same waits for K // 2 = 4
        ws.send(json.dumps({"signal": signal[:, 3:].tolist(), "end": True}))
        last = json.loads(ws.recv(timeout=10))
        assert last["end"] is True
        assert closed_with(ws) == (1000, "end of stream")
    np.testing.assert_allclose(np.asarray(last["smoothed"], np.float32), one_shot(client, signal, "same"),
                               rtol=1e-6, atol=1e-5)


# -- bounds and bad input -----------------------------------------------------------------------
def test_token_is_checked_at_open(server):
    with connect(ws_url(server)) as ws:
        code, reason = closed_with(ws)
    assert code == 4401 and "token" in reason
    with connect(ws_url(server), additional_headers={"authorization": "Bearer wrong"}) as ws:
        assert closed_with(ws)[0] == 4401
    with connect(ws_url(server, "model=nope"), additional_headers=AUTH) as ws:
        assert closed_with(ws) == (4404, "unknown model 'nope'")
    with connect(ws_url(server, "mode=mirror"), additional_headers=AUTH) as ws:
        assert closed_with(ws)[0] == 4400
    still_serves(server)


def test_stream_cap_is_a_close_with_a_reason(server):
    with contextlib.ExitStack() as opened:
        for _ in range(MAX_OPEN):
            ws = opened.enter_context(connect(ws_url(server), additional_headers=AUTH))
            ws.send(npy(np.ones((1, 2), np.float32)))
            ws.recv(timeout=10)  # open and answering
        assert metric(server, "monoserve_streams_open", transport="websocket") == MAX_OPEN
        with connect(ws_url(server), additional_headers=AUTH) as extra:
            code, reason = closed_with(extra)
        assert code == 4503 and "MONOSERVE_STREAM_MAX_OPEN" in reason
        still_serves(server)  # HTTP is not capped by streams
    deadline = time.monotonic() + 10
    while metric(server, "monoserve_streams_open", transport="websocket") > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    with connect(ws_url(server), additional_headers=AUTH) as ws:  # slots come back
        ws.send(npy(np.ones((1, 2), np.float32)))
        assert np.load(io.BytesIO(ws.recv(timeout=10))).shape == (1, 0)


def test_idle_stream_is_closed(server):
    with connect(ws_url(server), additional_headers=AUTH) as ws:
        ws.send(npy(np.ones((2, 5), np.float32)))
        ws.recv(timeout=10)
        started = time.monotonic()
        code, reason = closed_with(ws)
        waited = time.monotonic() - started
    assert code == 4408 and "no frame" in reason
    assert IDLE_S - 0.5 < waited < IDLE_S + 5
    still_serves(server)


def test_oversized_frame_is_refused_before_it_is_read(server, client):
    with connect(ws_url(server), additional_headers=AUTH, max_size=None) as ws:
        ws.send(npy(np.ones((2, 5), np.float32)))
        ws.recv(timeout=10)
        try:
            ws.send(b"\x93NUMPY" + b"\0" * (2 * MAX_FRAME))
            code = closed_with(ws)[0]
        except ConnectionClosed as exc:  # the server closed while the frame was still being written
            code = exc.rcvd.code if exc.rcvd is not None else None
        # message too big; or a reset that lost the close frame (the server stops reading mid-frame)
        assert code in (1009, None)
    with pytest.raises(PayloadTooLargeError, match="MONOSERVE_STREAM_MAX_FRAME_BYTES"):  # refused before sending
        list(client.stream_smooth(np.ones((8, 64 * 1024), np.float32), chunk_samples=64 * 1024))  # 2 MiB frames
    still_serves(server)


@pytest.mark.parametrize("frame, expected", [
    (json.dumps({"signal": [["a", 1.0]]}), "only numbers"),
    (json.dumps({"signal": [[1.0, None]]}), "non-finite"),
    (json.dumps({"signal": [1.0, 2.0]}), "2 channel"),  # an [n] chunk is one channel; the stream has 2
    (json.dumps({"signal": [[[[1.0, 2.0]]]]}), "1 to 3 dimensions"),
    (json.dumps({"signal": [[1.0]], "extra": 1}), "unknown field"),
    (json.dumps([1, 2]), "JSON object"),
    ("{not json", "malformed JSON"),
    (b"not a npy file", ".npy"),
    (npy(np.array([["x"]])), "dtype"),
    (npy(np.array([[1.0, np.inf], [1.0, 1.0]], np.float32)), "non-finite"),
    (npy(np.ones((3, 2), np.float32)), "2 channel"),  # the stream has 2 channels
])
def test_bad_frames_close_with_4400_and_a_reason(server, frame, expected):
    with connect(ws_url(server), additional_headers=AUTH) as ws:
        ws.send(npy(np.ones((2, 4), np.float32)))
        ws.recv(timeout=10)
        ws.send(frame)
        code, reason = closed_with(ws)
    assert code == 4400 and expected in reason, (code, reason)
    still_serves(server)


def test_forged_and_foreign_states_are_400(server, client):
    base = server.base
    start = httpx.post(f"{base}/smooth", headers=AUTH, json={"signal": [[1.0, 2.0], [3.0, 4.0]], "stream": True,
                                                              "mode": "causal"})
    assert start.status_code == 200, start.text
    state = start.json()["state"]
    body, mac = state.split(".")
    forged = [body[:-4] + "AAAA" + "." + mac, body + "." + mac[:-4] + "AAAA", "x" * 40, body]
    for bad in forged:
        response = httpx.post(f"{base}/smooth", headers=AUTH, json={"signal": [[1.0], [2.0]], "state": bad})
        assert response.status_code == 400 and response.json()["field"] == "state", response.text
    response = httpx.post(f"{base}/smooth", content=npy(np.ones((2, 1), np.float32)),
                          headers={**AUTH, "content-type": "application/x-npy", "x-stream-state": forged[0]})
    assert response.status_code == 400 and "issued by this service" in response.json()["error"]
    for foreign, field in (({"model": "multilabel"}, "model"), ({"mode": "same"}, "mode"), ({"version": 2}, "version")):
        response = httpx.post(f"{base}/smooth", headers=AUTH, json={"signal": [[1.0], [2.0]], "state": state, **foreign})
        assert response.status_code == 400 and response.json()["field"] == field, response.text
    response = httpx.post(f"{base}/smooth", headers=AUTH, json={"signal": [[1.0], [2.0], [3.0]], "state": state})
    assert response.status_code == 400 and "2 channel" in response.json()["error"]
    response = httpx.post(f"{base}/smooth", headers=AUTH, json={"signal": [[1.0], [2.0]], "state": state, "stream": True})
    assert response.status_code == 400
    # the genuine state still works after all that, and ends with the tail
    response = httpx.post(f"{base}/smooth", headers=AUTH, json={"signal": [[5.0], [6.0]], "state": state, "end": True})
    assert response.status_code == 200 and response.json()["end"] is True and "state" not in response.json()
    whole = one_shot(client, np.array([[1.0, 2.0, 5.0], [3.0, 4.0, 6.0]], np.float32), "causal")
    streamed = np.concatenate([np.asarray(start.json()["smoothed"]), np.asarray(response.json()["smoothed"])], axis=1)
    np.testing.assert_allclose(streamed, whole, rtol=1e-6, atol=1e-6)


def test_a_client_that_never_reads_is_not_buffered(server):
    """It sends 256 KiB frames and reads nothing: the server stops reading once its answers cannot
    be written (the sender blocks after a bounded amount: socket buffers, not server memory), ends
    the stream after the idle timeout, and answers others all along."""
    (pid,) = serving_processes(server.process.pid)

    def rss() -> int:
        return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) * 1024

    frame = npy(np.ones((8, 8192), np.float32))  # 256 KiB

    def tcp_max(name: str) -> int:
        return int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])

    # What the kernel may hold on loopback: the frames in the client's send and the server's receive
    # buffers, the answers in the server's send and the client's receive buffers; plus 16 MiB for
    # the server's own (a frame being read, one being answered, uvicorn's 64 KiB write buffer).
    kernel_bytes = 2 * (tcp_max("tcp_wmem") + tcp_max("tcp_rmem"))
    bound = kernel_bytes + 16 * 2**20
    before = rss()

    async def flood() -> tuple[int, bool]:
        from websockets.asyncio.client import connect as aconnect

        ws = await aconnect(ws_url(server), additional_headers=AUTH, max_size=None)
        sent, blocked = 0, False
        try:
            while sent * len(frame) < bound + 32 * 2**20:
                try:
                    await asyncio.wait_for(ws.send(frame), 3.0)
                except asyncio.TimeoutError:
                    blocked = True
                    break
                sent += 1
            still_serves(server)  # the server answers others while this one is stuck
            return sent, blocked
        finally:
            ws.transport.abort()

    sent, blocked = asyncio.run(flood())
    assert blocked, f"the client sent all {sent} frames without being held back"
    assert sent * len(frame) < bound, (sent, bound)
    assert rss() - before < 96 * 2**20
    deadline = time.monotonic() + 15
    while metric(server, "monoserve_streams_open", transport="websocket") > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metric(server, "monoserve_streams_open", transport="websocket") == 0
    still_serves(server)


def test_metrics_count_streams(server, client):
    before = metric(server, "monoserve_stream_frames_total", transport="websocket", model="smoother")
    samples = metric(server, "monoserve_stream_samples_total", transport="http", model="smoother")
    list(client.stream_smooth(np.ones((2, 30), np.float32), chunk_samples=10))
    http_frames = metric(server, "monoserve_stream_frames_total", transport="http", model="smoother")
    list(client.stream_smooth(np.ones((2, 30), np.float32), chunk_samples=10, transport="http"))
    assert metric(server, "monoserve_stream_frames_total", transport="websocket", model="smoother") == before + 3
    assert metric(server, "monoserve_stream_frames_total", transport="http", model="smoother") == http_frames + 4
    assert metric(server, "monoserve_stream_samples_total", transport="http", model="smoother") == samples + 30
    assert metric(server, "monoserve_streams_closed_total", transport="websocket", outcome="ended") >= 1


# -- a reload while streams are open ------------------------------------------------------------
def test_reload_changes_no_open_stream_and_a_gone_version_is_409(server, client, tmp_path):
    """Streams opened on version 1 (WebSocket, and HTTP states, one minted by the module's server:
    a replica sharing the secret) go on with version 1 while version 2 is published and served;
    once version 1 is removed, a continuing stream is a 409 / close 4409."""
    repo = fresh_repo(tmp_path / "reload", models=("smoother",))
    staging_repo = fresh_repo(tmp_path / "staging", models=("smoother",))  # version 2, another kernel, made first
    assert build_smoother(staging_repo, tmp_path, kernel_size=5).name == "2"
    rng = np.random.default_rng(11)
    signal = rng.standard_normal((3, 300)).astype(np.float32)
    parts = np.array_split(signal, 6, axis=1)
    with running_server(repo, env={**ENV, "MONOSERVE_STREAM_IDLE_TIMEOUT_S": "30"}) as other, Client(other.base, token=TOKEN) as other_client, \
            contextlib.ExitStack() as stack:
        # an HTTP stream started on the module's server, continued on this one (same secret, same artifact)
        start = httpx.post(f"{server.base}/smooth", headers=AUTH,
                           json={"signal": parts[0].tolist(), "stream": True, "mode": "same"}).json()
        http_out, state = [np.asarray(start["smoothed"], np.float32).reshape(3, -1)], start["state"]

        def http_step(part, end=False):
            nonlocal state
            payload = {"signal": part.tolist(), "state": state, **({"end": True} if end else {})}
            response = httpx.post(f"{other.base}/smooth", headers=AUTH, json=payload)
            assert response.status_code == 200, response.text
            state = response.json().get("state")
            http_out.append(np.asarray(response.json()["smoothed"], np.float32).reshape(3, -1))

        ws = stack.enter_context(connect(ws_url(other, "mode=same"), additional_headers=AUTH))
        ws_out = []

        def ws_step(part):
            ws.send(npy(part))
            ws_out.append(np.load(io.BytesIO(ws.recv(timeout=10))))

        for part in parts[:2]:
            ws_step(part)
        http_step(parts[1])
        # publish version 2 (prepared aside, renamed in) and wait until it serves; empty chunks keep
        # the WebSocket stream from idling out meanwhile
        shutil.copytree(staging_repo / "smoother" / "2", repo / "smoother" / ".staging-2")
        (repo / "smoother" / ".staging-2").rename(repo / "smoother" / "2")
        deadline = time.monotonic() + 30
        while other_client.smooth([1.0, 2.0, 3.0]).version != 2:
            assert time.monotonic() < deadline, "version 2 was not served in time"
            ws_step(parts[0][:, :0])
            time.sleep(0.2)
        for part in parts[2:]:
            ws_step(part)
        http_step(parts[2])
        ws.send(json.dumps({"end": True}))
        ws_out.append(np.load(io.BytesIO(ws.recv(timeout=10))))
        ws.close()
        expected = one_shot(other_client, signal, "same", version=1)
        np.testing.assert_allclose(np.concatenate(ws_out, axis=1), expected, rtol=1e-6, atol=1e-5)
        new = np.concatenate(list(other_client.stream_smooth(signal, mode="same", chunk_samples=50)), axis=1)
        np.testing.assert_allclose(new, one_shot(other_client, signal, "same", version=2), rtol=1e-6, atol=1e-5)

        # version 1 goes: the open WebSocket stream is closed 4409 at its next frame, the HTTP state is a 409
        ws = stack.enter_context(connect(ws_url(other, "version=1"), additional_headers=AUTH))
        ws.send(npy(parts[0]))
        ws.recv(timeout=10)

        def chunks_then_remove_version_1():
            yield parts[0]
            shutil.rmtree(repo / "smoother" / "1")
            deadline = time.monotonic() + 30
            while httpx.post(f"{other.base}/smooth", headers=AUTH, json={"signal": [1.0], "version": 1}).status_code != 404:
                assert time.monotonic() < deadline, "version 1 was not removed in time"
                time.sleep(0.2)
            yield parts[1]

        with pytest.raises(VersionGoneError, match="no longer served"):  # the client's HTTP stream
            list(other_client.stream_smooth(chunks_then_remove_version_1(), transport="http", version=1))
        ws.send(npy(parts[1]))
        code, reason = closed_with(ws)
        assert code == 4409 and "no longer served" in reason
        response = httpx.post(f"{other.base}/smooth", headers=AUTH, json={"signal": parts[3].tolist(), "state": state})
        assert response.status_code == 409 and "no longer served" in response.json()["error"]
        still_serves(other)
    # the module's server still has version 1: the HTTP stream ends there, equal to one-shot
    response = httpx.post(f"{server.base}/smooth", headers=AUTH,
                          json={"signal": np.concatenate(parts[3:], axis=1).tolist(), "state": state, "end": True})
    assert response.status_code == 200, response.text
    http_out.append(np.asarray(response.json()["smoothed"], np.float32).reshape(3, -1))
    np.testing.assert_allclose(np.concatenate(http_out, axis=1), one_shot(client, signal, "same", version=1),
                               rtol=1e-6, atol=1e-5)


def test_bad_request_errors_reach_the_client(client):
    with pytest.raises(BadRequestError, match="mode"):
        list(client.stream_smooth(np.ones((1, 10)), mode="sideways"))
    with pytest.raises(BadRequestError, match="mode"):
        list(client.stream_smooth(np.ones((1, 10)), mode="sideways", transport="http"))
    with pytest.raises(BadRequestError, match="at least"):
        list(client.stream_smooth(np.ones((1, 3)), mode="valid"))  # fewer than K samples: as one-shot, a 400


def test_a_state_works_on_every_worker_of_one_server(tmp_path):
    """Two workers and no configured secret: `monoserve serve` draws one key for both, so a stream
    whose requests land on either worker (a new connection each) goes on, equal to one-shot."""
    repo = fresh_repo(tmp_path / "workers", models=("smoother",))
    env = {key: value for key, value in ENV.items() if key != "MONOSERVE_STREAM_SECRET"}
    signal = np.random.default_rng(5).standard_normal((2, 400)).astype(np.float32)
    with running_server(repo, "--workers", "2", env=env) as two, Client(two.base, token=TOKEN) as client:
        state, outputs = None, []
        for index, part in enumerate(np.array_split(signal, 24, axis=1)):
            payload = {"signal": part.tolist(), **({"stream": True, "mode": "same"} if state is None else {"state": state})}
            if index == 23:
                payload["end"] = True
            response = httpx.post(f"{two.base}/smooth", headers={**AUTH, "connection": "close"}, json=payload)
            assert response.status_code == 200, response.text
            state = response.json().get("state")
            outputs.append(np.asarray(response.json()["smoothed"], np.float32).reshape(2, -1))
        np.testing.assert_allclose(np.concatenate(outputs, axis=1), one_shot(client, signal, "same"), rtol=1e-6, atol=1e-5)


def test_async_client_streams_over_both_transports(server):
    from monoserve.client import AsyncClient

    signal = np.random.default_rng(8).standard_normal((3, 500)).astype(np.float32)

    async def chunks():
        for part in np.array_split(signal, 7, axis=1):
            yield part

    async def run() -> list[np.ndarray]:
        async with AsyncClient(server.base, token=TOKEN) as client:
            results = []
            for transport in ("websocket", "http"):
                outs = [out async for out in client.stream_smooth(chunks(), mode="valid", transport=transport)]
                assert len(outs) == 8
                results.append(np.concatenate(outs, axis=1))
            results.append(np.concatenate([out async for out in client.stream_smooth(signal[0], chunk_samples=64,
                                                                                     mode="same", json=True)]))
            return results

    ws_out, http_out, flat = asyncio.run(run())
    with Client(server.base, token=TOKEN) as client:
        expected = one_shot(client, signal, "valid")
        np.testing.assert_allclose(ws_out, expected, rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(http_out, expected, rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(flat, one_shot(client, signal[0], "same"), rtol=1e-6, atol=1e-5)
