"""POST /smooth and POST /classify.

The body is read raw (no pydantic model over big lists), decoded once into numpy, and answered
with orjson or .npy bytes. Small requests run inline on the event loop, where a thread hop would
cost more than the work; anything bigger is decoded, inferred and encoded in a worker thread
(ONNX Runtime releases the GIL while it computes), so the event loop is never blocked for long.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any, Callable, Literal

from anyio import to_thread
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from service import codec, inference
from service.batching import DynamicBatcher, QueueFullError
from service.errors import OverloadedError
from service.routes.deps import Service, ServiceDep, read_body

router = APIRouter(tags=["inference"])


class SmoothRequest(BaseModel):
    """Documentation only: the body is parsed straight into numpy, not through this model."""

    signal: list[float] | list[list[float]] | list[list[list[float]]] = Field(
        description="[L], [C, L] or [B, C, L]; the answer keeps the nesting", examples=[[1.0, 2.0, 4.0, 8.0, 4.0, 2.0, 1.0]])
    model: str | None = Field(None, description="model name (default: the repository's smoother)")
    version: int | None = Field(None, description="model version (default: the newest valid one)")
    mode: Literal["same", "causal", "valid"] | None = Field(None, description="edge mode (default: the model's)")


class SmoothResponse(BaseModel):
    model: str
    version: int
    mode: str
    smoothed: list[float] | list[list[float]] | list[list[list[float]]]


class ClassifyRequest(BaseModel):
    instances: list[list[float]] | list[dict[str, float]] = Field(
        description="rows of feature values in the manifest's order, or objects keyed by feature name")
    model: str | None = None
    version: int | None = None


class ClassifyResponse(BaseModel):
    model: str
    version: int
    scores: list[float] | list[list[float]] = Field(description="probabilities; one list per instance with several labels")
    labels: list[str]
    threshold: float


def _docs(schema: type[BaseModel], npy_note: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    """OpenAPI for a raw-body route: the JSON schema, the .npy alternative and the query parameters
    (read from request.query_params by hand: FastAPI's per-parameter validation costs on every request)."""
    return {"requestBody": {"required": True, "content": {
        codec.JSON_MEDIA_TYPE: {"schema": schema.model_json_schema()},
        codec.NPY_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary", "description": npy_note}},
    }}, "parameters": parameters}


def _query_parameter(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


MODEL_PARAMETERS = [
    _query_parameter("model", {"type": "string"}, "model name (for .npy bodies; JSON bodies may carry it)"),
    _query_parameter("version", {"type": "integer", "minimum": 1}, "model version (default: the newest valid one)"),
]
MODE_PARAMETER = _query_parameter("mode", {"type": "string", "enum": ["same", "causal", "valid"]}, "edge mode")


ERRORS = {400: {"description": "bad input"}, 401: {"description": "missing or wrong token"},
          404: {"description": "unknown model or version"}, 413: {"description": "body or signal too large"},
          415: {"description": "unsupported content type"}, 503: {"description": "no valid model version"}}


async def answer(service: Service, route: str, body: bytes, accept: str | None, on_model: Callable[[str], None],
                 decode: Callable[[bytes], Any], work: Callable[[Any], int], infer: Callable[[Any], Any],
                 encode: Callable[[Any, Any, bool], inference.Encoded]) -> inference.Encoded:
    """decode -> infer -> encode, each timed into the metrics: the one implementation of both routes,
    shared by the FastAPI routes below and service.fastpath (which answers them ahead of FastAPI).

    Big bodies are decoded, inferred and encoded in a worker thread. Small ones are decoded inline;
    their inference goes to the dynamic batcher (/classify requests smaller than a batch, when
    enabled), or runs inline when it is predicted to be short, or in a worker thread.
    """
    settings, metrics = service.settings, service.metrics
    npy_out = codec.wants_npy(accept)

    def decode_timed():
        start = time.perf_counter()
        call = decode(body)
        on_model(call.served.manifest.name)
        metrics.observe_stage(route, "decode", time.perf_counter() - start)
        return call

    def infer_timed(call):
        start = time.perf_counter()
        output = infer(call)
        metrics.observe_stage(route, "inference", time.perf_counter() - start)
        return output

    def encode_timed(call, output):
        start = time.perf_counter()
        encoded = encode(call, output, npy_out)
        metrics.observe_stage(route, "encode", time.perf_counter() - start)
        return encoded

    def everything():
        call = decode_timed()
        return call, encode_timed(call, infer_timed(call))

    limiter = service.limiter
    if len(body) > settings.inline_max_body_bytes:
        call, encoded = await to_thread.run_sync(everything, limiter=limiter)
    else:
        call = decode_timed()
        # Only requests smaller than a batch are batched: a full-size request gains nothing from
        # the queue, and 64 of them would fill it.
        small = route == "/classify" and call.features.shape[0] < service.settings.max_batch_size
        batcher = batcher_for(service, call) if small else None
        if batcher is not None:
            start = time.perf_counter()
            try:
                output = await batcher.submit(call.features)  # the queue wait + the shared engine call
            except QueueFullError as exc:
                raise OverloadedError(str(exc), headers={"Retry-After": exc.retry_after_header},
                                      queued_rows=exc.queued_rows, limit=exc.limit) from None
            metrics.observe_stage(route, "inference", time.perf_counter() - start)
        elif call.served.predicted_seconds(work(call)) * 1e6 <= settings.inline_max_inference_us:
            output = infer_timed(call)
        else:
            output = await to_thread.run_sync(infer_timed, call, limiter=limiter)
        encoded = encode_timed(call, output)
    metrics.count_request(route, call.served.manifest.name, 200)
    return encoded


def batcher_for(service: Service, call: inference.ClassifyCall) -> DynamicBatcher | None:
    """The dynamic batcher of the classifier version serving `call`; None when batching is off."""
    settings = service.settings
    if not settings.batching:
        return None
    batcher = service.batchers.get(id(call.served))
    if batcher is None:
        limiter = service.limiter
        served = call.served

        async def offload(run, batch):
            return await to_thread.run_sync(run, batch, limiter=limiter)

        # Batches predicted to run within inline_max_inference_us run inline, bigger ones in a thread.
        fixed, per_element = served.predicted_seconds(0), served.predicted_seconds(1) - served.predicted_seconds(0)
        budget = settings.inline_max_inference_us * 1e-6 - fixed
        features = max(1, int(call.features.shape[1]))
        inline_rows = int(budget / (per_element * features)) if per_element > 0 else settings.max_batch_size
        batcher = service.batchers[id(served)] = DynamicBatcher(
            served.engine.run, max_batch_size=settings.max_batch_size, max_queue_delay_us=settings.max_queue_delay_us,
            max_queue_size=settings.max_queue_size, inline_max_rows=max(1, inline_rows), offload=offload,
            on_batch=service.metrics.batch_rows.labels(served.manifest.name).observe)
    return batcher


async def _answer(request: Request, route: str, service: Service, decode: Callable[[bytes], Any],
                  work: Callable[[Any], int], infer: Callable[[Any], Any], encode: Callable[[Any, Any, bool], inference.Encoded]) -> Response:
    body = await read_body(request, service.settings.max_body_bytes)

    def on_model(name: str) -> None:
        request.state.model = name  # the error handlers label their metrics with it

    encoded = await answer(service, route, body, request.headers.get("accept"), on_model, decode, work, infer, encode)
    return Response(encoded.body, media_type=encoded.media_type, headers=encoded.headers)


def _query(request: Request) -> dict[str, Any]:
    query = request.scope.get("query_string")
    return dict(request.query_params) if query else {}


@router.post("/smooth", response_model=SmoothResponse, responses=ERRORS,
             openapi_extra=_docs(SmoothRequest, ".npy of float32/float64, 1-3 dims; model/version/mode as query parameters",
                                 [*MODEL_PARAMETERS, MODE_PARAMETER]))
async def smooth(request: Request, service: ServiceDep) -> Response:
    """Smooth a signal: [L], [C, L] or [B, C, L] -> the same nesting, per edge mode."""
    query = _query(request)
    content_type = request.headers.get("content-type")
    registry, max_length = service.registry, service.settings.max_signal_length
    return await _answer(
        request, "/smooth", service,
        lambda body: inference.decode_smooth(registry, body, content_type, query, max_length),
        inference.smooth_work, partial(inference.infer_smooth, method=service.settings.smooth_method),
        inference.encode_smooth)


@router.post("/classify", response_model=ClassifyResponse, responses=ERRORS,
             openapi_extra=_docs(ClassifyRequest, ".npy of float32/float64 [N, n_features]; model/version as query parameters",
                                 MODEL_PARAMETERS))
async def classify(request: Request, service: ServiceDep) -> Response:
    """Score instances: probabilities per label, with the labels and the decision threshold."""
    query = _query(request)
    content_type = request.headers.get("content-type")
    registry = service.registry
    return await _answer(
        request, "/classify", service,
        lambda body: inference.decode_classify(registry, body, content_type, query),
        inference.classify_work, inference.infer_classify, inference.encode_classify)
