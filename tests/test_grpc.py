"""The Open Inference Protocol over gRPC (service.protocols.grpc_oip).

`tritonclient.grpc` (NVIDIA's client, written by others; its own generated protobuf modules of
package "inference") against a real `monoserve serve` process with a gRPC port: health, metadata,
infer with raw and typed tensors equal to /smooth and /classify, the repository RPCs with and
without the control token, streams, and hostile messages answered with the right status codes
while the server keeps serving.
"""

from __future__ import annotations

import queue
import subprocess
import sys

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from service_fixtures import CLASSIFIER_FEATURES, fresh_repo
from test_service_e2e import free_port, running_server

SERVICE = "inference.GRPCInferenceService"
MAX_BODY = 8 * 1024 * 1024  # the servers' body limit, so an oversized message is cheap to send
READER, ADMIN = "reader-token", "admin-token"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return fresh_repo(tmp_path_factory.mktemp("grpc"))


def grpc_server(repo, **env: str):
    port = free_port()
    environment = {"MONOSERVE_GRPC_PORT": str(port), "MONOSERVE_MAX_BODY_BYTES": str(MAX_BODY), **env}
    return running_server(repo, env=environment), f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def server(repo):
    context, target = grpc_server(repo)
    with context as running:
        yield running.base, target
    assert running.process.returncode == 0, running.output
    assert "Traceback" not in running.output, running.output


@pytest.fixture(scope="module")
def client(server):
    with triton.InferenceServerClient(server[1]) as tc:
        yield tc


@pytest.fixture(scope="module")
def stub(server):
    """tritonclient's own generated stub: for messages its high-level client never sends (typed contents)."""
    with grpc.insecure_channel(server[1], options=[("grpc.max_send_message_length", -1)]) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel), channel


def raw_input(name: str, array: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), triton.np_to_triton_dtype(array.dtype))
    tensor.set_data_from_numpy(array)
    return tensor


def typed_request(model: str, name: str, array: np.ndarray, field: str = "fp32_contents", datatype: str = "FP32",
                  **parameters: str) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model, id="typed-1")
    tensor = request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
    getattr(tensor.contents, field).extend(array.reshape(-1).tolist())
    for key, value in parameters.items():
        request.parameters[key].string_param = value
    return request


def smooth(base: str, signal: np.ndarray, mode: str | None = None) -> np.ndarray:
    response = httpx.post(f"{base}/smooth", json={"signal": signal.tolist(), **({"mode": mode} if mode else {})})
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["smoothed"], dtype=np.float32)


def classify(base: str, rows: np.ndarray, model: str = "classifier") -> dict:
    response = httpx.post(f"{base}/classify", json={"instances": rows.tolist(), "model": model})
    assert response.status_code == 200, response.text
    return response.json()


def status_of(call) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value.status(), caught.value.message()


# -- packaging --------------------------------------------------------------------------------
@pytest.mark.parametrize("first", ["tritonclient", "monoserve"])
def test_messages_load_beside_tritonclients_in_one_process(first):
    """The clash KServe users report: two generated modules of package "inference" in one process.
    Ours is monoserve.oip.v2, so either import order works and both encode the same bytes."""
    imports = {"tritonclient": "import tritonclient.grpc.service_pb2 as theirs",
               "monoserve": "from service.protocols.grpc_proto import messages; ours = messages(); import service.protocols.grpc_oip"}
    other = "monoserve" if first == "tritonclient" else "tritonclient"
    script = "\n".join([imports[first], imports[other],
                        "from service.protocols.grpc_proto import messages; ours = messages()",
                        "import tritonclient.grpc.service_pb2 as theirs",
                        "m = theirs.ModelInferRequest(model_name='m', raw_input_contents=[b'x'])",
                        "m.inputs.add(name='i', datatype='FP32', shape=[1]).contents.fp32_contents.append(2.5)",
                        "assert ours.ModelInferRequest.FromString(m.SerializeToString()).inputs[0].contents.fp32_contents[0] == 2.5",
                        "print(ours.DESCRIPTOR.package, theirs.DESCRIPTOR.package)"])
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["monoserve.oip.v2", "inference"]


