"""The Open Inference Protocol v2 routes.

`tritonclient.http` (NVIDIA's client, written by others) against a real `monoserve serve` process,
in JSON and binary tensor modes: health, metadata and infer agree with /smooth and /classify on the
same inputs. Error cases and the protocol's edges go through TestClient (the same app, in process)
and through service.protocols.oip's decoder directly.
"""

from __future__ import annotations

import shutil
import warnings

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from service.protocols import native, oip
from service.app import create_app
from service.base import codec
from service.edge import fastpath
from service.pipeline import endpoint
from service.base.errors import BadRequestError, PayloadTooLargeError, ServiceError
from service.settings import Settings
from service_fixtures import CLASSIFIER_FEATURES, MULTILABEL_FEATURES, MULTILABEL_LABELS, fresh_repo
from test_reload import publish_copy
from test_service_e2e import running_server


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return fresh_repo(tmp_path_factory.mktemp("oip"))


@pytest.fixture(scope="module")
def server(repo):
    with running_server(repo) as running:
        yield running.base
    assert running.process.returncode == 0, running.output


@pytest.fixture(scope="module")
def client(server):
    with triton.InferenceServerClient(server.removeprefix("http://"), network_timeout=60.0) as tc:
        yield tc


@pytest.fixture(scope="module")
def app_client(repo):
    settings = Settings(repo=repo, device="cpu", default_classifier="classifier", cpu_threads=1,
                        max_body_bytes=1024 * 1024, max_signal_length=50_000)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def infer_input(name: str, array: np.ndarray, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), triton.np_to_triton_dtype(array.dtype))
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


# -- health and metadata, with tritonclient ---------------------------------------------------
def test_health_and_readiness(client, server):
    assert client.is_server_live() and client.is_server_ready()
    for name in ("smoother", "classifier", "multilabel"):
        assert client.is_model_ready(name) and client.is_model_ready(name, "1")
    assert not client.is_model_ready("smoother", "7")
    assert not client.is_model_ready("no-such-model")
    metadata = client.get_server_metadata()
    assert metadata["name"] == "monoserve" and "binary_tensor_data" in metadata["extensions"]
    # The OIP readiness is /readyz's: both 200 on a ready server.
    assert httpx.get(f"{server}/readyz").status_code == 200


def test_model_metadata_names_datatypes_and_shapes(client):
    smoother = client.get_model_metadata("smoother")
    assert smoother["name"] == "smoother" and smoother["versions"] == ["1"] and smoother["platform"] == "onnxruntime_onnx"
    assert smoother["inputs"] == [{"name": "signal", "datatype": "FP32", "shape": [-1, -1, -1]}]
    assert smoother["outputs"] == [{"name": "smoothed", "datatype": "FP32", "shape": [-1, -1, -1]}]
    classifier = client.get_model_metadata("classifier", "1")
    assert classifier["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, len(CLASSIFIER_FEATURES)]}]
    assert classifier["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": [-1, 1]}]
    multilabel = client.get_model_metadata("multilabel")
    assert multilabel["inputs"][0]["shape"] == [-1, len(MULTILABEL_FEATURES)]
    assert multilabel["outputs"][0]["shape"] == [-1, len(MULTILABEL_LABELS)]
    with pytest.raises(InferenceServerException) as unknown:
        client.get_model_metadata("no-such-model")
    assert unknown.value.status() == "404" and "unknown model 'no-such-model'" in unknown.value.message()
    with pytest.raises(InferenceServerException) as version:
        client.get_model_metadata("smoother", "3")
    assert version.value.status() == "404" and "no version 3" in version.value.message()


