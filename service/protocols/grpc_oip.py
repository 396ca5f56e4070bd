"""The Open Inference Protocol over gRPC: `inference.GRPCInferenceService` (KServe's and Triton's
gRPC API), served by grpcio's asyncio server on MONOSERVE_GRPC_PORT in the serving process.

Infer goes through the one endpoint pipeline (service.pipeline.endpoint.handle) with `GrpcInferAdapter`, a
protocol adapter like the REST one (service.protocols.oip.OipAdapter): the same token check (metadata
`authorization: Bearer <token>`), in-flight budget, limits counted before any array is made,
resolution, kind checks (service.protocols.oip.ModelIO), dynamic batching, metrics (route label: the gRPC
method path) and the one error mapping, whose HTTP-style status becomes a gRPC status here
(`grpc_status`): 400 INVALID_ARGUMENT, 401 UNAUTHENTICATED, 404 NOT_FOUND, 413 and a full
budget or queue RESOURCE_EXHAUSTED (the latter with `grpc-retry-pushback-ms`), 503 UNAVAILABLE,
anything else INTERNAL with no detail. No traceback reaches a client.

The message itself arrives as bytes (no deserializer on ModelInfer and ModelStreamInfer): gRPC's own
receive limit is the service's body limit (max_body_bytes), and the pipeline reserves the message
and the memory its parse can take in the in-flight budget before protobuf decodes it.

Tensors come as typed `contents` (by datatype: fp32_contents, int_contents, ...) or as
`raw_input_contents` (little-endian, row-major; one entry per input); the answer is raw
(`raw_output_contents`) or typed as the parameter `binary_data_output` says, else as the request
was sent. A smoother answers what /smooth answers (parameter `mode`), a classifier its scores
[N, labels] with labels, threshold and decisions as response parameters (lists as JSON text).

The RPCs themselves, the repository RPCs and grpc.health.v1 are served by service.protocols.grpc_server;
this module is the infer adapter and the message handling that ModelInfer and ModelStreamInfer share.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
from google.protobuf.message import DecodeError

from service.base import codec, refusals
from service.protocols import oip
from service.pipeline import endpoint as pipeline
from service.base.errors import BadRequestError
from service.protocols.grpc_proto import SERVICE_NAME, messages
from service.compute.request import InferRequest, InferResult, Limits
from service.pipeline.endpoint import Encoded

if TYPE_CHECKING:
    from service.pipeline.service import Service

# The typed field that carries each datatype's values (FP16 has none: raw only).
CONTENTS_FIELD = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
                  "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
                  "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
                  "FP64": "fp64_contents", "BYTES": "bytes_contents"}
TYPED_FIELDS = tuple(dict.fromkeys(CONTENTS_FIELD.values()))
SEQUENCE_PARAMETERS = frozenset({"sequence_id", "sequence_start", "sequence_end"})  # Triton's, streams only

# Memory a message's parse may take, per byte of the message, reserved before parsing: raw tensor
# bytes are held once by the message and once more when read out of it; any other byte can be a
# 1-byte varint that protobuf stores as an 8-byte integer, in an array that grows by doubling.
RAW_PARSE_BYTES = 2
OTHER_PARSE_BYTES = 16
MAX_TOP_LEVEL_FIELDS = 256  # a message with more top-level fields is counted as all "other" bytes
# Working memory per value after the parse: the float32 input (when sent as another datatype, the
# typed values' own array too), the engine's output and the encoded answer (message + bytes).
RAW_VALUE_BYTES = oip.native.OUTPUT_BYTES_PER_VALUE + 8
TYPED_VALUE_BYTES = 8 + 4 + oip.native.OUTPUT_BYTES_PER_VALUE + 16


def method_route(method: str) -> str:
    return f"/{SERVICE_NAME}/{method}"


# -- the wire ---------------------------------------------------------------------------------
def _varint(data: memoryview, position: int) -> tuple[int, int]:
    value = shift = 0
    while shift < 70:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
    raise ValueError("varint too long")


def raw_contents_bytes(message: bytes) -> int:
    """Bytes of a ModelInferRequest's raw_input_contents (field 7), read from its top-level wire
    fields only (no parse), so the parse's memory can be reserved before parsing. 0 when the
    message is not well formed (the parse says what is wrong) or has more than
    MAX_TOP_LEVEL_FIELDS top-level fields."""
    data, position, end, total = memoryview(message), 0, len(message), 0
    try:
        for _ in range(MAX_TOP_LEVEL_FIELDS):
            if position >= end:
                return total if position == end else 0
            key, position = _varint(data, position)
            wire_type = key & 7
            if wire_type == 0:
                _, position = _varint(data, position)
            elif wire_type == 1:
                position += 8
            elif wire_type == 5:
                position += 4
            elif wire_type == 2:
                length, position = _varint(data, position)
                if key >> 3 == 7:
                    total += length
                position += length
            else:
                return 0
    except (IndexError, ValueError):
        return 0
    return total if position == end else 0


def parameter_value(parameter: Any) -> Any:
    which = parameter.WhichOneof("parameter_choice")
    return None if which is None else getattr(parameter, which)


def set_parameter(parameter: Any, value: Any) -> None:
    if isinstance(value, bool):
        parameter.bool_param = value
    elif isinstance(value, int):
        parameter.int64_param = value
    elif isinstance(value, float):
        parameter.double_param = value
    elif isinstance(value, str):
        parameter.string_param = value
    else:  # lists (labels, decisions): JSON text, as InferParameter has no list
        parameter.string_param = codec.dumps(value).decode()


def parse_bytes(body: bytes, raw: int) -> int:
    return raw * RAW_PARSE_BYTES + (len(body) - raw) * OTHER_PARSE_BYTES


def working_bytes(body: bytes, raw: int | None = None) -> int:
    """The memory a ModelInferRequest will take beyond its bytes, predicted from its wire: its parse,
    and its raw tensors' values as FP32 (what clients send; other datatypes reserve more later).
    `raw`: raw_contents_bytes(body), when the caller has it."""
    raw = raw_contents_bytes(body) if raw is None else raw
    return parse_bytes(body, raw) + raw // 4 * RAW_VALUE_BYTES


def parse_infer_request(body: bytes, limits: Limits, raw: int | None = None) -> Any:
    """The ModelInferRequest in `body`, its parse's memory reserved first (413/503 when it cannot be;
    drawn from what was reserved with the body, see GrpcInferAdapter.working_ratio). `raw`:
    raw_contents_bytes(body), when the caller has it (the wire is walked once per message)."""
    limits.spend(parse_bytes(body, raw_contents_bytes(body) if raw is None else raw), "the decoded message")
    try:
        return messages().ModelInferRequest.FromString(bytes(body))
    except DecodeError as exc:
        raise BadRequestError(f"the message is not a valid ModelInferRequest ({exc})"[:300]) from None


def _input_array(message: Any, index: int, limits: Limits) -> oip.InputTensor:
    """Input `index` as an array of its declared shape and datatype, its values admitted into the
    limits before the array is made (400 naming the input for a wrong datatype, a shape that does not
    match the values, values in two places)."""
    tensor = message.inputs[index]
    where = f"inputs[{index}]"
    if not tensor.name:
        raise BadRequestError(f"{where}.name must be a non-empty string", field=where)
    datatype = tensor.datatype
    dtype = oip.DATATYPES.get(datatype)
    if dtype is None:
        raise BadRequestError(f"{where}.datatype {datatype[:40]!r} is not supported; expected one of "
                              f"{sorted(oip.DATATYPES)}", field=where, supported=sorted(oip.DATATYPES))
    shape, count = oip.element_count(list(tensor.shape), where, limits.max_elements)
    # the typed fields that hold values, in field order (TYPED_FIELDS's): ListFields names only the non-empty
    # ones, in one call instead of a getattr per field (most requests carry raw tensors: no contents at all)
    filled = [field.name for field, _ in tensor.contents.ListFields()] if tensor.HasField("contents") else []
    if message.raw_input_contents:
        if filled:
            raise BadRequestError(f"{where} has values in contents.{filled[0]} and the request has raw_input_contents: "
                                  f"send every input one way", field=where)
        raw = message.raw_input_contents[index]
        if count * dtype.itemsize != len(raw):
            raise BadRequestError(f"{where}: shape {list(shape)} of {datatype} needs {count * dtype.itemsize} bytes, "
                                  f"raw_input_contents[{index}] has {len(raw)}", field=where, shape=list(shape))
        limits.admit(count, RAW_VALUE_BYTES + (0 if dtype == np.float32 else 4), where)
        array = np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)
        return oip.InputTensor(tensor.name, datatype, shape, array)
    expected = CONTENTS_FIELD.get(datatype)
    if expected is None:
        raise BadRequestError(f"{where}: {datatype} values have no typed contents field: send them in "
                              f"raw_input_contents", field=where)
    wrong = [name for name in filled if name != expected]
    if wrong:
        raise BadRequestError(f"{where} is {datatype} but has values in contents.{wrong[0]}; {datatype} values go in "
                              f"contents.{expected}", field=where, datatype=datatype)
    values = getattr(tensor.contents, expected)
    if len(values) != count:
        raise BadRequestError(f"{where}.contents.{expected} holds {len(values)} value(s), its shape {list(shape)} "
                              f"needs {count}", field=where, shape=list(shape), got=len(values))
    limits.admit(count, TYPED_VALUE_BYTES, where)
    array = np.fromiter(values, dtype=dtype, count=count).reshape(shape)
    return oip.InputTensor(tensor.name, datatype, shape, array)


def oip_request(message: Any, limits: Limits, drop: frozenset[str] = frozenset()) -> oip.OipRequest:
    """A parsed ModelInferRequest as the REST adapter's OipRequest (`drop`: parameters taken by the caller)."""
    if message.raw_input_contents and len(message.raw_input_contents) != len(message.inputs):
        raise BadRequestError(f"raw_input_contents has {len(message.raw_input_contents)} entries for "
                              f"{len(message.inputs)} input(s): one per input", field="raw_input_contents")
    if not message.inputs:
        raise BadRequestError("'inputs' must hold at least one tensor", field="inputs")
    inputs = [_input_array(message, index, limits) for index in range(len(message.inputs))]
    parameters = ({key: parameter_value(value) for key, value in message.parameters.items() if key not in drop}
                  if message.parameters else {})
    if "binary_data_output" in parameters and not isinstance(parameters["binary_data_output"], bool):
        raise BadRequestError("parameters.binary_data_output must be a bool_param", field="parameters")
    outputs = None
    if message.outputs:
        outputs = []
        for index, item in enumerate(message.outputs):
            if not item.name:
                raise BadRequestError(f"outputs[{index}].name must be a non-empty string", field="outputs")
            if item.parameters:
                raise BadRequestError(f"outputs[{index}] takes no parameters here, got {sorted(item.parameters)}",
                                      field="outputs")
            outputs.append(oip.RequestedOutput(item.name, None))
    return oip.OipRequest(message.id or None, inputs, parameters, outputs)


