"""Dependencies injected with Annotated[..., Depends(...)].

The inference routes take one dependency, `ServiceDep`: the token check plus everything loaded at
startup (settings, registry, metrics, thread limiter) in one object, because FastAPI's dependency
resolution costs per dependency on every request. All are `async def` on purpose: FastAPI runs a
plain `def` dependency in the thread pool (four such hops once cost ~1 ms of CPU per request).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import anyio
from fastapi import Depends, Request

from service.pipeline.batching import DynamicBatcher
from service.base.errors import ModelUnavailableError
from service.base.metrics import Metrics
from service.pipeline.endpoint import MemoryBudget, check_authorization
from service.repository.registry import ModelRegistry
from service.settings import Settings
from service.pipeline.streaming import StreamHub


@dataclass
class Service:
    """What the lifespan loaded, kept on app.state.service."""

    settings: Settings
    metrics: Metrics
    registry: ModelRegistry | None = None  # None until the models are proved and loaded
    limiter: anyio.CapacityLimiter | None = None  # bounds concurrent inference threads
    batchers: dict[int, DynamicBatcher] = field(default_factory=dict)  # by id() of the ProvenVersion
    budget: MemoryBudget = field(init=False)  # bytes held by requests in flight (service.pipeline.endpoint)
    streams: StreamHub = field(init=False)  # open streams and the stream state codec (service.pipeline.streaming)

    def __post_init__(self) -> None:
        self.budget = MemoryBudget(self.settings.inflight_budget_per_worker)
        self.streams = StreamHub.from_settings(self.settings)


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
