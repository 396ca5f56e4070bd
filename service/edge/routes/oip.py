"""The Open Inference Protocol v2 REST routes (KServe / Triton), beside /smooth and /classify.

Health and server metadata are open (probes); model metadata, readiness and infer follow the API
token like /models and /smooth. Errors answer {"error": message, ...} (KServe's shape). Infer goes
through the one endpoint pipeline (service.pipeline.endpoint.handle) with the OIP adapter (service.protocols.oip):
the same body reader, limits, in-flight budget, inference (with batching), metrics and error
mapping as /smooth and /classify.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from service import __version__
from service.base import codec
from service.protocols import oip
from service.pipeline import endpoint as pipeline
from service.base.errors import NotFoundError
from service.edge.routes.deps import Service, ServiceDep

router = APIRouter(tags=["open inference protocol v2"])

ERRORS = {400: {"description": "bad request, or (ready) the model is not ready"}, 401: {"description": "missing or wrong token"},
          404: {"description": "unknown model or version"}, 413: {"description": "too large"},
          503: {"description": "no valid model version, or models still loading"}}


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(codec.dumps(body), status_code=status, media_type=codec.JSON_MEDIA_TYPE)


# -- server -------------------------------------------------------------------------------------
@router.get("/v2")
async def server_metadata(request: Request) -> Response:
    """Server metadata: name, version and the protocol extensions served."""
    paths = request.app.openapi()["paths"]  # built once and cached by FastAPI; lists included routers' routes
    extensions = (["binary_tensor_data"] + (["model_repository"] if "/v2/repository/index" in paths else [])
                  + (["explain"] if "/v2/models/{name}/explain" in paths else []))
    return _json(oip.server_metadata(__version__, extensions))


@router.get("/v2/health/live")
async def server_live() -> Response:
    return _json({"live": True})


@router.get("/v2/health/ready", responses={400: {"description": "not ready (OIP: a 4xx means false), with the reasons"}})
async def server_ready(request: Request) -> Response:
    """200 when every model has a valid version (as /readyz); 400 with the reasons otherwise."""
    registry = request.app.state.service.registry
    if registry is not None and registry.ready:
        return _json({"ready": True})
    reasons = ["models are still loading"] if registry is None else registry.not_ready_reasons()
    return _json({"error": "not ready: " + "; ".join(reasons), "ready": False, "reasons": reasons}, 400)


# -- models -------------------------------------------------------------------------------------
async def _metadata(service: Service, name: str, version: str | None) -> Response:
    served = oip.resolve(service, name, version)
    registry = service.registry
    return _json(oip.model_metadata(served, list(registry.model(name).served), registry.engine))


async def _ready(service: Service, name: str, version: str | None) -> Response:
    registry = service.registry
    entry = registry.model(name)  # 404 for an unknown model
    number = oip.version_number(name, version)
    ready = bool(entry.served) if number is None else number in entry.served
    if ready:
        return _json({"name": name, "ready": True})
    if number is not None and number not in entry.reports:
        raise NotFoundError(f"model {name!r} has no version {number}", model=name, version=number,
                            versions=sorted(entry.reports))
    report = entry.reports.get(number) if number is not None else None
    reason = (report.reason if report is not None else None) or entry.reason or "not ready"
    return _json({"error": f"model {name!r} is not ready: {reason}", "name": name, "ready": False}, 400)


@router.get("/v2/models/{name}", responses=ERRORS)
async def model_metadata(name: str, service: ServiceDep) -> Response:
    """Metadata of the newest valid version: input/output names, datatypes, shapes (-1: variable)."""
    return await _metadata(service, name, None)


@router.get("/v2/models/{name}/versions/{version}", responses=ERRORS)
async def model_version_metadata(name: str, version: str, service: ServiceDep) -> Response:
    return await _metadata(service, name, version)


@router.get("/v2/models/{name}/ready", responses=ERRORS)
async def model_ready(name: str, service: ServiceDep) -> Response:
    """200 when the model has a valid version; 400 (OIP: a 4xx means false) with the reason."""
    return await _ready(service, name, None)


@router.get("/v2/models/{name}/versions/{version}/ready", responses=ERRORS)
async def model_version_ready(name: str, version: str, service: ServiceDep) -> Response:
    return await _ready(service, name, version)


# -- infer --------------------------------------------------------------------------------------
async def infer_endpoint(request: Request, name: str, version: str | None) -> Response:
    """OIP infer over the one endpoint pipeline, with the OIP protocol adapter."""
    service: Service = request.app.state.service
    route = getattr(request.scope.get("route"), "path", "/v2/models/{name}/infer")
    adapter = oip.OipAdapter(service, name, version, route)
    reply = await pipeline.handle(service, adapter, request.receive, request.headers, request.scope.get("query_string", b""))
    if reply is None:  # the client went away: nobody reads this
        return Response(status_code=400)
    return Response(pipeline.body_bytes(reply.body), status_code=reply.status, media_type=reply.media_type, headers=reply.headers)


INFER_DOCS = {
    "requestBody": {"required": True, "content": {
        codec.JSON_MEDIA_TYPE: {"schema": {
            "type": "object", "required": ["inputs"], "additionalProperties": False,
            "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object", "description": "mode (smoothers: same|causal|valid), binary_data_output"},
                "inputs": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["name", "shape", "datatype"],
                    "properties": {"name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                                   "datatype": {"type": "string", "enum": sorted(oip.DATATYPES)},
                                   "parameters": {"type": "object"},
                                   "data": {"type": "array", "description": "row-major values, flat or nested"}}}},
                "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string"}, "parameters": {"type": "object"}}}},
            }}},
        oip.BINARY_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary", "description":
            "binary tensor data extension: a JSON header of Inference-Header-Content-Length bytes, then each input's "
            "binary_data_size bytes (little-endian, row-major) in order"}},
    }},
    "parameters": [{"name": oip.HEADER_LENGTH, "in": "header", "required": False, "schema": {"type": "integer", "minimum": 0},
                    "description": "length of the JSON header when binary tensor data follows it"}],
}


@router.post("/v2/models/{name}/infer", responses=ERRORS, openapi_extra=INFER_DOCS)
async def model_infer(name: str, request: Request) -> Response:
    """Infer: a smoother answers what /smooth answers (parameters.mode, default the model's), a
    classifier its scores [N, labels] (with labels, threshold and decisions in the response's parameters)."""
    return await infer_endpoint(request, name, None)


@router.post("/v2/models/{name}/versions/{version}/infer", responses=ERRORS, openapi_extra=INFER_DOCS)
async def model_version_infer(name: str, version: str, request: Request) -> Response:
    return await infer_endpoint(request, name, version)
