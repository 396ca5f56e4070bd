"""ASGI extensions (scope["extensions"]) that the serving process's HTTP server offers the pipeline.

`BODY_INTO`: `await body_into(view, progress) -> int` fills `view` with the request's next body
bytes straight from the socket (no intermediate bytes objects) and returns the count written,
short only when the client went away; `progress(count)` is called as bytes arrive (the body
deadline's minimum-rate extension). Offered by service.edge.http's httptools protocol; absent with
h11 and under other servers, where the pipeline reads the body with receive() as usual.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

BODY_INTO = "monoserve.body_into"

BodyInto = Callable[[memoryview, "Callable[[int], None] | None"], Awaitable[int]]

# `body_ready() -> bytes | None`: the request's whole body when it has already arrived (nothing of it
# received yet), else None. Not an ASGI extension: service.edge.http's hot lane hands it to the
# pipeline directly (service.pipeline.endpoint.serve), which then needs no deadline nor receive().
BodyReady = Callable[[], "bytes | None"]
