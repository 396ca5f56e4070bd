"""The model kinds behind every inference route, free of web-framework types.

One `ModelKind` (service.pipeline) per kind of model: `SmootherKind`, `ClassifierKind`. Each
checks a decoded request against the version that will serve it (`prepare`), runs it (`infer`)
and names its outputs (`result`); the protocol adapters (service.native, the Open Inference
Protocol routes) turn bytes into requests and results into bytes. `KINDS` maps a manifest's kind
to its handler, so the pipeline never branches on kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from contract.modes import EDGE_MODES, mode_slice
from service import codec
from service.convolve import choose_method, full_correlation
from service.errors import BadRequestError, PayloadTooLargeError
from service.pipeline import Encoded, InferRequest, InferResult, Limits  # noqa: F401 - Encoded re-exported
from service.prover import ProvenVersion
from service.stream_http import STREAM_KIND


# -- smoother ---------------------------------------------------------------------------------
@dataclass
class SmoothCall:
    served: ProvenVersion
    signal: np.ndarray  # [B, C, L] float32, C-contiguous
    rank: int  # 1, 2 or 3: the nesting of the request, kept in the answer
    mode: str


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


class SmootherKind:
    name = "smoother"
    batchable = False

    def prepare(self, served: ProvenVersion, request: InferRequest, limits: Limits) -> SmoothCall:
        info = served.manifest.smoother
        assert info is not None
        signal = request.inputs
        if signal is None:
            raise BadRequestError("missing the signal to smooth", field="signal")
        mode = request.params.get("mode") or info.default_mode
        if mode not in EDGE_MODES or mode not in info.edge_modes:
            raise BadRequestError(f"unknown mode {str(mode)[:40]!r}; expected one of {list(info.edge_modes)}", field="mode")
        if not 1 <= signal.ndim <= 3:
            raise BadRequestError(
                f"'signal' must have 1 to 3 dimensions ([L], [C, L] or [B, C, L]), got {signal.ndim} (shape {list(signal.shape)})",
                field="signal", shape=list(signal.shape))
        if signal.size == 0:
            raise BadRequestError(f"'signal' is empty (shape {list(signal.shape)})", field="signal", shape=list(signal.shape))
        length = signal.shape[-1]
        if length > limits.max_signal_length:
            raise PayloadTooLargeError(f"signal length {length} exceeds the limit of {limits.max_signal_length} samples",
                                       field="signal", limit=limits.max_signal_length)
        kernel = info.kernel_size
        if mode == "valid" and length < kernel:
            raise BadRequestError(
                f"mode 'valid' needs at least {kernel} samples (the kernel size), got {length}",
                field="signal", kernel_size=kernel, length=length)
        codec.check_finite(signal, "signal")
        rank = signal.ndim
        return SmoothCall(served, signal.reshape((1,) * (3 - rank) + signal.shape), rank, mode)

    def work(self, call: SmoothCall) -> int:
        """Input elements: with the model's warm-up cost model, what decides whether it may run inline."""
        return int(call.signal.size)

    def infer(self, call: SmoothCall, settings: Any) -> np.ndarray:
        return infer_smooth(call, method=settings.smooth_method)

    def batch_input(self, call: SmoothCall) -> np.ndarray:
        raise NotImplementedError("smoothing is not batched")

    def result(self, call: SmoothCall, output: np.ndarray) -> InferResult:
        return InferResult(call.served, {"smoothed": output}, {"mode": call.mode})


# -- classifier -------------------------------------------------------------------------------
@dataclass
class ClassifyCall:
    served: ProvenVersion
    features: np.ndarray  # [N, F] float32


def records_to_array(records: list[dict[str, Any]], names: list[str]) -> np.ndarray:
    """Instances keyed by feature name -> [N, F] in the manifest's order (unknown/missing: 400)."""
    wanted = set(names)
    rows = []
    for index, item in enumerate(records):
        keys = set(item)
        if keys != wanted:
            unknown, missing = sorted(keys - wanted), sorted(wanted - keys)
            parts = ([f"unknown feature(s) {unknown}"] if unknown else []) + ([f"missing feature(s) {missing}"] if missing else [])
            raise BadRequestError(f"instance {index}: " + ", ".join(parts) + f"; features are {names}",
                                  field="instances", index=index, unknown=unknown, missing=missing, features=names)
        rows.append([item[name] for name in names])
    return codec.to_float32(rows, "instances")


def infer_classify(call: ClassifyCall) -> np.ndarray:
    return call.served.engine.run(call.features)  # [N, n_labels] probabilities


def decisions(scores: np.ndarray, labels: list[str], threshold: float | list[float]) -> list[list[str]]:
    """Per instance, the labels whose probability reaches their threshold (score >= threshold): one
    threshold for every label, or one per label in `labels` order."""
    if len(labels) == 1:  # the common case, per instance on Python floats (a numpy round trip costs more)
        cut = float(threshold[0]) if isinstance(threshold, list) else threshold
        yes: list[str] = [labels[0]]
        no: list[str] = []
        return [yes if score >= cut else no for score in np.asarray(scores).reshape(-1).tolist()]
    passed = np.asarray(scores).reshape(len(scores), -1) >= np.asarray(threshold, dtype=np.float64)  # [N, L] vs [L]
    return [[label for label, hit in zip(labels, row) if hit] for row in passed.tolist()]


class ClassifierKind:
    name = "classifier"
    batchable = True

    def prepare(self, served: ProvenVersion, request: InferRequest, limits: Limits) -> ClassifyCall:
        info = served.manifest.classifier
        assert info is not None
        names = [f.name for f in info.features]
        features = records_to_array(request.records, names) if request.records is not None else request.inputs
        if features is None:
            raise BadRequestError("missing the instances to classify", field="instances")
        if features.size == 0:
            raise BadRequestError(f"'instances' is empty (shape {list(features.shape)})", field="instances")
        if features.ndim != 2:
            raise BadRequestError(
                f"'instances' must be a list of instances, each a list of {len(names)} numbers: got shape {list(features.shape)}",
                field="instances", shape=list(features.shape))
        limits.check_rows(int(features.shape[0]), "instances")
        if features.shape[1] != len(names):
            raise BadRequestError(
                f"each instance needs {len(names)} features {names}, got {features.shape[1]}",
                field="instances", expected=len(names), got=int(features.shape[1]), features=names)
        codec.check_finite(features, "instances")
        return ClassifyCall(served, features)

    def work(self, call: ClassifyCall) -> int:
        return int(call.features.size)

    def infer(self, call: ClassifyCall, settings: Any) -> np.ndarray:
        return infer_classify(call)

    def batch_input(self, call: ClassifyCall) -> np.ndarray:
        return call.features

    def result(self, call: ClassifyCall, output: np.ndarray) -> InferResult:
        info = call.served.manifest.classifier
        assert info is not None
        # One label: one probability per instance; several labels: one list per instance.
        scores = np.ascontiguousarray(output[:, 0] if len(info.labels) == 1 else output)
        # one threshold for every label (a number), or one per label (a list in `labels` order)
        threshold = info.decision_threshold
        return InferResult(call.served, {"scores": scores},
                           {"labels": info.labels, "threshold": threshold,
                            "decisions": decisions(output, info.labels, threshold)})


KINDS = {"smoother": SmootherKind(), "classifier": ClassifierKind(), "smoother_stream": STREAM_KIND}  # the last: /smooth with a stream state
