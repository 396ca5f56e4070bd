"""Dependencies injected with Annotated[..., Depends(...)]: settings, registry, metrics, token check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from service.errors import ModelUnavailableError, PayloadTooLargeError, BadRequestError, UnauthorizedError
from service.metrics import Metrics
from service.registry import ModelRegistry
from service.settings import Settings


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_registry(request: Request) -> ModelRegistry:
    registry = request.app.state.registry
    if registry is None:
        raise ModelUnavailableError("models are still loading")
    return registry


def require_token(request: Request) -> None:
    """When MONOSERVE_API_TOKEN is set, requests must send `Authorization: Bearer <token>`."""
    token = request.app.state.settings.api_token
    if token is None:
        return
    scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise UnauthorizedError("missing API token: send 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.strip().encode(), token.get_secret_value().encode()):
        raise UnauthorizedError("wrong API token", headers={"WWW-Authenticate": "Bearer"})


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
TokenDep = Annotated[None, Depends(require_token)]


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
