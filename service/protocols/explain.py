"""POST /explain and its Open Inference Protocol extension, as adapters of the endpoint pipeline
(service.pipeline.endpoint): the pipeline reads the body within its limits, checks the token, resolves the
version, runs `ExplainKind` (in a worker thread when predicted long) and maps every error.

Request (JSON): {"instances": [[v, ...], ...] | [{"feature": v | [low, high], ...}, ...],
"model"?, "version"?, "label"?, "threshold"?, "tolerance"?, "curves"?, "ranges"?}. A feature left
out of an instance object means its whole declared range; an interval or a range needs a feature
whose direction the version's certificate proved.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from contract.files import read_checked
from service.base import codec
from service.base.errors import BadRequestError, PayloadTooLargeError
from service.compute.explain import search
from service.compute.explain.additive import Additivity, analyze
from service.compute.explain.explainer import ExplainOptions, Instances, explain, parse_curves, parse_tolerance, proven
from service.compute.explain.view import ExplainView
from service.compute.kinds import service_kind
from service.compute.per_version import PerVersion
from service.compute.request import InferRequest, InferResult, Limits
from service.pipeline.endpoint import Encoded
from service.protocols import native, oip

if TYPE_CHECKING:
    from service.compute.version import ProvenVersion
    from service.pipeline.service import Service

log = logging.getLogger(__name__)

ROUTE = "/explain"
FIELDS = frozenset({"instances", "model", "version", "label", "threshold", "tolerance", "curves", "ranges"})
OPTION_FIELDS = frozenset({"label", "threshold", "tolerance", "curves", "ranges"})
MAX_INSTANCES = 1000  # each costs up to 2 + F * K model rows: /classify's row limit would be far too loose
MAX_CURVE_VALUES = 1_000_000  # scores in one answer's curves (about 20 MB of JSON)


# -- the additive form of each served version, read once from its proven model.onnx -------------
_ADDITIVITY: PerVersion[Additivity] = PerVersion()


def additivity_of(served: ProvenVersion) -> Additivity:
    """The version's additive form (or why it has none), from model.onnx read again and checked
    against the manifest's checksum: exactly the bytes that were proven."""
    return _ADDITIVITY.get(served, _analyze)


def _analyze(served: ProvenVersion) -> Additivity:
    import onnx

    manifest = served.manifest
    entry = manifest.file_for("onnx")
    if entry is None:
        return Additivity(None, "the version has no ONNX graph to read its form from")
    from service.settings import get_settings

    try:
        data, _, _ = read_checked(served.path, entry.path, size=entry.size, sha256=entry.sha256,
                                  max_bytes=int(get_settings().max_artifact_bytes))
        model = onnx.load_from_string(data)
    except Exception as exc:  # noqa: BLE001 - changed since its proof, unreadable: then not explained
        return Additivity(None, f"model.onnx could not be read again: {exc}")
    width = len(_features(manifest))
    return analyze(model, manifest.inputs[0].name, manifest.outputs[0].name, width)


def _features(manifest: Any) -> list:
    section = getattr(manifest, manifest.kind, None)
    return list(getattr(section, "features", None) or [])


# -- parsing against the version ----------------------------------------------------------------
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _number(value: Any, where: str) -> float:
    # the model computes in float32: a finite double beyond its range (1e39) would become infinity
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or abs(value) > FLOAT32_MAX):
        raise BadRequestError(f"{where} must be a finite number within float32's range (|v| <= {FLOAT32_MAX:.4g}), "
                              f"got {str(value)[:40]!r}", field=where)
    return float(np.float32(value))


def _interval(value: Any, where: str) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise BadRequestError(f"{where} must be a number or an interval [low, high], got {str(value)[:60]!r}", field=where)
    low, high = _number(value[0], where), _number(value[1], where)
    if low > high:
        raise BadRequestError(f"{where}: interval [{low:g}, {high:g}] has low > high", field=where)
    return low, high


def _ranges(view: ExplainView, given: Any) -> list[tuple[float, float] | None]:
    ranges = dict(view.ranges)
    if given is not None:
        if not isinstance(given, dict):
            raise BadRequestError("'ranges' must map feature names to [low, high]", field="ranges")
        for name, value in given.items():
            if name not in view.features:
                raise BadRequestError(f"'ranges' names unknown feature {name!r}; features are {view.features}",
                                      field="ranges", features=view.features)
            ranges[name] = _interval(value, f"ranges.{name}")
    return [ranges.get(name) for name in view.features]


