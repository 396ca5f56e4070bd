"""Monotonicity of Lipschitz-monotone networks, proven from the ONNX graph by a sound rate bound.

A Lipschitz-monotone network (the `monotonicnetworks` package, Kitouni et al.) computes
``f(x) = g(x) + lambda * sum_i s_i x_i`` with ``g`` built from norm-constrained linear layers and
1-Lipschitz activations (GroupSort/MaxMin, ReLU). Along input coordinate i, ``f`` is non-decreasing
(s_i = +1) when g can never fall faster than ``lambda``: ``|g(x + d e_i) - g(x)| <= L_i |d|`` with
``L_i <= lambda``. Nothing of this is taken from the publisher: both numbers are computed here.

For every tensor T and input coordinate i, the interpretation keeps two facts, valid for every x
and every step d along e_i:

    T(x + d e_i) - T(x) = c_i * d + e,   with |e| <= L_i |d| in every element,

where ``c_i`` (one exact coefficient per last-axis column, or none) is the part that moves linearly
with x_i (the residual term, and the first layer before any activation), and ``L_i`` bounds the
rest in the infinity norm. The input starts at c_i = e_i, L_i = 0; a linear layer ``y = x W``
maps c to ``c W`` exactly and L to ``L * max_k sum_j |W[j, k]|`` (its induced inf-norm); a
1-Lipschitz activation (ReLU family, GroupSort as TopK, Max/Min, ReduceMax) turns c into rate:
``L' = lip * (max |c| + L)``; data movement keeps the infinity norm. So the first layer contributes
the largest entry of its column i, each later layer its induced inf-norm: the per-coordinate bound
the package's "one-inf" then "inf" normalizations enforce. At the output (before a final Sigmoid),
feature i is proven non-decreasing when ``c_i >= L_i`` in every column (non-increasing: ``-c_i >=
L_i``), up to a relative RATE_TOLERANCE of float32 rounding; otherwise the refusal gives both numbers.

An op with no Lipschitz bound modelled here (Exp, Softmax, a product of two computed tensors,
a discontinuous op...) makes the proof name it. numpy and onnx only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import onnx

from contract.certificate import Certificate, Finding, GraphInfo, node_label

# Lipschitz constants of elementwise ops (sup |f'|), for their default attributes; see _unary_lipschitz.
_UNARY_LIPSCHITZ = {
    "Relu": 1.0, "Tanh": 1.0, "Sigmoid": 0.25, "Softsign": 1.0, "Softplus": 1.0, "Clip": 1.0, "Abs": 1.0,
    "Sin": 1.0, "Cos": 1.0, "Erf": 2.0 / math.sqrt(math.pi), "Gelu": 1.1290, "HardSwish": 1.5, "Mish": 1.0885,
    "Celu": 1.0, "Neg": 1.0,
}
# Ops whose output elements are input elements (or constants): the infinity norm of a change is kept.
_MOVES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice", "Gather", "Expand", "Tile", "Concat",
          "Split", "Pad", "Identity", "Dropout", "Cast", "CastLike"}
# ...and those among them after which last-axis column j is still column j when the width is unchanged.
_KEEP_COLUMNS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Cast", "CastLike", "Expand"}
# Non-decreasing ops that may follow the proven tensor on the way to the output.
_MONOTONE_TAIL = {"Sigmoid", "Identity", "Tanh", "Relu", "Softplus", "Softsign", "Erf", "Dropout"}
_VALUE_FREE = {"Shape", "Size", "Constant", "ConstantOfShape"}
# Relative slack between lambda and the bound: a network trained to its norm limit has layer norms
# whose float32 product meets lambda only up to rounding (2^(1/3) cubed is not 2 in float32). The
# served float32 arithmetic is monotone only up to rounding of that order anyway.
RATE_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Rate:
    """How a tensor changes along each input coordinate: exact column coefficients `exact` [F, w]
    (None: no exact part) plus at most `bound` [F] times the step, in every element."""

    exact: np.ndarray | None
    bound: np.ndarray

    def spread(self) -> np.ndarray:
        """The whole change's bound per coordinate, exact part included: max |c| + L."""
        if self.exact is None:
            return self.bound
        return np.max(np.abs(self.exact), axis=1) + self.bound


@dataclass(frozen=True)
class Lost:
    node: str
    reason: str


Value = Rate | Lost | None  # None: independent of the input


def _collapsed(value: Rate, lipschitz: float = 1.0) -> Rate:
    return Rate(None, lipschitz * value.spread())


