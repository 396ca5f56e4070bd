"""POST /smooth and POST /classify.

The body is read raw (no pydantic model over big lists), decoded once into numpy, and answered
with orjson or .npy bytes. Small requests run inline on the event loop, where a thread hop would
cost more than the work; anything bigger is decoded, inferred and encoded in a worker thread
(ONNX Runtime releases the GIL while it computes), so the event loop is never blocked for long.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Literal

from anyio import to_thread
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from service import codec, inference
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


async def _answer(request: Request, route: str, service: Service, decode: Callable[[bytes], Any],
                  work: Callable[[Any], int], infer: Callable[[Any], Any], encode: Callable[[Any, Any, bool], inference.Encoded]) -> Response:
    settings, metrics = service.settings, service.metrics
    body = await read_body(request, settings.max_body_bytes)
    npy_out = codec.wants_npy(request.headers.get("accept"))

    def decode_timed():
        start = time.perf_counter()
        call = decode(body)
        request.state.model = call.served.manifest.name
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
        if call.served.predicted_seconds(work(call)) * 1e6 <= settings.inline_max_inference_us:
            output = infer_timed(call)
        else:
            output = await to_thread.run_sync(infer_timed, call, limiter=limiter)
        encoded = encode_timed(call, output)
    metrics.count_request(route, call.served.manifest.name, 200)
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
        inference.smooth_work, inference.infer_smooth, inference.encode_smooth)


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
