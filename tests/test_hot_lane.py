"""The hot lane (issue 30, tiny requests): service.edge.http's protocol answers POST /smooth,
/classify, /score and OIP infer itself, below ASGI (service.edge.fastpath.HotLane), with the one
pipeline the FastAPI routes use, and writes each answer's head and body in one write.

Against real servers over raw sockets: the lane answers byte for byte as the FastAPI routes do
(MONOSERVE_HOT_PATH=false, uvicorn's own ASGI cycle), errors included; requests pipelined in one
write are answered in order; HTTP/1.0 and `Connection: close` close after the answer; a 100
Continue is sent before a body that waits for it; a body that arrives in pieces is read under its
deadline; a body that stops arriving gets its 408. And the lane is what answers: an in-thread
server counts the requests its lane served.
"""

from __future__ import annotations

import io
import json
import socket
import time

import numpy as np
import pytest

from service.app import create_app
from service.edge import fastpath
from service.settings import Settings
from service_fixtures import CLASSIFIER_FEATURES, fresh_repo
from test_body_into import read_answers, serving
from test_service_e2e import running_server

ROW = [1.0, 0.5, 2.0, 1.0][: len(CLASSIFIER_FEATURES)]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return fresh_repo(tmp_path_factory.mktemp("hot_lane"))


def request(path: str, body: bytes, content_type: str = "application/json", extra: bytes = b"",
            version: bytes = b"1.1") -> bytes:
    return (b"POST %s HTTP/%s\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\nX-Request-ID: fixed-id\r\n%s\r\n"
            % (path.encode(), version, content_type.encode(), len(body), extra)) + body


def closed_by_server(sock: socket.socket, timeout_s: float = 10.0) -> bool:
    sock.settimeout(timeout_s)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, socket.timeout):
        return False


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


# Requests with good and bad bodies, on every hot route: (name, raw request bytes).
CASES = [
    ("classify json", request("/classify", json.dumps({"instances": [ROW, ROW]}).encode())),
    ("classify npy", request("/classify", npy(np.array([ROW], dtype=np.float32)), "application/x-npy",
                             b"Accept: application/x-npy\r\n")),
    ("classify by feature name", request("/classify", json.dumps(
        {"instances": [dict(zip(CLASSIFIER_FEATURES, ROW))]}).encode())),
    ("multilabel", request("/classify?model=multilabel", b'{"instances": [[1, 2, 3]]}')),
    ("smooth json", request("/smooth?model=smoother&mode=same", b'{"signal": [1, 2, 3, 4, 5, 6, 7, 8]}')),
    ("oip infer", request("/v2/models/classifier/infer", json.dumps({"inputs": [
        {"name": "features", "datatype": "FP32", "shape": [1, len(ROW)], "data": ROW}]}).encode())),
    ("oip versioned", request("/v2/models/classifier/versions/1/infer", json.dumps({"inputs": [
        {"name": "features", "datatype": "FP32", "shape": [1, len(ROW)], "data": ROW}]}).encode())),
    ("malformed json", request("/classify", b'{"instances": [[1, 2')),
    ("unknown field", request("/classify", b'{"instances": [[1, 2, 3, 4]], "extra": 1}')),
    ("wrong width", request("/classify", b'{"instances": [[1, 2]]}')),
    ("non-finite", request("/classify", b'{"instances": [[1, 2, 3, null]]}')),
    ("unknown query", request("/classify?colour=red", b'{"instances": [[1, 2, 3, 4]]}')),
    ("unsupported type", request("/classify", b"a,b", "text/csv")),
    ("compressed", request("/classify", b"\x1f\x8b", extra=b"Content-Encoding: gzip\r\n")),
    ("unknown model", request("/v2/models/nothing/infer", b'{"inputs": []}')),
    ("unknown version", request("/classify", b'{"instances": [[1, 2, 3, 4]], "version": 9}')),
    ("oip bad datatype", request("/v2/models/classifier/infer", b'{"inputs": [{"name": "features", "datatype": "FP99", '
                                                                 b'"shape": [1, 4], "data": [1, 2, 3, 4]}]}')),
    ("smooth too long", request("/smooth?model=smoother", b'{"signal": [1, 2, 3], "mode": "sideways"}')),
]


def answers_of(port: int) -> dict[str, tuple[int, list[tuple[bytes, bytes]], bytes]]:
    found = {}
    with socket.create_connection(("127.0.0.1", port)) as sock:  # one keep-alive connection for them all
        for name, raw in CASES:
            sock.sendall(raw)
            (found[name],) = read_answers(sock, 1)
    return found


def test_the_lane_answers_byte_for_byte_as_the_fastapi_routes(repo):
    with running_server(repo) as lane:
        by_lane = answers_of(lane.port)
    with running_server(repo, env={"MONOSERVE_HOT_PATH": "false"}) as routes:
        by_routes = answers_of(routes.port)
    statuses = {name: answer[0] for name, answer in by_lane.items()}
    assert [statuses[name] for name in ("classify json", "classify npy", "multilabel", "smooth json", "oip infer")] == [200] * 5
    assert statuses["malformed json"] == 400 and statuses["unsupported type"] == 415 and statuses["unknown model"] == 404
    for name, _ in CASES:
        status, headers, body = by_lane[name]
        expected_status, expected_headers, expected_body = by_routes[name]
        assert (status, body) == (expected_status, expected_body), name
        # the same headers, in any order (x-request-id: the client's, echoed)
        assert sorted(headers) == sorted(expected_headers), name
        assert (b"x-request-id", b"fixed-id") in headers, name