# -- health and metadata ----------------------------------------------------------------------
def test_health_readiness_and_grpc_health_checking(client, server):
    assert client.is_server_live() and client.is_server_ready()
    for name in ("smoother", "classifier", "multilabel"):
        assert client.is_model_ready(name) and client.is_model_ready(name, "1")
    assert not client.is_model_ready("smoother", "7") and not client.is_model_ready("no-such-model")
    with grpc.insecure_channel(server[1]) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as unknown:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_metadata_is_the_rest_metadata(client, server):
    metadata = client.get_server_metadata(as_json=True)
    assert metadata["name"] == "monoserve" and "model_repository" in metadata["extensions"]
    for name in ("smoother", "classifier", "multilabel"):
        rest = httpx.get(f"{server[0]}/v2/models/{name}").json()
        got = client.get_model_metadata(name, as_json=True)
        for tensor in got["inputs"] + got["outputs"]:  # protobuf's JSON writes int64 as strings
            tensor["shape"] = [int(dim) for dim in tensor["shape"]]
        assert got == rest
    assert status_of(lambda: client.get_model_metadata("no-such-model"))[0] == "StatusCode.NOT_FOUND"
    status, message = status_of(lambda: client.get_model_metadata("smoother", "3"))
    assert status == "StatusCode.NOT_FOUND" and "no version 3" in message


# -- infer: raw and typed, equal to /smooth and /classify -------------------------------------
@pytest.mark.parametrize("shape", [(40,), (3, 25), (2, 3, 300)])
def test_smoother_raw_infer_equals_smooth(client, server, shape):
    signal = (np.random.default_rng(len(shape)).standard_normal(shape) * 5).astype(np.float32)
    for mode in (None, "same", "causal", "valid"):
        result = client.infer("smoother", [raw_input("signal", signal)], parameters={"mode": mode} if mode else None)
        expected = smooth(server[0], signal, mode)
        got = result.as_numpy("smoothed")
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
        response = result.get_response()
        assert response.model_name == "smoother" and response.model_version == "1"
        assert response.parameters["mode"].string_param == (mode or "same") and len(response.raw_output_contents) == 1


@pytest.mark.parametrize("dtype,datatype", [(np.float64, "FP64"), (np.int64, "INT64")])
def test_a_raw_datatype_other_than_the_models_is_invalid_argument(client, dtype, datatype):
    """As Triton: no silent conversion (an INT64 beyond 2**24 would be rounded to float32)."""
    signal = (np.random.default_rng(5).standard_normal((2, 4, 100)) * 100).astype(dtype)
    status, message = status_of(lambda: client.infer("smoother", [raw_input("signal", signal)], model_version="1"))
    assert status == "StatusCode.INVALID_ARGUMENT", message
    assert f"datatype {datatype} is not the model's" in message and "is FP32" in message


def test_smoother_typed_infer_equals_smooth(stub, server):
    signal = (np.random.default_rng(9).standard_normal((3, 120)) * 2).astype(np.float32)
    response = stub[0].ModelInfer(typed_request("smoother", "signal", signal, mode="causal"), timeout=30)
    assert not response.raw_output_contents and response.id == "typed-1"
    output = response.outputs[0]
    assert output.name == "smoothed" and output.datatype == "FP32" and list(output.shape) == [3, 120]
    got = np.asarray(output.contents.fp32_contents, dtype=np.float32).reshape(output.shape)
    np.testing.assert_array_equal(got, smooth(server[0], signal, "causal"))
    # typed FP64 and INT32 values: a datatype the model does not declare is refused, naming both
    integers = np.arange(-30, 30, dtype=np.int32).reshape(2, 30)
    for field, datatype, values in (("fp64_contents", "FP64", signal.astype(np.float64)),
                                    ("int_contents", "INT32", integers)):
        with pytest.raises(grpc.RpcError) as refused:
            stub[0].ModelInfer(typed_request("smoother", "signal", values, field, datatype), timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"datatype {datatype} is not the model's" in refused.value.details()


@pytest.mark.parametrize("model,width", [("classifier", len(CLASSIFIER_FEATURES)), ("multilabel", 3)])
def test_classifier_raw_and_typed_infer_equal_classify(client, stub, server, model, width):
    rows = (np.random.default_rng(width).standard_normal((37, width)) * 3).astype(np.float32)
    expected = classify(server[0], rows, model)
    scores = np.asarray(expected["scores"], dtype=np.float32).reshape(37, -1)
    result = client.infer(model, [raw_input("features", rows)], request_id="req-7")
    np.testing.assert_array_equal(result.as_numpy("scores"), scores)
    response = result.get_response(as_json=True)
    assert response["id"] == "req-7"
    assert response["parameters"]["threshold"]["double_param"] == expected["threshold"]
    assert response["parameters"]["labels"]["string_param"] == httpx.Response(200, json=expected["labels"]).text
    typed = stub[0].ModelInfer(typed_request(model, "features", rows), timeout=30)
    np.testing.assert_array_equal(np.asarray(typed.outputs[0].contents.fp32_contents, np.float32).reshape(scores.shape),
                                  scores)


def test_binary_data_output_chooses_the_answers_form(stub, server):
    rows = np.ones((2, len(CLASSIFIER_FEATURES)), np.float32)
    request = typed_request("classifier", "features", rows)
    request.parameters["binary_data_output"].bool_param = True
    response = stub[0].ModelInfer(request, timeout=30)
    assert len(response.raw_output_contents) == 1 and not response.outputs[0].contents.fp32_contents
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], "<f4"),
                                  np.asarray(classify(server[0], rows)["scores"], np.float32))


