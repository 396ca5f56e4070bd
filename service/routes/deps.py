"""Dependencies injected with Annotated[..., Depends(...)].

The inference routes take one dependency, `ServiceDep`: the token check plus everything loaded at
startup (settings, registry, metrics, thread limiter) in one object, because FastAPI's dependency
resolution costs per dependency on every request. All are `async def` on purpose: FastAPI runs a
plain `def` dependency in the thread pool (four such hops once cost ~1 ms of CPU per request).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Annotated

import anyio
from fastapi import Depends, Request
from pydantic import SecretStr

from service.batching import DynamicBatcher
from service.errors import BadRequestError, ModelUnavailableError, PayloadTooLargeError, UnauthorizedError
from service.metrics import Metrics
from service.registry import ModelRegistry
from service.settings import Settings


@dataclass
class Service:
    """What the lifespan loaded, kept on app.state.service."""

    settings: Settings
    metrics: Metrics
    registry: ModelRegistry | None = None  # None until the models are proved and loaded
    limiter: anyio.CapacityLimiter | None = None  # bounds concurrent inference threads
    batchers: dict[int, DynamicBatcher] = field(default_factory=dict)  # by id() of the ProvenVersion


def check_token(request: Request, settings: Settings) -> None:
    """When MONOSERVE_API_TOKEN is set, requests must send `Authorization: Bearer <token>`."""
    if settings.api_token is not None:
        check_authorization(settings, request.headers.get("authorization"))


def check_authorization(settings: Settings, authorization: str | None, token: SecretStr | None = None) -> None:
    """The token check on the Authorization header's value (service.fastpath has no Request);
    `token` checks that token instead of settings.api_token (the control API's admin token)."""
    token = token if token is not None else settings.api_token
    if token is None:
        return
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise UnauthorizedError("missing API token: send 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.strip().encode(), token.get_secret_value().encode()):
        raise UnauthorizedError("wrong API token", headers={"WWW-Authenticate": "Bearer"})


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


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) more than `limit` bytes before reading them where possible."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequestError(f"invalid Content-Length {declared!r}") from None
        if size > limit:
            raise PayloadTooLargeError(f"request body of {size} bytes exceeds the limit of {limit} bytes", limit=limit)
        return await request.body()
    chunks, size = [], 0
    async for chunk in request.stream():  # chunked transfer: count as it arrives
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body exceeds the limit of {limit} bytes", limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)