class _Interpreter:
    def __init__(self, info: GraphInfo, input_name: str, n_features: int):
        self.info = info
        self.values: dict[str, Value] = {input_name: Rate(np.eye(n_features), np.zeros(n_features))}
        self.n = n_features

    def width(self, name: str) -> int | None:
        return self.info.last_dims.get(name)

    def run(self) -> dict[str, Value]:
        for index, node in enumerate(self.info.model.graph.node):
            label = node_label(node, index)
            inputs = [self.values.get(name) if name else None for name in node.input]
            if all(v is None for v in inputs) or node.op_type in _VALUE_FREE:
                result: Value | list[Value] = None
            else:
                lost = next((v for v in inputs if isinstance(v, Lost)), None)
                result = lost if lost is not None else self.transfer(node, label, inputs)
            outputs = result if isinstance(result, list) else [result] * len(node.output)
            for name, value in zip(node.output, outputs):
                if name:
                    self.values[name] = self._fit(value, name)
        return self.values

    def _fit(self, value: Value, name: str) -> Value:
        """Exact columns are kept only where the tensor's last dimension is known to match them."""
        if isinstance(value, Rate) and value.exact is not None and self.width(name) != value.exact.shape[1]:
            return _collapsed(value)
        return value

    def constant(self, name: str) -> np.ndarray | None:
        value = self.info.constants.get(name) if name else None
        return None if value is None else np.asarray(value, dtype=np.float64)

    def transfer(self, node: onnx.NodeProto, label: str, inputs: list[Value]) -> Value | list[Value]:
        op = node.op_type
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.domain not in ("", "ai.onnx"):
            return Lost(label, f"custom-domain op {node.domain}.{op}")
        x = inputs[0]
        if op in _MOVES:
            data = [v for position, v in enumerate(inputs) if position == 0 or op in ("Concat",)]
            if any(v is not None for position, v in enumerate(inputs) if position > 0 and op not in ("Concat", "Pad")):
                return Lost(label, f"{op}'s shape or index input depends on the input")
            rates = [v for v in data if isinstance(v, Rate)]
            if op in _KEEP_COLUMNS and len(rates) == 1:
                return rates[0]  # _fit collapses it if the width changed
            return Rate(None, np.max([r.spread() for r in rates], axis=0))
        if op == "Neg":
            return Rate(None if x.exact is None else -x.exact, x.bound)
        if op in ("Add", "Sub"):
            return self._add(label, inputs, node, subtract=op == "Sub")
        if op in ("Mul", "Div"):
            return self._scale(node, label, inputs, divide=op == "Div")
        if op in ("MatMul", "Gemm"):
            return self._linear(node, label, inputs, attrs)
        if op in ("Max", "Min", "Mean", "Sum"):
            rates = [v for v in inputs if isinstance(v, Rate)]
            if op == "Sum":
                return Rate(None, np.sum([r.spread() for r in rates], axis=0))
            return Rate(None, np.max([r.spread() for r in rates], axis=0))  # each is 1-Lipschitz in the inf-norm
        if op in ("ReduceMax", "ReduceMin", "TopK"):  # order statistics: 1-Lipschitz in the inf-norm
            if any(v is not None for v in inputs[1:]):
                return Lost(label, f"{op}'s axes or k depend on the input")
            values = _collapsed(x)
            return [values, Lost(label, "TopK's indices are not values")] if op == "TopK" else values
        if op in ("ReduceSum", "ReduceMean"):
            return self._reduce(node, label, inputs, attrs)
        lipschitz = _unary_lipschitz(op, attrs)
        if lipschitz is not None:
            if any(v is not None for v in inputs[1:]):
                return Lost(label, f"{op}'s parameters depend on the input")
            if op == "Clip" and x.exact is not None:
                return _collapsed(x)
            return _collapsed(x, lipschitz)
        if op == "PRelu":
            slope = self.constant(node.input[1])
            if slope is None:
                return Lost(label, "PRelu's slope is not a constant")
            return _collapsed(x, max(1.0, float(np.max(np.abs(slope)))))
        return Lost(label, f"op {op} has no Lipschitz bound in this proof")

    def _add(self, label: str, inputs: list[Value], node: onnx.NodeProto, subtract: bool) -> Value:
        left, right = inputs[0], inputs[1]
        if right is not None and subtract:
            right = Rate(None if right.exact is None else -right.exact, right.bound)
        rates = [v for v in (left, right) if isinstance(v, Rate)]
        if len(rates) == 1:
            return rates[0]
        a, b = rates
        bound = a.bound + b.bound
        if a.exact is None or b.exact is None:  # g(x) + the residual: the exact part is the residual's
            return Rate(a.exact if b.exact is None else b.exact, bound)
        if a.exact is not None and b.exact is not None:
            wa, wb = a.exact.shape[1], b.exact.shape[1]
            if wa == wb or 1 in (wa, wb):
                return Rate(a.exact + b.exact, bound)  # numpy broadcasts a one-column side as the op does
        # exact parts that cannot be lined up become rate
        return Rate(None, a.spread() + b.spread())

    def _scale(self, node: onnx.NodeProto, label: str, inputs: list[Value], divide: bool) -> Value:
        left, right = inputs
        if right is not None and left is not None:
            return Lost(label, f"{node.op_type} of two tensors that both depend on the input")
        if right is not None:
            if divide:
                return Lost(label, "divides by a tensor that depends on the input")
            value, factor = right, self.constant(node.input[0])
        else:
            value, factor = left, self.constant(node.input[1])
        if factor is None:
            return Lost(label, f"{node.op_type} by a tensor computed at run time (not a constant)")
        if divide:
            if np.any(factor == 0):
                return Lost(label, "divides by a constant with a zero entry")
            factor = 1.0 / factor
        if not np.all(np.isfinite(factor)):
            return Lost(label, "scales by non-finite constants")
        largest = float(np.max(np.abs(factor))) if factor.size else 0.0
        if value.exact is not None and factor.size:
            rows = factor.reshape(-1, factor.shape[-1]) if factor.ndim else factor.reshape(1, 1)
            if np.all(rows == rows[0]) and rows.shape[1] in (1, value.exact.shape[1]):
                return Rate(value.exact * rows[0][None, :], value.bound * largest)
        return Rate(None, value.spread() * largest)

    def _linear(self, node: onnx.NodeProto, label: str, inputs: list[Value], attrs: dict) -> Value:
        a, b = inputs[0], inputs[1]
        if a is not None and b is not None:
            return Lost(label, f"{node.op_type} of two tensors that both depend on the input")
        alpha = float(attrs.get("alpha", 1.0)) if node.op_type == "Gemm" else 1.0
        if a is not None:  # x @ W
            weight = self.constant(node.input[1])
            if weight is None:
                return Lost(label, f"weight {node.input[1]!r} is not a constant")
            if node.op_type == "Gemm" and int(attrs.get("transB", 0)):
                weight = weight.T
            weight = weight * alpha
            if weight.ndim == 1:
                weight = weight[:, None]
            if node.op_type == "Gemm" and int(attrs.get("transA", 0)):
                a = _collapsed(a)
            flat = np.abs(weight.reshape(-1, *weight.shape[-2:]))
            norm = float(np.max(flat.sum(axis=-2))) if flat.size else 0.0  # induced inf-norm of y = x W
            exact = None
            if a.exact is not None and weight.ndim == 2 and a.exact.shape[1] == weight.shape[0]:
                exact = a.exact @ weight
            elif a.exact is not None:
                a = _collapsed(a)
            product = Rate(exact, a.bound * norm)
        else:  # W @ x: every output element mixes a column of x
            weight = self.constant(node.input[0])
            if weight is None:
                return Lost(label, f"weight {node.input[0]!r} is not a constant")
            if node.op_type == "Gemm" and int(attrs.get("transA", 0)):
                weight = weight.T
            flat = np.abs(np.atleast_2d(weight * alpha))
            norm = float(np.max(flat.reshape(-1, flat.shape[-1]).sum(axis=-1))) if flat.size else 0.0
            product = Rate(None, b.spread() * norm)
        if node.op_type == "Gemm" and len(inputs) > 2 and inputs[2] is not None:
            beta = abs(float(attrs.get("beta", 1.0)))
            return Rate(None, product.spread() + beta * inputs[2].spread())
        return product

    def _reduce(self, node: onnx.NodeProto, label: str, inputs: list[Value], attrs: dict) -> Value:
        x = inputs[0]
        if len(inputs) > 1 and inputs[1] is not None:
            return Lost(label, f"{node.op_type}'s axes depend on the input")
        axes = self.constant(node.input[1]) if len(node.input) > 1 and node.input[1] else attrs.get("axes")
        width = self.width(node.input[0])
        if axes is None or [int(v) for v in np.asarray(axes).reshape(-1)] != [-1] or not width:
            return Lost(label, f"{node.op_type} over axes other than the last (of a static size) has no bound here")
        mean = node.op_type == "ReduceMean"
        bound = x.bound if mean else x.bound * width
        if x.exact is None:
            return Rate(None, bound)
        total = x.exact.mean(axis=1, keepdims=True) if mean else x.exact.sum(axis=1, keepdims=True)
        if int(attrs.get("keepdims", 1)):
            return Rate(total, bound)
        return Rate(None, np.abs(total[:, 0]) + bound)