def test_batched_small_requests_from_threads(client, server):
    """Concurrent 1-row requests go through the dynamic batcher like /classify's, each its own answer."""
    from concurrent.futures import ThreadPoolExecutor

    rows = np.random.default_rng(3).standard_normal((24, len(CLASSIFIER_FEATURES))).astype(np.float32)
    expected = np.asarray(classify(server[0], rows)["scores"], np.float32)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: client.infer("classifier", [raw_input("features", rows[i:i + 1])]), range(24)))
    np.testing.assert_array_equal(np.concatenate([a.as_numpy("scores")[:, 0] for a in answers]), expected)
    metrics = httpx.get(f"{server[0]}/metrics").text
    assert f'route="/{SERVICE}/ModelInfer"' in metrics


# -- streams ----------------------------------------------------------------------------------
def run_stream(client: triton.InferenceServerClient, requests: list[dict], headers: dict | None = None) -> list:
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)), headers=headers)
    try:
        for request in requests:
            client.async_stream_infer(**request)
    finally:
        client.stop_stream()
    return [answers.get(timeout=30) for _ in requests]


def test_stream_of_plain_infers_answers_each_in_order(client, server):
    rows = np.random.default_rng(4).standard_normal((6, len(CLASSIFIER_FEATURES))).astype(np.float32)
    signal = np.random.default_rng(6).standard_normal((1, 200)).astype(np.float32)
    requests = [{"model_name": "classifier", "inputs": [raw_input("features", rows[i:i + 2])], "request_id": str(i)}
                for i in range(0, 6, 2)]
    requests.insert(1, {"model_name": "no-such-model", "inputs": [raw_input("features", rows)], "request_id": "bad"})
    requests.append({"model_name": "smoother", "inputs": [raw_input("signal", signal)], "request_id": "s"})
    answers = run_stream(client, requests)
    expected = np.asarray(classify(server[0], rows)["scores"], np.float32)
    result, error = answers[1]
    assert result is None and "unknown model 'no-such-model'" in error.message()
    good = [answers[0], answers[2], answers[3]]
    for index, (result, error) in enumerate(good):
        assert error is None and result.get_response().id == str(2 * index)
        np.testing.assert_array_equal(result.as_numpy("scores")[:, 0], expected[2 * index:2 * index + 2])
    result, error = answers[4]
    assert error is None
    np.testing.assert_array_equal(result.as_numpy("smoothed"), smooth(server[0], signal))


