"""A test-only model kind, added the way any new kind is: this one adapter module and one line,
`register_kind(ScalerKind())` (tests/kind_launcher.py), with no edit to the protocol modules.

A "scaler" multiplies each instance's features by positive factors: [N, F] -> [N, F], one ONNX Mul
by a constant. Every output is non-decreasing in every input, which the prover's certificate proves
from the graph; the policy also checks the factor, at its point of use, is positive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np

from contract.manifest import FeatureSpec, Manifest
from contract.policy import Policy
from service.base import codec
from service.base.errors import BadRequestError
from service.compute.inference import records_to_array
from service.compute.kinds import Proofs, ServiceKind
from service.compute.request import InferRequest, InferResult, Limits
from pydantic import BaseModel, ConfigDict


class ScalerInfo(BaseModel):
    """The manifest's "scaler" section."""

    model_config = ConfigDict(extra="forbid")
    features: list[FeatureSpec]
    output: Literal["scores"] = "scores"  # the "rows" wire answers one array named "scores"


def scaler_policy(policy: Policy, manifest: Manifest) -> list[str]:
    if manifest.section("scaler") is None:
        return ["a scaler manifest needs a 'scaler' section"]
    if not any(c.rule == "positive" for c in manifest.constraints):
        return ["the policy requires a 'positive' factor, which the manifest's constraints do not declare"]
    return []


@dataclass
class ScaleCall:
    served: Any
    features: np.ndarray  # [N, F] float32


class ScalerKind(ServiceKind):
    kind = "scaler"
    section = "scaler"
    section_model = ScalerInfo
    policy_rule = staticmethod(scaler_policy)
    wire = "rows"  # OIP (REST and gRPC) shows it as [N, F] in, its output out
    route = "/scale"  # its native route (service.protocols.native.RowsAdapter)
    reference_class = ""

    def policy_checks(self, proof: Any, graph: Any, file: str, check: Callable[..., None]) -> None:
        nodes = list(graph.model.graph.node)
        if len(nodes) != 1 or nodes[0].op_type != "Mul":
            raise ValueError(f"a scaler graph is one Mul, found {[n.op_type for n in nodes]}")
        factor = graph.constants.get(nodes[0].input[1])
        if factor is None:
            raise ValueError(f"the Mul's second input {nodes[0].input[1]!r} is not a constant")
        check("positive", f"node Mul weight {file}:{nodes[0].input[1]}", factor, tolerance=0.0)

    def certificate_plan(self, proof: Any) -> tuple[Proofs, str] | None:
        name = proof.manifest.inputs[0].name
        return ([(name, [(None, name, "increasing")])],
                f"{proof.manifest.outputs[0].name!r} is non-decreasing in every feature of {name!r}")

    def reference_rules(self, manifest: Manifest, tensors: dict[str, np.ndarray]) -> list[str]:
        return ["a scaler has no TorchScript reference module: it is served from model.onnx only"]

    def warmup_inputs(self, manifest: Manifest, rng: np.random.Generator) -> list[np.ndarray]:
        n = len(self.info(manifest).features)
        return [rng.standard_normal((1, n)).astype(np.float32), rng.standard_normal((256, n)).astype(np.float32)]

    def expected_shape(self, manifest: Manifest, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape

    def prepare(self, served: Any, request: InferRequest, limits: Limits) -> ScaleCall:
        names = [f.name for f in self.info(served.manifest).features]
        features = records_to_array(request.records, names) if request.records is not None else request.inputs
        if features is None or features.ndim != 2 or features.shape[1] != len(names) or features.size == 0:
            shape = None if features is None else list(features.shape)
            raise BadRequestError(f"a scaler takes instances of {len(names)} features {names}, got shape {shape}",
                                  field="instances", shape=shape)
        limits.check_rows(int(features.shape[0]), "instances")
        codec.check_finite(features, "instances")
        return ScaleCall(served, features)

    def work(self, call: ScaleCall) -> int:
        return int(call.features.size)

    def infer(self, call: ScaleCall, settings: Any) -> np.ndarray:
        return call.served.engine.run(call.features)

    def result(self, call: ScaleCall, output: np.ndarray) -> InferResult:
        return InferResult(call.served, {"scores": np.ascontiguousarray(output)}, {})
