"""The report: a Finding per (feature, output) pair and the Certificate, computed by `certify`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import onnx

from contract.certificate.arithmetic import (
    _columns,
    INDEPENDENT,
    Independent,
    MINUS,
    PLUS,
    SIGN_WORDS,
    Uniform,
    Unknown,
    Value,
)
from contract.certificate.sign_rules import _Interpreter
from contract.certificate.walk import GraphInfo


# --------------------------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------------------------
@dataclass
class Finding:
    """The verdict for one (feature, output) pair."""

    feature: str
    direction: str  # "increasing" | "decreasing"
    output: str
    ok: bool
    found: str  # the abstract value at the output, in words
    message: str
    node: str | None = None  # the node that broke the proof, when one is known

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Certificate:
    ok: bool
    findings: list[Finding]

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    def summary(self) -> str:
        if self.ok:
            return f"proved {len(self.findings)} (feature, output) direction(s) from the graph"
        first = self.failures[0]
        more = len(self.failures) - 1
        return first.message + (f" (and {more} more)" if more else "")

    def to_dict(self) -> dict:
        return {"ok": self.ok, "findings": [f.to_dict() for f in self.findings]}


def _verdict(feature: str, direction: str, output: str, value: Value) -> Finding:
    wanted = PLUS if direction == "increasing" else MINUS
    subject = f"output {output!r} in {direction} feature {feature!r}"
    if isinstance(value, Independent):
        return Finding(feature, direction, output, True, str(value), f"{subject}: independent")
    if isinstance(value, Unknown):
        return Finding(feature, direction, output, False, str(value),
                       f"cannot prove {subject} is {SIGN_WORDS[wanted]}: node {value.node} {value.reason}", value.node)
    signs = {value.sign} if isinstance(value, Uniform) else {s for _, s in value.signs}
    if signs == {wanted}:
        return Finding(feature, direction, output, True, str(value), f"{subject}: {SIGN_WORDS[wanted]}")
    culprit = value.flips[-1] if value.flips else None
    where = f"; the direction is reversed at node(s) {', '.join(value.flips)}" if value.flips else ""
    return Finding(feature, direction, output, False, str(value),
                   f"{subject} is {SIGN_WORDS[-wanted]}, expected {SIGN_WORDS[wanted]}{where}", culprit)


def certify(
    model: onnx.ModelProto | GraphInfo,
    input_name: str,
    features: Sequence[tuple[int | None, str, str]],
    outputs: Sequence[str] | None = None,
) -> Certificate:
    """Prove each output monotone in each feature.

    features: (last-axis column of `input_name`, or None for the whole tensor; feature name;
    "increasing" | "decreasing").
    """
    info = model if isinstance(model, GraphInfo) else GraphInfo.build(model)
    graph = info.model.graph
    output_names = list(outputs) if outputs is not None else [o.name for o in graph.output]
    width = info.last_dims.get(input_name)
    findings: list[Finding] = []
    for column, feature, direction in features:
        if direction not in ("increasing", "decreasing"):
            raise ValueError(f"direction must be increasing or decreasing, got {direction!r}")
        if column is None:
            seed: Value = Uniform(PLUS)
        elif width is None:
            findings += [Finding(feature, direction, o, False, "unknown",
                                 f"input {input_name!r} has no static last dimension to locate feature {feature!r}")
                         for o in output_names]
            continue
        else:
            seed = _columns(width, {column: PLUS}, ())
        values = _Interpreter(info, {input_name: seed}).run()
        for output in output_names:
            findings.append(_verdict(feature, direction, output, values.get(output, INDEPENDENT)))
    return Certificate(all(f.ok for f in findings), findings)
