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
- each chunk is [samples] or [channels, samples] (the channel count fixed by the first chunk) and is
  answered with the smoothed samples it completes ([channels, m] or [m]; m may be 0 while `same`
  or `valid` wait for samples ahead);
- `sequence_end: true` answers the chunk's samples and everything still owed, and closes it.

The concatenation of a sequence's answers equals the one-shot /smooth (and ModelInfer) answer of
the whole signal in the same mode, on the same version (service.pipeline.streaming's promise).

A failed request answers `error_message` (Triton's convention) and the stream goes on; a chunk
refused before the state changed (a bad shape, NaN) leaves its sequence open, one whose sequence
ended or whose version is gone closes it. At most MAX_SEQUENCES sequences are open per stream,
each holding channels x (kernel size - 1) float32 samples between chunks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

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

if TYPE_CHECKING:
    from service.compute.version import ProvenVersion
    from service.pipeline.service import Service

ROUTE = method_route("ModelStreamInfer")
MAX_SEQUENCES = 256


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
    chunk: np.ndarray  # [C, n] float32
    rank: int  # 1: [samples] in and out; 2: [channels, samples]
    end: bool
    sequence_id: int | str


class SequenceKind:
    """A chunk of a smoother sequence: push (and end), instead of the one-shot smoother's infer."""

    name = "smoother"
    batchable = False

    def prepare(self, served: ProvenVersion, request: InferRequest, limits: Limits) -> SequenceCall:
        call: SequenceCall = request.context["sequence"]
        call.chunk = call.stream.check_chunk(call.chunk)  # 400 before the state changes
        return call

    def work(self, call: SequenceCall) -> int:
        return call.stream.work_elements(int(call.chunk.shape[1]))

    def infer(self, call: SequenceCall, settings: Any) -> np.ndarray:
        out = call.stream.push(call.chunk, settings.smooth_method)
        if call.end:
            out = np.concatenate((out, call.stream.end(settings.smooth_method)), axis=1)
        return out

    def batch_input(self, call: SequenceCall) -> np.ndarray:
        raise NotImplementedError("sequence chunks are not batched")

    def result(self, call: SequenceCall, output: np.ndarray) -> InferResult:
        smoothed = np.ascontiguousarray(output[0] if call.rank == 1 else output)
        return InferResult(call.served, {"smoothed": smoothed},
                           {"mode": call.stream.mode, "sequence_id": call.sequence_id, "sequence_end": call.end})


SEQUENCE_KIND = SequenceKind()


class StreamAdapter(GrpcInferAdapter):
    """A stream's requests: plain infers, or chunks of the stream's sequences (its `sequences`)."""

    def __init__(self, service: Service):
        super().__init__(service, ROUTE, drop=SEQUENCE_PARAMETERS)
        self.sequences: dict[int | str, SmoothStream] = {}
        self.current: SequenceCall | None = None  # the sequence chunk being answered, if any
        settings = service.settings
        self.held = Limits(service.budget, settings.max_elements, settings.max_rows,
                           settings.max_signal_length)  # the sequences' states, until the stream ends

    def decode(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str], limits: Limits) -> InferRequest:
        message = parse_infer_request(body, limits)
        if not SEQUENCE_PARAMETERS & set(message.parameters):
            return self.decode_message(message, limits)
        return self._chunk(message, limits)

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
            io = oip.MODEL_IO["smoother"]
            tensor = io.check(request, served)
            if sequence_id not in self.sequences and len(self.sequences) >= MAX_SEQUENCES:
                raise BadRequestError(f"this stream has {MAX_SEQUENCES} open sequences, the most one stream holds: "
                                      f"end one (sequence_end) first", field="sequence_id")
            stream = SmoothStream.open(served, io.query(request)["mode"])
            channels = tensor.array.shape[0] if tensor.array.ndim == 2 else 1
            # the tail this sequence keeps between requests, held in the in-flight budget until the
            # stream ends (a restarted id reserves anew: the stream's own budget, returned at its close)
            self.held.reserve(channels * (stream.kernel_size - 1) * 4, "a sequence's state")
            self.sequences[sequence_id] = stream  # a start on an open id begins it anew (Triton's)
        else:
            stream = self.sequences.get(sequence_id)
            if stream is None:
                raise BadRequestError(f"sequence {sequence_id!r} is not open in this stream: its first request needs "
                                      f"sequence_start=true", field="sequence_id")
            try:
                check_pinned(self.service.registry, stream)  # 409 (FAILED_PRECONDITION) once its version is gone
            except VersionGoneError:
                del self.sequences[sequence_id]
                raise
            if message.model_name and message.model_name != stream.model:
                raise BadRequestError(f"sequence {sequence_id!r} runs on model {stream.model!r}, not "
                                      f"{message.model_name!r}", field="model_name")
            request = oip_request(message, limits, self.drop)
            io = oip.MODEL_IO["smoother"]
            tensor = io.check(request, stream.served)
            mode = io.query(request)["mode"]
            if mode is not None and mode != stream.mode:
                raise BadRequestError(f"sequence {sequence_id!r} runs in mode {stream.mode!r}, the request asks for "
                                      f"{mode!r}", field="mode")
        array = tensor.array if tensor.array.dtype == np.float32 else tensor.array.astype(np.float32)
        if array.ndim not in (1, 2):
            raise BadRequestError(f"a sequence chunk is [samples] or [channels, samples], got shape {list(array.shape)}",
                                  field="signal", shape=list(array.shape))
        call = SequenceCall(stream.served, stream, array.reshape(1, -1) if array.ndim == 1 else array, array.ndim,
                            flags["sequence_end"], sequence_id)
        self.current = call
        raw = request.parameters.get("binary_data_output", bool(message.raw_input_contents))
        return InferRequest("smoother", stream.model, stream.version, inputs=array, params={"mode": stream.mode},
                            context={"oip": request, "io": io, "raw": raw, "kind": SEQUENCE_KIND, "sequence": call})


class StreamSession:
    """One ModelStreamInfer call: its metadata (the token) and its open sequences."""

    def __init__(self, service: Service, metadata: Mapping[str, str]):
        self.service, self.metadata = service, metadata
        self.adapter = StreamAdapter(service)

    async def answer(self, body: bytes) -> bytes:
        self.adapter.current = None
        reply = await run_pipeline(self.service, self.adapter, body, self.metadata)
        call = self.adapter.current
        if call is not None and (call.stream.ended or reply.status == 409):
            if self.adapter.sequences.get(call.sequence_id) is call.stream:
                del self.adapter.sequences[call.sequence_id]
        if reply.status != 200:
            return stream_error(reply_message(reply))
        return stream_response(reply.body)

    def close(self) -> None:
        self.adapter.sequences.clear()
        self.adapter.held.close()