def _unary_lipschitz(op: str, attrs: dict) -> float | None:
    alpha = attrs.get("alpha")
    if op == "LeakyRelu":
        return max(1.0, abs(float(0.01 if alpha is None else alpha)))
    if op == "Elu":
        return max(1.0, abs(float(1.0 if alpha is None else alpha)))
    if op == "Selu":
        a, g = float(attrs.get("alpha", 1.6733)), float(attrs.get("gamma", 1.0507))
        return abs(g) * max(1.0, abs(a))
    if op == "HardSigmoid":
        return abs(float(0.2 if alpha is None else alpha))
    if op == "Celu" and alpha is not None and float(alpha) <= 0:
        return None
    return _UNARY_LIPSCHITZ.get(op)


def _proven_tensor(info: GraphInfo, output: str) -> str:
    """The tensor to prove: `output`, back through a final chain of non-decreasing single-input ops (the Sigmoid)."""
    made_by = {name: node for node in info.model.graph.node for name in node.output if name}
    tensor = output
    for _ in range(len(made_by) + 1):
        node = made_by.get(tensor)
        if node is None or node.op_type not in _MONOTONE_TAIL:
            return tensor
        dependent = [n for n in node.input if n and n not in info.constants]
        if len(dependent) != 1:
            return tensor
        tensor = dependent[0]
    return tensor


