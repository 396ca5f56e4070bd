"""The work behind POST /smooth and /classify, free of web-framework types.

Each endpoint is three plain functions: decode (body -> validated float32 array + the model
version that will serve it), infer (array -> output array), encode (output -> response bytes).
The route decides where each runs (inline or in a worker thread) and times them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from contract.modes import EDGE_MODES, mode_slice
from service import codec
from service.convolve import choose_method, full_correlation
from service.errors import BadRequestError, PayloadTooLargeError
from service.prover import ProvenVersion
from service.registry import ModelRegistry

SMOOTH_FIELDS = frozenset({"signal", "model", "version", "mode"})
CLASSIFY_FIELDS = frozenset({"instances", "model", "version"})


@dataclass
class Encoded:
    body: bytes
    media_type: str
    headers: dict[str, str] | None = None


def _version(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)) or (isinstance(value, str) and not value.isdigit()):
        raise BadRequestError(f"'version' must be a positive integer, got {value!r}", field="version")
    number = int(value)
    if number < 1:
        raise BadRequestError(f"'version' must be a positive integer, got {value!r}", field="version")
    return number


def _model(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise BadRequestError(f"'model' must be a non-empty string, got {value!r}", field="model")
    return value


def _unknown_fields(payload: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise BadRequestError(f"unknown field(s) {unknown}; expected {sorted(allowed)}", fields=unknown)


# -- /smooth ----------------------------------------------------------------------------------
@dataclass
class SmoothCall:
    served: ProvenVersion
    signal: np.ndarray  # [B, C, L] float32, C-contiguous
    rank: int  # 1, 2 or 3: the nesting of the request, kept in the answer
    mode: str


def decode_smooth(
    registry: ModelRegistry, body: bytes, content_type: str | None, query: Mapping[str, Any], max_length: int
) -> SmoothCall:
    fmt = codec.body_format(content_type)
    params = dict(query)
    fast = codec.loads_with_array(body, "signal") if fmt == "json" else None
    if fast is not None:  # a big plain numeric array, parsed straight into numpy
        others, signal = fast
        _unknown_fields({**others, "signal": None}, SMOOTH_FIELDS)
        params.update({k: v for k, v in others.items() if v is not None})
    elif fmt == "json":
        payload = codec.loads_object(body)
        _unknown_fields(payload, SMOOTH_FIELDS)
        if "signal" not in payload:
            raise BadRequestError("missing field 'signal'", field="signal")
        params.update({k: v for k, v in payload.items() if k != "signal" and v is not None})
        signal = codec.to_float32(payload["signal"], "signal")
    else:
        signal = codec.decode_npy(body, "signal")
    served = registry.resolve("smoother", _model(params.get("model")), _version(params.get("version")))
    info = served.manifest.smoother
    assert info is not None
    mode = params.get("mode") or info.default_mode
    if mode not in EDGE_MODES or mode not in info.edge_modes:
        raise BadRequestError(f"unknown mode {mode!r}; expected one of {list(info.edge_modes)}", field="mode")
    if not 1 <= signal.ndim <= 3:
        raise BadRequestError(
            f"'signal' must have 1 to 3 dimensions ([L], [C, L] or [B, C, L]), got {signal.ndim} (shape {list(signal.shape)})",
            field="signal", shape=list(signal.shape))
    if signal.size == 0:
        raise BadRequestError(f"'signal' is empty (shape {list(signal.shape)})", field="signal", shape=list(signal.shape))
    length = signal.shape[-1]
    if length > max_length:
        raise PayloadTooLargeError(f"signal length {length} exceeds the limit of {max_length} samples",
                                   field="signal", limit=max_length)
    kernel = info.kernel_size
    if mode == "valid" and length < kernel:
        raise BadRequestError(
            f"mode 'valid' needs at least {kernel} samples (the kernel size), got {length}",
            field="signal", kernel_size=kernel, length=length)
    codec.check_finite(signal, "signal")
    rank = signal.ndim
    return SmoothCall(served, signal.reshape((1,) * (3 - rank) + signal.shape), rank, mode)


def smooth_work(call: SmoothCall) -> int:
    """Input elements: with the model's warm-up cost model, what decides whether it may run inline."""
    return int(call.signal.size)


def infer_smooth(call: SmoothCall, method: str = "auto") -> np.ndarray:
    """The smoothed signal, a view of the full correlation (rows contiguous; the encoders copy once).

    `method`: "auto" picks, from the kernel size and signal length (service.convolve's measured
    rule), the engine (the exported graph), the blocked direct product or FFT overlap-add, the last
    two with the kernel the proof read out of the artifact; "engine", "direct", "fft" force one.
    All compute the graph's full correlation; direct and FFT run on the CPU (CUDA: the engine).
    """
    info = call.served.manifest.smoother
    assert info is not None
    batch, channels, length = call.signal.shape
    kernel = call.served.tensors.get("kernel")
    on_cpu = call.served.engine.device == "cpu"
    if method == "auto":
        method = choose_method(info.kernel_size, length) if on_cpu else "engine"
    if method != "engine" and (kernel is None or kernel.size != info.kernel_size or not on_cpu):
        method = "engine"
    if method == "engine":
        full = call.served.engine.run(call.signal)  # [B, C, L + K - 1]
    else:
        flat = call.signal.reshape(batch * channels, length)
        full = full_correlation(flat, kernel, method=method).reshape(batch, channels, -1)
    out = full[..., mode_slice(call.mode, length, info.kernel_size)]
    return out.reshape(out.shape[3 - call.rank:])


