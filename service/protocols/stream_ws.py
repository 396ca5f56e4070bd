"""WebSocket `GET /smooth/stream`: streaming smoothing over one connection (raw ASGI).

    ws://HOST/smooth/stream?model=NAME&version=N&mode=causal      (each optional, as for /smooth)

The connection is accepted once the token (Authorization: Bearer, as every route), the query and
the model version check out and this worker has a stream slot; the handshake answer names the
pinned version (headers x-model, x-model-version, x-mode, x-kernel-size). Then per input frame one
answer frame, in the frame's format:
- binary: a `.npy` float32/float64 chunk [n], [C, n] or [B, C, n] (service.compute.shapes: every
  nesting one-shot /smooth takes) -> a `.npy` float32 in the same nesting, m samples (m may be 0);
- text: {"signal": [...] | [[...], ...] | [[[...]]]} -> {"model", "version", "smoothed": ...}, the same.
The text frame {"end": true} (it may carry a last "signal" too) ends the stream: its answer holds
the flushed tail (`.npy` when the stream's chunks were binary; JSON with "end": true otherwise),
then the server closes with 1000. The concatenation of the answers equals one-shot /smooth of the
whole signal (service.pipeline.streaming).

Every refusal is a close frame whose code is 4000 + the HTTP status /smooth would answer and whose
reason is the error message (cut to the protocol's 123 bytes): 4400 bad frame or state, 4401 token,
4404 unknown model or version, 4408 idle (no frame, or an answer not read, for
stream_idle_timeout_s), 4409 the pinned version no longer serves, 4413 over a per-request limit,
4503 no stream slot or the in-flight memory budget is full; 1009 (the protocol's own) for a frame
over stream_max_frame_bytes, refused by the WebSocket layer before it is read (service.server sets
uvicorn's ws_max_size). Memory: a stream reserves its tail and a fixed allowance for its
connection's buffers in the in-flight budget while it is open, each frame its body and working
arrays while it is answered. Backpressure: one frame is read at a time and its answer is sent
before the next is read; uvicorn stops reading the socket while a frame waits and a send waits
while the socket's write buffer is full, so a client that does not read its answers stalls its
own stream (closed after the idle timeout) and is never buffered without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson
from anyio import to_thread

from service.base import codec, deadlines, refusals
from service.compute import shapes
from service.protocols import native
from service.base.errors import (
    BadRequestError,
    ModelUnavailableError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ServiceError,
)
from service.compute.request import Limits
from service.pipeline.endpoint import asgi_headers, check_authorization, parse_query
from service.pipeline.streaming import SmoothStream, check_pinned, open_stream
from service.pipeline.stream_budget import StreamAccount

log = logging.getLogger(__name__)

PATH = "/smooth/stream"
QUERY = frozenset({"model", "version", "mode"})
FRAME_FIELDS = frozenset({"signal", "end"})
TRANSPORT = "websocket"
# Held in the in-flight budget by each open stream besides its tail: the connection's read frame
# and write buffer (uvicorn pauses writing above 64 KiB) and the session's objects.
CONNECTION_BYTES = 128 * 1024
# Working bytes per value of a frame: the decoded chunk, the tail + chunk copy, the engine's
# output and the encoded answer (service.protocols.native's per-value constants, plus the copy).
FRAME_BYTES_PER_VALUE = (native.NPY_BYTES_PER_VALUE + 4 + native.OUTPUT_BYTES_PER_VALUE
                         + native.ENCODED_BYTES_PER_VALUE[True])
JSON_FRAME_BYTES_PER_VALUE = (native.JSON_BYTES_PER_VALUE + 4 + native.OUTPUT_BYTES_PER_VALUE
                              + native.ENCODED_BYTES_PER_VALUE[False])
MAX_REASON_BYTES = 123

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class _Idle(Exception):
    """The client neither sent a frame nor read an answer within the idle timeout."""


def close_reason(message: str) -> str:
    data = message.encode("utf-8")
    if len(data) <= MAX_REASON_BYTES:
        return message
    return data[: MAX_REASON_BYTES - 3].decode("utf-8", "ignore") + "..."


def close_code(exc: BaseException) -> int:
    """4000 + the HTTP status (service.base.refusals' one table); 1011 for our own bug."""
    return refusals.websocket_close_code(exc.status) if isinstance(exc, ServiceError) else refusals.WEBSOCKET_INTERNAL


class _IdleTimer:
    """A session's idle deadline: one coarse deadline (service.deadlines) re-armed for each wait,
    not a timer, nor a new deadline object, per frame."""

    __slots__ = ("timeout_s", "sweeper", "deadline")

    def __init__(self, timeout_s: float):
        task = asyncio.current_task()
        assert task is not None
        self.timeout_s = timeout_s
        self.sweeper = deadlines.sweeper()
        self.deadline = self.sweeper.add(timeout_s, task.cancel)
        self.deadline.cancel()  # armed by each wait

    async def within(self, awaitable: Awaitable[Any]) -> Any:
        """`awaitable`, or _Idle after `timeout_s`."""
        deadline = self.deadline
        self.sweeper.rearm(deadline, self.timeout_s)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if not deadline.fired:
                raise
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()
            raise _Idle from None
        finally:
            deadline.cancel()


async def _within(awaitable: Awaitable[Any], timeout_s: float) -> Any:
    """`awaitable`, or _Idle after `timeout_s` (for a single wait; a session re-uses its _IdleTimer)."""
    return await _IdleTimer(timeout_s).within(awaitable)


def _decode_frame(message: dict[str, Any], limits: Limits) -> tuple[np.ndarray | None, bool, bool]:
    """(chunk or None, end requested, binary) from one websocket.receive message."""
    data = message.get("bytes")
    if data is not None:
        limits.reserve(len(data), "the frame")
        chunk = codec.decode_npy(data, "signal",
                                 admit=lambda count: limits.admit(count, FRAME_BYTES_PER_VALUE, "signal"))
        return chunk, False, True
    text = message.get("text")
    if text is None:
        raise BadRequestError("empty frame: send a .npy chunk (binary) or a JSON object (text)")
    limits.reserve(len(text), "the frame")
    body = text.encode()
    values, lists = codec.json_counts(body)  # the limits before parsing, as for a JSON /smooth body
    limits.admit(values, JSON_FRAME_BYTES_PER_VALUE, "signal", extra_bytes=lists * native.JSON_BYTES_PER_LIST)
    fast = codec.loads_with_array(body, "signal", lists)  # a big plain numeric array: straight into numpy
    if fast is not None:
        others, signal = fast
        native.unknown_fields({**others, "signal": None}, FRAME_FIELDS)
        end = others.get("end", False)
        if not isinstance(end, bool):
            raise BadRequestError(f"'end' must be true or false, got {str(end)[:40]}", field="end")
        return signal, end, False
    payload = codec.loads_object(body)
    native.unknown_fields(payload, FRAME_FIELDS)
    end = payload.get("end", False)
    if not isinstance(end, bool):
        raise BadRequestError(f"'end' must be true or false, got {str(end)[:40]}", field="end")
    if "signal" not in payload:
        if not end:
            raise BadRequestError("a text frame needs 'signal' (a [channels][samples] list) or \"end\": true",
                                  field="signal")
        return None, True, False
    return codec.to_float32(payload["signal"], "signal"), end, False


class StreamSession:
    """One WebSocket stream, from the handshake to the close."""

    def __init__(self, service: Any, scope: dict[str, Any], receive: Receive, send: Send):
        self.service, self.scope, self.receive, self.send = service, scope, receive, send
        self.settings, self.metrics = service.settings, service.metrics
        self.stream: SmoothStream | None = None
        # everything the stream holds at once is capped at its share of the budget (service.pipeline.stream_budget)
        self.account = StreamAccount.for_service(service)
        self.held = self.account.limits(service.settings)  # the stream's own reservation
        self.binary = False
        self.outcome = "disconnect"

    async def run(self) -> None:
        message = await self.receive()
        if message["type"] != "websocket.connect":
            return
        settings, hub = self.settings, self.service.streams
        try:
            check_authorization(settings, asgi_headers(self.scope["headers"]).get("authorization"))
            registry = self.service.registry
            if registry is None:
                raise ModelUnavailableError("models are still loading")
            query = parse_query(self.scope.get("query_string", b""), QUERY)
            mode = query.get("mode") or None
            stream = open_stream(registry, native.model_param(query.get("model")),
                                 native.version_param(query.get("version")), mode)
            hub.acquire()
        except Exception as exc:  # noqa: BLE001 - refused before the stream opened: accept, then close with why
            await self.send({"type": "websocket.accept"})
            await self._close(exc)
            return
        self.stream = stream
        gauge = self.metrics.streams_open.labels(TRANSPORT)
        gauge.inc()
        try:
            self.held.reserve(CONNECTION_BYTES, "a stream")
            manifest = stream.served.manifest
            await self.send({"type": "websocket.accept", "headers": [
                (b"x-model", manifest.name.encode()), (b"x-model-version", str(manifest.version).encode()),
                (b"x-mode", stream.mode.encode()), (b"x-kernel-size", str(stream.kernel_size).encode()),
                (b"x-max-frame-bytes", str(settings.stream_max_frame_bytes).encode())]})
            await self._frames()
        except Exception as exc:  # noqa: BLE001 - the stream's one error mapping
            await self._close(exc)
        finally:
            self.held.close()
            hub.release()
            gauge.dec()
            self.metrics.streams_closed.labels(TRANSPORT, self.outcome).inc()

    async def _frames(self) -> None:
        stream, settings, service = self.stream, self.settings, self.service
        assert stream is not None
        idle_s = settings.stream_idle_timeout_s
        frames = self.metrics.stream_frames.labels(TRANSPORT, stream.model)
        samples = self.metrics.stream_samples.labels(TRANSPORT, stream.model)
        method = settings.smooth_method
        idle = _IdleTimer(idle_s)
        while True:
            try:
                message = await idle.within(self.receive())
            except _Idle:
                raise RequestTimeoutError(f"no frame for {idle_s:g} s (MONOSERVE_STREAM_IDLE_TIMEOUT_S)") from None
            if message["type"] == "websocket.disconnect":
                self.outcome = "disconnect"
                return
            limits = self.account.limits(settings)
            try:
                size = len(message.get("bytes") or message.get("text") or "")
                if size > settings.stream_max_frame_bytes:  # uvicorn run without service.server's ws_max_size
                    raise PayloadTooLargeError(f"a frame of {size} bytes exceeds the limit of "
                                               f"{settings.stream_max_frame_bytes} bytes (MONOSERVE_STREAM_MAX_FRAME_BYTES)",
                                               limit=settings.stream_max_frame_bytes)
                chunk, end, binary = _decode_frame(message, limits)
                if chunk is not None:
                    chunk = stream.check_chunk(chunk)
                    shapes.check_length(chunk.shape[-1], settings.max_signal_length)
                    self.binary = binary
                    if stream.channels is None:  # the tail this stream will hold, from now on
                        self.held.reserve(stream.state_bytes_bound(shapes.rows_of(chunk.shape)), "the stream's state")
                check_pinned(service.registry, stream)  # 409 once the pinned version is gone
                out = await self._compute(stream, chunk, end, method)
                if chunk is not None:
                    frames.inc()
                    samples.inc(chunk.shape[-1])
                answer = self._encode(stream, out, end, binary or (end and chunk is None and self.binary))
            finally:
                limits.close()
            try:
                await idle.within(self.send(answer))
            except _Idle:
                # The client does not read: the session ends (its slot and budget come back); the
                # close frame cannot be written past the full buffer, so none is sent.
                self.outcome = "not-reading"
                log.info("closing a stream whose client did not read an answer for %g s", idle_s)
                return
            if end:
                self.outcome = "ended"
                await self.send({"type": "websocket.close", "code": 1000, "reason": "end of stream"})
                return
            # Fairness: frames already buffered are read without suspending; yield once per frame so
            # other clients' requests run between two frames of a flooding stream (bench/stream_fairness.py).
            await asyncio.sleep(0)

    async def _compute(self, stream: SmoothStream, chunk: np.ndarray | None, end: bool, method: str) -> np.ndarray:
        samples = 0 if chunk is None else chunk.shape[-1]
        settings = self.settings
        inline = stream.served.predicted_seconds(stream.work_elements(samples)) * 1e6 <= settings.inline_max_inference_us
        if inline:
            return stream.step(chunk, end, method, True)
        return await to_thread.run_sync(stream.step, chunk, end, method, True, limiter=self.service.limiter)

    @staticmethod
    def _encode(stream: SmoothStream, out: np.ndarray, end: bool, binary: bool) -> dict[str, Any]:
        if binary:
            return {"type": "websocket.send", "bytes": codec.encode_npy(out)}
        manifest = stream.served.manifest
        body: dict[str, Any] = {"model": manifest.name, "version": manifest.version,
                                "smoothed": np.ascontiguousarray(out)}
        if end:
            body["end"] = True
        return {"type": "websocket.send", "text": orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY).decode()}

    async def _close(self, exc: BaseException) -> None:
        code = close_code(exc)
        if code == 1011:
            log.error("unexpected error in a stream", exc_info=exc)
            reason = f"internal server error ({type(exc).__name__})"
        else:
            log.debug("stream closed with %d: %s", code, exc)
            reason = exc.message  # type: ignore[attr-defined]
        self.outcome = str(code)
        try:
            await _within(self.send({"type": "websocket.close", "code": code, "reason": close_reason(reason)}),
                          self.settings.stream_idle_timeout_s)
        except (_Idle, OSError):
            pass
        except Exception:  # noqa: BLE001 - the client is gone (uvicorn's ClientDisconnected): nobody to tell
            pass


def is_stream(scope: dict[str, Any]) -> bool:
    return scope["type"] == "websocket" and scope["path"] == PATH


async def serve_stream(service: Any, scope: dict[str, Any], receive: Receive, send: Send) -> None:
    await StreamSession(service, scope, receive, send).run()
