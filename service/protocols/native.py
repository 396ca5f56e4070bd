"""monoserve's own protocol: POST /smooth and /classify, JSON or .npy in and out.

Two `ProtocolAdapter`s (service.pipeline.endpoint), one per route. Each decodes a body into an
`InferRequest` (counting the values against the limits before any array is allocated) and encodes
an `InferResult`. Everything else (limits, resolution, inference, errors) is the pipeline's.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from service.base import codec
from service.base.errors import BadRequestError
from service.compute.request import InferRequest, InferResult, Limits
from service.pipeline.endpoint import Encoded
from service.protocols.stream_http import STATE_HEADER, STREAM_KIND, flag

SMOOTH_FIELDS = frozenset({"signal", "model", "version", "mode", "stream", "state", "end"})  # the last 3: service.protocols.stream_http
CLASSIFY_FIELDS = frozenset({"instances", "model", "version"})
MAX_VERSION = 2**63 - 1  # versions are directory names; beyond 64 bits nothing can match

# Working memory per value, reserved in the in-flight budget before allocating (measured roughly:
# orjson's lists cost ~32 B per number plus ~64 B per list; arrays are float32).
JSON_BYTES_PER_VALUE = 40
JSON_BYTES_PER_LIST = 64
NPY_BYTES_PER_VALUE = 4  # a float32 copy (float64 or Fortran-order bodies; none for float32 C-order)
OUTPUT_BYTES_PER_VALUE = 8  # the engine's output (the full correlation for a smoother) and a slice copy
ENCODED_BYTES_PER_VALUE = {True: 4, False: 20}  # .npy answer; JSON answer (orjson's float text + comma)


def version_param(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)) or (isinstance(value, str) and not value.isdigit()):
        raise BadRequestError(f"'version' must be a positive integer, got {str(value)[:40]!r}", field="version")
    if isinstance(value, str) and len(value) > 19:  # more digits than any 64-bit integer: no int() of a huge string
        raise BadRequestError(f"'version' is out of range (at most {MAX_VERSION})", field="version")
    number = int(value)
    if not 1 <= number <= MAX_VERSION:
        raise BadRequestError(f"'version' must be a positive integer of at most 64 bits, got {str(value)[:40]}",
                              field="version")
    return number


def model_param(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise BadRequestError(f"'model' must be a non-empty string, got {str(value)[:40]!r}", field="model")
    return value


def unknown_fields(payload: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise BadRequestError(f"unknown field(s) {unknown}; expected {sorted(allowed)}", fields=unknown)


def _admit_json(body: bytes, limits: Limits, field: str, npy_out: bool) -> int:
    """Counts the body's values and lists into the limits; returns its count of '[' (the simdjson road's check)."""
    values, lists = codec.json_counts(body)
    per_value = JSON_BYTES_PER_VALUE + OUTPUT_BYTES_PER_VALUE + ENCODED_BYTES_PER_VALUE[npy_out]
    limits.admit(values, per_value, field, extra_bytes=lists * JSON_BYTES_PER_LIST)
    return lists


def _decode_npy(body: bytes, limits: Limits, field: str, npy_out: bool) -> np.ndarray:
    per_value = NPY_BYTES_PER_VALUE + OUTPUT_BYTES_PER_VALUE + ENCODED_BYTES_PER_VALUE[npy_out]
    return codec.decode_npy(body, field, admit=lambda count: limits.admit(count, per_value, field))


def npy_working_ratio(headers: Mapping[str, str]) -> float:
    """Working bytes per .npy body byte (float32: 4 bytes a value), reserved with the body; 0 for JSON,
    whose values are counted on its bytes instead."""
    if codec.media_type(headers.get("content-type")) != codec.NPY_MEDIA_TYPE:
        return 0.0
    npy_out = codec.wants_npy(headers.get("accept"))
    return (NPY_BYTES_PER_VALUE + OUTPUT_BYTES_PER_VALUE + ENCODED_BYTES_PER_VALUE[npy_out]) / 4


def _params(query: Mapping[str, str], fields: Mapping[str, Any], data_field: str | None = None) -> dict[str, Any]:
    """The query's parameters, then the body's fields (but its data field) that are not null."""
    params: dict[str, Any] = dict(query)
    for key, value in fields.items():
        if value is not None and key != data_field:
            params[key] = value
    return params


class SmoothAdapter:
    """POST /smooth: {"signal": [...], "model"?, "version"?, "mode"?} or a .npy body (query parameters)."""

    route = "/smooth"
    query = frozenset({"model", "version", "mode", "stream", "end"})
    working_ratio = staticmethod(npy_working_ratio)

    def decode(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str], limits: Limits) -> InferRequest:
        fmt = codec.body_format(headers.get("content-type"))
        npy_out = codec.wants_npy(headers.get("accept"))
        if fmt == "json":
            brackets = _admit_json(body, limits, "signal", npy_out)
            fast = codec.loads_with_array(body, "signal", brackets)
            if fast is not None:  # a big plain numeric array, parsed straight into numpy
                others, signal = fast
                unknown_fields({**others, "signal": None}, SMOOTH_FIELDS)
            else:
                payload = codec.loads_object(body)
                unknown_fields(payload, SMOOTH_FIELDS)
                others = {k: v for k, v in payload.items() if k != "signal"}
                if "signal" not in payload:
                    if not (payload.get("end") is True and "state" in payload):  # a stream's end needs no new samples
                        raise BadRequestError("missing field 'signal'", field="signal")
                    signal = None
                else:
                    signal = codec.to_float32(payload["signal"], "signal")
        else:
            others, signal = {}, _decode_npy(body, limits, "signal", npy_out)
        params = _params(query, others)
        mode = params.get("mode")
        if mode is not None and not isinstance(mode, str):
            raise BadRequestError(f"'mode' must be a string, got {str(mode)[:40]}", field="mode")
        context: dict[str, Any] = {"npy": npy_out}
        kind = "smoother"
        if "stream" in params or "state" in params or "end" in params or STATE_HEADER in headers:
            stream = _stream_context(params, headers)
            if stream is not None:
                context["stream"], context["kind"] = stream, STREAM_KIND  # the stream's step, on the smoother
        return InferRequest(kind, model_param(params.get("model")), version_param(params.get("version")),
                            inputs=signal, params={"mode": mode}, context=context)

    def encode(self, result: InferResult, request: InferRequest) -> Encoded:
        manifest = result.served.manifest
        mode = result.facts["mode"]
        smoothed = result.outputs["smoothed"]
        if result.facts.get("stream"):
            return _encode_stream(result, request)
        if request.context["npy"]:
            return Encoded(codec.npy_body(smoothed), codec.NPY_MEDIA_TYPE,
                           {"x-model": manifest.name, "x-model-version": str(manifest.version), "x-mode": mode})
        return Encoded(codec.dumps({"model": manifest.name, "version": manifest.version, "mode": mode,
                                    "smoothed": np.ascontiguousarray(smoothed)}), codec.JSON_MEDIA_TYPE)


def _stream_context(params: Mapping[str, Any], headers: Mapping[str, str]) -> dict[str, Any] | None:
    """What a /smooth request that starts or continues a stream asks (service.protocols.stream_http); None
    for a plain request ("stream": false)."""
    state = params.get("state")
    if state is None:
        state = headers.get(STATE_HEADER)
    start, end = flag(params.get("stream"), "stream"), flag(params.get("end"), "end")
    if state is None and not start and not end:
        return None
    if state is None and not start:
        raise BadRequestError("'end' and 'state' belong to a stream: start one with \"stream\": true (?stream=true)",
                              field="stream")
    if state is not None and start:
        raise BadRequestError("\"stream\": true starts a new stream: leave it out when sending a 'state'",
                              field="stream")
    return {"state": state, "end": end}


def _encode_stream(result: InferResult, request: InferRequest) -> Encoded:
    manifest = result.served.manifest
    state, end, mode = result.facts["state"], result.facts["end"], result.facts["mode"]
    smoothed = result.outputs["smoothed"]
    if request.context["npy"]:
        headers = {"x-model": manifest.name, "x-model-version": str(manifest.version), "x-mode": mode,
                   "x-stream-end": "true" if end else "false"}
        if state is not None:
            headers[STATE_HEADER] = state
        return Encoded(codec.encode_npy(smoothed), codec.NPY_MEDIA_TYPE, headers)
    body = {"model": manifest.name, "version": manifest.version, "mode": mode,
            "smoothed": np.ascontiguousarray(smoothed), "end": end}
    if state is not None:
        body["state"] = state
    return Encoded(codec.dumps(body), codec.JSON_MEDIA_TYPE)


class ClassifyAdapter:
    """POST /classify: {"instances": [[...]] | [{feature: value}], "model"?, "version"?} or a .npy body."""

    route = "/classify"
    kind = "classifier"
    query = frozenset({"model", "version"})
    working_ratio = staticmethod(npy_working_ratio)

    def decode(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str], limits: Limits) -> InferRequest:
        fmt = codec.body_format(headers.get("content-type"))
        npy_out = codec.wants_npy(headers.get("accept"))
        records = features = None
        if fmt == "json":
            _admit_json(body, limits, "instances", npy_out)
            payload = codec.loads_object(body)
            unknown_fields(payload, CLASSIFY_FIELDS)
            if "instances" not in payload:
                raise BadRequestError("missing field 'instances'", field="instances")
            others = payload  # its "instances" is skipped by _params
            instances = payload["instances"]
            if not isinstance(instances, list):
                raise BadRequestError(f"'instances' must be a list of instances, got {type(instances).__name__}",
                                      field="instances")
            limits.check_rows(len(instances), "instances")
            if instances and type(instances[0]) is dict:  # instances keyed by feature name
                if not all(type(item) is dict for item in instances):
                    raise BadRequestError("'instances' mixes objects and lists: use one form", field="instances")
                records = instances
            else:
                try:
                    features = codec.to_float32(instances, "instances")
                except BadRequestError:
                    if any(type(item) is dict for item in instances):
                        raise BadRequestError("'instances' mixes objects and lists: use one form",
                                              field="instances") from None
                    raise
        else:
            others, features = {}, _decode_npy(body, limits, "instances", npy_out)
        params = _params(query, others, "instances")
        return InferRequest(self.kind, model_param(params.get("model")), version_param(params.get("version")),
                            inputs=features, records=records, context={"npy": npy_out})

    def encode(self, result: InferResult, request: InferRequest) -> Encoded:
        manifest = result.served.manifest
        labels, threshold = result.facts["labels"], result.facts["threshold"]
        scores = result.outputs["scores"]
        if request.context["npy"]:
            return Encoded(codec.encode_npy(scores), codec.NPY_MEDIA_TYPE,
                           {"x-model": manifest.name, "x-model-version": str(manifest.version),
                            "x-labels": codec.dumps(labels).decode(),
                            # a number, or a JSON list with one threshold per label
                            "x-threshold": codec.dumps(threshold).decode() if isinstance(threshold, list)
                            else repr(threshold)})
        return Encoded(codec.dumps({"model": manifest.name, "version": manifest.version, "scores": scores,
                                    "labels": labels, "threshold": threshold,
                                    "decisions": result.facts["decisions"]}), codec.JSON_MEDIA_TYPE)


class ScoreAdapter(ClassifyAdapter):
    """POST /score: a regressor's instances, as /classify reads them -> {"model", "version", "scores"}."""

    route = "/score"
    kind = "regressor"

    def encode(self, result: InferResult, request: InferRequest) -> Encoded:
        manifest = result.served.manifest
        scores = result.outputs["scores"]
        if request.context["npy"]:
            return Encoded(codec.encode_npy(scores), codec.NPY_MEDIA_TYPE,
                           {"x-model": manifest.name, "x-model-version": str(manifest.version)})
        return Encoded(codec.dumps({"model": manifest.name, "version": manifest.version, "scores": scores}),
                       codec.JSON_MEDIA_TYPE)