# -- hostile messages -------------------------------------------------------------------------
def test_hostile_messages_get_the_right_status_and_the_server_keeps_serving(client, stub, server):
    rows = np.ones((2, len(CLASSIFIER_FEATURES)), np.float32)
    code = lambda call: status_of(call)  # noqa: E731
    # oversized: gRPC's own receive limit is the body limit
    huge = np.zeros((1, MAX_BODY // 4 + 1024), np.float32)
    status, message = code(lambda: client.infer("smoother", [raw_input("signal", huge)]))
    assert status == "StatusCode.RESOURCE_EXHAUSTED", message
    # wrong datatype: one the models do not take, values in the wrong typed field
    status, message = code(lambda: client.infer("classifier", [raw_input("features", np.array([[b"a"] * 4], object))]))
    assert status == "StatusCode.INVALID_ARGUMENT" and "BYTES" in message
    with pytest.raises(grpc.RpcError) as wrong_field:
        stub[0].ModelInfer(typed_request("classifier", "features", rows.astype(np.int64), "int64_contents", "FP32"),
                          timeout=30)
    assert wrong_field.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "fp32_contents" in wrong_field.value.details()
    # shape that does not match the data: raw and typed
    tensor = raw_input("features", rows)
    tensor.set_shape([3, len(CLASSIFIER_FEATURES)])
    status, message = code(lambda: client.infer("classifier", [tensor]))
    assert status == "StatusCode.INVALID_ARGUMENT" and "needs 48 bytes, raw_input_contents[0] has 32" in message, message
    request = typed_request("classifier", "features", rows)
    request.inputs[0].shape[0] = 5
    with pytest.raises(grpc.RpcError) as typed_shape:
        stub[0].ModelInfer(request, timeout=30)
    assert typed_shape.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "needs 20" in typed_shape.value.details()
    # a shape far beyond the element limit costs nothing: refused before any allocation
    request.inputs[0].shape[:] = [2**40, 2**40]
    with pytest.raises(grpc.RpcError) as giant:
        stub[0].ModelInfer(request, timeout=30)
    assert giant.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # the model's own checks, as over REST
    status, message = code(lambda: client.infer("classifier", [raw_input("features", np.ones((2, 3), np.float32))]))
    assert status == "StatusCode.INVALID_ARGUMENT" and "needs 4 features" in message
    status, message = code(lambda: client.infer("smoother", [raw_input("signal", np.full((1, 20), np.nan, np.float32))]))
    assert status == "StatusCode.INVALID_ARGUMENT" and "non-finite" in message
    # unknown model or version
    assert code(lambda: client.infer("no-such-model", [raw_input("features", rows)]))[0] == "StatusCode.NOT_FOUND"
    assert code(lambda: client.infer("classifier", [raw_input("features", rows)], model_version="9"))[0] == "StatusCode.NOT_FOUND"
    # bytes that are not a message at all, on the raw method path
    garbage = stub[1].unary_unary(f"/{SERVICE}/ModelInfer")
    with pytest.raises(grpc.RpcError) as not_a_message:
        garbage(b"\xff\xff\xff\xff\x0f", timeout=30)
    assert not_a_message.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # ... and the server still serves
    assert client.is_server_live() and client.is_server_ready()
    np.testing.assert_array_equal(client.infer("classifier", [raw_input("features", rows)]).as_numpy("scores")[:, 0],
                                  np.asarray(classify(server[0], rows)["scores"], np.float32))


# -- tokens and the model repository ----------------------------------------------------------
@pytest.fixture(scope="module")
def token_server(repo, tmp_path_factory):
    own = fresh_repo(tmp_path_factory.mktemp("grpc-token"))
    context, target = grpc_server(own, MONOSERVE_API_TOKEN=READER, MONOSERVE_ADMIN_TOKEN=ADMIN,
                                  MONOSERVE_POLL_INTERVAL_S="0")
    with context as running:
        with triton.InferenceServerClient(target) as tc:
            yield tc, running.base
    assert running.process.returncode == 0, running.output


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_api_token_on_metadata_and_infer(token_server):
    client, _ = token_server
    rows = np.ones((1, len(CLASSIFIER_FEATURES)), np.float32)
    assert client.is_server_live() and client.is_server_ready()  # health stays open, as /v2/health/*
    for call in (lambda h: client.infer("classifier", [raw_input("features", rows)], headers=h),
                 lambda h: client.get_model_metadata("classifier", headers=h),
                 lambda h: client.is_model_ready("classifier", headers=h)):
        assert status_of(lambda: call(None))[0] == "StatusCode.UNAUTHENTICATED"
        status, message = status_of(lambda: call(bearer("wrong")))
        assert status == "StatusCode.UNAUTHENTICATED" and "wrong API token" in message
        assert call(bearer(READER))
    # a stream's token is checked on the call's metadata before it takes a slot: the call is refused
    errors: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: errors.put(error))
    try:
        try:
            client.async_stream_infer("classifier", [raw_input("features", rows)])
        except InferenceServerException:
            pass  # the refused call may already be closed when the request is sent
    finally:
        client.stop_stream()
    error = errors.get(timeout=30)
    assert error is not None and error.status() == "StatusCode.UNAUTHENTICATED" and "missing API token" in error.message()
    answers = run_stream(client, [{"model_name": "classifier", "inputs": [raw_input("features", rows)]}],
                         headers=bearer(READER))
    assert answers[0][1] is None


def test_repository_load_and_unload_with_and_without_the_token(token_server):
    client, base = token_server
    rows = np.ones((1, len(CLASSIFIER_FEATURES)), np.float32)
    infer = lambda: client.infer("classifier", [raw_input("features", rows)], headers=bearer(READER))  # noqa: E731
    for headers in (None, bearer(READER), bearer("wrong")):
        for call in (lambda: client.unload_model("classifier", headers=headers),
                     lambda: client.load_model("classifier", headers=headers),
                     lambda: client.get_model_repository_index(headers=headers)):
            assert status_of(call)[0] == "StatusCode.UNAUTHENTICATED"
    assert infer().as_numpy("scores").shape == (1, 1)  # refused calls changed nothing

    index = client.get_model_repository_index(headers=bearer(ADMIN), as_json=True)["models"]
    assert {(row["name"], row["state"]) for row in index} >= {("classifier", "READY"), ("smoother", "READY")}
    client.unload_model("classifier", headers=bearer(ADMIN))
    assert status_of(infer)[0] == "StatusCode.NOT_FOUND"
    assert httpx.post(f"{base}/classify", json={"instances": rows.tolist(), "model": "classifier"},
                      headers=bearer(READER)).status_code == 404  # one registry behind both protocols
    assert not client.is_model_ready("classifier", headers=bearer(READER))
    client.load_model("classifier", headers=bearer(ADMIN))
    assert infer().as_numpy("scores").shape == (1, 1)
    status, message = status_of(lambda: client.load_model("no-such-model", headers=bearer(ADMIN)))
    assert status == "StatusCode.NOT_FOUND", message
    status, message = status_of(lambda: client.load_model("classifier", headers=bearer(ADMIN), config='{"x": 1}'))
    assert status == "StatusCode.INVALID_ARGUMENT" and "takes no parameters" in message


def test_repository_rpcs_are_closed_without_an_admin_token(client, server):
    """The default service (no admin token): every control RPC is PERMISSION_DENIED, serving goes on."""
    for call in (lambda: client.unload_model("classifier"), lambda: client.load_model("classifier"),
                 lambda: client.get_model_repository_index()):
        status, message = status_of(call)
        assert status == "StatusCode.PERMISSION_DENIED" and "MONOSERVE_ADMIN_TOKEN" in message, message
    assert client.is_model_ready("classifier")


# -- units ------------------------------------------------------------------------------------
def test_status_mapping_and_retry_hint():
    from service.protocols.grpc_oip import grpc_status

    assert grpc_status(503, {"Retry-After": "1"}) == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                                      (("grpc-retry-pushback-ms", "1000"),))
    assert grpc_status(503, None) == (grpc.StatusCode.UNAVAILABLE, ())
    assert grpc_status(413, None)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert grpc_status(401, None)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_status(500, None)[0] == grpc.StatusCode.INTERNAL


