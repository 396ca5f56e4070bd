"""Request IDs (service.base.context): every answer carries X-Request-ID, the client's when sane; error
bodies include it; log lines about a request carry it; MONOSERVE_LOG_FORMAT=json writes one JSON
object per line with the request's ID, model, version, status and duration."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from service.base import context
from service.app import create_app
from service.settings import Settings
from service_fixtures import fresh_repo
from test_service_e2e import running_server

SIGNAL = {"signal": [1.0, 2.0, 3.0, 4.0, 5.0] * 4}
INSTANCE = {"instances": [[0.1, 0.2, 0.3, 0.4]]}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return fresh_repo(tmp_path_factory.mktemp("ids"), models=("smoother", "classifier"))


@pytest.fixture(scope="module", params=[True, False], ids=["hot-path", "fastapi-routes"])
def client(repo, request):
    settings = Settings(repo=repo, device="cpu", cpu_threads=1, poll_interval_s=0, default_classifier="classifier",
                        hot_path=request.param)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.mark.parametrize("method,path,body,status", [
    ("POST", "/smooth", SIGNAL, 200),
    ("POST", "/classify", INSTANCE, 200),
    ("POST", "/smooth", {"signal": []}, 400),
    ("POST", "/classify", {"instances": [[1.0]], "model": "nope"}, 404),
    ("POST", "/v2/models/smoother/infer", {"inputs": [{"name": "signal", "shape": [1, 20], "datatype": "FP32",
                                                       "data": SIGNAL["signal"]}]}, 200),
    ("GET", "/models", None, 200),
    ("GET", "/readyz", None, 200),
    ("GET", "/nowhere", None, 404),
    ("POST", "/v2/repository/index", None, 403),
])
def test_client_ids_round_trip_everywhere(client, method, path, body, status):
    response = client.request(method, path, json=body, headers={"X-Request-ID": "client-7f3a.9:Z"})
    assert response.status_code == status, response.text
    assert response.headers["x-request-id"] == "client-7f3a.9:Z"
    if status >= 400:
        assert response.json()["request_id"] == "client-7f3a.9:Z"  # error bodies name it too


@pytest.mark.parametrize("sent", ["", "has space", "x" * 129, "semi;colon", "caf\u00e9", "tab\there", '"quoted"'])
def test_insane_ids_are_replaced_never_echoed(client, sent):
    headers = {"X-Request-ID": sent.encode("utf-8")}  # raw bytes on the wire
    response = client.post("/smooth", json={"signal": []}, headers=headers)
    issued = response.headers["x-request-id"]
    assert issued != sent and response.json()["request_id"] == issued
    assert context._SANE.fullmatch(issued)


def test_new_ids_are_unique_and_the_longest_sane_id_is_kept(client):
    issued = {client.post("/smooth", json=SIGNAL).headers["x-request-id"] for _ in range(20)}
    issued |= {client.get("/healthz").headers["x-request-id"] for _ in range(20)}
    assert len(issued) == 40
    longest = "a" * context.MAX_ID_LENGTH
    assert client.post("/smooth", json=SIGNAL, headers={"X-Request-ID": longest}).headers["x-request-id"] == longest


def test_log_records_made_during_a_request_carry_its_id():
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep()
    handler.addFilter(context.RequestContextFilter())
    logger = logging.getLogger("service.test_request_ids")
    logger.addHandler(handler)
    try:
        logger.warning("outside")
        token = context.CURRENT.set(context.RequestContext("abc"))
        try:
            context.CURRENT.get().model, context.CURRENT.get().version = "smoother", 3
            logger.warning("inside")
        finally:
            context.CURRENT.reset(token)
    finally:
        logger.removeHandler(handler)
    assert records[0].request_id is None
    assert (records[1].request_id, records[1].model, records[1].version) == ("abc", "smoother", 3)
    line = json.loads(context.JsonFormatter().format(records[1]))
    assert line["request_id"] == "abc" and line["model"] == "smoother" and line["version"] == 3
    assert {"time", "level", "logger", "message"} <= set(line)


def test_json_logs_of_a_real_server(repo):
    env = {"MONOSERVE_LOG_FORMAT": "json", "MONOSERVE_ACCESS_LOG": "true"}
    with running_server(repo, "--workers", "1", env=env) as server:
        ok = httpx.post(f"{server.base}/classify", json=INSTANCE, headers={"X-Request-ID": "trace-me-1"})
        bad = httpx.post(f"{server.base}/smooth", json={"signal": []}, headers={"X-Request-ID": "trace-me-2"})
        plain = httpx.get(f"{server.base}/models", headers={"X-Request-ID": "trace-me-3"})
        assert ok.status_code == 200 and bad.status_code == 400 and plain.status_code == 200
        assert ok.headers["x-request-id"] == "trace-me-1" and bad.json()["request_id"] == "trace-me-2"
    lines = [line for line in server.output.splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object, uvicorn's too
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in entries)
    by_id = {entry["request_id"]: entry for entry in entries if entry["logger"] == "service.access"}
    classify = by_id["trace-me-1"]
    assert (classify["model"], classify["version"], classify["status"]) == ("classifier", 1, 200)
    assert classify["duration_ms"] > 0 and "POST /classify 200" in classify["message"]
    assert (by_id["trace-me-2"]["status"], by_id["trace-me-2"]["model"]) == (400, "smoother")
    assert by_id["trace-me-3"]["status"] == 200 and "GET /models" in by_id["trace-me-3"]["message"]
    assert any(entry["message"].startswith("ready:") for entry in entries)