def encode_response(model: str, version: int, request: oip.OipRequest, outputs: dict[str, np.ndarray],
                    facts: Mapping[str, Any], raw: bool) -> Any:
    """A ModelInferResponse: the outputs asked for (all when none named), raw or typed."""
    response = messages().ModelInferResponse(model_name=model, model_version=str(version), id=request.id or "")
    for key, value in facts.items():
        set_parameter(response.parameters[key], value)
    wanted = [item.name for item in request.outputs] if request.outputs is not None else list(outputs)
    for name in wanted:
        array = outputs[name]
        dtype, datatype = oip.wire_dtype(array.dtype)
        little = array.astype(dtype, copy=False)
        tensor = response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        if raw:
            response.raw_output_contents.append(np.ascontiguousarray(little).tobytes())
        else:
            getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(little.reshape(-1).tolist())
    return response


class GrpcInferAdapter:
    """ModelInfer (and each request of ModelStreamInfer) as a ProtocolAdapter of service.pipeline.endpoint."""

    query = frozenset()
    # No dynamic batching: grpc.aio hands the event loop one call per callback, so a batch rarely
    # holds more than one request, and the queue's extra loop iteration costs more than it saves
    # (docs/performance.md, issue 30: +4-8% calls/s at 1 and 64 in flight).
    batching = False

    def __init__(self, service: Service, route: str, drop: frozenset[str] = frozenset()):
        self.service, self.route, self.drop = service, route, drop
        self.working = 0  # working_bytes() of the message being answered (run_pipeline sets it)
        self.raw: int | None = None  # raw_contents_bytes() of that message (run_pipeline sets it)

    def working_ratio(self, headers: Mapping[str, str]) -> float:
        """Working bytes per message byte, reserved with the message in one go (service.pipeline.endpoint):
        a message admitted is not refused for want of memory after it was read, and one that could
        never fit is a 413 (RESOURCE_EXHAUSTED) at once, whichever of its parts would not fit."""
        size = int(headers.get("content-length") or 0)
        return self.working / size if size else 0.0

    def decode(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str], limits: Limits) -> InferRequest:
        raw, self.raw = self.raw, None  # this message's, set by run_pipeline: used once
        message = parse_infer_request(body, limits, raw)
        sequence = sorted(SEQUENCE_PARAMETERS & set(message.parameters)) if message.parameters else None
        if sequence:
            raise BadRequestError(f"parameters {sequence} belong to ModelStreamInfer: a sequence lives in one stream",
                                  field="parameters")
        return self.decode_message(message, limits)

    def decode_message(self, message: Any, limits: Limits) -> InferRequest:
        if not message.model_name:
            raise BadRequestError("model_name must name the model to run", field="model_name")
        served = oip.resolve(self.service, message.model_name, message.model_version or None)
        io = oip.model_io(served.kind)
        request = oip_request(message, limits, self.drop)
        tensor = io.check(request, served)
        array = tensor.array if tensor.array.dtype == np.float32 else tensor.array.astype(np.float32)
        # The answer's form: binary_data_output when given, else the request's own (Triton answers raw,
        # and tritonclient.grpc reads raw outputs only; it always sends raw inputs).
        raw = request.parameters.get("binary_data_output", bool(message.raw_input_contents))
        # "served": the version the input was checked against runs it (the pipeline does not resolve again)
        return InferRequest(served.kind, message.model_name, served.manifest.version, inputs=array,
                            params=io.query(request), context={"oip": request, "io": io, "raw": raw, "served": served})

    def encode(self, result: InferResult, request: InferRequest) -> Encoded:
        manifest = result.served.manifest
        io: oip.ModelIO = request.context["io"]
        response = encode_response(manifest.name, manifest.version, request.context["oip"], io.outputs(result),
                                   result.facts, request.context["raw"])
        return Encoded(response.SerializeToString(), "application/grpc")