class RowsAdapter(ClassifyAdapter):
    """The route a kind added by service.compute.kinds.register_kind declares (`ServiceKind.route`, wire
    "rows"): instances read as /classify reads them -> {"model", "version", <each output by its name>};
    a .npy answer is the kind's one output. No code here names the kind."""

    def __init__(self, kind: str, route: str):
        self.kind, self.route = kind, route

    def encode(self, result: InferResult, request: InferRequest) -> Encoded:
        manifest = result.served.manifest
        if request.context["npy"]:
            if len(result.outputs) != 1:
                raise BadRequestError(f"a {self.kind} answers {len(result.outputs)} arrays: ask for JSON",
                                      field="accept")
            return Encoded(codec.encode_npy(next(iter(result.outputs.values()))), codec.NPY_MEDIA_TYPE,
                           {"x-model": manifest.name, "x-model-version": str(manifest.version)})
        return Encoded(codec.dumps({"model": manifest.name, "version": manifest.version, **result.outputs}),
                       codec.JSON_MEDIA_TYPE)


SMOOTH = SmoothAdapter()
CLASSIFY = ClassifyAdapter()
SCORE = ScoreAdapter()
# route -> adapter: the built-in routes, and those of registered kinds once add_kind_routes has run
# (service.app, when it builds the app; service.edge.fastpath reads this same dict)
ADAPTERS: dict[str, Any] = {adapter.route: adapter for adapter in (SMOOTH, CLASSIFY, SCORE)}


def add_kind_routes(kinds: Mapping[str, Any]) -> list[RowsAdapter]:
    """One RowsAdapter per registered kind that declares a route not served yet; the new ones."""
    added = []
    for kind, adapter in kinds.items():
        route = getattr(adapter, "route", None)
        if route is None or route in ADAPTERS:
            continue
        ADAPTERS[route] = RowsAdapter(kind, route)
        added.append(ADAPTERS[route])
    return added