def test_requests_pipelined_in_one_write_are_answered_in_order(repo):
    by_name = dict(CASES)
    sent = [by_name[name] for name in ("classify json", "malformed json", "oip infer", "smooth json")]
    with running_server(repo) as server, socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"".join(sent * 3))
        answers = read_answers(sock, 12)
        assert [status for status, _, _ in answers] == [200, 400, 200, 200] * 3
        assert [body for _, _, body in answers[:4]] == [body for _, _, body in answers[4:8]]
        assert b'"scores"' in answers[0][2] and b'"outputs"' in answers[2][2] and b'"smoothed"' in answers[3][2]
        sock.sendall(sent[0])  # the connection is still in step
        assert read_answers(sock, 1)[0][0] == 200


def test_http_1_0_and_connection_close_end_the_connection_after_the_answer(repo):
    body = json.dumps({"instances": [ROW]}).encode()
    with running_server(repo) as server:
        for raw in (request("/classify", body, version=b"1.0"), request("/classify", body, extra=b"Connection: close\r\n")):
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(raw)
                ((status, headers, answer),) = read_answers(sock, 1)
                assert status == 200 and b'"scores"' in answer
                assert (b"connection", b"close") in headers
                assert closed_by_server(sock)
        with socket.create_connection(("127.0.0.1", server.port)) as sock:  # an error closes too when asked
            sock.sendall(request("/classify", b"{", extra=b"Connection: close\r\n"))
            ((status, headers, _),) = read_answers(sock, 1)
            assert status == 400 and (b"connection", b"close") in headers and closed_by_server(sock)


def test_a_body_that_waits_for_100_continue_or_arrives_in_pieces(repo):
    body = json.dumps({"instances": [ROW, ROW, ROW]}).encode()
    with running_server(repo) as server, socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(20)
        head = request("/classify", body, extra=b"Expect: 100-continue\r\n")[: -len(body)]
        sock.sendall(head)
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        ((status, _, whole),) = read_answers(sock, 1)
        assert status == 200
        sock.sendall(request("/classify", body)[: -len(body) + 5])  # headers and 5 bytes, then a pause
        time.sleep(0.3)
        sock.sendall(body[5:])
        ((status, _, pieces),) = read_answers(sock, 1)
        assert status == 200 and json.loads(pieces)["scores"] == json.loads(whole)["scores"]


def test_a_body_that_stops_arriving_gets_its_408(repo):
    with running_server(repo, env={"MONOSERVE_BODY_TIMEOUT_S": "1", "MONOSERVE_BODY_MIN_RATE_BYTES_S": "0"}) as server, \
            socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(request("/classify", b'{"instances": [[1, 2, 3, 4]]}' + b" " * 100)[:-60])
        started = time.monotonic()
        ((status, headers, body),) = read_answers(sock, 1)
        assert status == 408 and b"did not arrive" in body and (b"connection", b"close") in headers
        assert time.monotonic() - started < 10


# -- which layer answered ---------------------------------------------------------------------
class CountingLane(fastpath.HotLane):
    """The real lane, counting the requests it serves."""

    served = 0

    def serve(self, *args, **kwargs):
        CountingLane.served += 1
        return super().serve(*args, **kwargs)


@pytest.mark.parametrize("hot_path", [True, False])
def test_the_lane_answers_the_hot_routes_only_when_the_hot_path_is_on(repo, hot_path):
    app = create_app(Settings(repo=repo, device="cpu", default_classifier="classifier", hot_path=hot_path))
    if hot_path:
        assert isinstance(app.hot_lane, fastpath.HotLane)
        app.hot_lane = CountingLane(app.state.service)
    else:
        assert app.hot_lane is None
    CountingLane.served = 0
    with serving(app, "uvloop") as port, socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(CASES[0][1] + CASES[5][1])  # /classify, OIP infer
        sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")  # not a hot route: FastAPI
        answers = read_answers(sock, 3)
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert CountingLane.served == (2 if hot_path else 0)


class HeaderInjectingLane(fastpath.HotLane):
    """The real lane, except that /classify answers with a header value that would split the
    response (a name or label a hostile publisher managed to put in a manifest, say)."""

    def serve(self, adapter, raw_headers, path, query_string, receive, body_into, write_reply, body_ready=None):
        from service.pipeline.endpoint import Reply

        async def answer():
            await write_reply(Reply(200, b"{}", "application/json", {"x-model": "m\r\nx-injected: yes"}), "id-1")

        return answer()


def test_a_reply_header_that_would_split_the_response_is_a_500_and_nothing_of_it_is_sent(repo):
    app = create_app(Settings(repo=repo, device="cpu", default_classifier="classifier"))
    app.hot_lane = HeaderInjectingLane(app.state.service)
    with serving(app, "uvloop") as port, socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(CASES[0][1])
        ((status, headers, body),) = read_answers(sock, 1)
        assert closed_by_server(sock)
    assert status == 500 and body == b"Internal Server Error"
    assert b"x-injected" not in dict(headers) and (b"connection", b"close") in headers
