"""Exact per-feature contributions for models whose score is additive in the features.

A graph is additive when, from its input to its output, it is: per-feature elementwise steps
(standardization, a log1p transform, direction signs: each column of the input transformed on its
own), then one affine map (MatMul/Gemm with constants, any number of them composed, plus constant
offsets and scales), then the link (a Sigmoid: the affine map's value is the logit; or nothing: the
score itself). Then logit = bias + sum_f u_f(x_f) * A[f], and the contribution of feature f is
u_f(x_f) * A[f], computed in float64 from the graph's own constants: they sum to the logit up to
float64 rounding. Anything else (a hidden layer with its nonlinearity, an op mixing columns before
the affine map) is not additive, and the answer says so, naming the node.

`ANALYZERS` is the hook for other additive forms (tree ensembles: each tree's leaf value per
instance, summed by feature along its path): each analyzer returns a form, or a reason it does
not apply; the first form wins.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)


class AdditiveForm(ABC):
    link: str  # "logit": score = sigmoid(value); "identity": score = value

    @abstractmethod
    def contributions(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """([N, F, outputs] per-feature contributions, [outputs] bias), float64: value = bias + sum over F."""

    def value(self, x: np.ndarray) -> np.ndarray:
        parts, bias = self.contributions(x)
        return bias + parts.sum(axis=1)

    def score(self, x: np.ndarray) -> np.ndarray:
        value = self.value(x)
        return 1.0 / (1.0 + np.exp(-value)) if self.link == "logit" else value


# Elementwise steps replayed in float64, column by column (the graph computes them in float32).
UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Identity": lambda v: v, "Relu": lambda v: np.maximum(v, 0.0), "Log": np.log, "Exp": np.exp, "Neg": np.negative,
    "Abs": np.abs, "Tanh": np.tanh, "Sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
    "Softplus": lambda v: np.logaddexp(0.0, v),
}
BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide,
}


@dataclass
class _Columns:
    """A tensor that is an elementwise function of the input, column by column."""

    steps: list[tuple[str, np.ndarray | None, bool]]  # (op, constant, constant is the first operand)


@dataclass
class _Affine:
    """A tensor equal to u @ weight + bias, u the _Columns feeding the first MatMul/Gemm."""

    columns: _Columns
    weight: np.ndarray  # [F, outputs]
    bias: np.ndarray  # [outputs]


class AffineForm(AdditiveForm):
    def __init__(self, columns: _Columns, weight: np.ndarray, bias: np.ndarray, link: str):
        self.steps, self.weight, self.bias, self.link = columns.steps, weight, bias, link

    def transformed(self, x: np.ndarray) -> np.ndarray:
        u = np.asarray(x, dtype=np.float64)
        with np.errstate(all="ignore"):
            for op, constant, first in self.steps:
                if constant is None:
                    u = UNARY[op](u)
                else:
                    u = BINARY[op](constant, u) if first else BINARY[op](u, constant)
        return u

    def contributions(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = self.transformed(x)
        return u[:, :, None] * self.weight[None, :, :], self.bias.copy()


def _constants(graph: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    found = {init.name: numpy_helper.to_array(init).astype(np.float64) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            found[node.output[0]] = numpy_helper.to_array(node.attribute[0].t).astype(np.float64)
    return found


def _per_column(constant: np.ndarray, width: int) -> np.ndarray | None:
    """A constant that acts on each column alone: a scalar, [F] or [1, F]; else None."""
    if constant.size == 1:
        return constant.reshape(())
    if constant.shape in ((width,), (1, width)):
        return constant.reshape(width)
    return None


def affine_form(model: Any, input_name: str, output_name: str, width: int) -> AdditiveForm | str:
    """The graph's affine form, or why it has none (naming the node)."""
    graph = model.graph
    constants = _constants(graph)
    values: dict[str, _Columns | _Affine] = {input_name: _Columns([])}
    link: str | None = None
    for index, node in enumerate(graph.node):
        where = f"node {node.name or index} ({node.op_type})"
        if node.op_type == "Constant":
            continue
        inputs = [name for name in node.input if name]
        tracked = [name for name in inputs if name in values]
        if not tracked:
            continue  # constant arithmetic
        if len(tracked) > 1:
            return f"{where} combines two computed tensors: the score is not a sum of per-feature terms"
        value = values[tracked[0]]
        attributes = {a.name: a for a in node.attribute}
        result: _Columns | _Affine | None = None
        if node.op_type in UNARY:
            if isinstance(value, _Columns):
                result = _Columns(value.steps + [(node.op_type, None, False)])
            elif node.op_type == "Identity":
                result = value
            elif node.op_type == "Sigmoid" and node.output[0] == output_name:
                link, result = "logit", value
            else:
                return f"{where} after the first affine map (a hidden layer's nonlinearity): not additive"
        elif node.op_type in BINARY and len(inputs) == 2:
            other = inputs[1] if inputs[0] == tracked[0] else inputs[0]
            first = inputs[0] != tracked[0]
            constant = constants.get(other)
            if constant is None:
                return f"{where}: its other operand {other!r} is not a constant"
            if isinstance(value, _Columns):
                column = _per_column(constant, width)
                if column is None:
                    return f"{where}: constant {other!r} of shape {list(constant.shape)} does not act per feature"
                result = _Columns(value.steps + [(node.op_type, column, first)])
            else:
                outputs = value.weight.shape[1]
                column = _per_column(constant, outputs)
                if column is None:
                    return f"{where}: constant {other!r} of shape {list(constant.shape)} does not act per output"
                if node.op_type in ("Add", "Sub"):
                    sign = -1.0 if node.op_type == "Sub" and not first else 1.0
                    flip = -1.0 if node.op_type == "Sub" and first else 1.0
                    result = _Affine(value.columns, value.weight * flip, value.bias * flip + sign * column)
                elif node.op_type == "Mul":
                    result = _Affine(value.columns, value.weight * column, value.bias * column)
                elif not first:  # Div by a constant
                    result = _Affine(value.columns, value.weight / column, value.bias / column)
                else:
                    return f"{where}: a constant divided by the logit is not affine"
        elif node.op_type in ("MatMul", "Gemm"):
            weight_name = inputs[1] if len(inputs) > 1 else ""
            if inputs[0] != tracked[0] or weight_name not in constants:
                return f"{where}: the weight is not a constant right operand"
            weight = constants[weight_name]
            bias = np.zeros(0)
            if node.op_type == "Gemm":
                if attributes.get("transA") is not None and attributes["transA"].i:
                    return f"{where}: transA is set"
                if attributes.get("transB") is not None and attributes["transB"].i:
                    weight = weight.T
                alpha = attributes["alpha"].f if "alpha" in attributes else 1.0
                beta = attributes["beta"].f if "beta" in attributes else 1.0
                weight = weight * alpha
                if len(inputs) > 2:
                    if inputs[2] not in constants:
                        return f"{where}: the bias is not a constant"
                    bias = constants[inputs[2]].reshape(-1) * beta
            if weight.ndim != 2:
                return f"{where}: weight of shape {list(weight.shape)} is not a matrix"
            if isinstance(value, _Columns):
                if weight.shape[0] != width:
                    return f"{where}: weight of shape {list(weight.shape)} does not take {width} features"
                result = _Affine(value, weight, np.zeros(weight.shape[1]))
            else:
                result = _Affine(value.columns, value.weight @ weight, value.bias @ weight)
            if bias.size:
                result.bias = result.bias + np.broadcast_to(bias, result.bias.shape)
        else:
            return f"{where} is not one of the steps of an additive model"
        for name in node.output:
            values[name] = result
    final = values.get(output_name)
    if not isinstance(final, _Affine):
        return "the output is not an affine map of per-feature terms"
    return AffineForm(final.columns, final.weight, final.bias, link or "identity")


# (model proto, input name, output name, feature count) -> a form, or the reason it does not apply
ANALYZERS: list[Callable[[Any, str, str, int], AdditiveForm | str]] = [affine_form]


@dataclass(frozen=True)
class Additivity:
    form: AdditiveForm | None
    reason: str  # why not additive ("" when it is)


def analyze(model: Any, input_name: str, output_name: str, width: int) -> Additivity:
    reasons = []
    for analyzer in ANALYZERS:
        try:
            found = analyzer(model, input_name, output_name, width)
        except Exception as exc:  # noqa: BLE001 - a graph an analyzer cannot read is simply not its form
            log.debug("additive analyzer %s failed", getattr(analyzer, "__name__", analyzer), exc_info=exc)
            found = f"{type(exc).__name__}: {exc}"
        if isinstance(found, AdditiveForm):
            return Additivity(found, "")
        reasons.append(found)
    return Additivity(None, "; ".join(reasons))
