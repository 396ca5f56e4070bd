"""Dependencies injected with Annotated[..., Depends(...)].

The inference routes take one dependency, `ServiceDep`: the token check plus everything loaded at
startup (settings, registry, metrics, thread limiter) in one object, because FastAPI's dependency
resolution costs per dependency on every request. All are `async def` on purpose: FastAPI runs a
plain `def` dependency in the thread pool (four such hops once cost ~1 ms of CPU per request).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.base.errors import ModelUnavailableError
from service.base.metrics import Metrics
from service.pipeline.endpoint import check_authorization
from service.pipeline.service import Service
from service.settings import Settings


def check_token(request: Request, settings: Settings) -> None:
    """When MONOSERVE_API_TOKEN is set, requests must send `Authorization: Bearer <token>`."""
    if settings.api_token is not None:
        check_authorization(settings, request.headers.get("authorization"))


async def get_service(request: Request) -> Service:
    """The loaded service, after the token check (401) and once models are loaded (503 before)."""
    service: Service = request.app.state.service
    check_token(request, service.settings)
    if service.registry is None:
        raise ModelUnavailableError("models are still loading")
    return service


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.service.metrics


ServiceDep = Annotated[Service, Depends(get_service)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
