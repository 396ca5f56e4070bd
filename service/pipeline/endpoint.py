"""One endpoint pipeline for every inference route, free of web-framework types.

Every inference request, whichever protocol carries it and whichever server layer received it
(the ASGI fast path in service.edge.fastpath, the FastAPI routes in service.edge.routes.predict, the Open
Inference Protocol routes), goes through `handle()`:

    token check -> Content-Encoding check -> strict query parse -> body read (size, in-flight
    budget, read timeout) -> adapter.decode (limits counted before arrays are allocated) ->
    resolve the model version -> kind.prepare (shape, mode, features) -> infer (inline, worker
    thread, or the dynamic batcher) -> kind.result -> adapter.encode -> Reply

and every failure on the way becomes one `Reply` through one error mapping (`error_reply`):
`{"error": message, ...}` with the exception's status, never a traceback for a client's mistake.

Plugging in a protocol: write a `ProtocolAdapter`, i.e. an object with
- `route`: the metrics label (e.g. "/smooth", "/v2/models/{name}/infer");
- `query`: the query parameter names it accepts (any other name is a 400);
- `decode(body, headers, query, limits) -> InferRequest`: the body as numpy arrays plus params.
  It must count the values it is about to allocate with `limits.admit(...)` *before* allocating
  them (the codec helpers do: `codec.decode_npy`, `codec.json_counts`);
- `encode(result: InferResult, request: InferRequest) -> Encoded`: bytes, media type, headers;
- optionally `working_ratio(headers) -> float`: working bytes per body byte, when the format makes
  it predictable (.npy); reserved with the body, before reading it.
Then call `await handle(service, adapter, receive, headers, query_string)`; path parameters (a
model name in the URL) go into the adapter instance or the decoded `InferRequest.model`.

Model kinds are plugged the same way: one `ModelKind` per kind (service.compute.kinds, the one registry
of kinds that the prover uses too: smoother, classifier) supplies `prepare`, `work`, `infer`,
`result`; the pipeline never branches on kind. An adapter may hand a request its own `ModelKind`
in `InferRequest.context["kind"]` (a step of a stream on a smoother: service.protocols.stream_http for
/smooth with a carried state, service.protocols.grpc_stream for a gRPC sequence), optionally with its own
`resolve` (the version a stream is pinned to), still limited and answered here.
Limits, resolution, inference (with batching), metrics and errors are shared by all protocols.

A little over 500 lines on purpose: the stages above, in the order a request meets them, in one
module (the shared types went down to service.compute.request, the handle to
service.pipeline.service, the token parser to service.pipeline.control).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl

import numpy as np
from anyio import to_thread

from service.base import codec, context as request_context, deadlines
from service.base.extensions import BODY_INTO, BodyInto, BodyReady
from service.pipeline.batching import DynamicBatcher, QueueFullError
from service.pipeline.control import bearer_token
from service.base.errors import (
    BadRequestError,
    ModelUnavailableError,
    OverloadedError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ServiceError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
)
from service.base.metrics import UNKNOWN_MODEL
from service.compute.kinds import SERVICE_KINDS
from service.compute.request import InferRequest, InferResult, Limits

if TYPE_CHECKING:  # only for annotations
    from service.compute.version import ProvenVersion
    from service.pipeline.service import Service

log = logging.getLogger(__name__)

Receive = Callable[[], Awaitable[dict[str, Any]]]


# -- what adapters and kinds exchange ---------------------------------------------------------
@dataclass
class Encoded:
    body: bytes | codec.Chunks  # Chunks: a large answer's parts, sent without a join (send_reply)
    media_type: str
    headers: dict[str, str] | None = None


class ProtocolAdapter(Protocol):
    route: str
    query: frozenset[str]
    batching: bool  # optional (default True): small requests may join the dynamic batcher

    def decode(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str], limits: Limits) -> InferRequest: ...

    def encode(self, result: InferResult, request: InferRequest) -> Encoded: ...


class ModelKind(Protocol):
    name: str
    batchable: bool  # small requests may share an engine call through the dynamic batcher

    def prepare(self, served: ProvenVersion, request: InferRequest, limits: Limits) -> Any: ...

    def work(self, call: Any) -> int: ...

    def infer(self, call: Any, settings: Any) -> np.ndarray: ...

    def batch_input(self, call: Any) -> np.ndarray: ...

    def result(self, call: Any, output: np.ndarray) -> InferResult: ...


@dataclass
class Reply:
    status: int
    body: bytes | codec.Chunks
    media_type: str
    headers: dict[str, str] | None = None


# -- the HTTP parts every protocol shares -----------------------------------------------------
class ClientDisconnected(Exception):
    """The client went away before its whole body arrived: there is no one to answer."""


def parse_query(query_string: bytes | str, allowed: frozenset[str]) -> dict[str, str]:
    """The query string as a dict; an unknown or repeated name is a 400 (like an unknown JSON field)."""
    if not query_string:
        return {}
    text = query_string.decode("latin-1") if isinstance(query_string, bytes) else query_string
    params: dict[str, str] = {}
    for name, value in parse_qsl(text, keep_blank_values=True):
        if name not in allowed:
            raise BadRequestError(f"unknown query parameter {name!r}; expected {sorted(allowed)}", parameter=name)
        if name in params:
            raise BadRequestError(f"query parameter {name!r} given more than once", parameter=name)
        params[name] = value
    return params


def check_content_encoding(value: str | None) -> None:
    """Compressed bodies are refused by name (decompressing would bypass the size limits)."""
    if value and value.strip().lower() not in ("identity", ""):
        raise UnsupportedMediaTypeError(
            f"Content-Encoding {value.strip()!r} is not supported: send the body uncompressed (identity)",
            content_encoding=value.strip())


async def read_body(receive: Receive, declared_length: str | None, max_bytes: int, timeout_s: float, limits: Limits,
                    working_ratio: float = 0.0, min_rate: float = 0.0, body_into: BodyInto | None = None,
                    body_ready: BodyReady | None = None) -> bytes:
    """The whole body, within `max_bytes` (413, before reading when the length is declared), within
    its deadline (408), with its bytes reserved in the in-flight budget first (503).

    The deadline is `timeout_s` from the start, pushed back by `received / min_rate` as bytes
    arrive: a body still arriving at `min_rate` bytes/s or faster on average is never cut off, and
    one that stalls or dribbles is cut off `timeout_s` after it started (0: the whole body within
    `timeout_s`). So no body holds its reservation for more than `timeout_s + max_bytes / min_rate`.

    A declared length is read into one preallocated buffer (no list of chunks joined at the end,
    which would hold the body twice); with `body_into` (the HTTP server's extension,
    service.edge.http), the bytes after the first chunk go from the socket straight into it; with
    `body_ready` (the same server's hot lane), a body that has already arrived whole is taken as it
    is, with no deadline to arm and no receive() to await."""
    size: int | None = None
    if declared_length is not None:
        try:
            size = int(declared_length)
        except ValueError:
            raise BadRequestError(f"invalid Content-Length {declared_length!r}") from None
        if size < 0:
            raise BadRequestError(f"invalid Content-Length {declared_length!r}")
        if size > max_bytes:
            raise PayloadTooLargeError(f"request body of {size} bytes exceeds the limit of {max_bytes} bytes",
                                       limit=max_bytes, headers={"Connection": "close"})
        # the body, and the working memory its format predicts (service.protocols.native: .npy), in one go: a
        # request admitted to read its body is not refused after reading it
        working = int(size * working_ratio)
        limits.reserve(size + working, "the request body")
        limits.prepaid = working
        if body_ready is not None:
            body = body_ready()
            if body is not None:
                if len(body) != size:
                    raise BadRequestError(f"request body is {len(body)} bytes, its Content-Length says {size}")
                return body
    # One coarse timer for every request's body deadline (service.base.deadlines): asyncio.timeout here
    # cost 5-12 us per request, a tenth of a small request's whole CPU time.
    task = asyncio.current_task()
    assert task is not None
    deadline = deadlines.sweeper().add(timeout_s, task.cancel)
    extend = _Extension(deadline, min_rate) if min_rate > 0 else None
    try:
        body = await _receive_all(receive, size, max_bytes, limits, extend, body_into)
    except asyncio.CancelledError:
        if not deadline.fired:
            raise  # cancelled by someone else (shutdown)
        task.uncancel()
        raise _body_timeout(timeout_s, min_rate) from None
    finally:
        deadline.cancel()
    if deadline.fired:  # the body completed in the same loop iteration the deadline fired: absorb the cancel
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            task.uncancel()
        raise _body_timeout(timeout_s, min_rate)
    return body


def _body_timeout(timeout_s: float, min_rate: float) -> RequestTimeoutError:
    after = f", nor kept up {min_rate:g} bytes/s after that" if min_rate > 0 else ""
    return RequestTimeoutError(f"the request body did not arrive within {timeout_s:g} s{after}",
                               limit_s=timeout_s, headers={"Connection": "close"})


class _Extension:
    """Pushes a body deadline back by the time `received` bytes take at the minimum rate."""

    __slots__ = ("deadline", "base", "min_rate")

    def __init__(self, deadline: deadlines.Deadline, min_rate: float):
        self.deadline, self.base, self.min_rate = deadline, deadline.when, min_rate

    def __call__(self, received: int) -> None:
        self.deadline.when = self.base + received / self.min_rate


async def _receive_all(receive: Receive, size: int | None, max_bytes: int, limits: Limits,
                       extend: Callable[[int], None] | None = None, body_into: BodyInto | None = None) -> bytes:
    if size is not None:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        if len(chunk) == size and not message.get("more_body", False):  # the whole body at once: no copy
            return chunk
        buffer = bytearray(size)
        position = 0
        while True:
            if chunk:
                end = position + len(chunk)
                if end > size:
                    raise BadRequestError(f"request body is longer than its Content-Length of {size} bytes",
                                          headers={"Connection": "close"})
                buffer[position:end] = chunk
                position = end
                if extend is not None:
                    extend(position)
            if not message.get("more_body", False):
                break
            if body_into is not None and position < size:  # the rest, straight from the socket
                start = position
                step = None if extend is None else (lambda count: extend(start + count))
                position += await body_into(memoryview(buffer)[position:], step)
                if position < size:
                    raise ClientDisconnected
                break
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            chunk = message.get("body", b"")
        if position != size:
            raise BadRequestError(f"request body is {position} bytes, its Content-Length says {size}")
        return buffer if size > 65536 else bytes(buffer)  # small: bytes, which hash and slice cheaply
    chunks: list[bytes] = []  # chunked transfer: count and reserve as it arrives
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        if chunk:
            total += len(chunk)
            if total > max_bytes:
                raise PayloadTooLargeError(f"request body exceeds the limit of {max_bytes} bytes", limit=max_bytes,
                                           headers={"Connection": "close"})
            limits.reserve(len(chunk), "the request body")
            chunks.append(chunk)
            if extend is not None:
                extend(total)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def check_authorization(settings: Any, authorization: str | None) -> None:
    """When MONOSERVE_API_TOKEN is set, requests must send `Authorization: Bearer <token>` (constant-time compare)."""
    token = settings.api_token
    if token is None:
        return
    given = bearer_token(authorization, "missing API token: send 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(given, token.get_secret_value().encode()):
        raise UnauthorizedError("wrong API token", headers={"WWW-Authenticate": "Bearer"})


# -- errors -----------------------------------------------------------------------------------
def _dumps_error(body: dict[str, Any]) -> bytes:
    try:
        return codec.dumps(body)
    except TypeError:  # e.g. an integer beyond 64 bits echoed from the request: never a 500 for that
        return json.dumps(body, default=str).encode()


def error_reply(exc: BaseException, route: str) -> Reply:
    """The one mapping from an exception to an answer: ServiceError -> its status and body;
    anything else is our bug: 500, logged with its traceback (client errors are not)."""
    if isinstance(exc, ServiceError):
        log.debug("%s: %d %s", route, exc.status, exc.message)
        status, body, headers = exc.status, exc.body(), exc.headers
    else:
        log.error("unexpected error on POST %s", route, exc_info=exc)
        status, body, headers = 500, {"error": f"internal server error ({type(exc).__name__})"}, None
    request_id = request_context.current_id()
    if request_id is not None:
        body["request_id"] = request_id
    return Reply(status, _dumps_error(body), codec.JSON_MEDIA_TYPE, headers)


# -- the pipeline -----------------------------------------------------------------------------
def _kind_of(registry: Any, name: str | None) -> str:
    """The kind of a named model, for protocols whose route serves any kind (OIP)."""
    if not name:
        raise BadRequestError("name the model to run")
    kind = registry.model(name).kind  # unknown name: 404
    if kind not in _kinds():
        raise ModelUnavailableError(f"model {name!r} has no version that can serve", model=name)
    return kind


def _kinds() -> Mapping[str, ModelKind]:
    return SERVICE_KINDS


async def handle(service: Service, adapter: ProtocolAdapter, receive: Receive, headers: Mapping[str, str],
                 query_string: bytes | str, limits: Limits | None = None, body_into: BodyInto | None = None,
                 body_ready: BodyReady | None = None) -> Reply | None:
    """Answer one request end to end; None when the client went away before its body arrived.

    `headers`: lower-case names (only content-type, content-length, content-encoding, accept and
    authorization are read, and inference-header-content-length by OIP). `limits`: the request's
    own (a stream's message: its stream's share of the budget, service.pipeline.stream_budget); closed here."""
    settings, metrics = service.settings, service.metrics
    model = UNKNOWN_MODEL
    context = request_context.CURRENT.get()
    marks = context.marks if context is not None else None  # None unless tracing is on (service.base.tracing)
    if limits is None:
        limits = Limits(service.budget, settings.max_elements, settings.max_rows, settings.max_signal_length)
    try:
        check_authorization(settings, headers.get("authorization"))
        registry = service.registry
        if registry is None:
            raise ModelUnavailableError("models are still loading")
        check_content_encoding(headers.get("content-encoding"))
        query = parse_query(query_string, adapter.query)
        working_ratio = getattr(adapter, "working_ratio", None)
        read_start = time.perf_counter_ns() if marks is not None else 0
        body = await read_body(receive, headers.get("content-length"), settings.max_body_bytes, settings.body_timeout_s,
                               limits, working_ratio(headers) if working_ratio is not None else 0.0,
                               settings.body_min_rate_bytes_s, body_into, body_ready)
        if marks is not None:
            marks.append(("read", read_start, time.perf_counter_ns()))
        encoded, model = await _run(service, adapter, body, headers, query, limits, context)
        reply = Reply(200, encoded.body, encoded.media_type, encoded.headers)
    except ClientDisconnected:
        metrics.count_request(adapter.route, model, 499)  # nginx's "client closed request"
        return None
    except Exception as exc:  # noqa: BLE001 - the one error mapping
        model = getattr(exc, "_monoserve_model", model)
        reply = error_reply(exc, adapter.route)
    finally:
        limits.close()
    metrics.count_request(adapter.route, model, reply.status)
    return reply


class _Progress:
    """What one request's stages did: the model they resolved (for the metrics of a failure too) and
    their durations, observed into the metrics on the event loop thread once the request is done."""

    __slots__ = ("model", "decode_s", "inference_s", "encode_s", "context", "marks")

    def __init__(self, context: Any = None) -> None:
        self.model: str | None = None
        self.decode_s = self.inference_s = self.encode_s = -1.0  # -1: the stage did not complete
        self.context = context  # the request's service.base.context.RequestContext (None outside a request)
        # the tracing stage marks (service.base.tracing), None when tracing is off
        self.marks = context.marks if context is not None else None

    def observe(self, metrics: Any, route: str) -> None:
        metrics.observe_stages(route, self.decode_s, self.inference_s, self.encode_s)


def _decode(service: Service, adapter: ProtocolAdapter, body: bytes, headers: Mapping[str, str],
            query: Mapping[str, str], limits: Limits, progress: _Progress) -> tuple[ModelKind, Any, InferRequest]:
    start = time.perf_counter()
    request = adapter.decode(body, headers, query, limits)
    marks = progress.marks
    if marks is not None:
        decoded = time.perf_counter_ns()
        marks.append(("decode", int(start * 1e9), decoded))
    registry = service.registry
    kind_name = request.kind or _kind_of(registry, request.model)
    kind = request.context.get("kind") or _kinds()[kind_name]  # an adapter's own, for a request that needs one
    # An adapter that had to resolve the version to decode (OIP: its input's name) hands it over: resolving
    # again would cost as much again, and could find another version if one were published in between.
    served = request.context.get("served")
    if served is None:
        resolve = getattr(kind, "resolve", None)  # a kind may resolve by itself (a stream: the version its state pins)
        served = resolve(service, request) if resolve is not None else registry.resolve(kind_name, request.model, request.version)
    progress.model = served.manifest.name
    context = progress.context
    if context is not None:  # for the request's log lines and span (service.base.context)
        context.model, context.version = served.manifest.name, served.manifest.version
    call = kind.prepare(served, request, limits)
    progress.decode_s = time.perf_counter() - start
    if marks is not None:
        marks.append(("resolve", decoded, time.perf_counter_ns()))
    return kind, call, request


def _infer(kind: ModelKind, call: Any, settings: Any, progress: _Progress) -> np.ndarray:
    start = time.perf_counter()
    output = kind.infer(call, settings)
    progress.inference_s = time.perf_counter() - start
    if progress.marks is not None:
        progress.marks.append(("infer", int(start * 1e9), time.perf_counter_ns()))
    return output


def _encode(adapter: ProtocolAdapter, kind: ModelKind, call: Any, request: InferRequest, output: np.ndarray,
            progress: _Progress) -> Encoded:
    start = time.perf_counter()
    encoded = adapter.encode(kind.result(call, output), request)
    progress.encode_s = time.perf_counter() - start
    if progress.marks is not None:
        progress.marks.append(("encode", int(start * 1e9), time.perf_counter_ns()))
    return encoded


def _whole(service: Service, adapter: ProtocolAdapter, body: bytes, headers: Mapping[str, str],
           query: Mapping[str, str], limits: Limits, progress: _Progress) -> Encoded:
    kind, call, request = _decode(service, adapter, body, headers, query, limits, progress)
    return _encode(adapter, kind, call, request, _infer(kind, call, service.settings, progress), progress)


async def _run(service: Service, adapter: ProtocolAdapter, body: bytes, headers: Mapping[str, str],
               query: Mapping[str, str], limits: Limits, context: Any = None) -> tuple[Encoded, str]:
    """decode -> resolve -> prepare -> infer -> result -> encode, each stage timed into the metrics.

    Big bodies are decoded, inferred and encoded in one worker-thread call. Small ones are decoded
    inline; their inference goes to the dynamic batcher (batchable kinds, requests smaller than a
    batch), or runs inline when predicted to be short, or in a worker thread.
    """
    settings = service.settings
    progress = _Progress(context)
    marks = progress.marks
    try:
        if len(body) > settings.inline_max_body_bytes:
            encoded = await to_thread.run_sync(_whole, service, adapter, body, headers, query, limits, progress,
                                               limiter=service.limiter)
        else:
            kind, call, request = _decode(service, adapter, body, headers, query, limits, progress)
            batcher = batcher_for(service, kind, call) if kind.batchable and getattr(adapter, "batching", True) else None
            if batcher is not None:
                start = time.perf_counter()
                try:  # the queue wait + the shared engine call
                    output = await batcher.submit(kind.batch_input(call))
                except QueueFullError as exc:
                    raise OverloadedError(str(exc), headers={"Retry-After": exc.retry_after_header},
                                          queued_rows=exc.queued_rows, limit=exc.limit) from None
                progress.inference_s = time.perf_counter() - start
                if marks is not None:
                    marks.append(("batch", int(start * 1e9), time.perf_counter_ns()))
            elif call.served.predicted_seconds(kind.work(call)) * 1e6 <= settings.inline_max_inference_us:
                output = _infer(kind, call, settings, progress)
            else:
                output = await to_thread.run_sync(_infer, kind, call, settings, progress, limiter=service.limiter)
            encoded = _encode(adapter, kind, call, request, output, progress)
    except Exception as exc:
        if progress.model is not None:  # the error metrics carry the model that was resolved
            try:
                exc._monoserve_model = progress.model  # type: ignore[attr-defined]
            except AttributeError:
                pass
        raise
    finally:
        progress.observe(service.metrics, adapter.route)  # here, on the event loop thread
    assert progress.model is not None
    return encoded, progress.model


def batcher_for(service: Service, kind: ModelKind, call: Any):
    """The dynamic batcher of the version serving `call`; None when batching is off or the request
    is as big as a batch (it gains nothing from the queue, and 64 of them would fill it)."""
    settings = service.settings
    features = kind.batch_input(call)
    if not settings.batching or features.shape[0] >= settings.max_batch_size:
        return None
    served = call.served
    batcher = service.batchers.get(id(served))
    if batcher is None:
        limiter = service.limiter

        async def offload(run, batch):
            return await to_thread.run_sync(run, batch, limiter=limiter)

        # Batches predicted to run within inline_max_inference_us run inline, bigger ones in a thread.
        fixed, per_element = served.predicted_seconds(0), served.predicted_seconds(1) - served.predicted_seconds(0)
        budget = settings.inline_max_inference_us * 1e-6 - fixed
        width = max(1, int(features.shape[1]))
        inline_rows = int(budget / (per_element * width)) if per_element > 0 else settings.max_batch_size
        batcher = service.batchers[id(served)] = DynamicBatcher(
            served.engine.run, max_batch_size=settings.max_batch_size, max_queue_delay_us=settings.max_queue_delay_us,
            max_queue_size=settings.max_queue_size, inline_max_rows=max(1, inline_rows), offload=offload,
            on_batch=service.metrics.batch_rows.labels(served.manifest.name).observe)
    return batcher


# -- ASGI -------------------------------------------------------------------------------------
_WANTED_HEADERS = frozenset({b"content-type", b"content-length", b"content-encoding", b"accept", b"authorization",
                             b"inference-header-content-length",  # OIP's binary extension (service.protocols.oip)
                             request_context.HEADER_BYTES, b"traceparent", b"tracestate",
                             b"x-stream-state"})  # service.protocols.stream_http


def asgi_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The headers the pipeline reads, from ASGI's list of (lower-case name, value) byte pairs."""
    return {key.decode("latin-1"): value.decode("latin-1") for key, value in raw if key in _WANTED_HEADERS}


def body_bytes(body: bytes | codec.Chunks) -> bytes:
    """A reply's body as one object (a layer that cannot send parts: FastAPI's Response)."""
    return bytes(body) if isinstance(body, codec.Chunks) else body


async def send_reply(send: Callable[[dict[str, Any]], Awaitable[None]], reply: Reply, request_id: str | None = None) -> None:
    raw_headers = [(b"content-length", str(len(reply.body)).encode()), (b"content-type", reply.media_type.encode("latin-1"))]
    if request_id is not None:
        raw_headers.append((request_context.HEADER_BYTES, request_id.encode("latin-1")))
    if reply.headers:
        raw_headers += [(name.lower().encode("latin-1"), str(value).encode("latin-1")) for name, value in reply.headers.items()]
    await send({"type": "http.response.start", "status": reply.status, "headers": raw_headers})
    body = reply.body
    if isinstance(body, codec.Chunks):  # each part written from its own memory, none joined
        *parts, last = body.parts
        for part in parts:
            await send({"type": "http.response.body", "body": part, "more_body": True})
        body = last
    await send({"type": "http.response.body", "body": body})


ReplyWriter = Callable[[Reply, "str | None"], Awaitable[None]]


async def serve(service: Service, adapter: ProtocolAdapter, raw_headers: list[tuple[bytes, bytes]], path: str,
                query_string: bytes, receive: Receive, body_into: BodyInto | None, write_reply: ReplyWriter,
                body_ready: BodyReady | None = None) -> None:
    """One POST request from an HTTP server layer: its request ID and context, `handle`, then the
    reply through `write_reply(reply, request_id)`. `raw_headers`: ASGI's (lower-case name, value)
    pairs. The ASGI hot path (serve_asgi) and the HTTP protocol's own hot lane (service.edge.http)
    differ only in how they receive and write."""
    headers = asgi_headers(raw_headers)
    context = request_context.begin(request_context.accept(headers.get(request_context.HEADER)))
    reply = await handle(service, adapter, receive, headers, query_string, None, body_into, body_ready)
    if reply is not None:
        context.status = reply.status
        await write_reply(reply, context.id)
    else:
        context.status = 499  # the client went away
    request_context.finish(context, "POST", path, lambda: (adapter.route, headers))


async def serve_asgi(service: Service, adapter: ProtocolAdapter, scope: dict[str, Any], receive: Receive,
                     send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    extensions = scope.get("extensions")
    body_into = extensions.get(BODY_INTO) if extensions is not None else None

    async def write_reply(reply: Reply, request_id: str | None) -> None:
        await send_reply(send, reply, request_id)

    await serve(service, adapter, scope["headers"], scope["path"], scope.get("query_string", b""), receive, body_into,
                write_reply)