def parse_options(view: ExplainView, payload: Mapping[str, Any]) -> ExplainOptions:
    label = payload.get("label")
    if label is None:
        output = 0
    elif isinstance(label, str) and label in view.outputs:
        output = view.outputs.index(label)
    else:
        raise BadRequestError(f"'label' must be one of {view.outputs}, got {str(label)[:40]!r}", field="label")
    threshold = payload.get("threshold")
    if threshold is not None:
        threshold = _number(threshold, "threshold")
    elif view.thresholds is not None:
        threshold = float(view.thresholds[output])
    return ExplainOptions(output, threshold, parse_tolerance(payload.get("tolerance")),
                          parse_curves(payload.get("curves")), _ranges(view, payload.get("ranges")))


def parse_instances(view: ExplainView, raw: Any, ranges: list[tuple[float, float] | None]) -> Instances:
    if not isinstance(raw, list) or not raw:
        raise BadRequestError("'instances' must be a non-empty list", field="instances")
    if len(raw) > MAX_INSTANCES:
        raise PayloadTooLargeError(f"'instances' has {len(raw)} instances, more than /explain takes at once "
                                   f"({MAX_INSTANCES})", field="instances", limit=MAX_INSTANCES)
    names, width = view.features, len(view.features)
    lows, highs = np.zeros((len(raw), width)), np.zeros((len(raw), width))
    for i, item in enumerate(raw):
        if isinstance(item, list):
            if len(item) != width:
                raise BadRequestError(f"instance {i} has {len(item)} values; the model takes {width} features {names}",
                                      field="instances", index=i, features=names)
            lows[i] = highs[i] = [_number(v, f"instances[{i}][{f}]") for f, v in enumerate(item)]
            continue
        if not isinstance(item, dict):
            raise BadRequestError(f"instance {i} must be a list of {width} numbers or an object keyed by feature",
                                  field="instances", index=i)
        unknown = sorted(set(item) - set(names))
        if unknown:
            raise BadRequestError(f"instance {i}: unknown feature(s) {unknown}; features are {names}",
                                  field="instances", index=i, unknown=unknown, features=names)
        for f, name in enumerate(names):
            where = f"instances[{i}].{name}"
            if name not in item:
                if ranges[f] is None:
                    raise BadRequestError(f"{where} is left out, but the feature has no declared range: give its value, "
                                          "or its range in 'ranges'", field="instances", index=i, feature=name)
                lows[i, f], highs[i, f] = ranges[f]
            elif isinstance(item[name], list):
                lows[i, f], highs[i, f] = _interval(item[name], where)
            else:
                lows[i, f] = highs[i, f] = _number(item[name], where)
    for f, name in enumerate(names):
        spread = np.flatnonzero(lows[:, f] < highs[:, f])
        if spread.size and not proven(view.directions[f]):
            raise BadRequestError(
                f"instances[{int(spread[0])}].{name} is an interval (or left out), but the score is not proven monotone "
                f"in {name!r} (direction {view.directions[f]!r}): its bounds would not be exact; give its value",
                field="instances", index=int(spread[0]), feature=name)
    outside = [[name for f, name in enumerate(names) if ranges[f] is not None and lows[i, f] == highs[i, f]
                and not ranges[f][0] <= lows[i, f] <= ranges[f][1]] for i in range(len(raw))]
    return Instances(lows, highs, outside)


# -- the pipeline's kind and adapters -----------------------------------------------------------
@dataclass
class ExplainCall:
    served: ProvenVersion
    view: ExplainView
    instances: Instances
    options: ExplainOptions


