"""A large request body read straight from the socket into the application's buffer (issue 30:
"receive into one buffer"): service.edge.http's httptools protocol offers `monoserve.body_into`,
which hands the transport to a recv_into reader for exactly the body's remaining bytes.

Against real uvicorn servers with that protocol (uvloop and asyncio loops), over real sockets: the
bytes arrive whole and in order; a request pipelined behind the body is parsed from its first
byte; a client that goes away mid-body gets a short count; an application that stops waiting
(its body deadline) leaves the connection in step for the next request; and the service
itself answers a large .npy body, and a request pipelined behind it, the same as before.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn

from service.base.extensions import BODY_INTO
from service.edge.http import HttpToolsHeaderDeadline
from service_fixtures import fresh_repo, numpy_smooth, onnx_initializers, onnx_name
from test_service_e2e import free_port, running_server

BODY_BYTES = 3_000_000 + 7  # several socket reads, not a multiple of any buffer size


def _payload(size: int) -> bytes:
    return np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()


class Recorder:
    """An ASGI app: reads the body (first chunk with receive(), the rest with body_into when
    offered; `?abandon=S`: gives up waiting after S seconds) and answers its length and sha256."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        size = int(dict(scope["headers"]).get(b"content-length", b"0"))
        abandon = scope["query_string"].decode().removeprefix("abandon=")
        body_into = scope.get("extensions", {}).get(BODY_INTO)
        event = {"path": scope["path"], "offered": body_into is not None, "direct": 0, "progress": []}
        self.events.append(event)
        buffer = bytearray(size)
        message = await receive()
        first = message.get("body", b"")
        buffer[:len(first)] = first
        position = len(first)
        status = 200
        if message.get("more_body") and body_into is not None:
            view = memoryview(buffer)[position:]
            try:
                if abandon:
                    written = await asyncio.wait_for(body_into(view, event["progress"].append), float(abandon))
                else:
                    written = await body_into(view, event["progress"].append)
                event["direct"] = written
                position += written
            except asyncio.TimeoutError:
                status = 408
        while status == 200 and message.get("more_body") and position < size and body_into is None:
            message = await receive()
            chunk = message.get("body", b"")
            buffer[position:position + len(chunk)] = chunk
            position += len(chunk)
        event["received"] = position
        if position < size and status == 200:
            event["short"] = True
            return  # the client went away: nobody to answer
        answer = f"{position} {hashlib.sha256(bytes(buffer[:position])).hexdigest()}".encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", str(len(answer)).encode()), (b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": answer})


@contextmanager
def serving(app: Any, loop: str) -> Iterator[int]:
    port = free_port()
    # as service.server runs uvicorn: no proxy-headers middleware around the app (the app's hot lane
    # is found on the app itself: tests/test_hot_lane.py)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, loop=loop, http=HttpToolsHeaderDeadline,
                            log_level="warning", lifespan="on", proxy_headers=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60  # an app's lifespan may prove models first (tests/test_hot_lane.py)
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def request_bytes(body: bytes, path: str = "/upload", extra: bytes = b"") -> bytes:
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n%s\r\n"
            % (path.encode(), len(body), extra)) + body


def read_answers(sock: socket.socket, count: int, timeout_s: float = 20.0) -> list[tuple[int, list[tuple[bytes, bytes]], bytes]]:
    """`count` HTTP answers off the socket as (status, [(lower-case header name, value)], body), each
    with a Content-Length; a 100 Continue is skipped."""
    sock.settimeout(timeout_s)
    data, answers = b"", []
    while len(answers) < count:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(answers)} answers: {data[:200]!r}"
            data += chunk
        head, data = data.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        if status == 100:
            continue
        headers = [(name.strip().lower(), value.strip()) for name, value in (line.split(b":", 1) for line in lines[1:])]
        length = int(dict(headers)[b"content-length"])
        while len(data) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed mid-answer"
            data += chunk
        answers.append((status, headers, data[:length]))
        data = data[length:]
    return answers


def read_responses(sock: socket.socket, count: int, timeout_s: float = 20.0) -> list[tuple[int, bytes]]:
    """`count` HTTP responses (status, body) read off the socket, each with a Content-Length."""
    return [(status, body) for status, _, body in read_answers(sock, count, timeout_s)]


def expected_answer(body: bytes) -> bytes:
    return f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()


@pytest.fixture(params=["uvloop", "asyncio"])
def loop_name(request) -> str:
    return request.param