@dataclass
class FeatureRate:
    """For one feature: the exact linear coefficient (lambda * s_i) and the bound on the rest's rate."""

    feature: str
    direction: str
    coefficient: float  # the worst column's exact coefficient, signed toward the declared direction
    bound: float


def certify_lipschitz(info: GraphInfo, input_name: str, features: Sequence[tuple[int | None, str, str]],
                      outputs: Sequence[str]) -> tuple[Certificate, list[FeatureRate]]:
    """Prove each output monotone in each feature (column, name, "increasing"|"decreasing") by the rate bound."""
    width = info.last_dims.get(input_name)
    findings: list[Finding] = []
    rates: list[FeatureRate] = []
    if not width:
        for _, name, direction in features:
            findings += [Finding(name, direction, o, False, "unknown", f"input {input_name!r} has no static last dimension")
                         for o in outputs]
        return Certificate(False, findings), rates
    values = _Interpreter(info, input_name, int(width)).run()
    for output in outputs:
        proven = _proven_tensor(info, output)
        value = values.get(proven)
        for column, name, direction in features:
            wanted = 1.0 if direction == "increasing" else -1.0
            subject = f"output {output!r} in {direction} feature {name!r}"
            if value is None:
                findings.append(Finding(name, direction, output, True, "independent", f"{subject}: independent"))
                continue
            if isinstance(value, Lost):
                findings.append(Finding(name, direction, output, False, "unknown",
                                        f"cannot bound how fast {subject} changes: node {value.node}: {value.reason}",
                                        value.node))
                continue
            assert column is not None
            coefficient = 0.0 if value.exact is None else float(np.min(wanted * value.exact[column]))
            bound = float(value.bound[column])
            rates.append(FeatureRate(name, direction, coefficient, bound))
            if coefficient >= bound - RATE_TOLERANCE * max(abs(coefficient), bound):
                findings.append(Finding(name, direction, output, True, f"linear coefficient {coefficient:.6g} >= rate bound {bound:.6g}",
                                        f"{subject}: the linear term's coefficient {coefficient:.6g} is at least the "
                                        f"bound {bound:.6g} on how fast the rest can change"))
            else:
                findings.append(Finding(name, direction, output, False, f"linear coefficient {coefficient:.6g} < rate bound {bound:.6g}",
                                        f"{subject} is not proven: the network's g can change at up to {bound:.6g} per unit "
                                        f"of {name!r} (a bound from its layers' operator norms), more than lambda = "
                                        f"{coefficient:.6g} (the coefficient of {name!r} in its linear term)"))
    return Certificate(all(f.ok for f in findings), findings), rates


def has_linear_residual(info: GraphInfo, input_name: str, output: str) -> bool:
    """Whether `output` (before a final Sigmoid) adds a term exactly linear in the input to another
    computed term: the Lipschitz-monotone form g(x) + lambda * sum_i s_i x_i, whatever g is."""
    width = info.last_dims.get(input_name)
    if not width:
        return False
    values = _Interpreter(info, input_name, int(width)).run()
    made_by = {name: node for node in info.model.graph.node for name in node.output if name}
    node = made_by.get(_proven_tensor(info, output))
    if node is None or node.op_type not in ("Add", "Sub"):
        return False
    terms = [values.get(name) for name in node.input]
    return any(isinstance(v, Rate) and v.exact is not None and not np.any(v.bound) and np.any(v.exact != 0) for v in terms)
