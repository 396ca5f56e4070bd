"""The hot path: POST /smooth, /classify and OIP infer answered ahead of FastAPI's request handling.

FastAPI's own per-request machinery (its middleware stack, routing, dependency solving, Request
and Response objects) costs more than a whole small classification (docs/performance.md:
about 130 us of CPU per request for a FastAPI endpoint that returns a constant). `MonoserveApp`
(service.app) hands these routes (`hot_route`) to `answer_hot`, which passes the raw ASGI scope and
receive channel to the one endpoint pipeline (service.pipeline.endpoint.serve_asgi) that the FastAPI routes
call too: the same body reader, query parser, limits, token check and error mapping. Every other
request, and these paths with another method, goes through FastAPI unchanged. The FastAPI routes
still document the API in /docs and serve these requests when the hot path is off
(MONOSERVE_HOT_PATH=false); the tests send the same requests both ways and compare the answers.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from service.protocols import native, oip
from service.pipeline import endpoint as pipeline
from service.pipeline.service import Service

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

HOT_ROUTES = native.ADAPTERS
OIP_INFER = "/v2/models/{name}/infer"  # the FastAPI routes' paths (service.edge.routes.oip): the metrics' route label
OIP_VERSION_INFER = "/v2/models/{name}/versions/{version}/infer"


def oip_infer_route(path: str) -> tuple[str, str | None, str] | None:
    """(model name, version or None, route) when `path` is an OIP infer path, as FastAPI matches it
    (non-empty segments without '/'); None otherwise."""
    if not path.startswith("/v2/models/") or not path.endswith("/infer"):
        return None
    parts = path.split("/")  # ["", "v2", "models", name, "infer"] or [..., name, "versions", version, "infer"]
    if len(parts) == 5 and parts[3]:
        return parts[3], None, OIP_INFER
    if len(parts) == 7 and parts[3] and parts[4] == "versions" and parts[5]:
        return parts[3], parts[5], OIP_VERSION_INFER
    return None


def hot_route(lane: HotLane, scope: Scope) -> pipeline.ProtocolAdapter | None:
    """The adapter of a POST to a hot route (its path parsed once, OIP adapters kept by the lane);
    None for every other request."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    return lane.adapter(scope["path"])


def oip_adapter(service: Service, path: str) -> oip.OipAdapter | None:
    """The adapter of an OIP infer path; None for any other path."""
    route = oip_infer_route(path)
    if route is None:
        return None
    name, version, label = route
    return oip.OipAdapter(service, name, version, label)


# The HTTP protocol's lane keeps the OIP adapters of this many paths, each at most KEPT_PATH_CHARS long
# (a longer one gets a new adapter per request): the memory a client's made-up paths can take is bounded.
KEPT_OIP_ADAPTERS = 64
KEPT_PATH_CHARS = 512


async def answer_hot(service: Service, scope: Scope, receive: Receive, send: Send,
                     adapter: pipeline.ProtocolAdapter) -> None:
    """POST /smooth, /classify or an OIP infer, end to end, through the pipeline the FastAPI routes use."""
    await pipeline.serve_asgi(service, adapter, scope, receive, send)


class HotLane:
    """The hot routes and their adapters (OIP ones kept per path), for the ASGI hot path
    (`hot_route`, `answer_hot`) and for an HTTP protocol that answers them itself, below ASGI (service.edge.http):
    uvicorn's per-request ASGI machinery (the scope's cycle, message dicts, the header checks of
    every send, two writes per answer) cost more than this service's whole pipeline for a 1-sample
    request (docs/performance.md). The protocol asks `adapter(path)` for each POST whose headers are
    complete; when it has one, it calls `serve` with its own receive and writer: the same pipeline,
    limits, deadlines and error mapping as `answer_hot` and the FastAPI routes."""

    def __init__(self, service: Service) -> None:
        self.service = service
        # An OIP path's adapter, kept: parsing the path and building the adapter cost about 8k
        # instructions, a fiftieth of a 1-sample request, and the adapter keeps what its model
        # resolved to (oip.OipAdapter.resolved). Paths of the native routes are a dict lookup.
        self._kept_oip_adapter = functools.lru_cache(maxsize=KEPT_OIP_ADAPTERS)(functools.partial(oip_adapter, service))

    def adapter(self, path: str) -> pipeline.ProtocolAdapter | None:
        adapter = HOT_ROUTES.get(path)
        if adapter is None:
            adapter = (self._kept_oip_adapter(path) if len(path) <= KEPT_PATH_CHARS else
                       oip_adapter(self.service, path))
        return adapter

    def serve(self, adapter: pipeline.ProtocolAdapter, raw_headers: list[tuple[bytes, bytes]], path: str,
              query_string: bytes, receive: Receive, body_into: Any, write_reply: pipeline.ReplyWriter,
              body_ready: Any = None) -> Awaitable[None]:
        return pipeline.serve(self.service, adapter, raw_headers, path, query_string, receive, body_into, write_reply,
                              body_ready)