# -- infer agrees with /smooth and /classify, with tritonclient -------------------------------
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("shape", [(40,), (3, 25), (2, 3, 300)])
def test_smoother_infer_agrees_with_smooth(client, server, binary, shape):
    signal = (np.random.default_rng(len(shape)).standard_normal(shape) * 5).astype(np.float32)
    for mode in (None, "same", "causal", "valid"):
        parameters = {"mode": mode} if mode else None
        result = client.infer("smoother", [infer_input("signal", signal, binary)],
                              outputs=[triton.InferRequestedOutput("smoothed", binary_data=binary)], parameters=parameters)
        smooth = httpx.post(f"{server}/smooth", json={"signal": signal.tolist(), **({"mode": mode} if mode else {})})
        assert smooth.status_code == 200, smooth.text
        expected = np.asarray(smooth.json()["smoothed"], dtype=np.float32)
        got = result.as_numpy("smoothed")
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
        response = result.get_response()
        assert response["model_name"] == "smoother" and response["model_version"] == "1"
        assert response["parameters"]["mode"] == smooth.json()["mode"]  # the default mode when none is named
        assert ("data" not in response["outputs"][0]) == binary


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("dtype,datatype", [(np.float64, "FP64"), (np.int64, "INT64"), (np.int32, "INT32")])
def test_a_datatype_other_than_the_models_is_400_naming_both(client, binary, dtype, datatype):
    """As OIP (and Triton) say: no silent conversion (an INT64 beyond 2**24 would be rounded)."""
    signal = (np.random.default_rng(5).standard_normal((2, 4, 100)) * 100).astype(dtype)
    with pytest.raises(InferenceServerException) as raised:
        client.infer("smoother", [infer_input("signal", signal, binary)], model_version="1")
    assert raised.value.status() == "400"
    assert f"datatype {datatype} is not the model's" in raised.value.message() and "is FP32" in raised.value.message()


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_smoother_infer_no_outputs_named(client, server, binary):
    """No outputs named: tritonclient asks for binary_data_output."""
    signal = np.random.default_rng(5).standard_normal((2, 4, 100)).astype(np.float32)
    result = client.infer("smoother", [infer_input("signal", signal, binary)], model_version="1")
    smooth = httpx.post(f"{server}/smooth", json={"signal": signal.tolist()})
    np.testing.assert_array_equal(result.as_numpy("smoothed"), np.asarray(smooth.json()["smoothed"], dtype=np.float32))
    assert "binary_data_size" in result.get_response()["outputs"][0]["parameters"]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("model,features", [("classifier", len(CLASSIFIER_FEATURES)), ("multilabel", len(MULTILABEL_FEATURES))])
def test_classifier_infer_agrees_with_classify(client, server, binary, model, features):
    rows = (np.random.default_rng(features).standard_normal((37, features)) * 3).astype(np.float32)
    result = client.infer(model, [infer_input("features", rows, binary)], request_id="req-7",
                          outputs=[triton.InferRequestedOutput("scores", binary_data=binary)])
    classify = httpx.post(f"{server}/classify", json={"instances": rows.tolist(), "model": model})
    assert classify.status_code == 200, classify.text
    expected = np.asarray(classify.json()["scores"], dtype=np.float32)
    scores = result.as_numpy("scores")
    assert scores.shape == (37, len(classify.json()["labels"]))
    np.testing.assert_array_equal(scores.reshape(expected.shape), expected)
    response = result.get_response()
    assert response["id"] == "req-7"
    # labels and threshold (and whatever else /classify answers beside the scores, e.g. decisions) agree
    assert {"labels", "threshold"} <= set(response["parameters"])
    assert response["parameters"] == {key: classify.json()[key] for key in response["parameters"]}


def test_errors_come_back_through_tritonclient(client):
    signal = np.ones((1, 1, 20), dtype=np.float32)
    cases = [
        (lambda: client.infer("smoother", [infer_input("wrong", signal, True)]), "400", "one input named 'signal'"),
        (lambda: client.infer("smoother", [infer_input("signal", signal, False)], parameters={"mode": "sideways"}),
         "400", "parameters.mode must be one of"),
        (lambda: client.infer("classifier", [infer_input("features", np.ones((2, 3), np.float32), True)]),
         "400", "needs 4 features"),
        (lambda: client.infer("smoother", [infer_input("signal", np.full((1, 1, 20), np.nan, np.float32), True)]),
         "400", "non-finite"),
        (lambda: client.infer("classifier", [infer_input("signal", signal, True)], parameters={"mode": "same"}),
         "400", "unknown field(s) ['mode']"),
        (lambda: client.infer("no-such-model", [infer_input("signal", signal, True)]), "404", "unknown model"),
        (lambda: client.infer("smoother", [infer_input("signal", signal, True)], model_version="2"), "404", "no version 2"),
        (lambda: client.infer("smoother", [infer_input("signal", signal, True)],
                              outputs=[triton.InferRequestedOutput("full")]), "400", "unknown output(s) ['full']"),
    ]
    for call, status, message in cases:
        with pytest.raises(InferenceServerException) as caught:
            call()
        assert caught.value.status() == status and message in caught.value.message(), caught.value