class ExplainKind:
    """The pipeline's ModelKind for /explain: prepare against the version's ExplainView, then explain."""

    name = "explain"
    batchable = False

    def prepare(self, served: ProvenVersion, request: InferRequest, limits: Limits) -> ExplainCall:
        view = service_kind(served.kind).explain_view(served)
        if view is None:
            raise BadRequestError(f"model {served.manifest.name!r} is a {served.kind}: /explain explains models with "
                                  "features (classifiers)", model=served.manifest.name)
        payload = request.context["explain"]
        options = parse_options(view, payload)
        instances = parse_instances(view, payload.get("instances"), options.ranges)
        count, features = instances.lows.shape
        curve_values = count * features * options.curve_points
        if curve_values > MAX_CURVE_VALUES:
            raise PayloadTooLargeError(f"curves of {options.curve_points} points for {count} instance(s) of {features} "
                                       f"feature(s) make {curve_values} scores, more than {MAX_CURVE_VALUES}: ask fewer "
                                       "points or instances", field="curves", limit=MAX_CURVE_VALUES)
        # the largest batch held at once (the curves', or one bisection step's: a row per feature and
        # instance), as float64 rows + their float32 copy + the scores
        rows = max(2 * count, count * features, curve_values)
        limits.admit(rows * features, 8 + 4 + 8, "instances")
        return ExplainCall(served, view, instances, options)

    def work(self, call: ExplainCall) -> int:
        count, features = call.instances.lows.shape
        steps = search.steps_for(call.options.tolerance)
        rows = count * (2 + features * steps + features * call.options.curve_points)
        return rows * features

    def infer(self, call: ExplainCall, settings: Any) -> Any:
        return explain(call.view, additivity_of(call.served), call.instances, call.options)

    def batch_input(self, call: ExplainCall) -> np.ndarray:
        raise NotImplementedError("explanations are not batched with other requests")

    def result(self, call: ExplainCall, output: Any) -> InferResult:
        options = call.options
        facts = {"label": call.view.outputs[options.output], "threshold": options.threshold,
                 "features": call.view.features, "directions": call.view.directions,
                 "ranges": {name: list(span) if span is not None else None
                            for name, span in zip(call.view.features, options.ranges)}, **output}
        return InferResult(call.served, {}, facts)


EXPLAIN = ExplainKind()


def _admit(body: bytes, limits: Limits) -> None:
    values, lists = codec.json_counts(body)
    limits.admit(values, native.JSON_BYTES_PER_VALUE, "instances", extra_bytes=lists * native.JSON_BYTES_PER_LIST)


class ExplainAdapter:
    """POST /explain (JSON)."""

    route = ROUTE
    query = frozenset()

    def decode(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str], limits: Limits) -> InferRequest:
        _admit(body, limits)
        payload = codec.loads_object(body)
        native.unknown_fields(payload, FIELDS)
        model = native.model_param(payload.get("model"))
        return InferRequest("classifier" if model is None else None, model, native.version_param(payload.get("version")),
                            context={"kind": EXPLAIN, "explain": payload})

    def encode(self, result: InferResult, request: InferRequest) -> Encoded:
        manifest = result.served.manifest
        return Encoded(codec.dumps({"model": manifest.name, "version": manifest.version, **result.facts}),
                       codec.JSON_MEDIA_TYPE)


class OipExplainAdapter:
    """POST /v2/models/{name}[/versions/{version}]/explain: an OIP infer body (the model's one input
    tensor [N, F], each row an instance) with the explanation options in its `parameters`."""

    query = frozenset()

    def __init__(self, service: Service, name: str, version: str | None, route: str):
        self.service, self.name, self.version, self.route = service, name, version, route

    def decode(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str], limits: Limits) -> InferRequest:
        served = oip.resolve(self.service, self.name, self.version)
        _admit(body, limits)

        def admit(count: int, dtype: np.dtype, where: str) -> None:
            limits.admit(count, 8, where)

        request = oip.decode_infer(body, headers.get(oip.HEADER_LENGTH.lower()), admit)
        unknown = sorted(set(request.parameters) - OPTION_FIELDS)
        if unknown:
            raise BadRequestError(f"unknown parameter(s) {unknown}; /explain takes {sorted(OPTION_FIELDS)}",
                                  field="parameters", fields=unknown)
        expected = served.manifest.inputs[0].name
        if [tensor.name for tensor in request.inputs] != [expected]:
            raise BadRequestError(f"model {self.name!r} takes one input named {expected!r}", field="inputs")
        array = request.inputs[0].array
        if array.ndim != 2:
            raise BadRequestError(f"input {expected!r} must be [N, F], got shape {list(array.shape)}", field="inputs")
        if not np.all(np.isfinite(array)):
            raise BadRequestError(f"input {expected!r} holds NaN or infinity", field="inputs")
        payload = {**request.parameters, "instances": array.astype(np.float64).tolist()}
        return InferRequest(served.kind, self.name, served.manifest.version,
                            context={"kind": EXPLAIN, "explain": payload, "oip": request})

    def encode(self, result: InferResult, request: InferRequest) -> Encoded:
        manifest = result.served.manifest
        body: dict[str, Any] = {"model_name": manifest.name, "model_version": str(manifest.version)}
        if request.context["oip"].id is not None:
            body["id"] = request.context["oip"].id
        body.update(result.facts)
        return Encoded(codec.dumps(body), codec.JSON_MEDIA_TYPE)
