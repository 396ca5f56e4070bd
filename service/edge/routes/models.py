"""GET /models and GET /models/{name}: versions, state, proof reports, checksums, io spec, and when
the repository was last refreshed (versions refused on a reload are listed with their report)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.base import codec
from service.repository.registry import iso_time
from service.edge.routes.deps import Service, ServiceDep

router = APIRouter(tags=["models"])


@router.get("/models", responses={401: {"description": "missing or wrong token"}})
async def list_models(service: ServiceDep) -> Response:
    registry = service.registry
    body = {"ready": registry.ready, "engine": registry.engine, "device": registry.device,
            "models": [entry.summary() for entry in registry.models.values()]}
    if registry.problem:
        body["problem"] = registry.problem
    if registry.unloaded:
        body["unloaded"] = sorted(registry.unloaded)
    body["lifecycle"] = _lifecycle(service)
    return Response(codec.dumps(body), media_type=codec.JSON_MEDIA_TYPE)


@router.get("/models/{name}", responses={404: {"description": "unknown model"}, 401: {"description": "missing or wrong token"}})
async def model_detail(name: str, service: ServiceDep) -> Response:
    body = {**service.registry.model(name).detail(), "lifecycle": _lifecycle(service)}
    return Response(codec.dumps(body), media_type=codec.JSON_MEDIA_TYPE)


def _lifecycle(service: Service) -> dict:
    """When the repository was last looked at, and how often it is (service.repository.lifecycle)."""
    registry = service.registry
    return {"poll_interval_s": service.settings.poll_interval_s, "refreshed_at": iso_time(registry.refreshed_at)}
