"""Hostile client, round three: gRPC ModelStreamInfer takes nothing before its token is checked,
and no stream holds budget it does not use (issue 24, service.grpc_stream, service.stream_budget).

Real `monoserve serve` processes with a gRPC port, tritonclient's generated stubs, and a WebSocket
client:
- 300 calls without the token are UNAUTHENTICATED and take no stream slot: with a cap of 4 open
  streams per worker, a WebSocket client with the token still streams while they are open;
- a sequence restarted on the same id returns its previous reservation;
- a call that sends nothing for the idle timeout is ended and its sequences' budget returned (a
  second stream needing that budget is refused before, answered after); a sequence untouched for
  the idle timeout in a live stream is closed; open sequences are counted in monoserve_streams_open;
- no stream may hold more than MONOSERVE_STREAM_MAX_BUDGET_SHARE of the budget (gRPC and WebSocket).
"""

from __future__ import annotations

import io
import queue
import re
import time

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc
from websockets.sync.client import connect

from service_fixtures import fresh_repo
from test_service_e2e import free_port, running_server

TOKEN = "stream-reader"
BUDGET = 60 * 2**20  # the worker's in-flight budget in these servers
CHANNELS = 1_000_000  # a sequence of this many channels holds 32 MB of state (K = 9): over half the budget
DEADLINE_S = 60  # failure timeouts, never performance bounds
IDLE_S = 5.0  # generous: the proof of idleness must not race a loaded machine


def grpc_server(repo, **env: str):
    port = free_port()
    environment = {"MONOSERVE_GRPC_PORT": str(port), "MONOSERVE_INFLIGHT_BUDGET_BYTES": str(BUDGET), **env}
    return running_server(repo, "--workers", "1", env=environment), f"127.0.0.1:{port}"


def chunk(sequence_id: int, array: np.ndarray, start: bool = False, end: bool = False) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="smoother", raw_input_contents=[array.tobytes()])
    request.inputs.add(name="signal", datatype="FP32", shape=list(array.shape))
    request.parameters["sequence_id"].int64_param = sequence_id
    request.parameters["sequence_start"].bool_param = start
    request.parameters["sequence_end"].bool_param = end
    return request


class Stream:
    """One ModelStreamInfer call kept open: send a message, read its answer."""

    def __init__(self, stub, metadata=()):
        self.requests: queue.Queue = queue.Queue()
        self.answers = stub.ModelStreamInfer(iter(self.requests.get, None), metadata=metadata, timeout=DEADLINE_S * 2)

    def send(self, request) -> service_pb2.ModelStreamInferResponse:
        self.requests.put(request)
        return next(self.answers)

    def close(self) -> None:
        self.requests.put(None)