# -- the protocol's edges, in process ---------------------------------------------------------
def post_infer(app_client: TestClient, model: str, header: dict, blobs: bytes = b"", header_length: int | None = None):
    head = orjson.dumps(header)
    headers = {oip.HEADER_LENGTH: str(len(head) if header_length is None else header_length)} if blobs or header_length is not None else {}
    return app_client.post(f"/v2/models/{model}/infer", content=head + blobs, headers=headers)


def binary_header(name: str, shape: list[int], size: int, datatype: str = "FP32") -> dict:
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": size}}]}


def test_server_metadata_lists_the_extensions_served(app_client):
    extensions = app_client.get("/v2").json()["extensions"]
    paths = app_client.get("/openapi.json").json()["paths"]
    assert "binary_tensor_data" in extensions
    assert ("model_repository" in extensions) == ("/v2/repository/index" in paths)


def test_binary_request_and_response_by_hand(app_client):
    signal = np.arange(30, dtype=np.float32).reshape(2, 15)
    header = {**binary_header("signal", [2, 15], signal.nbytes), "outputs": [{"name": "smoothed", "parameters": {"binary_data": True}}],
              "parameters": {"mode": "causal"}}
    response = post_infer(app_client, "smoother", header, signal.tobytes())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == oip.BINARY_MEDIA_TYPE
    length = int(response.headers[oip.HEADER_LENGTH])
    meta = orjson.loads(response.content[:length])
    out = meta["outputs"][0]
    got = np.frombuffer(response.content[length:], dtype="<f4").reshape(out["shape"])
    assert out["parameters"]["binary_data_size"] == got.nbytes == len(response.content) - length
    expected = app_client.post("/smooth", json={"signal": signal.tolist(), "mode": "causal"}).json()["smoothed"]
    np.testing.assert_array_equal(got, np.asarray(expected, dtype=np.float32))


