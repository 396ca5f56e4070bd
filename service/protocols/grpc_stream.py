"""ModelStreamInfer (Triton's bidirectional stream of service.protocols.grpc_oip): one answer per request, in order.

Each request of a stream is a ModelInferRequest answered through the one pipeline
(service.pipeline.endpoint.handle), like ModelInfer. Without sequence parameters it is a plain infer, for any
model. With Triton's sequence parameters it is a chunk of a streaming smoother sequence
(service.pipeline.streaming.SmoothStream, the transport-free core the WebSocket stream uses too):

- `sequence_id` (int64 or string parameter, nonzero / non-empty) names the sequence; several can be
  open in one stream, each with its own state; a sequence lives in its stream (it ends with it);
- `sequence_start: true` opens it on the model version the request resolves to (pinned for the
  whole sequence; FAILED_PRECONDITION once that version no longer serves) in the request's `mode`
  (parameter, default the model's); a start on an open id begins it anew;
- each chunk is [samples], [channels, samples] or [batch, channels, samples] (service.compute.shapes: the
  nestings one-shot /smooth takes, the last the model metadata's declared shape, what
  tritonclient.grpc users send; its rows fixed by the first chunk) and is answered with the
  smoothed samples it completes, in the chunk's nesting (m samples; m may be 0 while `same` or
  `valid` wait for samples ahead);
- `sequence_end: true` answers the chunk's samples and everything still owed, and closes it.

The concatenation of a sequence's answers equals the one-shot /smooth (and ModelInfer) answer of
the whole signal in the same mode, on the same version (service.pipeline.streaming's promise).

A failed request answers `error_message` (Triton's convention) and the stream goes on (with the
metadata `triton_grpc_error: true`, Triton's opt-in, the first refusal ends the stream with its
gRPC status and message instead, the status of service.base.refusals' one table); a chunk
refused before the state changed (a bad shape, NaN) leaves its sequence open, one whose sequence
ended or whose version is gone closes it. At most MAX_SEQUENCES sequences are open per stream,
each holding channels x (kernel size - 1) float32 samples between chunks.

What a stream may hold (issue 24): the token is checked on the call's metadata before the stream
takes one of the worker's stream slots (service.protocols.grpc_server); each sequence's state is its own
reservation in the in-flight budget, returned when the sequence ends, is restarted (a start on an
open id returns the old reservation first), is untouched for MONOSERVE_STREAM_IDLE_TIMEOUT_S, or
its stream closes; a call that sends no message for that long is ended (DEADLINE_EXCEEDED) and
its slot returned; everything a stream holds at once (its sequences and the message being
answered) is capped at MONOSERVE_STREAM_MAX_BUDGET_SHARE of the budget (service.pipeline.stream_budget).
Open sequences are counted in monoserve_streams_open{transport="grpc"}, ended ones in
monoserve_streams_closed{transport="grpc", outcome=ended|restarted|idle|version-gone|stream-closed}.
Each message yields the event loop once after its answer, so a stream whose messages are already
buffered is served in turn with every other client, never ahead of them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from service.compute import shapes
from service.pipeline import endpoint as pipeline
from service.protocols import oip
from service.base.errors import BadRequestError, VersionGoneError
from service.protocols.grpc_oip import (
    SEQUENCE_PARAMETERS,
    GrpcInferAdapter,
    method_route,
    oip_request,
    parameter_value,
    parse_infer_request,
    reply_message,
    run_pipeline,
)
from service.protocols.grpc_proto import messages
from service.compute.request import InferRequest, InferResult, Limits
from service.pipeline.streaming import SmoothStream, check_pinned
from service.pipeline.stream_budget import StreamAccount, StreamLimits

if TYPE_CHECKING:
    from service.compute.version import ProvenVersion
    from service.pipeline.service import Service

log = logging.getLogger(__name__)

ROUTE = method_route("ModelStreamInfer")
GRPC_ERROR_HEADER = "triton_grpc_error"
MAX_SEQUENCES = 256
TRANSPORT = "grpc"  # the metrics' transport label: one open sequence counts as one open stream


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def stream_response(infer_response: bytes) -> bytes:
    """A ModelStreamInferResponse whose infer_response (field 2) is these serialized bytes: framed
    here rather than parsed and serialized again (a large answer would be copied twice more)."""
    return b"\x12" + _varint(len(infer_response)) + infer_response


def stream_error(message: str) -> bytes:
    return messages().ModelStreamInferResponse(error_message=message).SerializeToString()


# -- a sequence's chunk as a model kind of the pipeline ---------------------------------------
@dataclass
class SequenceCall:
    served: ProvenVersion  # the version the sequence is pinned to
    stream: SmoothStream
    chunk: np.ndarray  # [n], [C, n] or [B, C, n] float32 (service.compute.shapes), answered in the same nesting
    end: bool
    sequence_id: int | str


class SequenceKind:
    """A chunk of a smoother sequence: push (and end), instead of the one-shot smoother's infer."""

    name = "smoother"
    batchable = False

    def prepare(self, served: ProvenVersion, request: InferRequest, limits: Limits) -> SequenceCall:
        call: SequenceCall = request.context["sequence"]
        call.chunk = call.stream.check_chunk(call.chunk)  # 400 before the state changes
        shapes.check_length(call.chunk.shape[-1], limits.max_signal_length)
        return call

    def work(self, call: SequenceCall) -> int:
        return call.stream.work_elements(int(call.chunk.shape[-1]))

    def infer(self, call: SequenceCall, settings: Any) -> np.ndarray:
        return call.stream.step(call.chunk, call.end, settings.smooth_method, checked=True)  # checked in prepare

    def batch_input(self, call: SequenceCall) -> np.ndarray:
        raise NotImplementedError("sequence chunks are not batched")

    def result(self, call: SequenceCall, output: np.ndarray) -> InferResult:
        return InferResult(call.served, {"smoothed": np.ascontiguousarray(output)},
                           {"mode": call.stream.mode, "sequence_id": call.sequence_id, "sequence_end": call.end})