def encode_smooth(call: SmoothCall, smoothed: np.ndarray, npy: bool) -> Encoded:
    manifest = call.served.manifest
    if npy:
        return Encoded(codec.encode_npy(smoothed), codec.NPY_MEDIA_TYPE,
                       {"x-model": manifest.name, "x-model-version": str(manifest.version), "x-mode": call.mode})
    return Encoded(codec.dumps({"model": manifest.name, "version": manifest.version, "mode": call.mode,
                                "smoothed": np.ascontiguousarray(smoothed)}), codec.JSON_MEDIA_TYPE)


# -- /classify --------------------------------------------------------------------------------
@dataclass
class ClassifyCall:
    served: ProvenVersion
    features: np.ndarray  # [N, F] float32


def _instances_to_array(instances: Any, names: list[str]) -> np.ndarray:
    if not isinstance(instances, list):
        raise BadRequestError(f"'instances' must be a list of instances, got {type(instances).__name__}", field="instances")
    if instances and all(isinstance(item, dict) for item in instances):
        wanted = set(names)
        rows = []
        for index, item in enumerate(instances):
            keys = set(item)
            if keys != wanted:
                unknown, missing = sorted(keys - wanted), sorted(wanted - keys)
                parts = ([f"unknown feature(s) {unknown}"] if unknown else []) + ([f"missing feature(s) {missing}"] if missing else [])
                raise BadRequestError(f"instance {index}: " + ", ".join(parts) + f"; features are {names}",
                                      field="instances", index=index, unknown=unknown, missing=missing, features=names)
            rows.append([item[name] for name in names])
        return codec.to_float32(rows, "instances")
    if any(isinstance(item, dict) for item in instances):
        raise BadRequestError("'instances' mixes objects and lists: use one form", field="instances")
    return codec.to_float32(instances, "instances")


def decode_classify(registry: ModelRegistry, body: bytes, content_type: str | None, query: Mapping[str, Any]) -> ClassifyCall:
    fmt = codec.body_format(content_type)
    params = dict(query)
    raw: Any = None
    if fmt == "json":
        payload = codec.loads_object(body)
        _unknown_fields(payload, CLASSIFY_FIELDS)
        if "instances" not in payload:
            raise BadRequestError("missing field 'instances'", field="instances")
        params.update({k: v for k, v in payload.items() if k != "instances" and v is not None})
        raw = payload["instances"]
    else:
        features = codec.decode_npy(body, "instances")
    served = registry.resolve("classifier", _model(params.get("model")), _version(params.get("version")))
    info = served.manifest.classifier
    assert info is not None
    names = [f.name for f in info.features]
    if fmt == "json":
        features = _instances_to_array(raw, names)
    if features.size == 0:
        raise BadRequestError(f"'instances' is empty (shape {list(features.shape)})", field="instances")
    if features.ndim != 2:
        raise BadRequestError(
            f"'instances' must be a list of instances, each a list of {len(names)} numbers: got shape {list(features.shape)}",
            field="instances", shape=list(features.shape))
    if features.shape[1] != len(names):
        raise BadRequestError(
            f"each instance needs {len(names)} features {names}, got {features.shape[1]}",
            field="instances", expected=len(names), got=int(features.shape[1]), features=names)
    codec.check_finite(features, "instances")
    return ClassifyCall(served, features)


def classify_work(call: ClassifyCall) -> int:
    return int(call.features.size)


def infer_classify(call: ClassifyCall) -> np.ndarray:
    return call.served.engine.run(call.features)  # [N, n_labels] probabilities


def encode_classify(call: ClassifyCall, scores: np.ndarray, npy: bool) -> Encoded:
    manifest = call.served.manifest
    info = manifest.classifier
    assert info is not None
    # One label: one probability per instance; several labels: one list per instance.
    scores = np.ascontiguousarray(scores[:, 0] if len(info.labels) == 1 else scores)
    if npy:
        return Encoded(codec.encode_npy(scores), codec.NPY_MEDIA_TYPE,
                       {"x-model": manifest.name, "x-model-version": str(manifest.version),
                        "x-labels": codec.dumps(info.labels).decode(), "x-threshold": repr(info.threshold)})
    return Encoded(codec.dumps({"model": manifest.name, "version": manifest.version, "scores": scores,
                                "labels": info.labels, "threshold": info.threshold}), codec.JSON_MEDIA_TYPE)