@pytest.mark.parametrize("header,blobs,header_length,status,message", [
    (binary_header("signal", [2, 15], 100), b"\0" * 100, None, 400, "needs 120 bytes, binary_data_size says 100"),
    (binary_header("signal", [2, 15], 120), b"\0" * 100, None, 400, "only 100 follow"),
    (binary_header("signal", [1, 5], 20), b"\0" * 24, None, 400, "4 byte(s) after the JSON header"),
    (binary_header("signal", [2**40, 2**40], 8), b"\0" * 8, None, 413, "declares more elements"),
    ({"inputs": [{"name": "signal", "shape": [2**62, 2**62], "datatype": "FP32", "data": [1.0]}]}, b"", None, 413,
     "declares more elements"),
    ({"inputs": [{"name": "signal", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3]}]}, b"", None, 400,
     "holds 3 value(s), its shape [2, 3] needs 6"),
    ({"inputs": [{"name": "signal", "shape": [3], "datatype": "BYTES", "data": ["a", "b", "c"]}]}, b"", None, 400,
     "datatype 'BYTES' is not supported"),
    ({"inputs": [{"name": "signal", "shape": [-1], "datatype": "FP32", "data": [1.0]}]}, b"", None, 400,
     "shape must hold nonnegative integers"),
    ({"inputs": [{"name": "signal", "shape": [2], "datatype": "FP32"}]}, b"", None, 400,
     "neither 'data' nor parameters.binary_data_size"),
    ({"inputs": [{"name": "signal", "shape": [2], "datatype": "FP32", "data": [1, 2]}], "extra": 1}, b"", None, 400,
     "unknown field(s) ['extra']"),
    ({"inputs": []}, b"", None, 400, "'inputs' must be a non-empty list"),
    ({"inputs": [{"name": "signal", "shape": [2], "datatype": "FP32", "data": [1, 2], "parameters": None}]}, b"", None, 400,
     "inputs[0].parameters must be a JSON object, got NoneType"),
    ({"inputs": [{"name": "signal", "shape": [2], "datatype": "FP32", "data": [1, 2], "parameters": {"x": 1}}]}, b"", None,
     400, "unknown field(s) ['x'] in inputs[0].parameters"),
    ({"inputs": [{"name": "signal", "shape": [2], "datatype": "FP32", "data": [1, 2]}], "parameters": {"x": 1}}, b"", None,
     400, "unknown field(s) ['x'] in parameters (a smoother)"),
    ({"inputs": [{"name": "features", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}, b"", None, 400,
     "takes one input named 'signal', got ['features']"),
    (binary_header("signal", [1, 5], 20), b"\0" * 20, 10**9, 400, "Inference-Header-Content-Length must be"),
])
def test_malformed_requests_are_refused_with_the_reason(app_client, header, blobs, header_length, status, message):
    response = post_infer(app_client, "smoother", header, blobs, header_length)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_request_size_limits_still_apply(app_client):
    too_long = np.zeros(50_001, dtype=np.float32)  # the app's max_signal_length is 50,000
    response = post_infer(app_client, "smoother", binary_header("signal", [50_001], too_long.nbytes), too_long.tobytes())
    assert response.status_code == 413 and "exceeds the limit of 50000 samples" in response.json()["error"]
    huge = app_client.post("/v2/models/smoother/infer", content=b"{" + b" " * (1024 * 1024) + b"}")
    assert huge.status_code == 413 and "exceeds the limit" in huge.json()["error"]


def test_not_ready_and_token(tmp_path):
    """A model without a valid version is not ready (OIP: 4xx); with a token, models need it, health does not."""
    repo = fresh_repo(tmp_path, models=("smoother",))
    (repo / "smoother" / "1" / "model.onnx").write_bytes(b"tampered")
    settings = Settings(repo=repo, device="cpu", cpu_threads=1, api_token="s3cret")
    with TestClient(create_app(settings)) as app_client:
        assert app_client.get("/v2/health/live").status_code == 200
        ready = app_client.get("/v2/health/ready")
        assert ready.status_code == 400 and ready.json()["ready"] is False and "no valid version" in ready.json()["error"]
        assert app_client.get("/v2/models/smoother/ready").status_code == 401
        auth = {"authorization": "Bearer s3cret"}
        model_ready = app_client.get("/v2/models/smoother/ready", headers=auth)
        assert model_ready.status_code == 400 and "checksums" in model_ready.json()["error"]
        metadata = app_client.get("/v2/models/smoother", headers=auth)
        assert metadata.status_code == 503 and "no valid version" in metadata.json()["error"]


def test_a_request_runs_on_the_version_it_was_decoded_against(tmp_path):
    """OIP resolves the model to decode (its input's name) and hands that version to the pipeline: a
    version published, and the decoded one removed, between decode and inference change nothing for
    the request in flight (resolving again would find version 1 gone: a 404 for a request naming none)."""
    repo = fresh_repo(tmp_path, models=("classifier",))
    with TestClient(create_app(Settings(repo=repo, device="cpu", cpu_threads=1, poll_interval_s=0))) as test_client:
        service = test_client.app.state.service

        class SwapAfterDecode(oip.OipAdapter):
            def decode(self, body, headers, query, limits):
                request = super().decode(body, headers, query, limits)
                publish_copy(repo, "classifier", 1, 2)
                shutil.rmtree(repo / "classifier" / "1")
                service.registry.refresh()
                return request

        body = orjson.dumps({"inputs": [{"name": "features", "shape": [1, len(CLASSIFIER_FEATURES)], "datatype": "FP32",
                                         "data": [0.5] * len(CLASSIFIER_FEATURES)}]})

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        adapter = SwapAfterDecode(service, "classifier", None, "/v2/models/{name}/infer")
        reply = test_client.portal.call(endpoint.handle, service, adapter, receive, {"content-length": str(len(body))}, b"")
        assert reply.status == 200, reply.body
        assert orjson.loads(reply.body)["model_version"] == "1"
        assert sorted(service.registry.model("classifier").served) == [2]  # the swap did happen
        after = post_infer(test_client, "classifier", orjson.loads(body))
        assert after.status_code == 200 and after.json()["model_version"] == "2"


def handle_with(test_client: TestClient, adapter, body: bytes) -> endpoint.Reply:
    """One request through the pipeline with the given adapter (what the hot lane does with a kept one)."""
    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    service = test_client.app.state.service
    return test_client.portal.call(endpoint.handle, service, adapter, receive, {"content-length": str(len(body))}, b"")


def test_the_hot_lane_keeps_an_oip_adapter_per_path_and_resolves_again_when_the_models_change(tmp_path):
    """The lane keeps the adapter of an OIP path and the adapter keeps its model's resolution: a version
    published, or the model removed, must show in the next answer of the kept adapter, exactly as a
    new adapter would answer."""
    repo = fresh_repo(tmp_path, models=("classifier",))
    with TestClient(create_app(Settings(repo=repo, device="cpu", cpu_threads=1, poll_interval_s=0))) as test_client:
        service = test_client.app.state.service
        lane = fastpath.HotLane(service)
        path = "/v2/models/classifier/infer"
        adapter = lane.adapter(path)
        assert isinstance(adapter, oip.OipAdapter) and lane.adapter(path) is adapter
        versioned = lane.adapter("/v2/models/classifier/versions/1/infer")
        assert versioned is not adapter and (versioned.name, versioned.version) == ("classifier", "1")
        assert lane.adapter("/classify") is native.CLASSIFY
        assert lane.adapter("/v2/models/classifier/ready") is None
        long_path = f"/v2/models/{'m' * fastpath.KEPT_PATH_CHARS}/infer"  # not kept: a new adapter each time
        assert lane.adapter(long_path) is not lane.adapter(long_path) and lane.adapter(long_path).name == "m" * 512

        body = orjson.dumps({"inputs": [{"name": "features", "shape": [1, len(CLASSIFIER_FEATURES)], "datatype": "FP32",
                                         "data": [0.5] * len(CLASSIFIER_FEATURES)}]})
        first = handle_with(test_client, adapter, body)
        assert first.status == 200 and orjson.loads(first.body)["model_version"] == "1"
        assert adapter.resolved()[0] is adapter.resolved()[0]  # kept while the models are the same

        publish_copy(repo, "classifier", 1, 2)
        service.registry.refresh()
        assert lane.adapter(path) is adapter
        second = handle_with(test_client, adapter, body)
        assert second.status == 200 and orjson.loads(second.body)["model_version"] == "2"
        assert handle_with(test_client, versioned, body).status == 200  # version 1 still served by its path

        shutil.rmtree(repo / "classifier")
        service.registry.refresh()
        gone = handle_with(test_client, adapter, body)
        fresh = handle_with(test_client, oip.OipAdapter(service, "classifier", None, fastpath.OIP_INFER), body)
        assert gone.status == fresh.status == 404 and gone.body == fresh.body


def test_small_lists_at_the_edge_of_float32_convert_without_a_warning_and_keep_their_messages():
    """to_float32 bounds a small list's magnitudes with math.hypot: values beyond float32 (also beside
    a NaN, whose hypot is NaN) go the errstate road, and the refusals keep their texts."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow outside errstate would raise RuntimeWarning here
        assert codec.to_float32([1.0, 3.5e38, -3.5e38], "x").tolist() == [1.0, np.inf, -np.inf]
        assert np.isinf(codec.to_float32([[float("nan"), 1e39]], "x")[0, 1])
        assert np.isinf(codec.to_float32([[1.0, 2.0], [float("nan"), 2**128]], "x")[1, 1])
        edge = codec.to_float32([codec.FLOAT32_MAX, -codec.FLOAT32_MAX], "x")
        assert np.isfinite(edge).all() and edge[0] == np.finfo(np.float32).max
    with pytest.raises(BadRequestError, match=r"bad operand type for abs\(\): 'list'"):
        codec.to_float32([1, [2]], "x")  # a list among numbers: the text it has always had
    with pytest.raises(BadRequestError, match="beyond float32 range: int too large to convert to float"):
        codec.to_float32([2**1100, 1.0], "x")


# -- the decoder ------------------------------------------------------------------------------
def test_binary_inputs_are_views_of_the_body():
    data = np.arange(12, dtype=np.float32)
    head = orjson.dumps(binary_header("signal", [3, 4], data.nbytes))
    body = head + data.tobytes()
    request = oip.decode_infer(body, str(len(head)))
    array = request.inputs[0].array
    assert array.shape == (3, 4) and np.shares_memory(array, np.frombuffer(body, dtype=np.uint8))
    np.testing.assert_array_equal(array.reshape(-1), data)


def test_element_count_stops_at_the_limit():
    assert oip.element_count([2, 3, 4], "x", 24) == ((2, 3, 4), 24)
    with pytest.raises(PayloadTooLargeError):
        oip.element_count([10**30, 0], "x", 10**6)  # refused before the zero could hide the product
    with pytest.raises(BadRequestError):
        oip.element_count([True, 2], "x", 10)
    with pytest.raises(BadRequestError):
        oip.element_count(list(range(1, 20)), "x", 10**30)  # more dimensions than any model takes


def test_json_nested_data_is_row_major():
    request = oip.decode_infer(orjson.dumps(
        {"inputs": [{"name": "features", "shape": [2, 3], "datatype": "INT32", "data": [[1, 2, 3], [4, 5, 6]]}]}), None)
    np.testing.assert_array_equal(request.inputs[0].array, np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32))


@pytest.mark.parametrize("datatype", sorted(oip.DATATYPES))
def test_binary_outputs_are_named_and_sent_little_endian_whatever_their_byte_order(datatype):
    little = oip.DATATYPES[datatype]
    request = oip.OipRequest(None, [], {"binary_data_output": True})
    for dtype in (little, little.newbyteorder(">")):
        values = np.arange(6, dtype=dtype).reshape(2, 3)
        encoded = oip.encode_infer("m", 1, request, {"y": values}, {})
        length = int(encoded.headers[oip.HEADER_LENGTH])
        assert orjson.loads(encoded.body[:length])["outputs"] == [
            {"name": "y", "datatype": datatype, "shape": [2, 3], "parameters": {"binary_data_size": values.nbytes}}]
        np.testing.assert_array_equal(np.frombuffer(encoded.body[length:], dtype=little).reshape(2, 3), values)


# -- fuzzing: any body is an answer with a status below 500 ----------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12)
tensors = st.fixed_dictionaries(
    {"name": st.sampled_from(["signal", "features", "x"]), "datatype": st.sampled_from([*oip.DATATYPES, "BYTES", 3]),
     "shape": st.lists(st.integers(-2, 2**40), max_size=4) | json_values},
    optional={"data": json_values | st.lists(st.floats(-1e3, 1e3), max_size=40),
              "parameters": st.fixed_dictionaries({}, optional={"binary_data_size": st.integers(-4, 200) | json_values,
                                                                 "content_type": json_values})})
requests = st.fixed_dictionaries(
    {"inputs": st.lists(tensors, max_size=2) | json_values},
    optional={"id": json_values, "parameters": st.dictionaries(st.sampled_from(["mode", "binary_data_output", "x"]),
                                                             json_values | st.sampled_from(["same", "valid"])),
              "outputs": st.lists(st.fixed_dictionaries({"name": json_values | st.sampled_from(["smoothed", "scores"])}),
                                  max_size=2) | json_values})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=requests, tail=st.binary(max_size=64), split=st.booleans())
def test_decoder_answers_any_request_with_a_request_or_a_client_error(payload, tail, split):
    head = orjson.dumps(payload)
    try:
        request = oip.decode_infer(head + tail if split else head, str(len(head)) if split else None)
    except ServiceError as exc:
        assert 400 <= exc.status < 500 and exc.message
        return
    for tensor in request.inputs:  # what was accepted is what was declared
        assert tensor.array.shape == tensor.shape


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(payload=requests, model=st.sampled_from(["smoother", "classifier", "multilabel"]))
def test_infer_route_never_answers_5xx(app_client, payload, model):
    response = app_client.post(f"/v2/models/{model}/infer", content=orjson.dumps(payload))
    assert response.status_code < 500, response.text
    assert response.status_code == 200 or "error" in response.json()
