"""OpenTelemetry tracing (service.base.tracing): off by default; on, one span per request with a child
span per pipeline stage, the caller's W3C traceparent honoured, recorded by an in-memory exporter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from service.base import tracing
from service.app import create_app
from service.settings import Settings
from service_fixtures import fresh_repo

ROOT = Path(__file__).resolve().parents[1]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return fresh_repo(tmp_path_factory.mktemp("tracing"), models=("smoother", "classifier"))


@pytest.fixture
def exporter():
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.use_provider(provider)
    try:
        yield memory
    finally:
        tracing.use_provider(None)


def client_for(repo: Path, **overrides) -> TestClient:
    values = dict(repo=repo, device="cpu", cpu_threads=1, poll_interval_s=0, default_classifier="classifier")
    return TestClient(create_app(Settings(**{**values, **overrides})))


def spans_by_name(exporter) -> dict[str, list]:
    found: dict[str, list] = {}
    for span in exporter.get_finished_spans():
        found.setdefault(span.name, []).append(span)
    return found


@pytest.mark.parametrize("hot_path,batching,path,body,inference", [
    (True, True, "/classify", {"instances": [[0.1, 0.2, 0.3, 0.4]]}, "batch"),
    (False, False, "/classify", {"instances": [[0.1, 0.2, 0.3, 0.4]]}, "infer"),
    (True, False, "/smooth", {"signal": [1.0, 2.0, 3.0, 4.0, 5.0] * 4}, "infer"),
])
def test_request_and_stage_spans_with_a_propagated_parent(repo, exporter, hot_path, batching, path, body, inference):
    with client_for(repo, hot_path=hot_path, batching=batching) as client:
        exporter.clear()
        response = client.post(path, json=body, headers={"traceparent": TRACEPARENT, "X-Request-ID": "traced-1"})
        assert response.status_code == 200
    spans = spans_by_name(exporter)
    (request,) = spans[f"POST {path}"]
    assert request.kind == SpanKind.SERVER
    assert format(request.context.trace_id, "032x") == TRACE_ID  # the caller's trace
    assert request.parent is not None and format(request.parent.span_id, "016x") == PARENT_ID and request.parent.is_remote
    model = "classifier" if path == "/classify" else "smoother"
    assert request.attributes["monoserve.model"] == model and request.attributes["monoserve.version"] == 1
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["monoserve.request_id"] == "traced-1"
    stages = ["read", "decode", "resolve", inference, "encode"]
    for name in stages:
        (stage,) = spans[name]
        assert stage.parent.span_id == request.context.span_id and stage.context.trace_id == request.context.trace_id
        assert request.start_time <= stage.start_time <= stage.end_time <= request.end_time, name
    starts = [spans[name][0].start_time for name in stages]
    assert starts == sorted(starts)  # in pipeline order


def test_errors_and_other_routes_are_traced_too(repo, exporter):
    with client_for(repo) as client:
        exporter.clear()
        assert client.post("/smooth", json={"signal": []}).status_code == 400
        assert client.get("/models").status_code == 200
        assert client.post("/v2/repository/index").status_code == 403
    spans = spans_by_name(exporter)
    (bad,) = spans["POST /smooth"]
    assert bad.attributes["http.response.status_code"] == 400 and bad.parent is None  # no traceparent: a new trace
    assert "read" in spans and "encode" not in spans  # the stages that ran
    assert spans["GET /models"][0].attributes["http.response.status_code"] == 200
    assert spans["POST /v2/repository/index"][0].attributes["http.response.status_code"] == 403


def test_off_by_default_and_on_with_standard_settings(repo):
    assert not tracing.active()
    assert not tracing.requested({})
    assert not tracing.requested({"OTEL_TRACES_EXPORTER": "none"})
    assert tracing.requested({"OTEL_TRACES_EXPORTER": "console"})
    assert tracing.requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert not tracing.requested({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"})
    with client_for(repo) as client:  # no OTEL_* set: no context collects stage marks
        assert client.post("/smooth", json={"signal": [1.0, 2.0, 3.0]}).status_code == 200
    assert not tracing.active()


def test_service_runs_without_opentelemetry_installed(repo):
    """OTEL_* asks for traces but the SDK is missing (the `tracing` extra; opentelemetry-api itself
    comes with FastAPI): a warning, and the service serves."""
    script = f"""
import sys, logging
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.startswith(("opentelemetry.sdk", "opentelemetry.exporter")):
            raise ModuleNotFoundError("blocked", name=name)
sys.meta_path.insert(0, Block())
sys.path.insert(0, {str(ROOT / 'tests')!r})
from fastapi.testclient import TestClient
from service.app import create_app
from service.settings import Settings
from service.base import tracing
app = create_app(Settings(repo={str(repo)!r}, device="cpu", cpu_threads=1, poll_interval_s=0))
with TestClient(app) as client:
    answer = client.post("/smooth", json={{"signal": [1.0, 2.0, 3.0]}})
    print("STATUS", answer.status_code, "ACTIVE", tracing.active())
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={"PATH": "/usr/bin:/bin", "OTEL_TRACES_EXPORTER": "otlp"}, cwd=ROOT)
    assert "STATUS 200 ACTIVE False" in result.stdout, result.stderr[-3000:]
    assert "tracing requested by OTEL_* settings but opentelemetry.sdk" in result.stderr


def test_unsampled_requests_make_no_stage_spans(repo):
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    memory = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.use_provider(provider)
    try:
        with client_for(repo) as client:
            assert client.post("/smooth", json={"signal": [1.0, 2.0, 3.0]}).status_code == 200  # not sampled
            sampled = client.post("/smooth", json={"signal": [1.0, 2.0, 3.0]}, headers={"traceparent": TRACEPARENT})
            assert sampled.status_code == 200  # the caller sampled it (flags 01): recorded, stages too
    finally:
        tracing.use_provider(None)
    names = sorted(span.name for span in memory.get_finished_spans())
    assert names == sorted(["POST /smooth", "read", "decode", "resolve", "infer", "encode"])
