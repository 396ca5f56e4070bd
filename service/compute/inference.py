"""Inference for each model kind, free of web-framework types: the calls, the compute and the
decisions that the kind adapters of service.compute.kinds (the one registry of kinds) run for every
protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from contract.modes import mode_slice
from service.base import codec
from service.compute.convolve import choose_method, full_correlation
from service.base.errors import BadRequestError

if TYPE_CHECKING:
    from service.compute.version import ProvenVersion


# -- smoother ---------------------------------------------------------------------------------
@dataclass
class SmoothCall:
    served: ProvenVersion
    signal: np.ndarray  # [B, C, L] float32, C-contiguous
    rank: int  # 1, 2 or 3: the nesting of the request, kept in the answer
    mode: str


def infer_smooth(call: SmoothCall, method: str = "auto") -> np.ndarray:
    """The smoothed signal, a view of the full correlation (rows contiguous; the encoders copy once).

    `method`: "auto" picks, from the kernel size and signal length (service.compute.convolve's measured
    rule), the engine (the exported graph), the blocked direct product or FFT overlap-add, the last
    two with the kernel the proof read out of the artifact; "engine", "direct", "fft" force one.
    All compute the graph's full correlation; direct and FFT run on the CPU (CUDA: the engine).
    """
    info = call.served.manifest.smoother
    assert info is not None
    length = call.signal.shape[-1]
    full = full_correlation_of(call.served, call.signal, method)
    out = full[..., mode_slice(call.mode, length, info.kernel_size)]
    return out.reshape(out.shape[3 - call.rank:])


def full_correlation_of(served: ProvenVersion, signal: np.ndarray, method: str = "auto") -> np.ndarray:
    """The graph's full correlation of `signal` [B, C, L] float32: [B, C, L + K - 1], by the method
    `infer_smooth` documents (one choice for one-shot /smooth and for streams, so both agree)."""
    info = served.manifest.smoother
    assert info is not None
    batch, channels, length = signal.shape
    kernel = served.tensors.get("kernel")
    on_cpu = served.engine.device == "cpu"
    if method == "auto":
        method = choose_method(info.kernel_size, length) if on_cpu else "engine"
    if method != "engine" and (kernel is None or kernel.size != info.kernel_size or not on_cpu):
        method = "engine"
    if method == "engine":
        return served.engine.run(signal)  # [B, C, L + K - 1]
    flat = signal.reshape(batch * channels, length)
    return full_correlation(flat, kernel, method=method, padding=info.padding).reshape(batch, channels, -1)




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



