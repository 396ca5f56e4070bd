"""The hot path: POST /smooth and POST /classify answered ahead of FastAPI's request handling.

FastAPI's own per-request machinery (its middleware stack, routing, dependency solving, Request
and Response objects) costs more than a whole small classification (docs/performance.md:
about 130 us of CPU per request for a FastAPI endpoint that returns a constant). `MonoserveApp`
(service.app) hands these two routes to `answer_hot`, which reads the ASGI messages itself and runs
the very code the FastAPI routes run (`service.routes.predict.answer`: decode, infer, encode,
metrics), with the same token check and the same error bodies. Every other request, and these
paths with another method, goes through FastAPI unchanged. The FastAPI routes still document the
API in /docs and serve these requests when the hot path is off (MONOSERVE_HOT_PATH=false); the
tests send the same requests both ways and compare the answers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

from service import codec, inference
from service.errors import BadRequestError, ModelUnavailableError, PayloadTooLargeError, ServiceError
from service.metrics import UNKNOWN_MODEL
from service.routes.deps import Service, check_authorization
from service.routes.predict import answer

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

HOT_ROUTES = frozenset({"/smooth", "/classify"})
_WANTED_HEADERS = frozenset({b"content-type", b"content-length", b"accept", b"authorization"})


class ClientDisconnected(Exception):
    """The client went away before its whole body arrived: there is no one to answer."""


def is_hot(scope: Scope) -> bool:
    return scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in HOT_ROUTES


def _headers(scope: Scope) -> dict[bytes, str]:
    found: dict[bytes, str] = {}
    for key, value in scope["headers"]:  # ASGI: lower-case names, bytes
        if key in _WANTED_HEADERS:
            found[key] = value.decode("latin-1")
    return found


async def read_body(receive: Receive, declared_length: str | None, limit: int) -> bytes:
    """The whole body; more than `limit` bytes is a 413, before reading it when its length is declared."""
    if declared_length is not None:
        try:
            size = int(declared_length)
        except ValueError:
            raise BadRequestError(f"invalid Content-Length {declared_length!r}") from None
        if size > limit:
            raise PayloadTooLargeError(f"request body of {size} bytes exceeds the limit of {limit} bytes", limit=limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(f"request body exceeds the limit of {limit} bytes", limit=limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def query_params(scope: Scope) -> dict[str, str]:
    """The query string as a dict, the last value of a repeated name winning (as Starlette's)."""
    raw = scope.get("query_string", b"")
    return dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True)) if raw else {}


async def send_response(send: Send, status: int, body: bytes, media_type: str, headers: dict[str, str] | None) -> None:
    raw_headers = [(b"content-length", str(len(body)).encode()), (b"content-type", media_type.encode("latin-1"))]
    if headers:
        raw_headers += [(name.lower().encode("latin-1"), str(value).encode("latin-1")) for name, value in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


async def answer_hot(service: Service, scope: Scope, receive: Receive, send: Send) -> None:
    """POST /smooth or /classify, end to end, as the FastAPI routes answer them."""
    settings, metrics = service.settings, service.metrics
    route = scope["path"]
    model = [UNKNOWN_MODEL]  # set once decode has resolved the model: error metrics carry it

    def on_model(name: str) -> None:
        model[0] = name

    try:
        headers = _headers(scope)
        check_authorization(settings, headers.get(b"authorization"))
        registry = service.registry
        if registry is None:
            raise ModelUnavailableError("models are still loading")
        body = await read_body(receive, headers.get(b"content-length"), settings.max_body_bytes)
        content_type = headers.get(b"content-type")
        query = query_params(scope)
        if route == "/smooth":
            max_length = settings.max_signal_length
            encoded = await answer(
                service, route, body, headers.get(b"accept"), on_model,
                lambda data: inference.decode_smooth(registry, data, content_type, query, max_length),
                inference.smooth_work, partial(inference.infer_smooth, method=settings.smooth_method),
                inference.encode_smooth,
            )  # fmt: skip
        else:
            encoded = await answer(
                service, route, body, headers.get(b"accept"), on_model,
                lambda data: inference.decode_classify(registry, data, content_type, query),
                inference.classify_work, inference.infer_classify, inference.encode_classify,
            )  # fmt: skip
    except ClientDisconnected:
        return
    except ServiceError as exc:
        metrics.count_request(route, model[0], exc.status)
        await send_response(send, exc.status, codec.dumps(exc.body()), codec.JSON_MEDIA_TYPE, exc.headers)
        return
    except Exception as exc:  # the FastAPI app's catch-all answers the same
        log.exception("unexpected error on POST %s", route)
        metrics.count_request(route, model[0], 500)
        error = codec.dumps({"error": f"internal server error ({type(exc).__name__})"})
        await send_response(send, 500, error, codec.JSON_MEDIA_TYPE, None)
        return
    await send_response(send, 200, encoded.body, encoded.media_type, encoded.headers)
