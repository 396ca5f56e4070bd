"""Big JSON bodies: the byte counts taken before parsing, and the simdjson road for /smooth and OIP.

The simdjson road (codec.loads_with_arrays) must give exactly what the orjson road gives (the same
arrays, the same other fields) and must never change an answer to bad input: whatever it does not
take goes the orjson road, whose errors are the service's errors. Each test compares the two
roads on the same bytes (the simdjson one forced on small bodies with FAST_JSON_MIN_BYTES = 0).
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.base import codec
from service.protocols import oip
from service.app import create_app
from service.base.errors import ServiceError
from service.settings import Settings
from service_fixtures import fresh_repo

simdjson = pytest.importorskip("simdjson")


# -- counts on the raw bytes -------------------------------------------------------------------
def reference_counts(body: bytes) -> tuple[int, int]:
    return body.count(b",") + 1, body.count(b"[")


@pytest.mark.parametrize("size", [0, 1, codec.COUNT_CHUNK - 1, codec.COUNT_CHUNK, codec.COUNT_CHUNK + 1,
                                  3 * codec.COUNT_CHUNK + 17])
def test_counts_match_bytes_count_at_every_size(size):
    rng = np.random.default_rng(size)
    body = rng.choice(np.frombuffer(b",[]0. ", dtype=np.uint8), size).tobytes()
    assert codec.json_counts(body) == reference_counts(body)
    assert codec.json_counts(bytearray(body)) == reference_counts(body)  # the server's buffer for big bodies


def test_counts_at_chunk_boundaries():
    body = bytearray(b" " * (2 * codec.COUNT_CHUNK + 2))
    for position in (0, codec.COUNT_CHUNK - 1, codec.COUNT_CHUNK, 2 * codec.COUNT_CHUNK + 1):
        body[position:position + 1] = b","
    body[codec.COUNT_CHUNK + 1:codec.COUNT_CHUNK + 2] = b"["
    assert codec.json_counts(bytes(body)) == (5, 1)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 300))
def test_counts_of_any_bytes_across_a_chunk_boundary(tail, before):
    body = b"," * (codec.COUNT_CHUNK - before) + tail  # the tail straddles the first chunk's end
    assert codec.json_counts(body) == reference_counts(body)


# -- OIP: the simdjson road equals the orjson road --------------------------------------------
def decoded(body: bytes, fast: bool, monkeypatch) -> tuple[str, object]:
    """('ok', the request's inputs and parameters) or ('error', status and message), on one road."""
    monkeypatch.setattr(codec, "FAST_JSON_MIN_BYTES", 0)
    monkeypatch.setattr(codec, "simdjson", simdjson if fast else None)
    try:
        request = oip.decode_infer(body, None)
    except ServiceError as exc:
        return "error", (exc.status, exc.message)
    inputs = [(t.name, t.datatype, t.shape, t.array.dtype.str, t.array.tobytes()) for t in request.inputs]
    outputs = None if request.outputs is None else [(o.name, o.binary) for o in request.outputs]
    return "ok", (request.id, inputs, request.parameters, outputs)


def tensor(data, shape, name="signal", datatype="FP32", **extra):
    return {"name": name, "shape": shape, "datatype": datatype, "data": data, **extra}


rng = np.random.default_rng(7)
SIGNAL = rng.standard_normal((3, 700)).astype(np.float32)


@pytest.mark.parametrize("payload", [
    {"inputs": [tensor(SIGNAL.reshape(-1).tolist(), [3, 700])]},  # flat data, row-major
    {"inputs": [tensor(SIGNAL.tolist(), [3, 700])], "parameters": {"mode": "causal"}, "id": "r1"},  # nested
    {"inputs": [tensor(SIGNAL.tolist(), [1, 3, 700])], "outputs": [{"name": "smoothed", "parameters": {"binary_data": True}}]},
    {"inputs": [tensor(list(range(2100)), [3, 700])]},  # JSON integers as FP32 data
    {"inputs": [tensor([1e39] * 10, [10])]},  # beyond float32: inf on both roads (check_finite refuses it later)
    {"inputs": [tensor(SIGNAL.tolist(), [3, 700]), tensor([[1.0, 2.0]], [1, 2], name="x")]},  # two inputs
])
def test_oip_roads_decode_the_same_request(payload, monkeypatch):
    body = orjson.dumps(payload)
    monkeypatch.setattr(codec, "FAST_JSON_MIN_BYTES", 0)
    assert codec.loads_with_arrays(body, oip._is_input_data) is not None  # the simdjson road takes these
    fast, slow = decoded(body, True, monkeypatch), decoded(body, False, monkeypatch)
    assert fast == slow and fast[0] == "ok"


@pytest.mark.parametrize("body", [
    b'{"inputs": [{"name": "signal", "shape": [2], "datatype": "FP32", "data": [1.0, NaN]}]}',
    b'{"inputs": [{"name": "signal", "shape": [2], "datatype": "FP32", "data": [1.0, Infinity]}]}',
    b'{"inputs": [{"name": "signal", "shape": [2], "datatype": "FP32", "data": [1.0, null]}]}',
    b'{"inputs": [{"name": "signal", "shape": [2], "datatype": "FP32", "data": [1.0, true]}]}',
    b'{"inputs": [{"name": "signal", "shape": [2], "datatype": "FP32", "data": [1.0, "2"]}]}',
    b'{"inputs": [{"name": "signal", "shape": [2], "datatype": "FP32", "data": [1.0, [2.0]]}]}',  # nested in a row
    b'{"inputs": [{"name": "signal", "shape": [3], "datatype": "FP32", "data": [[1.0, 2.0], [3.0]]}]}',  # ragged
    b'{"inputs": [{"name": "signal", "shape": [1], "datatype": "FP32", "data": [[[[1.0]]]]}]}',  # deeper than 3
    b'{"inputs": [{"name": "signal", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3]}]}',  # count vs shape
    b'{"inputs": [{"name": "signal", "shape": [2], "datatype": "FP32", "data": [1e400, 1]}]}',
    b'{"inputs": [{"name": "signal", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}], "inputs": []}',
    b'{"inputs": [{"name": "signal", "shape": [2**62], "datatype": "FP32", "data": [1.0]}]}',
    b'{"inputs": [{"name": "s[", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}',  # '[' in a string
    b'{"inputs": [{"name": "signal", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]',  # truncated
    b'{"inputs": [{"name": "signal", "shape": [2], "datatype": "FP32", "data": 3.0}]}',
    b'{"inputs": ' + b'[' * 200 + b']' * 200 + b'}',  # deep nesting
    b'[1.0, 2.0]',
])
def test_oip_bad_bodies_get_the_same_answer_on_both_roads(body, monkeypatch):
    fast, slow = decoded(body, True, monkeypatch), decoded(body, False, monkeypatch)
    assert fast == slow
    if fast[0] == "error":
        assert 400 <= fast[1][0] < 500


numbers = st.floats(allow_nan=False, allow_infinity=False, width=32) | st.integers(-2**31, 2**31)
leaves = numbers | st.none() | st.booleans() | st.text(alphabet="ab[,", max_size=3)
data = (st.lists(numbers, max_size=30) | st.lists(st.lists(numbers, min_size=2, max_size=2), max_size=10)
        | st.lists(leaves, max_size=5) | st.recursive(leaves, lambda c: st.lists(c, max_size=3), max_leaves=8))
fuzz_tensors = st.fixed_dictionaries(
    {"name": st.sampled_from(["signal", "x"]), "datatype": st.sampled_from(["FP32", "INT64", "BYTES"]),
     "shape": st.lists(st.integers(0, 40), max_size=3), "data": data},
    optional={"parameters": st.fixed_dictionaries({}, optional={"content_type": st.text(max_size=3)})})
fuzz_requests = st.fixed_dictionaries(
    {"inputs": st.lists(fuzz_tensors, min_size=1, max_size=2)},
    optional={"id": st.text(max_size=4), "parameters": st.dictionaries(st.sampled_from(["mode", "x"]), leaves),
              "outputs": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["smoothed", "y"])}), max_size=2)})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=fuzz_requests)
