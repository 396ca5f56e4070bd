"""Parity: every written artifact against eager torch, on random and realistic inputs.

The reference is the model as trained (parametrizations NOT folded), so a folding bug shows up
here too. Smoothers: each artifact's full output is compared with the full correlation computed
from the unfolded kernel, and each edge mode's slice of it (contract.modes.mode_slice) with the eager smoother's forward(x, mode).
Classifiers: the artifact's scores against sigmoid(eager logits). Every mismatch is collected
before anything is raised, so one report lists them all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Protocol

import numpy as np
import torch
from torch import nn

from export.artifacts import LoadedArtifact
from export.errors import Mismatch, ParityError



class ParityAdapter(Protocol):
    """What check_parity asks of a kind (export.kinds.ExportKind provides it): the eager answer to
    compare with, and an artifact's answer as that kind reads it."""

    def parity_expected(self, reference: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]: ...

    def parity_actual(self, name: str, output: np.ndarray, inputs: np.ndarray, reference: nn.Module) -> np.ndarray: ...

logger = logging.getLogger(__name__)

# Element-wise tolerance: |artifact - eager| <= atol + rtol * |eager| (numpy.isclose semantics).
# The graphs are float32; ONNX Runtime and torch accumulate a K-tap correlation or a GEMM in
# different orders, which costs a few float32 ulps of the output's magnitude: the rtol term covers
# signals in the thousands (Nile flows), the atol term covers values near zero.
DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-5


@dataclass(frozen=True)
class ParityCase:
    name: str
    inputs: np.ndarray  # float32, shaped as the graph input


@dataclass
class ParityReport:
    atol: float
    rtol: float
    comparisons: int = 0
    cases: list[str] = field(default_factory=list)
    max_abs_error: dict[str, float] = field(default_factory=dict)  # format -> worst error seen

    def to_manifest(self) -> dict:
        return {
            "max_abs_error": dict(self.max_abs_error),
            "atol": self.atol,
            "rtol": self.rtol,
            "comparisons": self.comparisons,
            "cases": list(self.cases),
        }


