"""Hostile requests get a clear 4xx/503 with {"error": ...}, never a 500 (issue 10, items 1, 2, 4).

Through the real app (its lifespan proves and loads the fixture repository), with the hot path
on and off: both must answer alike, since both call the one pipeline.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from service_fixtures import CLASSIFIER_FEATURES, MULTILABEL_LABELS, fresh_repo

NPY = {"content-type": "application/x-npy"}
JSON = {"content-type": "application/json"}


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npy_header_only(shape: tuple, descr: str = "<f4") -> bytes:
    """A .npy header claiming `shape`, with no payload (numpy writes the header for any shape)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
    return header.getvalue()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return fresh_repo(tmp_path_factory.mktemp("limits"))


def make_settings(repo, **overrides) -> Settings:
    values = dict(repo=repo, device="cpu", default_classifier="classifier", default_smoother="smoother", cpu_threads=1,
                  max_elements=10_000, max_rows=50, max_body_bytes=8 * 1024 * 1024, inflight_budget_bytes=64 * 1024 * 1024)
    return Settings(**{**values, **overrides})


@pytest.fixture(scope="module", params=[True, False], ids=["hot", "fastapi"])
def client(repo, request):
    with TestClient(create_app(make_settings(repo, hot_path=request.param))) as test_client:
        yield test_client


def assert_error(response, status: int, fragment: str) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert isinstance(body.get("error"), str) and fragment in body["error"], body
    return body


# -- element counts before allocation ---------------------------------------------------------
@pytest.mark.parametrize("shape", [(2**32, 2**32), (2**40,), (4, 2**62, 4)])
def test_npy_header_whose_count_wraps_int64_is_413_not_500(client, shape):
    body = assert_error(client.post("/smooth", content=npy_header_only(shape), headers=NPY), 413, "values")
    assert body["limit"] == 10_000


def test_npy_over_the_element_limit_is_refused_before_its_payload_is_read(client):
    # the payload is missing entirely: the header alone decides (a count check after reading would say 400)
    assert_error(client.post("/smooth", content=npy_header_only((3, 4000)), headers=NPY), 413, "12000 values")
    assert_error(client.post("/classify", content=npy_header_only((3000, 4)), headers=NPY), 413, "values")


def test_json_over_the_element_limit_is_413_whatever_the_nesting(client):
    zeros = b'{"signal": [' + b",".join([b"0"] * 20_000) + b"]}"
    assert_error(client.post("/smooth", content=zeros, headers=JSON), 413, "values")
    rows = b'{"signal": [' + b",".join([b"[0]"] * 20_000) + b"]}"  # one sample per row: every axis counts
    assert_error(client.post("/smooth", content=rows, headers=JSON), 413, "values")
    instances = orjson.dumps({"instances": [[0.0] * 4] * 3000})
    assert_error(client.post("/classify", content=instances, headers=JSON), 413, "values")


def test_classify_rows_over_the_limit_is_413(client):
    body = assert_error(client.post("/classify", json={"instances": [[0.5] * 4] * 51}), 413, "51 rows")
    assert body["limit"] == 50
    assert_error(client.post("/classify", content=npy_bytes(np.zeros((51, 4), np.float32)), headers=NPY), 413, "51 rows")
    assert client.post("/classify", json={"instances": [[0.5] * 4] * 50}).status_code == 200


def test_negative_npy_dimension_is_400(client):
    header = npy_header_only((3,)).replace(b"(3,)", b"(-3,)")
    assert_error(client.post("/smooth", content=header, headers=NPY), 400, ".npy")


# -- the in-flight budget -----------------------------------------------------------------------
def test_a_full_in_flight_budget_answers_503_with_retry_after_then_recovers(client):
    budget = client.app.state.service.budget
    assert budget.used == 0
    held = budget.capacity - 1000  # another request holds almost all of it
    assert budget.try_reserve(held)
    try:
        signal = np.arange(600, dtype=np.float32)
        for response in (client.post("/smooth", content=npy_bytes(signal), headers=NPY),
                         client.post("/smooth", json={"signal": signal.tolist()})):
            body = assert_error(response, 503, "busy")
            assert response.headers["retry-after"] == "1"
            assert "memory budget" in body["error"]
    finally:
        budget.release(held)
    assert client.post("/smooth", json={"signal": [1.0, 2.0, 3.0]}).status_code == 200
    assert budget.used == 0  # every request gave back what it reserved, refused ones too


def test_a_request_bigger_than_the_whole_budget_is_413_not_503(repo):
    with TestClient(create_app(make_settings(repo, inflight_budget_bytes=100_000))) as small:
        response = small.post("/smooth", json={"signal": [0.5] * 5000})
        assert_error(response, 413, "in-flight memory budget")
        assert small.post("/smooth", json={"signal": [0.5] * 50}).status_code == 200
        assert small.app.state.service.budget.used == 0


# -- strict types ---------------------------------------------------------------------------------
@pytest.mark.parametrize("values, found", [([1, "2", 3], "a string"), ([1.0, True, 3.0], "true"), ([[1.0, 2.0], [3.0, False]], "false"),
                                           ([1.0, {"a": 1}], "dict")])
def test_only_json_numbers_in_numeric_arrays(client, values, found):
    assert_error(client.post("/smooth", json={"signal": values}), 400, found)
    assert_error(client.post("/classify", json={"instances": [[0.1, 0.2, 0.3, values[1]]]}), 400, "only numbers")