def test_a_large_body_arrives_whole_and_a_pipelined_request_behind_it_is_parsed(loop_name):
    app, body, small = Recorder(), _payload(BODY_BYTES), b"small and pipelined"
    with serving(app, loop_name) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        # one write: the large body and a whole second request behind it, as a pipelining client sends
        sock.sendall(request_bytes(body) + request_bytes(small, "/second"))
        answers = read_responses(sock, 2)
    assert answers == [(200, expected_answer(body)), (200, expected_answer(small))]
    first = app.events[0]
    assert first["offered"] and first["direct"] > 0, first  # the rest of the body came through body_into
    assert first["progress"] and first["progress"][-1] == first["direct"]  # progress counts up to the end
    assert app.events[1]["path"] == "/second"


def test_keep_alive_serves_requests_after_direct_bodies(loop_name):
    app = Recorder()
    bodies = [_payload(BODY_BYTES), _payload(1_000_000), b"tiny", _payload(2_500_001)]
    with serving(app, loop_name) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for body in bodies:
            response = client.post("/upload", content=body)
            assert response.status_code == 200 and response.content == expected_answer(body)
    assert sum(1 for event in app.events if event["direct"] > 0) >= 3


def test_expect_100_continue_then_a_direct_body(loop_name):
    app, body = Recorder(), _payload(BODY_BYTES)
    with serving(app, loop_name) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request_bytes(b"", extra=b"Expect: 100-continue\r\n")[:-2].replace(
            b"Content-Length: 0", b"Content-Length: %d" % len(body)) + b"\r\n")
        sock.settimeout(10)
        interim = sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        sock.sendall(body)
        assert read_responses(sock, 1) == [(200, expected_answer(body))]


def test_a_client_that_leaves_mid_body_gives_a_short_count_and_the_server_goes_on(loop_name):
    app, body = Recorder(), _payload(BODY_BYTES)
    with serving(app, loop_name) as port:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(request_bytes(body)[:1_500_000])
            deadline = time.monotonic() + 10
            while not (app.events and app.events[0]["progress"]) and time.monotonic() < deadline:
                time.sleep(0.02)
        deadline = time.monotonic() + 10
        while "received" not in app.events[0] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert app.events[0].get("short") and app.events[0]["received"] < len(body), app.events[0]
        response = httpx.post(f"http://127.0.0.1:{port}/after", content=b"next", timeout=10)
        assert response.status_code == 200 and response.content == expected_answer(b"next")


def test_an_application_that_stops_waiting_leaves_the_connection_in_step(loop_name):
    """The application gives up on the body (as the body deadline does) and answers 408 while the
    client is still sending: the reader drops the rest of the body, and the next request on the
    same connection is parsed from its first byte."""
    app, body = Recorder(), _payload(BODY_BYTES)
    request = request_bytes(body, "/upload?abandon=0.3")
    with serving(app, loop_name) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request[:1_000_000])
        sock.settimeout(10)
        first = read_responses(sock, 1)
        assert first[0][0] == 408
        sock.sendall(request[1_000_000:] + request_bytes(b"after the dropped body", "/next"))
        assert read_responses(sock, 1) == [(200, expected_answer(b"after the dropped body"))]
    assert [event["path"] for event in app.events] == ["/upload", "/next"]


# -- the service ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def service_repo(tmp_path_factory):
    return fresh_repo(tmp_path_factory.mktemp("body_into"), models=("smoother",))


def test_the_service_answers_a_large_npy_body_and_the_request_behind_it(service_repo):
    signal = np.random.default_rng(3).standard_normal((4, 200_000)).astype(np.float32)  # 3.2 MB
    buffer = io.BytesIO()
    np.save(buffer, signal)
    body = buffer.getvalue()
    head = (b"POST /smooth?model=smoother&mode=same HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-npy\r\n"
            b"Accept: application/x-npy\r\nContent-Length: %d\r\n\r\n" % len(body))
    small = b'{"signal": [1.0, 2.0, 3.0, 4.0]}'
    second = (b"POST /smooth HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
              % len(small)) + small
    with running_server(service_repo) as server, socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + body + second)
        (status, answer), (status2, answer2) = read_responses(sock, 2, timeout_s=60)
        reference = httpx.post(f"{server.base}/smooth", params={"model": "smoother", "mode": "same"}, content=body,
                               headers={"content-type": "application/x-npy", "accept": "application/x-npy"}, timeout=60)
    assert status == 200 and status2 == 200, (answer[:200], answer2[:200])
    smoothed = np.load(io.BytesIO(answer))
    assert smoothed.shape == signal.shape and answer == reference.content
    version_dir = service_repo / "smoother" / "1"
    kernel = onnx_initializers(version_dir)[onnx_name(version_dir, "kernel")]
    np.testing.assert_allclose(smoothed, numpy_smooth(signal, kernel, "same"), rtol=1e-4, atol=1e-4)
    assert httpx.Response(200, content=answer2).json()["smoothed"]