def test_raw_contents_are_counted_from_the_wire():
    from service.protocols.grpc_oip import MAX_TOP_LEVEL_FIELDS, raw_contents_bytes

    rng = np.random.default_rng(0)
    for count in range(5):
        blobs = [rng.bytes(int(rng.integers(0, 3000))) for _ in range(count)]
        message = service_pb2.ModelInferRequest(model_name="m" * int(rng.integers(0, 300)), id="x",
                                                raw_input_contents=blobs)
        message.parameters["mode"].string_param = "same"
        message.inputs.add(name="i", datatype="FP32", shape=[1, 2, 3])
        assert raw_contents_bytes(message.SerializeToString()) == sum(map(len, blobs))
    assert raw_contents_bytes(b"\xff\xff") == 0  # not a message: counted as all "other" bytes
    many = service_pb2.ModelInferRequest(raw_input_contents=[b"ab"] * (MAX_TOP_LEVEL_FIELDS + 1))
    assert raw_contents_bytes(many.SerializeToString()) == 0


# -- smoother sequences over ModelStreamInfer -------------------------------------------------
def chunked(signal: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    edges = [0, *cuts, signal.shape[-1]]
    return [signal[..., start:stop] for start, stop in zip(edges, edges[1:])]


@pytest.mark.parametrize("mode", ["same", "causal", "valid"])
def test_sequence_of_smoother_chunks_equals_one_shot(client, server, mode):
    """Three sequences interleaved in one stream ([C, n], [n] and [1, C, n] chunks, an empty chunk among them):
    each sequence's answers, concatenated, are /smooth's answer of its whole signal, bit for bit."""
    rng = np.random.default_rng(11)
    first = (rng.standard_normal((3, 500)) * 4).astype(np.float32)
    second = rng.standard_normal(230).astype(np.float32)
    third = rng.standard_normal((1, 2, 300)).astype(np.float32)  # the metadata's declared shape, as tritonclient sends it
    plans = {7: chunked(first, [1, 1, 40, 41, 300]), "b": chunked(second, [5, 100, 229]),
             "triton": chunked(third, [7, 8, 150])}
    requests, order = [], []
    for step in range(max(len(chunks) for chunks in plans.values())):
        for sequence_id, chunks in plans.items():
            if step < len(chunks):
                requests.append({"model_name": "smoother", "inputs": [raw_input("signal", chunks[step])],
                                 "sequence_id": sequence_id, "sequence_start": step == 0,
                                 "sequence_end": step == len(chunks) - 1, "parameters": {"mode": mode}})
                order.append(sequence_id)
    answers = run_stream(client, requests)
    got: dict = {sequence_id: [] for sequence_id in plans}
    for sequence_id, (result, error) in zip(order, answers):
        assert error is None, error
        response = result.get_response()
        assert response.parameters["mode"].string_param == mode
        got[sequence_id].append(result.as_numpy("smoothed"))
    np.testing.assert_array_equal(np.concatenate(got[7], axis=1), smooth(server[0], first, mode))
    np.testing.assert_array_equal(np.concatenate(got["b"]), smooth(server[0], second, mode))
    assert all(answer.ndim == 3 for answer in got["triton"])  # answered in the chunks' nesting
    np.testing.assert_array_equal(np.concatenate(got["triton"], axis=-1), smooth(server[0], third, mode))
    # the answers come as the samples they complete: causal answers every sample at once
    if mode == "causal":
        assert [a.shape[-1] for a in got["b"]] == [c.shape[-1] for c in plans["b"]]


def test_sequence_errors_are_answered_in_the_stream(client):
    signal = np.ones((2, 30), np.float32)
    answers = run_stream(client, [
        {"model_name": "smoother", "inputs": [raw_input("signal", signal)], "sequence_id": 5},  # never started
        {"model_name": "classifier", "inputs": [raw_input("features", np.ones((1, 4), np.float32))],
         "sequence_id": 6, "sequence_start": True},  # not a smoother
        {"model_name": "smoother", "inputs": [raw_input("signal", signal)], "sequence_id": 8, "sequence_start": True},
        {"model_name": "smoother", "inputs": [raw_input("signal", np.ones((3, 30), np.float32))], "sequence_id": 8},
        {"model_name": "smoother", "inputs": [raw_input("signal", signal)], "sequence_id": 8, "sequence_end": True},
    ])
    messages = [error.message() if error is not None else None for _, error in answers]
    assert "is not open in this stream" in messages[0]
    assert "sequences (sequence_id) are for smoothers" in messages[1]
    assert messages[2] is None and messages[4] is None  # the refused chunk left sequence 8 open and unchanged
    assert "has 2 channel(s)" in messages[3]
    assert answers[2][0].as_numpy("smoothed").shape[0] == 2


def test_sequence_parameters_on_a_unary_infer_are_refused(client):
    status, message = status_of(lambda: client.infer("smoother", [raw_input("signal", np.ones(20, np.float32))],
                                                     sequence_id=3, sequence_start=True))
    assert status == "StatusCode.INVALID_ARGUMENT" and "belong to ModelStreamInfer" in message


def test_sigterm_drains_a_stream_in_flight(tmp_path_factory):
    """SIGTERM: new calls are refused, a stream already open goes on being answered until its client
    closes it (within MONOSERVE_GRACEFUL_SHUTDOWN_S), then the process exits cleanly."""
    import signal
    import time

    own = fresh_repo(tmp_path_factory.mktemp("grpc-drain"))
    context, target = grpc_server(own, MONOSERVE_GRACEFUL_SHUTDOWN_S="20")
    with context as running:
        client = triton.InferenceServerClient(target)
        chunk = np.random.default_rng(2).standard_normal((2, 100)).astype(np.float32)
        answers: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        send = lambda start, end: client.async_stream_infer(  # noqa: E731
            "smoother", [raw_input("signal", chunk)], sequence_id=1, sequence_start=start, sequence_end=end,
            parameters={"mode": "causal"})
        send(True, False)
        assert answers.get(timeout=30)[1] is None
        running.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        with triton.InferenceServerClient(target) as fresh:
            while time.monotonic() < deadline:  # until the gRPC server stops taking new calls
                try:
                    fresh.is_server_live(client_timeout=2)
                except InferenceServerException as refused:
                    # refused at the door, or cut off as the server stopped taking calls
                    assert refused.status() in ("StatusCode.UNAVAILABLE", "StatusCode.CANCELLED",
                                                "StatusCode.DEADLINE_EXCEEDED")
                    break
                time.sleep(0.1)
            else:
                pytest.fail("new gRPC calls were still served 15 s after SIGTERM")
        send(False, True)  # the open stream is still answered
        result, error = answers.get(timeout=30)
        assert error is None and result.as_numpy("smoothed").shape == (2, 100)
        client.stop_stream()
        client.close()
        running.process.wait(timeout=15)  # well within the 20 s grace: it ended when the stream did
    # uvicorn re-raises the signal it caught once shut down: the exit says SIGTERM, after a clean drain
    assert running.process.returncode in (0, -signal.SIGTERM), running.output
    assert "Application shutdown complete" in running.output
    assert "gRPC server on port" in running.output and "Traceback" not in running.output


def test_a_taken_grpc_port_stops_the_start(repo):
    """One process alone owns its gRPC port (no SO_REUSEPORT with one worker): a second server on it
    does not start half-served, and says why."""
    import socket

    from test_service_e2e import start_server

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start_server(repo, free_port(), env={"MONOSERVE_GRPC_PORT": str(port)})
        try:
            output, _ = process.communicate(timeout=120)
        finally:
            process.kill()
    assert process.returncode != 0
    assert f"cannot serve gRPC on 127.0.0.1:{port}" in output and "MONOSERVE_GRPC_PORT=0" in output


def test_in_flight_budget_answers_resource_exhausted(tmp_path_factory):
    """A message that could never fit the in-flight budget: RESOURCE_EXHAUSTED, no retry hint. Ones
    that fit alone but not all at once: the late ones RESOURCE_EXHAUSTED with grpc-retry-pushback-ms,
    the others answered."""
    from concurrent.futures import ThreadPoolExecutor

    own = fresh_repo(tmp_path_factory.mktemp("grpc-budget"))
    # 8 x 125,000 raw FP32 (4 MB) reserves about 28 MB (message, its parse, its values): one fits
    context, target = grpc_server(own, MONOSERVE_INFLIGHT_BUDGET_BYTES=str(40 * 2**20))
    with context, grpc.insecure_channel(target, options=[("grpc.max_send_message_length", -1)]) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        def smooth_request(rows: int) -> service_pb2.ModelInferRequest:
            signal = np.random.default_rng(rows).standard_normal((rows, 125_000)).astype(np.float32)
            request = service_pb2.ModelInferRequest(model_name="smoother", raw_input_contents=[signal.tobytes()])
            request.inputs.add(name="signal", datatype="FP32", shape=list(signal.shape))
            return request

        with pytest.raises(grpc.RpcError) as never:
            stub.ModelInfer(smooth_request(16), timeout=60)
        assert never.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "in-flight memory budget" in never.value.details()
        assert "grpc-retry-pushback-ms" not in dict(never.value.trailing_metadata() or ())

        request = smooth_request(8)
        assert stub.ModelInfer(request, timeout=60).raw_output_contents  # alone, it fits

        def attempt(_: int) -> tuple[str, dict]:
            try:
                stub.ModelInfer(request, timeout=60)
                return "ok", {}
            except grpc.RpcError as error:
                return error.code().name, dict(error.trailing_metadata() or ())

        for _ in range(5):  # eight at once: some must wait their turn
            with ThreadPoolExecutor(8) as pool:
                outcomes = list(pool.map(attempt, range(8)))
            busy = [metadata for code, metadata in outcomes if code == "RESOURCE_EXHAUSTED"]
            if busy:
                break
        assert busy, outcomes
        assert {code for code, _ in outcomes} <= {"ok", "RESOURCE_EXHAUSTED"} and ("ok", {}) in outcomes
        assert all(metadata.get("grpc-retry-pushback-ms") == "1000" for metadata in busy)


# -- any message, in process: a request or a client's error, never a 5xx ----------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

TYPED = ["bool_contents", "int_contents", "int64_contents", "uint_contents", "uint64_contents", "fp32_contents",
         "fp64_contents", "bytes_contents"]
values_for = {"bool_contents": st.booleans(), "int_contents": st.integers(-2**31, 2**31 - 1),
              "int64_contents": st.integers(-2**63, 2**63 - 1), "uint_contents": st.integers(0, 2**32 - 1),
              "uint64_contents": st.integers(0, 2**64 - 1), "fp32_contents": st.floats(width=32),
              "fp64_contents": st.floats(), "bytes_contents": st.binary(max_size=4)}


@st.composite
def infer_messages(draw) -> bytes:
    message = service_pb2.ModelInferRequest(
        model_name=draw(st.sampled_from(["smoother", "classifier", "multilabel", "", "nope"])),
        model_version=draw(st.sampled_from(["", "1", "2", "x", "99999999999999999999999"])))
    for key in draw(st.lists(st.sampled_from(["mode", "binary_data_output", "sequence_id", "other"]), max_size=2)):
        parameter = message.parameters[key]
        choice = draw(st.sampled_from(["bool_param", "int64_param", "string_param", "double_param"]))
        setattr(parameter, choice, draw({"bool_param": st.booleans(), "int64_param": st.integers(-5, 5),
                                         "string_param": st.sampled_from(["same", "causal", "valid", "x"]),
                                         "double_param": st.floats(allow_nan=False)}[choice]))
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 2))):
        tensor = message.inputs.add(name=draw(st.sampled_from(["signal", "features", "x", ""])),
                                    datatype=draw(st.sampled_from(["FP32", "FP64", "INT8", "UINT64", "FP16", "BYTES",
                                                                   "BOOL", "BF16", "fp32", ""])),
                                    shape=draw(st.lists(st.integers(-2, 2**40), max_size=4)))
        if raw:
            message.raw_input_contents.append(draw(st.binary(max_size=64)))
        else:
            for field in draw(st.lists(st.sampled_from(TYPED), max_size=2, unique=True)):
                getattr(tensor.contents, field).extend(draw(st.lists(values_for[field], max_size=12)))
    if draw(st.booleans()):
        message.outputs.add(name=draw(st.sampled_from(["smoothed", "scores", "full"])))
    body = message.SerializeToString()
    cut = draw(st.integers(0, len(body)))
    return body[:cut] + draw(st.binary(max_size=3)) if draw(st.integers(0, 9)) == 0 else body