def test_strings_and_booleans_are_refused_on_the_big_body_road_too(client):
    """Bodies over 64 KiB take the pysimdjson road when installed; a non-number sends them to the strict road."""
    values: list = [0.25] * 5000
    values[4321] = "7"
    assert_error(client.post("/smooth", json={"signal": values}), 400, "a string")
    values[4321] = True
    assert_error(client.post("/smooth", json={"signal": values}), 400, "index [4321]")


@pytest.mark.parametrize("version", [2**64, 10**30, -(2**70)])
def test_out_of_range_versions_are_400_in_the_body(client, version):
    body = b'{"signal": [1.0, 2.0], "version": ' + str(version).encode() + b"}"
    assert_error(client.post("/smooth", content=body, headers=JSON), 400, "version")


@pytest.mark.parametrize("version", ["18446744073709551616", "9" * 400, "-1", "1.5", "abc"])
def test_out_of_range_versions_are_400_in_the_query(client, version):
    response = client.post(f"/smooth?version={version}", content=npy_bytes(np.ones(12, np.float32)), headers=NPY)
    assert_error(response, 400, "version")


def test_largest_version_is_a_404_with_a_json_body(client):
    response = client.post(f"/smooth?version={2**63 - 1}", content=npy_bytes(np.ones(12, np.float32)), headers=NPY)
    assert_error(response, 404, "has no version")


# -- strict query and headers ---------------------------------------------------------------------
def test_unknown_query_parameters_are_400_like_unknown_json_fields(client):
    signal = npy_bytes(np.ones(12, np.float32))
    body = assert_error(client.post("/smooth?mod=valid", content=signal, headers=NPY), 400, "unknown query parameter 'mod'")
    assert body["parameter"] == "mod"
    assert_error(client.post("/smooth?mode=valid&mode=same", content=signal, headers=NPY), 400, "more than once")
    assert_error(client.post("/classify?mode=same", json={"instances": [[0.1] * 4]}), 400, "unknown query parameter")
    assert_error(client.post("/smooth", json={"signal": [1.0], "mod": "valid"}), 400, "unknown field")
    assert client.post("/smooth?mode=valid", content=signal, headers=NPY).status_code == 200


def test_compressed_bodies_are_415_naming_the_encoding(client):
    import gzip

    body = gzip.compress(orjson.dumps({"signal": [1.0, 2.0, 3.0]}))
    response = client.post("/smooth", content=body, headers={**JSON, "content-encoding": "gzip"})
    assert_error(response, 415, "Content-Encoding 'gzip'")
    plain = client.post("/smooth", json={"signal": [1.0, 2.0, 3.0]}, headers={"content-encoding": "identity"})
    assert plain.status_code == 200


# -- the answers ---------------------------------------------------------------------------------
def test_classify_answers_a_decision_per_instance(client):
    # directions increasing, decreasing, increasing, free: the extremes push the score to either side
    low, high = [-100.0, 100.0, -100.0, 0.0], [100.0, -100.0, 100.0, 0.0]
    rows = np.array([low, high] * 5 + np.random.default_rng(2).standard_normal((10, len(CLASSIFIER_FEATURES))).tolist())
    body = client.post("/classify", json={"instances": rows.tolist()}).json()
    threshold, scores = body["threshold"], body["scores"]
    assert body["decisions"] == [["spam"] if score >= threshold else [] for score in scores]
    assert len(body["decisions"]) == len(rows)
    multi = client.post("/classify", json={"instances": rows[:, :3].tolist(), "model": "multilabel"}).json()
    expected = [[label for label, score in zip(MULTILABEL_LABELS, row) if score >= multi["threshold"]] for row in multi["scores"]]
    assert multi["decisions"] == expected


def test_client_errors_log_no_traceback(client, caplog):
    caplog.set_level(logging.DEBUG)
    hostile = [
        ("/smooth", {"content": npy_header_only((2**32, 2**32)), "headers": NPY}),
        ("/smooth", {"content": b'{"signal": [1], "version": 99999999999999999999999}', "headers": JSON}),
        ("/smooth?version=99999999999999999999999", {"content": npy_bytes(np.ones(3, np.float32)), "headers": NPY}),
        ("/smooth", {"json": {"signal": [1, "2", True]}}),
        ("/smooth", {"content": b"\x1f\x8b\x08", "headers": {**JSON, "content-encoding": "gzip"}}),
        ("/smooth", {"content": b"\x93NUMPY\x01\x00\x10\x00{'descr': 'O'", "headers": NPY}),
    ]
    for path, kwargs in hostile:
        response = client.post(path, **kwargs)
        assert 400 <= response.status_code < 500 and "error" in response.json()
    assert not [record for record in caplog.records if record.exc_info], "a client error logged a traceback"


def test_decisions_take_the_labels_that_reach_the_threshold():
    from service.compute.inference import decisions

    assert decisions(np.array([[0.2], [0.5], [0.9]], np.float32), ["spam"], 0.5) == [[], ["spam"], ["spam"]]
    scores = np.array([[0.1, 0.7], [0.8, 0.3], [0.6, 0.6], [0.0, 0.0]], np.float32)
    assert decisions(scores, ["urgent", "spam"], 0.55) == [["spam"], ["urgent"], ["urgent", "spam"], []]