def metric(base: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(rf"{name}{{(.*)}} (\S+)$", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_streams_without_the_token_take_no_slot_and_token_holders_still_stream(tmp_path):
    repo = fresh_repo(tmp_path, models=("smoother",))
    context, target = grpc_server(repo, MONOSERVE_API_TOKEN=TOKEN, MONOSERVE_STREAM_MAX_OPEN="4")
    with context as server, grpc.insecure_channel(target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        # 300 calls that never send a message (their request iterators stay open) and carry no token
        silent = [Stream(stub) for _ in range(300)]
        wrong = [Stream(stub, metadata=(("authorization", "Bearer guessed"),)) for _ in range(20)]
        for call in silent + wrong:
            with pytest.raises(grpc.RpcError) as refused:
                next(call.answers)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, refused.value.details()
        # the attackers' calls are still open on their side: a WebSocket client with the token streams
        signal = np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(1, -1)
        url = f"ws://127.0.0.1:{server.port}/smooth/stream?mode=causal"
        with connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, open_timeout=30) as ws:
            for part in np.split(signal, 4, axis=1):
                ws.send(npy(part))
                answer = np.load(io.BytesIO(ws.recv(timeout=30)))
                assert answer.shape == part.shape
        # so does a gRPC stream with the token, for the 4 slots there are
        holders = [Stream(stub, metadata=(("authorization", f"Bearer {TOKEN}"),)) for _ in range(4)]
        for number, holder in enumerate(holders, start=1):
            answer = holder.send(chunk(number, signal, start=True, end=True))
            assert not answer.error_message, answer.error_message
        for call in silent + wrong + holders:
            call.close()
        refusals = metric(server.base, "monoserve_requests_total", route="/inference.GRPCInferenceService/ModelStreamInfer",
                          model="", status="401")
        assert refusals == 320.0


def test_restarting_a_sequence_returns_its_previous_reservation(tmp_path):
    repo = fresh_repo(tmp_path, models=("smoother",))
    context, target = grpc_server(repo, MONOSERVE_STREAM_MAX_BUDGET_SHARE="1.0")
    big = np.ones((CHANNELS, 1), np.float32)
    with context as server, grpc.insecure_channel(target, options=[("grpc.max_send_message_length", -1)]) as channel:
        stream = Stream(service_pb2_grpc.GRPCInferenceServiceStub(channel))
        for _ in range(4):  # each start holds 32 MB, over half the budget: a kept one would refuse the next
            answer = stream.send(chunk(7, big, start=True))
            assert not answer.error_message, answer.error_message
        assert metric(server.base, "monoserve_streams_open", transport="grpc") == 1.0
        assert metric(server.base, "monoserve_streams_closed_total", transport="grpc", outcome="restarted") == 3.0
        stream.close()
        wait_for(lambda: metric(server.base, "monoserve_streams_open", transport="grpc") == 0.0, "the close")


def test_a_silent_stream_is_ended_after_the_idle_timeout_and_its_budget_returned(tmp_path):
    repo = fresh_repo(tmp_path, models=("smoother",))
    context, target = grpc_server(repo, MONOSERVE_STREAM_MAX_BUDGET_SHARE="1.0", MONOSERVE_STREAM_IDLE_TIMEOUT_S=str(IDLE_S))
    big = np.ones((CHANNELS, 1), np.float32)
    small = np.ones((1, 4), np.float32)
    with context as server, grpc.insecure_channel(target, options=[("grpc.max_send_message_length", -1)]) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        silent = Stream(stub)
        assert not silent.send(chunk(1, big, start=True)).error_message  # holds 32 MB, then says nothing
        assert metric(server.base, "monoserve_streams_open", transport="grpc") == 1.0
        other = Stream(stub)
        refused = other.send(chunk(2, big, start=True))
        assert "in-flight memory budget" in refused.error_message  # the silent stream holds it
        # a live stream: sequence 3 is fed, sequence 4 is left untouched and is closed after the timeout
        live = Stream(stub)
        assert not live.send(chunk(3, small, start=True)).error_message
        assert not live.send(chunk(4, small, start=True)).error_message
        with pytest.raises(grpc.RpcError) as ended:
            next(silent.answers)  # ended by the server, which the client sees as the call's status
        assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "MONOSERVE_STREAM_IDLE_TIMEOUT_S" in ended.value.details()
        deadline = time.monotonic() + IDLE_S + 1.0
        while time.monotonic() < deadline:  # sequence 3 kept alive by its chunks meanwhile
            assert not live.send(chunk(3, small)).error_message
            time.sleep(0.3)
        answer = live.send(chunk(4, small))
        assert "is not open in this stream" in answer.error_message  # closed: untouched for IDLE_S
        again = Stream(stub)  # (`other` said nothing meanwhile: it was ended too)
        assert not again.send(chunk(2, big, start=True)).error_message  # the budget came back
        # sequence 4 closed idle; the silent stream's sequence 1 idle or with its call, whichever came first
        closed = [metric(server.base, "monoserve_streams_closed_total", transport="grpc", outcome=outcome)
                  for outcome in ("idle", "stream-closed")]
        assert closed[0] >= 1.0 and sum(closed) == 2.0, closed
        assert metric(server.base, "monoserve_streams_open", transport="grpc") == 2.0  # sequences 3 and 2
        live.close()
        again.close()
        other.close()
        wait_for(lambda: metric(server.base, "monoserve_streams_open", transport="grpc") == 0.0, "the closes")


def test_no_stream_holds_more_than_its_share_of_the_budget(tmp_path):
    repo = fresh_repo(tmp_path, models=("smoother",))
    context, target = grpc_server(repo)  # the default share: a quarter of the budget
    quarter = np.ones((CHANNELS // 4, 1), np.float32)  # 8 MB of state each
    with context as server, grpc.insecure_channel(target, options=[("grpc.max_send_message_length", -1)]) as channel:
        stream = Stream(service_pb2_grpc.GRPCInferenceServiceStub(channel))
        answers = [stream.send(chunk(number, quarter, start=True)) for number in range(1, 4)]
        assert not answers[0].error_message
        refused = [a.error_message for a in answers if a.error_message]
        assert refused and "MONOSERVE_STREAM_MAX_BUDGET_SHARE" in refused[0]
        # what the stream may not take stays for everyone else
        signal = np.ones((1, 4, 200_000), np.float32)  # about half the budget once decoded
        one_shot = httpx.post(f"{server.base}/smooth", content=npy(signal),
                              headers={"content-type": "application/x-npy"}, timeout=DEADLINE_S)
        assert one_shot.status_code == 200, one_shot.text
        stream.close()
    repo = fresh_repo(tmp_path / "ws", models=("smoother",))
    with running_server(repo, "--workers", "1", env={"MONOSERVE_INFLIGHT_BUDGET_BYTES": str(BUDGET),
                                                     "MONOSERVE_STREAM_MAX_BUDGET_SHARE": "0.01"}) as server:
        url = f"ws://127.0.0.1:{server.port}/smooth/stream"
        with connect(url, open_timeout=30) as ws:
            ws.send(npy(np.ones((1, 200_000), np.float32)))  # 0.8 MB of frame: over a 0.6 MB share
            with pytest.raises(Exception):
                ws.recv(timeout=30)
            assert ws.close_code in (4413, 4503)
            assert "MONOSERVE_STREAM_MAX_BUDGET_SHARE" in ws.close_reason
