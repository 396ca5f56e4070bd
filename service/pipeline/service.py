"""The service handle: everything the lifespan loaded that a request needs (settings, metrics, the
registry of proven versions, the thread limiter, the batchers, the in-flight budget, the stream hub),
in one object kept on app.state.service and handed to the pipeline, every protocol and every route.

It lives in the pipeline room, the lowest that needs it; the edge's FastAPI dependency
(service.edge.routes.deps.ServiceDep) only adds the token check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio

from service.base.metrics import Metrics
from service.compute.request import MemoryBudget
from service.pipeline.batching import DynamicBatcher
from service.pipeline.streaming import StreamHub
from service.repository.registry import ModelRegistry
from service.settings import Settings


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
