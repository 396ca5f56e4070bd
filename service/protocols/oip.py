"""The Open Inference Protocol v2 (KServe / Triton REST) as a protocol adapter of the endpoint pipeline.

`OipAdapter` is a `service.pipeline.endpoint.ProtocolAdapter`: the pipeline does the token, the body
reading, the limits and the in-flight budget, resolution, inference (with the dynamic batcher) and
the one error mapping; this module only turns bytes into an `InferRequest` and an `InferResult`
into bytes:

1. `decode_infer(body, header_length, admit)`: an OIP infer request (JSON tensors, or the binary
   tensor data extension: a JSON header of `Inference-Header-Content-Length` bytes, then each
   input's `binary_data_size` bytes in order) -> `OipRequest` holding numpy arrays (binary inputs
   are views of the body, not copies) + parameters + the outputs asked for. Element counts are
   computed from the declared shape, checked against the bytes that carry them and admitted into
   the request's limits before any array is made.
2. `ModelIO` (one per model kind: `SmootherIO`, `ClassifierIO`): the names, datatypes and shapes
   the model shows over OIP (its metadata), which request parameters it takes, and which of the
   kind's outputs it returns, so an OIP answer is the /smooth or /classify answer for the input.
3. `encode_infer(...)`: the outputs -> an OIP response, each output as JSON data or binary
   (`binary_data` per output, `binary_data_output` for all), with `Inference-Header-Content-Length`.

Names over OIP: the input is the graph's input (`signal` [B, C, L], `features` [N, F]); the
classifier's output is the graph's `scores` [N, labels]; the smoother's is `smoothed`, the edge
mode's slice of the graph's `full` correlation (what /smooth answers). A smoother also takes
[L] and [C, L] inputs, as /smooth does, and answers in the same nesting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

import numpy as np

from contract.modes import EDGE_MODES
from service.base import codec
from service.protocols import native
from service.base.errors import BadRequestError, ModelUnavailableError, NotFoundError, PayloadTooLargeError
from service.compute.request import InferRequest, InferResult, Limits
from service.pipeline.endpoint import Encoded
from service.compute.kinds import SERVICE_KINDS
from service.compute.version import ProvenVersion

if TYPE_CHECKING:
    from service.pipeline.service import Service

HEADER_LENGTH = "Inference-Header-Content-Length"
HEADER_LENGTH_KEY = HEADER_LENGTH.lower()  # the pipeline's headers are keyed by lower-case names
BINARY_MEDIA_TYPE = "application/octet-stream"

# OIP datatype -> little-endian numpy dtype. BOOL, BYTES and BF16 have no meaning for these models.
DATATYPES: dict[str, np.dtype] = {
    name: np.dtype(code) for name, code in (
        ("UINT8", "u1"), ("UINT16", "<u2"), ("UINT32", "<u4"), ("UINT64", "<u8"),
        ("INT8", "i1"), ("INT16", "<i2"), ("INT32", "<i4"), ("INT64", "<i8"),
        ("FP16", "<f2"), ("FP32", "<f4"), ("FP64", "<f8"))
}
# The other way round, for answers: one lookup per output (a dtype of another byte order misses it
# and is looked up again as little-endian, OIP's byte order).
DATATYPE_OF: dict[np.dtype, str] = {dtype: name for name, dtype in DATATYPES.items()}
FLOAT32 = np.dtype(np.float32)
REQUEST_FIELDS = frozenset({"id", "inputs", "outputs", "parameters"})
TENSOR_FIELDS = frozenset({"name", "shape", "datatype", "parameters", "data"})
# content_type is what KServe's own clients put on tensors ("np", ...); it changes nothing here.
TENSOR_PARAMETERS = frozenset({"binary_data_size", "content_type"})
OUTPUT_FIELDS = frozenset({"name", "parameters"})
OUTPUT_PARAMETERS = frozenset({"binary_data"})
MAX_DIMS = 8  # far more than any model here takes; bounds the work on a hostile shape


# -- requests ---------------------------------------------------------------------------------
# (slots: built for every request, and a slotted instance is cheaper to make than one with a __dict__)
@dataclass(slots=True)
class InputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray  # of the declared shape and datatype (binary data: a view of the body)


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: follow the request's binary_data_output


@dataclass(slots=True)
class OipRequest:
    id: str | None
    inputs: list[InputTensor]
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[RequestedOutput] | None = None  # None: every output

    @property
    def binary_output(self) -> bool:
        return self.parameters.get("binary_data_output", False) is True


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequestError(f"{where} must be a JSON object, got {type(value).__name__}", field=where)
    return value


def _no_unknown(payload: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    if allowed.issuperset(payload):  # the usual case: no set built (a quarter cheaper than keys() <= allowed)
        return
    unknown = sorted(set(payload) - allowed)
    raise BadRequestError(f"unknown field(s) {unknown} in {where}; expected {sorted(allowed)}", field=where, fields=unknown)


def element_count(shape: Any, where: str, limit: int) -> tuple[tuple[int, ...], int]:
    """(shape, its element count) from a declared shape; refused once the running product passes
    `limit`, so a shape like [2**40, 2**40] costs nothing and never reaches an allocation."""
    if not isinstance(shape, list) or len(shape) > MAX_DIMS:
        raise BadRequestError(f"{where}.shape must be a list of at most {MAX_DIMS} dimensions, got {shape!r}"[:300], field=where)
    count = 1
    for dim in shape:
        if type(dim) is not int or dim < 0:  # exactly int (as JSON and protobuf give): a bool is not a dimension
            raise BadRequestError(f"{where}.shape must hold nonnegative integers, got {shape!r}"[:300], field=where)
        count *= dim
        if count > limit:
            raise PayloadTooLargeError(f"{where}.shape {shape} declares more elements than the request can carry "
                                       f"(at most {limit})"[:300], field=where, limit=limit)
    return tuple(shape), count


def _datatype(value: Any, where: str) -> np.dtype:
    dtype = DATATYPES.get(value) if isinstance(value, str) else None
    if dtype is None:
        raise BadRequestError(f"{where}.datatype {value!r} is not supported; expected one of {sorted(DATATYPES)}",
                              field=where, supported=sorted(DATATYPES))
    return dtype


def _json_data(data: Any, shape: tuple[int, ...], count: int, where: str) -> np.ndarray:
    """`data` (flat in row-major order, or nested; or already parsed by the simdjson road) -> a float32 array of `shape`."""
    array = data.array if isinstance(data, codec.ParsedArray) else codec.to_float32(data, f"{where}.data")
    if array.size != count:
        raise BadRequestError(f"{where}.data holds {array.size} value(s), its shape {list(shape)} needs {count}",
                              field=where, shape=list(shape), got=int(array.size))
    return array.reshape(shape)


def _is_input_data(path: tuple) -> bool:
    return len(path) == 3 and path[0] == "inputs" and path[2] == "data"


def decode_infer(body: bytes, header_length: str | None, admit: Callable[[int, np.dtype, str], None] | None = None,
                 brackets: int | None = None) -> OipRequest:
    """An OIP infer request body -> OipRequest (400 naming what is wrong). `admit(count, dtype,
    where)` is called for each binary input before its array is made (the JSON header is counted
    by the caller before it is parsed). `brackets`: the JSON part's count of '[' when the caller
    has it; a big JSON body whose inputs' data are plain numbers goes the simdjson road
    (codec.loads_with_arrays), the same road as /smooth's."""
    binary_start = len(body)
    if header_length is not None:
        text = header_length.strip()
        if not (text.isascii() and text.isdigit()) or int(text) > len(body):
            raise BadRequestError(f"{HEADER_LENGTH} must be an integer between 0 and the body's {len(body)} bytes, "
                                  f"got {header_length!r}"[:300], field=HEADER_LENGTH)
        binary_start = int(text)
    text = body[:binary_start] if binary_start < len(body) else body
    # (a small body goes straight to orjson: the simdjson road would decline it, after a call)
    payload = (codec.loads_with_arrays(text, _is_input_data, brackets) if len(text) >= codec.FAST_JSON_MIN_BYTES
               else None)
    if payload is None:
        payload = codec.loads_object(text)
    _no_unknown(payload, REQUEST_FIELDS, "the request")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequestError(f"'id' must be a string, got {type(request_id).__name__}", field="id")
    parameters = _object(payload["parameters"], "parameters") if "parameters" in payload else {}
    if "binary_data_output" in parameters and not isinstance(parameters["binary_data_output"], bool):
        raise BadRequestError("parameters.binary_data_output must be true or false", field="parameters")
    raw_inputs = payload.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequestError("'inputs' must be a non-empty list of tensors", field="inputs")

    offset = binary_start
    inputs: list[InputTensor] = []
    for index, raw in enumerate(raw_inputs):
        where = f"inputs[{index}]"
        tensor = _object(raw, where)
        _no_unknown(tensor, TENSOR_FIELDS, where)
        name = _name(tensor, where)
        dtype = _datatype(tensor.get("datatype"), where)
        size = None
        if "parameters" in tensor:  # (present but null is a 400 from _object)
            tensor_parameters = _object(tensor["parameters"], f"{where}.parameters")
            _no_unknown(tensor_parameters, TENSOR_PARAMETERS, f"{where}.parameters")
            size = tensor_parameters.get("binary_data_size")
        if "data" in tensor:
            if size is not None:
                raise BadRequestError(f"{where} has both 'data' and parameters.binary_data_size: send one", field=where)
            # Every JSON value takes at least one byte of the header: a bound on a truthful shape.
            shape, count = element_count(tensor.get("shape"), where, binary_start)
            array = _json_data(tensor["data"], shape, count, where)
        else:
            if size is None:
                raise BadRequestError(f"{where} has neither 'data' nor parameters.binary_data_size", field=where)
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise BadRequestError(f"{where}.parameters.binary_data_size must be a nonnegative integer, got {size!r}",
                                      field=where)
            remaining = len(body) - offset
            if size > remaining:
                raise BadRequestError(f"{where}.parameters.binary_data_size is {size} bytes but only {remaining} "
                                      f"follow in the body", field=where, remaining=remaining)
            shape, count = element_count(tensor.get("shape"), where, len(body))  # any element takes >= 1 byte
            if count * dtype.itemsize != size:
                raise BadRequestError(f"{where}: shape {list(shape)} of {tensor['datatype']} needs "
                                      f"{count * dtype.itemsize} bytes, binary_data_size says {size}", field=where)
            if admit is not None:
                admit(count, dtype, where)
            array = np.frombuffer(body, dtype=dtype, count=count, offset=offset).reshape(shape)
            offset += size
        inputs.append(InputTensor(name, tensor["datatype"], shape, array))
    if offset != len(body):
        raise BadRequestError(f"{len(body) - offset} byte(s) after the JSON header are not claimed by any input's "
                              f"binary_data_size", field=HEADER_LENGTH)
    return OipRequest(request_id, inputs, parameters, _requested_outputs(payload.get("outputs")))


def _name(item: dict[str, Any], where: str) -> str:
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequestError(f"{where}.name must be a non-empty string", field=where)
    return name


def _requested_outputs(raw: Any) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise BadRequestError("'outputs' must be a list of {\"name\": ...} objects", field="outputs")
    outputs = []
    for index, item in enumerate(raw):
        where = f"outputs[{index}]"
        item = _object(item, where)
        _no_unknown(item, OUTPUT_FIELDS, where)
        name = _name(item, where)
        parameters = _object(item.get("parameters", {}), f"{where}.parameters")
        _no_unknown(parameters, OUTPUT_PARAMETERS, f"{where}.parameters")
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise BadRequestError(f"{where}.parameters.binary_data must be true or false", field=where)
        outputs.append(RequestedOutput(name, binary))
    return outputs


# -- responses --------------------------------------------------------------------------------
def wire_dtype(dtype: np.dtype) -> tuple[np.dtype, str]:
    """An output's dtype as it is sent (little-endian) and its datatype name, for REST and gRPC alike:
    one dict lookup for what the engines give (native little-endian), a new dtype only for big-endian."""
    datatype = DATATYPE_OF.get(dtype)
    if datatype is None:  # big-endian: named, and sent, as little-endian
        dtype = dtype.newbyteorder("<")
        datatype = DATATYPE_OF[dtype]
    return dtype, datatype


def _output_tensor(name: str, array: np.ndarray, binary: bool, blobs: list[np.ndarray]) -> dict[str, Any]:
    """One output's entry of the response: its data inline (JSON), or its size with its bytes appended to `blobs`."""
    dtype, datatype = wire_dtype(array.dtype)
    # (the shape as its tuple: orjson writes a tuple as the same JSON array a list gives, without the list)
    tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": array.shape}
    if binary:
        blob = array.astype(dtype, copy=False)  # joined or sent as parts below
        tensor["parameters"] = {"binary_data_size": blob.nbytes}
        blobs.append(blob)
    else:  # flat, in C order, contiguous (a copy only when the array is not): what orjson writes
        tensor["data"] = array.ravel()
    return tensor


def encode_infer(model: str, version: int, request: OipRequest, outputs: dict[str, np.ndarray],
                 parameters: dict[str, Any]) -> Encoded:
    """An OIP infer response: the outputs asked for (all when none named), each as JSON data or as
    binary data after a JSON header whose length `Inference-Header-Content-Length` gives."""
    binary_output = request.binary_output
    tensors: list[dict[str, Any]] = []
    blobs: list[np.ndarray] = []
    if request.outputs is None:  # every output, as binary_data_output says (the usual request: no pairs built)
        for name in outputs:
            tensors.append(_output_tensor(name, outputs[name], binary_output, blobs))
    else:  # an output's own binary_data wins over the request's binary_data_output
        for item in request.outputs:
            binary = binary_output if item.binary is None else item.binary
            tensors.append(_output_tensor(item.name, outputs[item.name], binary, blobs))
    response: dict[str, Any] = {"model_name": model, "model_version": str(version), "outputs": tensors}
    if request.id is not None:
        response["id"] = request.id
    if parameters:
        response["parameters"] = parameters
    header = codec.dumps(response)
    if not blobs:
        return Encoded(header, codec.JSON_MEDIA_TYPE)
    parts = (header, *(part for blob in blobs for part in codec.contiguous_parts(blob)))
    large = sum(blob.nbytes for blob in blobs) >= codec.CHUNKED_MIN_BYTES  # large: sent from the arrays' memory
    return Encoded(codec.Chunks(parts) if large else b"".join(parts), BINARY_MEDIA_TYPE, {HEADER_LENGTH: str(len(header))})


# -- per model kind ---------------------------------------------------------------------------
def oip_shape(shape: list[int | str]) -> list[int]:
    """A manifest shape -> OIP: named (dynamic) dimensions are -1."""
    return [dim if isinstance(dim, int) else -1 for dim in shape]


class ModelIO:
    """What one kind of model shows over OIP: metadata, parameters, outputs."""

    kind: ClassVar[str]
    output_name: ClassVar[str]
    datatype: ClassVar[str] = "FP32"  # the input's, as the metadata shows it: the only one accepted
    parameters: ClassVar[frozenset[str]] = frozenset({"binary_data_output"})

    def input_name(self, served: ProvenVersion) -> str:
        return served.manifest.inputs[0].name

    def metadata_tensors(self, served: ProvenVersion) -> tuple[list[dict], list[dict]]:
        raise NotImplementedError

    def query(self, request: OipRequest) -> dict[str, Any]:
        """The request parameters that become the kind's parameters."""
        raise NotImplementedError

    def outputs(self, result: InferResult) -> dict[str, np.ndarray]:
        """The output tensors by name, shaped as the metadata says."""
        raise NotImplementedError

    def check(self, request: OipRequest, served: ProvenVersion) -> InputTensor:
        """The request's one input, checked against this model (400 naming what is wrong)."""
        if request.parameters:  # (the message's text built only for a request that has some)
            _no_unknown(request.parameters, self.parameters, f"parameters (a {served.kind})")
        expected = self.input_name(served)
        if len(request.inputs) != 1 or request.inputs[0].name != expected:
            names = [tensor.name for tensor in request.inputs]
            raise BadRequestError(f"model {served.manifest.name!r} takes one input named {expected!r}, got {names}",
                                  field="inputs", expected=[expected], got=names)
        tensor = request.inputs[0]
        if tensor.datatype != self.datatype:  # as Triton: no silent conversion (large INT64 would round)
            raise BadRequestError(f"inputs[0].datatype {tensor.datatype} is not the model's: input {expected!r} of "
                                  f"model {served.manifest.name!r} is {self.datatype}; send {self.datatype}",
                                  field="inputs[0]", expected=self.datatype, got=tensor.datatype)
        if request.outputs is not None:
            unknown = sorted({item.name for item in request.outputs} - {self.output_name})
            if unknown:
                raise BadRequestError(f"unknown output(s) {unknown}; model {served.manifest.name!r} has "
                                      f"[{self.output_name!r}]", field="outputs", expected=[self.output_name])
        return request.inputs[0]


class SmootherIO(ModelIO):
    kind = "smoother"
    output_name = "smoothed"
    parameters = frozenset({"binary_data_output", "mode"})

    def metadata_tensors(self, served: ProvenVersion) -> tuple[list[dict], list[dict]]:
        spec = served.manifest.inputs[0]
        shape = oip_shape(spec.shape)
        return ([{"name": spec.name, "datatype": self.datatype, "shape": shape}],
                [{"name": self.output_name, "datatype": "FP32", "shape": [-1] * len(shape)}])

    def query(self, request: OipRequest) -> dict[str, Any]:
        mode = request.parameters.get("mode")
        if mode is not None and mode not in EDGE_MODES:
            raise BadRequestError(f"parameters.mode must be one of {list(EDGE_MODES)}, got {mode!r}"[:300], field="mode")
        return {"mode": mode}

    def outputs(self, result: InferResult) -> dict[str, np.ndarray]:
        return {self.output_name: result.outputs["smoothed"]}


class ClassifierIO(ModelIO):
    kind = "classifier"
    output_name = "scores"

    def metadata_tensors(self, served: ProvenVersion) -> tuple[list[dict], list[dict]]:
        spec, out = served.manifest.inputs[0], served.manifest.outputs[0]
        return ([{"name": spec.name, "datatype": self.datatype, "shape": oip_shape(spec.shape)}],
                [{"name": out.name, "datatype": "FP32", "shape": oip_shape(out.shape)}])

    def query(self, request: OipRequest) -> dict[str, Any]:
        return {}

    def outputs(self, result: InferResult) -> dict[str, np.ndarray]:
        scores = result.outputs["scores"]  # /classify's: [N] with one label
        return {self.output_name: scores.reshape(len(scores), -1)}


# What a kind shows over OIP follows from its wire form (compute.kinds.ServiceKind.wire), not from its
# name: a new kind of either form (a regressor is "rows", like a classifier) needs nothing here.
IO_BY_WIRE: dict[str, ModelIO] = {"signal": SmootherIO(), "rows": ClassifierIO()}


def model_io(kind: str | None) -> ModelIO | None:
    """The OIP view of a kind, by its wire form; None for a kind that is not registered (read at each
    call, so a kind registered after this module's import is served too)."""
    adapter = SERVICE_KINDS.get(kind) if kind is not None else None
    return IO_BY_WIRE[adapter.wire] if adapter is not None else None


def platform(engine: str) -> str:
    """Triton's platform names for the artifact the engine runs."""
    return {"onnx": "onnxruntime_onnx", "torchscript": "pytorch_libtorch"}.get(engine, engine)


def model_metadata(served: ProvenVersion, versions: list[int], engine: str) -> dict[str, Any]:
    inputs, outputs = model_io(served.kind).metadata_tensors(served)
    return {"name": served.manifest.name, "versions": [str(v) for v in sorted(versions)],
            "platform": platform(engine), "inputs": inputs, "outputs": outputs}


def server_metadata(version: str, extensions: list[str]) -> dict[str, Any]:
    return {"name": "monoserve", "version": version, "extensions": extensions}


def version_number(name: str, version: str | None) -> int | None:
    """A version from the URL path: a positive integer of at most 64 bits, else 404."""
    if version is None:
        return None
    if not (version.isascii() and version.isdigit()) or len(version) > 19 or not 1 <= int(version) <= native.MAX_VERSION:
        raise NotFoundError(f"model {name!r} has no version {version[:40]!r}: versions are positive integers",
                            model=name)
    return int(version)


def resolve(service: "Service", name: str, version: str | None) -> ProvenVersion:
    """The version a request names (the newest valid one when none): 404 unknown, 503 not valid."""
    return _resolve(service, name, version)[0]


def _resolve(service: "Service", name: str, version: str | None) -> tuple[ProvenVersion, ModelIO]:
    """resolve(...) and the version's ModelIO, found on the way (its kind is the entry's)."""
    registry = service.registry
    if registry is None:
        raise ModelUnavailableError("models are still loading")
    entry = registry.model(name)
    kind = entry.kind  # a property that looks up the newest version: read once
    io = model_io(kind)
    if io is None:
        raise ModelUnavailableError(entry.reason or f"model {name!r} is unavailable", model=name)
    return registry.resolve(kind, name, version_number(name, version)), io


# Working memory per value reserved before allocating, as the native adapters reserve it.
JSON_BYTES = native.JSON_BYTES_PER_VALUE + native.OUTPUT_BYTES_PER_VALUE + native.ENCODED_BYTES_PER_VALUE[False]
BINARY_BYTES = native.OUTPUT_BYTES_PER_VALUE + native.ENCODED_BYTES_PER_VALUE[True]


class OipAdapter:
    """POST /v2/models/{name}[/versions/{version}]/infer as a ProtocolAdapter of service.pipeline.endpoint."""

    query = frozenset()

    def __init__(self, service: "Service", name: str, version: str | None, route: str):
        self.service, self.name, self.version, self.route = service, name, version, route
        # (registry.models, version, its ModelIO) of the last resolution: an adapter kept for its path
        # (service.edge.fastpath.HotLane) answers the next request from it while the registry's models
        # dict is the same object. Every change of what serves replaces that dict and never changes a
        # committed one (the same rule as ModelRegistry.resolve's cache); refusals are not kept.
        self._resolved: tuple[dict[str, Any], ProvenVersion, ModelIO] | None = None

    def resolved(self) -> tuple[ProvenVersion, ModelIO]:
        """_resolve(...) of this adapter's model and version, from the last answer while it holds."""
        registry = self.service.registry
        kept = self._resolved
        if kept is not None and registry is not None and kept[0] is registry.models:
            return kept[1], kept[2]
        served, io = _resolve(self.service, self.name, self.version)
        self._resolved = (registry.models, served, io)  # (registry is not None: _resolve refuses that)
        return served, io

    def decode(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str], limits: Limits) -> InferRequest:
        served, io = self.resolved()
        header_length = headers.get(HEADER_LENGTH_KEY)
        json_end = len(body)
        if header_length is not None and header_length.strip().isascii() and header_length.strip().isdigit():
            json_end = min(len(body), int(header_length.strip()))
        values, lists = codec.json_counts(bytes(body[:json_end]) if json_end < len(body) else body)
        limits.admit(values, JSON_BYTES, "inputs", extra_bytes=lists * native.JSON_BYTES_PER_LIST)

        def admit(count: int, dtype: np.dtype, where: str) -> None:  # a float32 copy unless sent as float32
            limits.admit(count, BINARY_BYTES + (0 if dtype == np.float32 else 4), where)

        request = decode_infer(body, header_length, admit, lists if json_end == len(body) else None)
        tensor = io.check(request, served)
        array = tensor.array if tensor.array.dtype == FLOAT32 else tensor.array.astype(np.float32)
        # "served": the version the request was checked against is the one that runs it; the pipeline
        # (service.pipeline.endpoint._decode) does not resolve the model a second time.
        return InferRequest(served.kind, self.name, served.manifest.version, inputs=array, params=io.query(request),
                            context={"oip": request, "io": io, "served": served})

    def encode(self, result: InferResult, request: InferRequest) -> Encoded:
        manifest = result.served.manifest
        io: ModelIO = request.context["io"]
        return encode_infer(manifest.name, manifest.version, request.context["oip"], io.outputs(result), result.facts)