# -- errors -----------------------------------------------------------------------------------
def grpc_status(status: int, headers: Mapping[str, str] | None) -> tuple[grpc.StatusCode, tuple[tuple[str, str], ...]]:
    """The gRPC status of an HTTP-style one (service.base.refusals, the one table every transport maps
    from), and its trailing metadata: a 503 that says when to retry (a full in-flight budget or
    batching queue) is RESOURCE_EXHAUSTED with grpc-retry-pushback-ms."""
    retry_after = (headers or {}).get("Retry-After")
    refusal = refusals.refusal_of(status, retry=retry_after is not None)
    code = getattr(grpc.StatusCode, refusal.grpc)
    if refusal is refusals.BUSY and retry_after is not None:
        return code, (("grpc-retry-pushback-ms", str(int(float(retry_after) * 1000))),)
    return code, ()


def reply_message(reply: pipeline.Reply) -> str:
    try:
        return str(codec.loads_object(bytes(reply.body)).get("error", "error"))
    except Exception:  # noqa: BLE001 - an error body is always the pipeline's JSON; never fail on it
        return "error"


async def abort(context: grpc.aio.ServicerContext, status: int, message: str, headers: Mapping[str, str] | None) -> None:
    code, trailers = grpc_status(status, headers)
    if code is grpc.StatusCode.INTERNAL:
        message = "internal server error"
    context.set_trailing_metadata(trailers)
    await context.abort(code, message)


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)}


async def run_pipeline(service: Service, adapter: GrpcInferAdapter, body: bytes, metadata: Mapping[str, str],
                       limits: Limits | None = None) -> pipeline.Reply:
    """One infer message through service.pipeline.endpoint.handle, as a body already received
    (`limits`: a stream's message's, counted against its stream's share)."""
    headers = {"content-length": str(len(body))}
    adapter.raw = raw = raw_contents_bytes(body)
    adapter.working = working_bytes(body, raw)
    if "authorization" in metadata:
        headers["authorization"] = metadata["authorization"]
    # the whole message is here: taken as it is (no body deadline to arm, nothing to receive)
    reply = await pipeline.handle(service, adapter, _nothing_to_receive, headers, b"", limits, body_ready=lambda: body)
    assert reply is not None  # the whole body is there: no disconnect
    return reply


async def _nothing_to_receive() -> dict[str, Any]:
    """run_pipeline's receive(): never awaited, as the message is handed over whole (body_ready)."""
    raise AssertionError("a gRPC message is handed to the pipeline whole: nothing is left to receive")