@pytest.fixture(scope="module")
def in_process(repo):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    settings = Settings(repo=repo, device="cpu", cpu_threads=1, max_body_bytes=1024 * 1024)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(body=infer_messages(), stream=st.booleans())
def test_any_message_is_answered_or_refused_as_the_clients_mistake(in_process, body, stream):
    from service.protocols.grpc_oip import GrpcInferAdapter, grpc_status, method_route, run_pipeline
    from service.protocols.grpc_stream import StreamAdapter

    service = in_process.app.state.service
    adapter = StreamAdapter(service) if stream else GrpcInferAdapter(service, method_route("ModelInfer"))
    reply = in_process.portal.call(run_pipeline, service, adapter, body, {})
    assert reply.status == 200 or 400 <= reply.status < 500 or (reply.status == 503 and b"loading" not in reply.body)
    assert grpc_status(reply.status, reply.headers)[0] != grpc.StatusCode.INTERNAL
    assert service.budget.used == 0  # everything reserved was given back


def test_serve_grpc_port_flag(repo, monkeypatch, capsys):
    """`--grpc-port` becomes MONOSERVE_GRPC_PORT of the serving process (0: no gRPC); out of range: a usage error."""
    import service.cli
    from monoserve.cli import main

    launched = []
    monkeypatch.setattr(service.cli, "launch", lambda argv, env: launched.append(env) or 0)
    monkeypatch.delenv("MONOSERVE_GRPC_PORT", raising=False)
    assert main(["serve", "--repo", str(repo), "--device", "cpu", "--grpc-port", "0"]) == 0
    assert launched[-1]["MONOSERVE_GRPC_PORT"] == "0"
    assert main(["serve", "--repo", str(repo), "--device", "cpu"]) == 0
    assert "MONOSERVE_GRPC_PORT" not in launched[-1]  # the setting's default (8001) applies
    assert main(["serve", "--repo", str(repo), "--device", "cpu", "--grpc-port", "70000"]) == 2
    assert "--grpc-port must be in 0..65535" in capsys.readouterr().err
    from service.settings import Settings

    assert Settings().grpc_port == 8001


