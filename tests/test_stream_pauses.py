"""Streams under real timing, against a real `monoserve serve` process: every stream transport
(WebSocket /smooth/stream, /smooth with a carried state, the gRPC sequence stream) pauses between
chunks for longer than the HTTP header deadline and shorter than the stream idle timeout and keeps
streaming, its answers concatenating to the one-shot /smooth answer; a pause past the idle timeout
ends a WebSocket stream with 4408 and a reason, and makes an HTTP stream's state expire (408, with
the reason).

The settings are shortened here, their ratio kept (the defaults: a 10 s header deadline, a 60 s idle
timeout); one test also runs the defaults themselves: a 15 s pause on a WebSocket stream.
"""

from __future__ import annotations

import io
import queue
import time

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from service_fixtures import fresh_repo
from test_service_e2e import free_port, running_server

HEADER_S = 0.5  # MONOSERVE_HEADER_TIMEOUT_S, shortened from 10 s
IDLE_S = 3.0  # MONOSERVE_STREAM_IDLE_TIMEOUT_S, shortened from 60 s (the ratio kept: 1 to 6)
PAUSE_S = 3 * HEADER_S  # longer than the header deadline (plus its 0.1 s sweep), shorter than the idle timeout
MODES = ("same", "causal", "valid")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return fresh_repo(tmp_path_factory.mktemp("pauses"), models=("smoother",))


@pytest.fixture(scope="module")
def server(repo):
    grpc_port = free_port()
    env = {"MONOSERVE_HEADER_TIMEOUT_S": str(HEADER_S), "MONOSERVE_STREAM_IDLE_TIMEOUT_S": str(IDLE_S),
           "MONOSERVE_GRPC_PORT": str(grpc_port)}
    with running_server(repo, env=env) as running:
        yield running.base, f"127.0.0.1:{grpc_port}"
    assert "Traceback" not in running.output, running.output


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def one_shot(base: str, signal: np.ndarray, mode: str) -> np.ndarray:
    response = httpx.post(f"{base}/smooth", json={"signal": signal.tolist(), "mode": mode})
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["smoothed"], np.float32)


def pieces(signal: np.ndarray) -> list[np.ndarray]:
    return [signal[..., :40], signal[..., 40:90], signal[..., 90:]]


def websocket_stream(base: str, signal: np.ndarray, mode: str, pause_s: float) -> np.ndarray:
    with connect(base.replace("http://", "ws://") + f"/smooth/stream?mode={mode}") as ws:
        answers = []
        for index, chunk in enumerate(pieces(signal)):
            if index:
                time.sleep(pause_s)
            ws.send(npy(chunk))
            answers.append(np.load(io.BytesIO(ws.recv(timeout=30))))
        ws.send('{"end": true}')
        answers.append(np.load(io.BytesIO(ws.recv(timeout=30))))
    return np.concatenate(answers, axis=-1)


def http_stream(base: str, signal: np.ndarray, mode: str, pause_s: float) -> np.ndarray:
    answers, state = [], None
    with httpx.Client(base_url=base, timeout=30) as client:
        for index, chunk in enumerate(pieces(signal)):
            if index:
                time.sleep(pause_s)
            body = {"signal": chunk.tolist(), **({"state": state} if state else {"stream": True, "mode": mode})}
            answer = client.post("/smooth", json=body)
            assert answer.status_code == 200, answer.text
            answers.append(np.asarray(answer.json()["smoothed"], np.float32))
            state = answer.json()["state"]
        last = client.post("/smooth", json={"state": state, "end": True})
        assert last.status_code == 200, last.text
        answers.append(np.asarray(last.json()["smoothed"], np.float32))
    return np.concatenate(answers, axis=-1)


