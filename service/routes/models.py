"""GET /models and GET /models/{name}: versions, state, proof reports, checksums, io spec."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service import codec
from service.routes.deps import ServiceDep

router = APIRouter(tags=["models"])


@router.get("/models", responses={401: {"description": "missing or wrong token"}})
async def list_models(service: ServiceDep) -> Response:
    registry = service.registry
    body = {"ready": registry.ready, "engine": registry.engine, "device": registry.device,
            "models": [entry.summary() for entry in registry.models.values()]}
    if registry.problem:
        body["problem"] = registry.problem
    return Response(codec.dumps(body), media_type=codec.JSON_MEDIA_TYPE)


@router.get("/models/{name}", responses={404: {"description": "unknown model"}, 401: {"description": "missing or wrong token"}})
async def model_detail(name: str, service: ServiceDep) -> Response:
    return Response(codec.dumps(service.registry.model(name).detail()), media_type=codec.JSON_MEDIA_TYPE)