def test_streams_count_against_the_workers_stream_cap(tmp_path_factory):
    """ModelStreamInfer holds one of the worker's open streams (MONOSERVE_STREAM_MAX_OPEN), as a
    WebSocket stream does: beyond the cap a new stream is RESOURCE_EXHAUSTED with a retry hint, and
    once the open one ends a new one is answered."""
    own = fresh_repo(tmp_path_factory.mktemp("grpc-stream-cap"))
    context, target = grpc_server(own, MONOSERVE_STREAM_MAX_OPEN="1")
    rows = np.ones((1, len(CLASSIFIER_FEATURES)), np.float32)
    request = service_pb2.ModelInferRequest(model_name="classifier", raw_input_contents=[rows.tobytes()])
    request.inputs.add(name="features", datatype="FP32", shape=list(rows.shape))
    with context, grpc.insecure_channel(target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        held: queue.Queue = queue.Queue()
        held.put(request)
        first = stub.ModelStreamInfer(iter(held.get, None))  # open until None is put
        assert not next(first).error_message  # the first stream is open and answering
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.ModelStreamInfer(iter([request]), timeout=30))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value.details()
        assert "MONOSERVE_STREAM_MAX_OPEN" in refused.value.details()
        assert "grpc-retry-pushback-ms" in dict(refused.value.trailing_metadata() or ())
        held.put(None)
        assert list(first) == []  # the first stream ends normally
        answers = list(stub.ModelStreamInfer(iter([request]), timeout=30))
        assert len(answers) == 1 and not answers[0].error_message