SEQUENCE_KIND = SequenceKind()


@dataclass
class OpenSequence:
    """A sequence open in a stream: its state and that state's own reservation in the budget."""

    stream: SmoothStream
    held: StreamLimits  # channels x (K - 1) float32, until the sequence closes
    last_used: float  # time.monotonic() of its last chunk


class StreamAdapter(GrpcInferAdapter):
    """A stream's requests: plain infers, or chunks of the stream's sequences (its `sequences`)."""

    def __init__(self, service: Service, account: StreamAccount | None = None):
        super().__init__(service, ROUTE, drop=SEQUENCE_PARAMETERS)
        self.sequences: dict[int | str, OpenSequence] = {}
        self.current: SequenceCall | None = None  # the sequence chunk being answered, if any
        self.account = account or StreamAccount.for_service(service)
        self.gauge = service.metrics.streams_open.labels(TRANSPORT)

    def decode(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str], limits: Limits) -> InferRequest:
        raw, self.raw = self.raw, None  # this message's, set by run_pipeline: used once
        message = parse_infer_request(body, limits, raw)
        if not SEQUENCE_PARAMETERS & set(message.parameters):
            return self.decode_message(message, limits)
        return self._chunk(message, limits)

    def close_sequence(self, sequence_id: int | str, outcome: str) -> None:
        """End an open sequence: its reservation returns to the budget, the metrics count it."""
        sequence = self.sequences.pop(sequence_id, None)
        if sequence is None:
            return
        sequence.held.close()
        self.gauge.dec()
        self.service.metrics.streams_closed.labels(TRANSPORT, outcome).inc()

    def expire(self, now: float, idle_s: float) -> float | None:
        """Close the sequences untouched for `idle_s`; the time until the next one would expire."""
        for sequence_id in [key for key, seq in self.sequences.items() if now - seq.last_used >= idle_s]:
            log.info("closing gRPC sequence %r: no chunk for %g s", sequence_id, idle_s)
            self.close_sequence(sequence_id, "idle")
        if not self.sequences:
            return None
        return min(seq.last_used for seq in self.sequences.values()) + idle_s - now

    def _chunk(self, message: Any, limits: Limits) -> InferRequest:
        parameters = {key: parameter_value(message.parameters[key]) for key in SEQUENCE_PARAMETERS
                      if key in message.parameters}
        sequence_id = parameters.get("sequence_id")
        if isinstance(sequence_id, bool) or sequence_id in (None, 0, ""):
            raise BadRequestError("sequence_start and sequence_end need a sequence_id: a nonzero int64 or a "
                                  "non-empty string parameter", field="sequence_id")
        flags = {}
        for key in ("sequence_start", "sequence_end"):
            value = parameters.get(key, False)
            if not isinstance(value, bool):
                raise BadRequestError(f"{key} must be a bool_param, got {value!r}"[:200], field=key)
            flags[key] = value
        if flags["sequence_start"]:
            if not message.model_name:
                raise BadRequestError("model_name must name the smoother the sequence runs on", field="model_name")
            served = oip.resolve(self.service, message.model_name, message.model_version or None)
            if served.kind != "smoother":
                raise BadRequestError(f"model {message.model_name!r} is a {served.kind}: sequences (sequence_id) are "
                                      f"for smoothers; send its requests without sequence parameters",
                                      model=message.model_name)
            request = oip_request(message, limits, self.drop)
            io = oip.model_io("smoother")
            tensor = io.check(request, served)
            # a start on an open id begins it anew (Triton's): the old state and its reservation go first
            self.close_sequence(sequence_id, "restarted")
            if len(self.sequences) >= MAX_SEQUENCES:
                raise BadRequestError(f"this stream has {MAX_SEQUENCES} open sequences, the most one stream holds: "
                                      f"end one (sequence_end) first", field="sequence_id")
            stream = SmoothStream.open(served, io.query(request)["mode"])
            shapes.check_rank(tensor.array)
            channels = shapes.rows_of(tensor.array.shape)
            # the tail this sequence keeps between requests, its own reservation until it closes
            held = self.account.limits(self.service.settings)
            try:
                held.reserve(stream.state_bytes_bound(channels), "a sequence's state")
            except Exception:
                held.close()
                raise
            self.sequences[sequence_id] = OpenSequence(stream, held, time.monotonic())
            self.gauge.inc()
        else:
            sequence = self.sequences.get(sequence_id)
            if sequence is None:
                raise BadRequestError(f"sequence {sequence_id!r} is not open in this stream: its first request needs "
                                      f"sequence_start=true", field="sequence_id")
            stream = sequence.stream
            sequence.last_used = time.monotonic()
            try:
                check_pinned(self.service.registry, stream)  # 409 (FAILED_PRECONDITION) once its version is gone
            except VersionGoneError:
                self.close_sequence(sequence_id, "version-gone")
                raise
            if message.model_name and message.model_name != stream.model:
                raise BadRequestError(f"sequence {sequence_id!r} runs on model {stream.model!r}, not "
                                      f"{message.model_name!r}", field="model_name")
            request = oip_request(message, limits, self.drop)
            io = oip.model_io("smoother")
            tensor = io.check(request, stream.served)
            mode = io.query(request)["mode"]
            if mode is not None and mode != stream.mode:
                raise BadRequestError(f"sequence {sequence_id!r} runs in mode {stream.mode!r}, the request asks for "
                                      f"{mode!r}", field="mode")
        array = tensor.array if tensor.array.dtype == np.float32 else tensor.array.astype(np.float32)
        call = SequenceCall(stream.served, stream, array, flags["sequence_end"], sequence_id)
        self.current = call
        raw = request.parameters.get("binary_data_output", bool(message.raw_input_contents))
        return InferRequest("smoother", stream.model, stream.version, inputs=array, params={"mode": stream.mode},
                            context={"oip": request, "io": io, "raw": raw, "kind": SEQUENCE_KIND, "sequence": call})


