"""The hot path: POST /smooth and POST /classify answered ahead of FastAPI's request handling.

FastAPI's own per-request machinery (its middleware stack, routing, dependency solving, Request
and Response objects) costs more than a whole small classification (docs/performance.md:
about 130 us of CPU per request for a FastAPI endpoint that returns a constant). `MonoserveApp`
(service.app) hands these two routes to `answer_hot`, which passes the raw ASGI scope and
receive channel to the one endpoint pipeline (service.pipeline.serve_asgi) that the FastAPI routes
call too: the same body reader, query parser, limits, token check and error mapping. Every other
request, and these paths with another method, goes through FastAPI unchanged. The FastAPI routes
still document the API in /docs and serve these requests when the hot path is off
(MONOSERVE_HOT_PATH=false); the tests send the same requests both ways and compare the answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from service import native, pipeline
from service.routes.deps import Service

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

HOT_ROUTES = native.ADAPTERS


def is_hot(scope: Scope) -> bool:
    return scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in HOT_ROUTES


async def answer_hot(service: Service, scope: Scope, receive: Receive, send: Send) -> None:
    """POST /smooth or /classify, end to end, through the pipeline the FastAPI routes use."""
    await pipeline.serve_asgi(service, HOT_ROUTES[scope["path"]], scope, receive, send)