def smoother_cases(kernel_size: int, seed: int = 0) -> list[ParityCase]:
    """Random and realistic signals covering the edges: length 1, shorter than the kernel, exactly
    the kernel, long, batch 1 and batch 64, several channels."""
    rng = np.random.default_rng(seed)
    k = kernel_size
    cases = [
        ("length_1", rng.normal(size=(1, 1, 1))),
        ("length_kernel", rng.normal(size=(1, 2, k))),
        ("batch_1_random", rng.normal(size=(1, 3, 2 * k + 7))),
        ("batch_64_random", rng.normal(size=(64, 2, k + 13))),
        ("long_random_walk", np.cumsum(rng.normal(size=(1, 1, 20_000)), axis=-1)),
        ("flow_like_level_1000", 1000.0 + 150.0 * rng.normal(size=(2, 1, 100))),
        ("constant", np.full((1, 2, 3 * k), 3.25)),
        ("step", np.concatenate([np.zeros((1, 1, 2 * k)), np.ones((1, 1, 2 * k))], axis=-1)),
        ("sine_plus_noise", np.sin(np.linspace(0, 12, 4 * k + 1))[None, None, :] + 0.1 * rng.normal(size=(3, 4, 4 * k + 1))),
    ]
    if k > 2:
        cases.insert(1, ("shorter_than_kernel", rng.normal(size=(1, 2, k // 2))))
    return [ParityCase(name, np.ascontiguousarray(values, dtype=np.float32)) for name, values in cases]


def classifier_cases(feature_mean: np.ndarray, feature_scale: np.ndarray, seed: int = 0) -> list[ParityCase]:
    """Inputs in raw feature units: around the training distribution (mean +/- scale), far from it,
    zeros, and one-feature sweeps; batch 1 and batch 64."""
    rng = np.random.default_rng(seed)
    mean = np.asarray(feature_mean, dtype=np.float64)
    scale = np.asarray(feature_scale, dtype=np.float64)
    n = mean.shape[0]
    sweep_steps = np.linspace(-3.0, 3.0, 7)
    sweeps = np.repeat(mean[None, :], n * len(sweep_steps), axis=0)
    for feature in range(n):
        rows = slice(feature * len(sweep_steps), (feature + 1) * len(sweep_steps))
        sweeps[rows, feature] = mean[feature] + sweep_steps * scale[feature]
    cases = [
        ("batch_1_typical", mean + scale * rng.normal(size=(1, n))),
        ("batch_64_typical", mean + scale * rng.normal(size=(64, n))),
        ("standard_normal", rng.normal(size=(32, n))),
        ("zeros", np.zeros((4, n))),
        ("far_from_training", mean + 10.0 * scale * rng.normal(size=(16, n))),
        ("one_feature_sweeps", sweeps),
    ]
    return [ParityCase(name, np.ascontiguousarray(values, dtype=np.float32)) for name, values in cases]


def _compare(
    fmt: str, case: str, output: str, expected: np.ndarray, actual: np.ndarray, atol: float, rtol: float
) -> tuple[Mismatch | None, float]:
    """(a Mismatch or None, the max abs error) for one artifact output against eager torch."""
    expected_shape = tuple(int(d) for d in expected.shape)
    actual_shape = tuple(int(d) for d in actual.shape)
    if actual_shape != expected_shape:
        return Mismatch(fmt, case, output, expected_shape, actual_shape, None), float("inf")
    if expected.size == 0:
        return None, 0.0
    exp64 = expected.astype(np.float64)
    act64 = actual.astype(np.float64)
    diff = np.abs(act64 - exp64)
    excess = diff - (atol + rtol * np.abs(exp64))
    excess = np.where(np.isnan(excess), np.inf, excess)  # NaN on either side is a mismatch
    max_error = float(np.max(np.where(np.isnan(diff), np.inf, diff)))
    if not np.any(excess > 0):
        return None, max_error
    worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(excess)), excess.shape))
    mismatch = Mismatch(
        fmt, case, output, expected_shape, actual_shape, max_error, worst, float(exp64[worst]), float(act64[worst])
    )
    return mismatch, max_error


def _run(artifact: LoadedArtifact, inputs: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    try:
        return np.asarray(artifact.run(inputs)), None
    except Exception as exc:  # a runtime that cannot take this input is a parity failure, not a crash
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0][:500]


def check_parity(
    adapter: ParityAdapter,
    reference: nn.Module,
    artifacts: Iterable[LoadedArtifact],
    cases: list[ParityCase],
    atol: float,
    rtol: float,
) -> ParityReport:
    """Compare every artifact on every case; raise ParityError listing all mismatches at once."""
    artifacts = list(artifacts)
    report = ParityReport(atol=atol, rtol=rtol, cases=[case.name for case in cases])
    report.max_abs_error = {artifact.format: 0.0 for artifact in artifacts}
    mismatches: list[Mismatch] = []
    for case in cases:
        x = torch.from_numpy(case.inputs)
        with torch.no_grad():
            expected = adapter.parity_expected(reference, x)
        for artifact in artifacts:
            output, error = _run(artifact, case.inputs)
            if output is None:
                shape = tuple(int(d) for d in next(iter(expected.values())).shape)
                mismatches.append(Mismatch(artifact.format, case.name, "all", shape, None, None, error=error))
                report.max_abs_error[artifact.format] = float("inf")
                continue
            for name, want in expected.items():
                got = adapter.parity_actual(name, output, case.inputs, reference)
                mismatch, max_error = _compare(artifact.format, case.name, name, want, got, atol, rtol)
                report.comparisons += 1
                report.max_abs_error[artifact.format] = max(report.max_abs_error[artifact.format], max_error)
                if mismatch is not None:
                    mismatches.append(mismatch)
    if mismatches:
        raise ParityError(mismatches, atol, rtol)
    logger.info("parity: %d comparisons, max abs error %s", report.comparisons, report.max_abs_error)
    return report