class StreamSession:
    """One ModelStreamInfer call: its metadata (the token), its open sequences and its budget share."""

    def __init__(self, service: Service, metadata: Mapping[str, str]):
        self.service, self.metadata = service, metadata
        self.account = StreamAccount.for_service(service)
        self.adapter = StreamAdapter(service, self.account)
        self.idle_message: str | None = None  # set when the call is ended for sending nothing
        # Triton's opt-in (metadata `triton_grpc_error: true`): the first refusal ends the stream with
        # its gRPC status (service.base.refusals) instead of an error_message that carries no code.
        self.grpc_errors = metadata.get(GRPC_ERROR_HEADER, "").strip().lower() == "true"
        self.refused: pipeline.Reply | None = None  # the last request's refusal, if it was refused

    async def messages(self, requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The call's messages, until it ends or sends nothing for the idle timeout (then
        `idle_message` says so); sequences untouched for that long are closed meanwhile."""
        idle_s = self.service.settings.stream_idle_timeout_s
        iterator = requests.__aiter__()
        last_message = time.monotonic()
        read: asyncio.Future | None = None
        try:
            while True:
                if read is None:
                    read = asyncio.ensure_future(iterator.__anext__())
                now = time.monotonic()
                next_sequence = self.adapter.expire(now, idle_s)
                wait_s = idle_s - (now - last_message)
                if next_sequence is not None:
                    wait_s = min(wait_s, next_sequence)
                done, _ = await asyncio.wait((read,), timeout=max(wait_s, 0.0))
                if not done:
                    if time.monotonic() - last_message >= idle_s:
                        self.idle_message = (f"no message for {idle_s:g} s (MONOSERVE_STREAM_IDLE_TIMEOUT_S): the "
                                             "stream is closed")
                        return
                    continue  # a sequence's time came: expired at the top of the loop
                try:
                    body = read.result()
                except StopAsyncIteration:
                    return
                finally:
                    read = None
                yield body
                last_message = time.monotonic()  # idle counts from the answer: a long chunk is not silence
                await asyncio.sleep(0)  # fairness: others' ready work runs between two of this stream's messages
        finally:
            if read is not None and not read.done():
                read.cancel()

    async def answer(self, body: bytes) -> bytes:
        adapter = self.adapter
        adapter.current = None
        reply = await run_pipeline(self.service, adapter, body, self.metadata, self.account.limits(self.service.settings))
        self.refused = reply if reply.status != 200 else None
        call = adapter.current
        sequence = adapter.sequences.get(call.sequence_id) if call is not None else None
        if sequence is not None:
            sequence.last_used = time.monotonic()  # untouched counts from its last answer
        if call is not None and (call.stream.ended or reply.status == 409):
            sequence = adapter.sequences.get(call.sequence_id)
            if sequence is not None and sequence.stream is call.stream:
                adapter.close_sequence(call.sequence_id, "ended" if call.stream.ended else "version-gone")
        if reply.status != 200:
            return stream_error(reply_message(reply))
        return stream_response(reply.body)

    def close(self) -> None:
        for sequence_id in list(self.adapter.sequences):
            self.adapter.close_sequence(sequence_id, "stream-closed")
