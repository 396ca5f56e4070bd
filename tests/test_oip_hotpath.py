"""OIP infer on the hot path (service.edge.fastpath, ahead of FastAPI): the same answers, headers and
metrics as the FastAPI OIP routes, for good and bad requests, JSON and binary, with and without a version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from service.edge import fastpath
from service.app import create_app
from service_fixtures import fresh_repo
from test_fastpath import comparable, settings


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return fresh_repo(tmp_path_factory.mktemp("oip-hot"))


def oip_matrix() -> list[tuple[str, dict]]:
    signal = np.random.default_rng(0).standard_normal((2, 300)).astype(np.float32)
    big = np.random.default_rng(1).standard_normal((3, 5000)).astype(np.float32)
    header = orjson.dumps({"inputs": [{"name": "signal", "shape": [2, 300], "datatype": "FP32",
                                       "parameters": {"binary_data_size": signal.nbytes}}],
                           "outputs": [{"name": "smoothed", "parameters": {"binary_data": True}}]})
    json_body = {"inputs": [{"name": "signal", "shape": [2, 300], "datatype": "FP32", "data": signal.reshape(-1).tolist()}],
                 "parameters": {"mode": "causal"}, "id": "a"}
    features = {"inputs": [{"name": "features", "shape": [2, 6], "datatype": "FP32", "data": [[0.1] * 6, [0.2] * 6]}]}
    return [
        ("/v2/models/smoother/infer", {"content": orjson.dumps(json_body)}),
        ("/v2/models/smoother/versions/1/infer", {"content": orjson.dumps(json_body)}),
        ("/v2/models/smoother/infer", {"content": orjson.dumps(
            {"inputs": [{"name": "signal", "shape": [3, 5000], "datatype": "FP32", "data": big.tolist()}]})}),  # simdjson road
        ("/v2/models/smoother/infer", {"content": header + signal.tobytes(),
                                       "headers": {"inference-header-content-length": str(len(header)),
                                                   "content-type": "application/octet-stream"}}),
        ("/v2/models/classifier/infer", {"content": orjson.dumps(features)}),
        ("/v2/models/smoother/versions/9/infer", {"content": orjson.dumps(json_body)}),  # 404 version
        ("/v2/models/nosuch/infer", {"content": orjson.dumps(json_body)}),  # 404 model
        ("/v2/models/smoother/versions/x1/infer", {"content": orjson.dumps(json_body)}),  # 404: not a version number
        ("/v2/models/smoother/infer", {"content": b'{"inputs": [{"name": "signal", "shape": [2], "datatype": "FP32", "data": [1, NaN]}]}'}),
        ("/v2/models/smoother/infer", {"content": b"{" + b" " * 5_000_000 + b"}"}),  # 413 body
        ("/v2/models/classifier/infer", {"content": orjson.dumps(json_body)}),  # wrong input name
    ]


def test_oip_infer_on_the_hot_path_answers_like_the_fastapi_routes(repo: Path, monkeypatch) -> None:
    hot_calls = []
    real_answer_hot = fastpath.answer_hot

    async def spy(*args):
        hot_calls.append(args[1]["path"])
        await real_answer_hot(*args)

    monkeypatch.setattr(fastpath, "answer_hot", spy)
    matrix = oip_matrix()
    with TestClient(create_app(settings(repo, hot_path=True))) as hot, \
            TestClient(create_app(settings(repo, hot_path=False))) as plain:
        statuses = set()
        for number, (path, kwargs) in enumerate(matrix):
            # the client's request ID, so that both answers carry the same one (else each app draws its own)
            kwargs = {**kwargs, "headers": {**kwargs.get("headers", {}), "x-request-id": f"oip-matrix-{number}"}}
            fast, slow = hot.post(path, **kwargs), plain.post(path, **kwargs)
            assert fast.headers["x-request-id"] == f"oip-matrix-{number}"
            assert comparable(fast) == comparable(slow), path
            assert fast.headers.get("inference-header-content-length") == slow.headers.get("inference-header-content-length")
            statuses.add(fast.status_code)
        assert {200, 400, 404, 413} <= statuses
        counters = [sorted(line for line in c.get("/metrics").text.splitlines() if line.startswith("monoserve_requests_total"))
                    for c in (hot, plain)]
        assert counters[0] == counters[1] and any("versions/{version}/infer" in line for line in counters[0])
        # other OIP routes (metadata, readiness) and other methods still go through FastAPI
        assert hot.get("/v2/models/smoother").status_code == 200
        assert hot.get("/v2/models/smoother/infer").status_code == plain.get("/v2/models/smoother/infer").status_code == 405
    assert len(hot_calls) == len(matrix)


@pytest.mark.parametrize(("path", "expected"), [
    ("/v2/models/m/infer", ("m", None, fastpath.OIP_INFER)),
    ("/v2/models/m/versions/3/infer", ("m", "3", fastpath.OIP_VERSION_INFER)),
    ("/v2/models//infer", None),
    ("/v2/models/m/versions//infer", None),
    ("/v2/models/a/b/infer", None),
    ("/v2/models/m/ready", None),
    ("/v2/models/m/infer/", None),
    ("/smooth", None),
])
def test_oip_infer_paths_are_matched_like_fastapi(path, expected) -> None:
    assert fastpath.oip_infer_route(path) == expected