def test_oip_roads_agree_on_any_request(payload, monkeypatch):
    body = orjson.dumps(payload)
    assert decoded(body, True, monkeypatch) == decoded(body, False, monkeypatch)


# -- native: the same road for /smooth, with the counts passed on --------------------------------
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(signal=data, extra=st.dictionaries(st.sampled_from(["mode", "model", "x"]), leaves | st.lists(leaves, max_size=3)))
def test_smooth_roads_agree_on_any_body(signal, extra, monkeypatch):
    body = orjson.dumps({"signal": signal, **extra})
    monkeypatch.setattr(codec, "FAST_JSON_MIN_BYTES", 0)
    fast = codec.loads_with_array(body, "signal", codec.json_counts(body)[1])
    if fast is None:
        return  # the orjson road: the service's own errors
    others, array = fast
    payload = codec.loads_object(body)
    assert others == {k: v for k, v in payload.items() if k != "signal"}
    expected = codec.to_float32(payload["signal"], "signal")
    assert array.dtype == np.float32 and array.shape == expected.shape
    np.testing.assert_array_equal(array, expected)


# -- end to end: a big OIP JSON body answers what /smooth answers, and the limits still apply ---
@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return fresh_repo(tmp_path_factory.mktemp("roads"), models=("smoother",))


def test_big_oip_json_answers_what_smooth_answers(repo):
    signal = np.random.default_rng(3).standard_normal((4, 6000)).cumsum(-1).astype(np.float32)
    body = orjson.dumps({"inputs": [tensor(signal.tolist(), [4, 6000])], "parameters": {"mode": "same"}})
    assert len(body) > codec.FAST_JSON_MIN_BYTES  # the simdjson road, as the server takes it
    with TestClient(create_app(Settings(repo=repo, device="cpu", cpu_threads=1))) as client:
        answer = client.post("/v2/models/smoother/infer", content=body)
        assert answer.status_code == 200, answer.text
        smooth = client.post("/smooth", json={"signal": signal.tolist(), "model": "smoother", "mode": "same"})
        assert smooth.status_code == 200, smooth.text
        got = np.asarray(answer.json()["outputs"][0]["data"], dtype=np.float32)
        np.testing.assert_array_equal(got, np.asarray(smooth.json()["smoothed"], dtype=np.float32).reshape(-1))


def test_big_json_over_the_element_limit_is_refused_before_parsing(repo):
    settings_ = Settings(repo=repo, device="cpu", cpu_threads=1, max_elements=10_000)
    values = np.ones(20_000, dtype=np.float32).tolist()
    with TestClient(create_app(settings_)) as client:
        for path, body in (("/v2/models/smoother/infer", {"inputs": [tensor(values, [20_000])]}),
                           ("/smooth", {"signal": values})):
            answer = client.post(path, content=orjson.dumps(body))
            assert answer.status_code == 413, answer.text
            assert "more than the limit of 10000" in answer.json()["error"]
