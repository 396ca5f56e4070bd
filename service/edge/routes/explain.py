"""POST /explain and the Open Inference Protocol extension POST /v2/models/{name}[/versions/{v}]/explain,
through the one endpoint pipeline with the adapters of service.protocols.explain (docs/explain.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from service.base import codec
from service.edge.routes.oip import ERRORS as OIP_ERRORS, INFER_DOCS
from service.edge.routes.predict import ERRORS
from service.pipeline import endpoint as pipeline
from service.protocols.explain import ExplainAdapter, OipExplainAdapter

router = APIRouter(tags=["explain"])
ADAPTER = ExplainAdapter()


class ExplainRequest(BaseModel):
    """Documentation only: the body is read by service.protocols.explain, not through this model."""

    instances: list[list[float]] | list[dict[str, float | list[float]]] = Field(
        description="rows of feature values, or objects keyed by feature name whose values are numbers or intervals "
                    "[low, high]; a feature left out of an object means its whole declared range")
    model: str | None = Field(None, description="model name (default: the repository's classifier)")
    version: int | None = None
    label: str | None = Field(None, description="the label explained (default: the first)")
    threshold: float | None = Field(None, description="the decision score >= threshold (default: the model's)")
    tolerance: float | None = Field(None, description="recourse tolerance as a fraction of each feature's range "
                                    "(default 0.001; 1e-6 to 0.25)")
    curves: int | None = Field(None, description="points per feature of the response curves (2 to 1025; none by default)")
    ranges: dict[str, list[float]] | None = Field(None, description="[low, high] per feature, replacing the declared range")


async def _reply(request: Request, adapter: Any) -> Response:
    service = request.app.state.service
    reply = await pipeline.handle(service, adapter, request.receive, request.headers, request.scope.get("query_string", b""))
    if reply is None:  # the client went away
        return Response(status_code=400)
    return Response(reply.body, status_code=reply.status, media_type=reply.media_type, headers=reply.headers)


@router.post("/explain", responses=ERRORS, openapi_extra={"requestBody": {"required": True, "content": {
    codec.JSON_MEDIA_TYPE: {"schema": ExplainRequest.model_json_schema()}}}})
async def explain(request: Request) -> Response:
    """Per instance: score and decision, exact bounds over the given box, recourse per proven feature,
    exact contributions when the model is additive, and response curves on request (docs/explain.md)."""
    return await _reply(request, ADAPTER)


async def _oip(request: Request, name: str, version: str | None) -> Response:
    route = getattr(request.scope.get("route"), "path", "/v2/models/{name}/explain")
    return await _reply(request, OipExplainAdapter(request.app.state.service, name, version, route))


@router.post("/v2/models/{name}/explain", responses=OIP_ERRORS, openapi_extra=INFER_DOCS)
async def oip_explain(name: str, request: Request) -> Response:
    """The explain extension of the Open Inference Protocol: an infer body whose input rows are the
    instances, the options (label, threshold, tolerance, curves, ranges) in `parameters`."""
    return await _oip(request, name, None)


@router.post("/v2/models/{name}/versions/{version}/explain", responses=OIP_ERRORS, openapi_extra=INFER_DOCS)
async def oip_version_explain(name: str, version: str, request: Request) -> Response:
    return await _oip(request, name, version)
