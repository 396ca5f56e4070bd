"""Streaming smoothing over plain HTTP: POST /smooth with a carried state (service.pipeline.streaming).

For clients that cannot keep a connection open, and so that any worker or replica sharing the
stream secret can answer the next chunk. The pipeline (service.pipeline.endpoint) runs these requests like
any /smooth request (token, limits, budget, inline or thread inference, one error mapping); this
model kind only resolves the stream (a new one, or the one a state continues) and runs one step.

- start: JSON {"signal": [[...]], "stream": true, "model"?, "version"?, "mode"?}, or a `.npy` body
  with the query `?stream=true` (and model/version/mode as query parameters);
- next: JSON {"signal": [[...]], "state": "<the previous answer's state>"}, or `.npy` with the
  header `X-Stream-State: <state>`;
- last: the same with "end": true (query `?end=true` for `.npy`); "signal" may be left out then.
Answers: JSON {"model", "version", "mode", "smoothed", "state" (absent after the end), "end"}, or
`.npy` with the headers x-model, x-model-version, x-mode, x-stream-state (absent after the end) and
x-stream-end. A state is a 400 when forged, altered, expired, or for another model, version, mode
or channel count than the request names; a 409 when its version no longer serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from service.base.errors import BadRequestError
from service.compute import shapes
from service.compute.request import InferRequest, InferResult, Limits
from service.pipeline.streaming import SmoothStream, StateCodec, resume

STATE_HEADER = "x-stream-state"
TRANSPORT = "http"


def flag(value: Any, name: str) -> bool:
    """A JSON boolean, or a query parameter's "true"/"false"/"1"/"0"."""
    if value is None or value is False:
        return False
    if value is True:
        return True
    if isinstance(value, str) and value.lower() in ("true", "1", "false", "0"):
        return value.lower() in ("true", "1")
    raise BadRequestError(f"'{name}' must be true or false, got {str(value)[:40]!r}", field=name)


@dataclass
class StreamCall:
    stream: SmoothStream
    chunk: np.ndarray | None  # [n], [C, n] or [B, C, n] float32, or None (an end with no new samples)
    end: bool
    codec: StateCodec
    metrics: Any

    @property
    def served(self):
        return self.stream.served


class SmoothStreamKind:
    """The pipeline's model kind for /smooth requests that start or continue a stream."""

    name = "smoother"
    batchable = False

    def resolve(self, service: Any, request: InferRequest) -> Any:
        """The stream's pinned version: a new stream's from (model, version), else the state's (409 gone)."""
        codec = service.streams.codec
        stream_context = request.context["stream"]
        token = stream_context["state"]
        mode = request.params.get("mode")
        if token is None:
            stream = SmoothStream.open(service.registry.resolve("smoother", request.model, request.version), mode)
        else:
            stream = resume(service.registry, codec.unseal(token), request.model, request.version, mode)
        stream_context["stream"], stream_context["codec"] = stream, codec
        stream_context["metrics"] = service.metrics
        return stream.served

    def prepare(self, served: Any, request: InferRequest, limits: Limits) -> StreamCall:
        context = request.context["stream"]
        stream: SmoothStream = context["stream"]
        chunk = request.inputs
        if chunk is not None:
            chunk = stream.check_chunk(chunk)
            shapes.check_length(chunk.shape[-1], limits.max_signal_length)
        elif not context["end"]:
            raise BadRequestError("missing the signal to smooth (only the request that ends a stream may leave it out)",
                                  field="signal")
        return StreamCall(stream, chunk, context["end"], context["codec"], context["metrics"])

    def work(self, call: StreamCall) -> int:
        return call.stream.work_elements(0 if call.chunk is None else call.chunk.shape[-1])

    def infer(self, call: StreamCall, settings: Any) -> np.ndarray:
        return call.stream.step(call.chunk, call.end, settings.smooth_method, checked=True)  # checked in prepare

    def batch_input(self, call: StreamCall) -> np.ndarray:
        raise NotImplementedError("streams are not batched")

    def result(self, call: StreamCall, output: np.ndarray) -> InferResult:
        stream = call.stream
        state = None if call.end else call.codec.seal(stream)
        call.metrics.stream_frames.labels(TRANSPORT, stream.model).inc()
        if call.chunk is not None:
            call.metrics.stream_samples.labels(TRANSPORT, stream.model).inc(call.chunk.shape[-1])
        if call.end:
            call.metrics.streams_closed.labels(TRANSPORT, "ended").inc()
        return InferResult(stream.served, {"smoothed": output},
                           {"mode": stream.mode, "stream": True, "state": state, "end": call.end})


STREAM_KIND = SmoothStreamKind()
