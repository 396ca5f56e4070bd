"""One table of refusals: each class of bad request, and the code every transport answers it with.

A refusal is raised once, as a service.errors exception carrying its HTTP status, wherever the
request arrived; each transport turns that status into its own code from this table, so the same
bad input is refused as the same class over every transport (tests/test_conformance.py runs one
table of cases over all of them):

- HTTP (/smooth, /classify, OIP REST, /smooth with a stream state): the status itself;
- WebSocket /smooth/stream: a close frame with code 4000 + status and the message as its reason;
- gRPC (ModelInfer, ModelStreamInfer, sequence chunks): the status code below, with the message.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Refusal:
    name: str
    http: int
    grpc: str  # a grpc.StatusCode name (no grpc import here: the HTTP side does not need it)
    when: str

    @property
    def websocket(self) -> int:
        return 4000 + self.http


REFUSALS: tuple[Refusal, ...] = (
    Refusal("bad-request", 400, "INVALID_ARGUMENT",
            "malformed body, unknown field, wrong rank/shape/datatype, shape and data disagree, NaN/Inf, "
            "empty input, a model of the other kind"),
    Refusal("unauthenticated", 401, "UNAUTHENTICATED", "missing or wrong API token"),
    Refusal("forbidden", 403, "PERMISSION_DENIED", "the control API is closed"),
    Refusal("not-found", 404, "NOT_FOUND", "unknown model or version"),
    Refusal("timeout", 408, "DEADLINE_EXCEEDED", "a body too slow; a stream idle for longer than its idle timeout"),
    Refusal("gone", 409, "FAILED_PRECONDITION", "a stream's pinned version no longer serves"),
    Refusal("too-large", 413, "RESOURCE_EXHAUSTED", "over a per-request limit (bytes, values, rows, samples)"),
    Refusal("media-type", 415, "INVALID_ARGUMENT", "a content type or encoding the service does not read"),
    Refusal("too-many", 429, "RESOURCE_EXHAUSTED", "rate limited"),
    Refusal("unimplemented", 501, "UNIMPLEMENTED", "not served"),
    Refusal("unavailable", 503, "UNAVAILABLE", "no valid version, models still loading"),
)
BUSY = Refusal("busy", 503, "RESOURCE_EXHAUSTED", "the in-flight budget, a queue or the stream slots are full now "
               "(with Retry-After / grpc-retry-pushback-ms)")
INTERNAL = Refusal("internal", 500, "INTERNAL", "the service's own bug (logged; no detail to the client)")
BY_STATUS: dict[int, Refusal] = {refusal.http: refusal for refusal in REFUSALS}
WEBSOCKET_INTERNAL = 1011  # the WebSocket protocol's own "internal error"


def refusal_of(status: int, retry: bool = False) -> Refusal:
    """The class of an HTTP-style status; `retry`: the answer says when to retry (a 503 that is busy,
    not unavailable). An unlisted client error is a bad request, anything else internal."""
    if status == 503 and retry:
        return BUSY
    found = BY_STATUS.get(status)
    if found is not None:
        return found
    return BY_STATUS[400] if 400 <= status < 500 else INTERNAL


def websocket_close_code(status: int) -> int:
    refusal = refusal_of(status)
    return WEBSOCKET_INTERNAL if refusal is INTERNAL else refusal.websocket
