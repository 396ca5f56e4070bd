"""Probing a user's graph at import or export: bounded, and blind to anything outside it.

A `ProbeSession` runs a user's ONNX graph (import's black box, a classifier's parity probes) in an
ONNX Runtime session that cannot read external data and whose every tensor is bounded by the
service's in-flight memory budget before each new input shape runs; `bounded` cuts a hostile
file's names and values in messages. Used by export.byom and export.kinds (one place, no cycle).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from export.errors import ModelRefusedError, bounded
from export.fir import ProbeRefused


class ProbeRefusedError(ModelRefusedError, ProbeRefused):
    """A probe of the user's graph refused before it ran (its memory cannot be bounded)."""


# -- probing a user's graph: bounded, and blind to anything outside it --------------------------
@dataclass(frozen=True)
class ProbeLimits:
    max_file_bytes: int  # MONOSERVE_MAX_ARTIFACT_BYTES: per file and per declared tensor
    budget_bytes: int  # the in-flight memory budget: the most one tensor of a probe run may take


def probe_limits() -> ProbeLimits:
    """The service's caps, from the same settings (MONOSERVE_MAX_ARTIFACT_BYTES, the in-flight budget)."""
    from service.settings import Settings

    settings = Settings()
    return ProbeLimits(int(settings.max_artifact_bytes), int(settings.inflight_budget))


class ProbeSession:
    """An ONNX Runtime session over a user's graph for probing it: one thread, no memory arena, made
    from bytes with external data pointed at an empty private folder (contract.tensors.
    seal_external_data); before each new input shape runs, every tensor the graph would compute is
    bounded by the in-flight memory budget (contract.tensors.allocation_problems), or it is refused."""

    def __init__(self, model: Any, label: str, input_name: str, limits: ProbeLimits | None = None):
        import onnxruntime as ort

        from contract.tensors import allocation_problems, seal_external_data

        self.model, self.label, self.input_name = model, label, input_name
        self.limits = limits or probe_limits()
        self._checked: set[tuple[int, ...]] = set()
        # what needs no input shape (constants, ConstantOfShape of a constant) before the session exists
        problems = allocation_problems(model, {}, self.limits.budget_bytes, label, require_known=False)
        if problems:
            raise ProbeRefusedError(problems, label)
        options = ort.SessionOptions()
        # no constant folding at load: the probe runs a graph once or twice, and folding would
        # evaluate its constant subgraphs before any check of the input shapes could run
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = False  # memory returns to the system after each probe
        options.log_severity_level = 3
        seal_external_data(options)
        try:
            self.session = ort.InferenceSession(model.SerializeToString(), sess_options=options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelRefusedError([f"ONNX Runtime cannot load it: {bounded(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}"],
                                    label) from exc

    def check_shape(self, shape: tuple[int, ...]) -> None:
        from contract.tensors import allocation_problems

        if shape in self._checked:
            return
        problems = allocation_problems(self.model, {self.input_name: shape}, self.limits.budget_bytes, self.label)
        if problems:
            raise ProbeRefusedError(problems, self.label)
        self._checked.add(shape)

    def run_all(self, inputs: np.ndarray, outputs: list[str] | None = None) -> list[np.ndarray]:
        self.check_shape(tuple(int(d) for d in inputs.shape))
        return self.session.run(outputs, {self.input_name: inputs})


# -- the user's model, as a black box the kind adapters can query ------------------------------