def grpc_sequence(target: str, signal: np.ndarray, mode: str, pause_s: float) -> np.ndarray:
    results: queue.Queue = queue.Queue()
    chunks = pieces(signal)
    with triton.InferenceServerClient(target) as client:
        client.start_stream(callback=lambda result, error: results.put((result, error)))
        answers = []
        try:
            for index, chunk in enumerate(chunks):
                if index:
                    time.sleep(pause_s)
                tensor = triton.InferInput("signal", list(chunk.shape), "FP32")
                tensor.set_data_from_numpy(chunk)
                client.async_stream_infer("smoother", [tensor], sequence_id=11, sequence_start=index == 0,
                                          sequence_end=index == len(chunks) - 1, parameters={"mode": mode})
                result, error = results.get(timeout=30)
                assert error is None, error
                answers.append(result.as_numpy("smoothed"))
        finally:
            client.stop_stream()
    return np.concatenate(answers, axis=-1)


STREAMS = {"websocket": websocket_stream, "http": http_stream, "grpc-sequence": grpc_sequence}


@pytest.mark.parametrize("transport", sorted(STREAMS))
@pytest.mark.parametrize("shape", [(1, 2, 130), (3, 130), (130,)], ids=["BCL", "CL", "L"])
def test_a_pause_past_the_header_deadline_keeps_the_stream(server, transport, shape):
    base, target = server
    mode = MODES[(sorted(STREAMS).index(transport) + len(shape)) % 3]  # every mode over every transport
    signal = (np.random.default_rng(len(shape)).standard_normal(shape) * 3).astype(np.float32)
    started = time.monotonic()
    streamed = STREAMS[transport](target if transport == "grpc-sequence" else base, signal, mode, PAUSE_S)
    assert time.monotonic() - started >= 2 * PAUSE_S  # the pauses happened
    expected = one_shot(base, signal, mode)
    assert streamed.shape == expected.shape
    np.testing.assert_allclose(streamed, expected, rtol=1e-6, atol=1e-5)


def test_a_websocket_idle_past_its_timeout_is_closed_4408_with_the_reason(server):
    base, _ = server
    with connect(base.replace("http://", "ws://") + "/smooth/stream") as ws:
        ws.send(npy(np.ones((2, 5), np.float32)))
        ws.recv(timeout=30)
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=IDLE_S + 30)
        waited = time.monotonic() - started
    assert closed.value.rcvd is not None, "closed without a close frame"
    assert closed.value.rcvd.code == 4408
    assert f"no frame for {IDLE_S:g} s" in closed.value.rcvd.reason
    assert IDLE_S - 0.2 < waited < IDLE_S + 10


def test_an_http_stream_state_unused_past_the_idle_timeout_is_expired_with_the_reason(server):
    base, _ = server
    with httpx.Client(base_url=base, timeout=30) as client:
        start = client.post("/smooth", json={"signal": [[1.0, 2.0, 3.0]], "stream": True})
        assert start.status_code == 200, start.text
        state = start.json()["state"]
        time.sleep(IDLE_S + 1.2)
        late = client.post("/smooth", json={"signal": [[4.0]], "state": state})
    assert late.status_code == 408, late.text
    assert "expired" in late.json()["error"] and f"idle timeout of {IDLE_S:g} s" in late.json()["error"]


def test_a_15_s_websocket_pause_with_the_default_timeouts_keeps_streaming(repo):
    """The defaults themselves (header deadline 10 s, idle timeout 60 s): a sensor that sends one frame
    every 15 s keeps its stream."""
    with running_server(repo) as running:
        signal = np.random.default_rng(15).standard_normal((2, 130)).astype(np.float32)
        streamed = websocket_stream(running.base, signal, "same", 15.0)
        np.testing.assert_allclose(streamed, one_shot(running.base, signal, "same"), rtol=1e-6, atol=1e-5)


def test_a_websocket_pause_past_the_header_deadline_with_h11(repo):
    """Both HTTP implementations hand the connection over (service.edge.http): h11 too."""
    env = {"MONOSERVE_HEADER_TIMEOUT_S": str(HEADER_S), "MONOSERVE_STREAM_IDLE_TIMEOUT_S": str(IDLE_S),
           "MONOSERVE_HTTP": "h11"}
    with running_server(repo, env=env) as running:
        signal = np.random.default_rng(11).standard_normal((2, 130)).astype(np.float32)
        streamed = websocket_stream(running.base, signal, "valid", PAUSE_S)
        np.testing.assert_allclose(streamed, one_shot(running.base, signal, "valid"), rtol=1e-6, atol=1e-5)
