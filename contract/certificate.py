"""Monotonicity certificates computed from an ONNX graph itself, by abstract interpretation.

For one input "feature" (a last-axis column of the classifier's `features` input, or the whole
`signal` of a smoother) every tensor of the graph gets an abstract value saying how it depends on
that feature:

- ``INDEPENDENT``: it does not depend on the feature at all;
- ``Columns(width, {column: sign})``: elementwise, its last-axis column ``column`` is monotone in
  the feature with ``sign`` (+1 non-decreasing, -1 non-increasing) and every other column is
  independent of it (the input column itself, before the first layer mixes columns);
- ``Uniform(sign)``: every element is monotone in the feature with ``sign``;
- ``Unknown``: nothing is known; it records the node that lost the proof and why.

An independent element is monotone with either sign, so ``Columns`` whose signs agree may always
be weakened to ``Uniform``; that is how every op that moves data around is handled soundly.
Only constant weights (initializers, Constant nodes, and nodes computed from them alone) can keep a
sign through MatMul/Gemm/Conv/Mul/Div: a weight computed at run time is not trusted.

numpy and onnx only: the service runs this without torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

log = logging.getLogger(__name__)

PLUS, MINUS = 1, -1
SIGN_WORDS = {PLUS: "non-decreasing", MINUS: "non-increasing"}


# --------------------------------------------------------------------------------------------
# The abstract domain
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Independent:
    def __str__(self) -> str:
        return "independent"


INDEPENDENT = Independent()


@dataclass(frozen=True)
class Uniform:
    sign: int
    flips: tuple[str, ...] = ()  # nodes that reversed the direction on the way here (diagnostics)

    def __str__(self) -> str:
        return f"{SIGN_WORDS[self.sign]} everywhere"


@dataclass(frozen=True)
class Columns:
    width: int
    signs: tuple[tuple[int, int], ...]  # sorted (column, sign) pairs; other columns independent
    flips: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "column-wise " + ", ".join(f"[{c}] {SIGN_WORDS[s]}" for c, s in self.signs)


@dataclass(frozen=True)
class Unknown:
    node: str  # the node that broke the proof
    reason: str

    def __str__(self) -> str:
        return f"unknown (lost at node {self.node}: {self.reason})"


Value = Independent | Uniform | Columns | Unknown


def _columns(width: int, signs: Mapping[int, int], flips: tuple[str, ...]) -> Value:
    """Normalize: no dependent column -> independent; every column with one sign -> uniform."""
    if not signs:
        return INDEPENDENT
    distinct = set(signs.values())
    if len(signs) == width and len(distinct) == 1:
        return Uniform(distinct.pop(), flips)
    return Columns(width, tuple(sorted(signs.items())), flips)


def _add_flip(flips: tuple[str, ...], node: str) -> tuple[str, ...]:
    return flips if node in flips else flips + (node,)


def collapse(value: Value, node: str, why: str) -> Value:
    """Weaken Columns to Uniform (sound when all signs agree), for ops that move data across columns."""
    if not isinstance(value, Columns):
        return value
    distinct = {s for _, s in value.signs}
    if len(distinct) == 1:
        return Uniform(distinct.pop(), value.flips)
    return Unknown(node, f"columns with opposite directions are mixed by {why}")


def flip(value: Value, node: str) -> Value:
    if isinstance(value, Uniform):
        return Uniform(-value.sign, _add_flip(value.flips, node))
    if isinstance(value, Columns):
        return Columns(value.width, tuple((c, -s) for c, s in value.signs), _add_flip(value.flips, node))
    return value


def join(values: Iterable[Value], node: str, what: str = "adds") -> Value:
    """The abstract value of a sum (or max/min/mean) of terms: directions must agree."""
    result: Value = INDEPENDENT
    for value in values:
        if isinstance(value, Unknown):
            return value
        if isinstance(value, Independent):
            continue
        if isinstance(result, Independent):
            result = value
            continue
        if isinstance(result, Columns) and isinstance(value, Columns) and result.width == value.width:
            merged = dict(result.signs)
            for column, sign in value.signs:
                if merged.get(column, sign) != sign:
                    return Unknown(node, f"{what} terms that move in opposite directions (column {column})")
                merged[column] = sign
            result = _columns(result.width, merged, result.flips + tuple(f for f in value.flips if f not in result.flips))
            continue
        left, right = collapse(result, node, what), collapse(value, node, what)
        if isinstance(left, Unknown):
            return left
        if isinstance(right, Unknown):
            return right
        assert isinstance(left, Uniform) and isinstance(right, Uniform)
        if left.sign != right.sign:
            return Unknown(node, f"{what} a {SIGN_WORDS[left.sign]} term and a {SIGN_WORDS[right.sign]} term")
        result = Uniform(left.sign, left.flips + tuple(f for f in right.flips if f not in left.flips))
    return result


def _sign_class(values: np.ndarray) -> int | None:
    """+1 if all >= 0, -1 if all <= 0, 0 if all zero, None if both signs occur (or non-finite)."""
    if values.size == 0:
        return 0
    if not np.all(np.isfinite(values)):
        return None
    positive, negative = bool(np.any(values > 0)), bool(np.any(values < 0))
    if positive and negative:
        return None
    return PLUS if positive else (MINUS if negative else 0)


def _first_index(condition: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(condition)[0])


# --------------------------------------------------------------------------------------------
# Op semantics
# --------------------------------------------------------------------------------------------
# Non-decreasing elementwise functions (when their attributes say so; see _unary_is_monotone).
MONOTONE_UNARY = {
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Softplus", "Elu", "Selu", "Identity", "Cast", "Exp",
    "Log", "Sqrt", "Erf", "Softsign", "HardSigmoid", "Dropout", "Floor", "Ceil", "Round", "Clip",
    "ThresholdedRelu", "Celu",
}
# Ops that only move elements around (each output element is some input element or a constant):
# a uniform direction survives them; column structure survives only where the last axis is kept.
DATA_INPUTS = {
    "Reshape": (0,), "Flatten": (0,), "Squeeze": (0,), "Unsqueeze": (0,), "Transpose": (0,),
    "Slice": (0,), "Gather": (0,), "GatherElements": (0,), "GatherND": (0,), "Expand": (0,),
    "Tile": (0,), "Pad": (0, 2), "Concat": None, "Split": (0,), "Identity": (0,),
}
# Data-movement ops after which column j is still column j when the last dimension is unchanged.
KEEPS_LAST_AXIS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Expand", "Tile"}
# Reductions and variadic ops that are non-decreasing in every argument.
MONOTONE_REDUCE = {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"}
MONOTONE_VARIADIC = {"Sum", "Mean", "Max", "Min"}
# Outputs that never depend on the input's values.
VALUE_FREE = {"Shape", "Size", "Constant", "ConstantOfShape", "EyeLike", "RandomNormal", "RandomUniform"}
FLOAT_TYPES = {
    onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
}
INT_TYPES = {
    onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
    onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64,
}


def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def node_label(node: onnx.NodeProto, index: int) -> str:
    name = node.name or f"#{index}"
    return f"{name} ({node.op_type} -> {', '.join(node.output) or '-'})"


def _unary_is_monotone(node: onnx.NodeProto, attrs: dict) -> str | None:
    """None if the node is non-decreasing; otherwise why not."""
    op = node.op_type
    if op in ("LeakyRelu", "Elu", "HardSigmoid", "Celu") and float(attrs.get("alpha", 0.01)) < 0:
        return f"{op} with alpha {attrs['alpha']} < 0 is not monotone"
    if op == "Selu" and (float(attrs.get("alpha", 1.0)) < 0 or float(attrs.get("gamma", 1.0)) < 0):
        return "Selu with a negative alpha or gamma is not monotone"
    if op == "Cast" and int(attrs.get("to", 0)) not in FLOAT_TYPES | INT_TYPES:
        return f"Cast to {onnx.TensorProto.DataType.Name(int(attrs.get('to', 0)))} is not monotone"
    return None


@dataclass
class GraphInfo:
    """What does not depend on the feature being certified: constants and static shapes."""

    model: onnx.ModelProto
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    last_dims: dict[str, int | None] = field(default_factory=dict)

    @classmethod
    def build(cls, model: onnx.ModelProto) -> "GraphInfo":
        if model.functions:
            from onnx import inliner

            model = inliner.inline_local_functions(model)
        info = cls(model)
        graph = model.graph
        for init in graph.initializer:
            info.constants[init.name] = numpy_helper.to_array(init)
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
            value_infos = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
        except Exception as exc:  # shape inference is an aid only: without it columns collapse sooner
            log.debug("shape inference failed: %s", exc)
            value_infos = [*graph.input, *graph.output]
        for vi in value_infos:
            info.last_dims[vi.name] = _static_last_dim(vi)
        for name, array in info.constants.items():
            info.last_dims[name] = int(array.shape[-1]) if array.ndim else None
        info._fold_constants()
        return info

    def _fold_constants(self) -> None:
        """Evaluate every node whose inputs are all constants (Constant nodes, Transpose of weights...)."""
        evaluator = None  # onnx.reference takes ~0.5 s to import: only when a graph needs folding
        for node in self.model.graph.node:
            if node.domain not in ("", "ai.onnx") or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
                continue
            if node.op_type in ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"):
                continue
            if not all(name == "" or name in self.constants for name in node.input):
                continue
            try:
                if evaluator is None:
                    from onnx.reference import ReferenceEvaluator as evaluator
                feeds = {name: self.constants[name] for name in node.input if name}
                outputs = evaluator(node).run(None, feeds)
            except Exception as exc:  # an op the reference evaluator lacks: its outputs stay non-constant
                log.debug("cannot fold %s: %s", node.op_type, exc)
                continue
            for name, value in zip(node.output, outputs):
                if name:
                    array = np.asarray(value)
                    self.constants[name] = array
                    if self.last_dims.get(name) is None and array.ndim:
                        self.last_dims[name] = int(array.shape[-1])


def _static_last_dim(value_info: onnx.ValueInfoProto) -> int | None:
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape") or not tensor_type.shape.dim:
        return None
    last = tensor_type.shape.dim[-1]
    return int(last.dim_value) if last.HasField("dim_value") else None


class _Interpreter:
    """Propagates the abstract values of one feature through the graph, node by node."""

    def __init__(self, info: GraphInfo, seeds: Mapping[str, Value]):
        self.info = info
        self.values: dict[str, Value] = {}
        graph = info.model.graph
        for tensor in graph.input:
            self.values[tensor.name] = seeds.get(tensor.name, INDEPENDENT)
        for name in info.constants:
            self.values.setdefault(name, INDEPENDENT)
        for name in seeds:
            self.values[name] = seeds[name]

    def value(self, name: str) -> Value:
        return self.values.get(name, INDEPENDENT) if name else INDEPENDENT

    def run(self) -> dict[str, Value]:
        for index, node in enumerate(self.info.model.graph.node):
            label = node_label(node, index)
            missing = [n for n in node.input if n and n not in self.values]
            if missing:
                result: Value | list[Value] = Unknown(label, f"input {missing[0]!r} is used before it is computed")
            else:
                inputs = [self.value(n) for n in node.input]
                if all(isinstance(v, Independent) for v in inputs) and not _has_subgraph(node):
                    result = INDEPENDENT
                else:
                    result = self.transfer(node, label, inputs)
            outputs = result if isinstance(result, list) else [result] * len(node.output)
            for name, value in zip(node.output, outputs):
                if name:
                    self.values[name] = self._fit_width(value, name, label)
        return self.values

    def _fit_width(self, value: Value, name: str, label: str) -> Value:
        """Column structure is kept only where the tensor's last dimension is known to match it."""
        if isinstance(value, Columns) and self.info.last_dims.get(name) != value.width:
            return collapse(value, label, "an op whose output width is not known to match")
        return value

    def constant(self, name: str) -> np.ndarray | None:
        return self.info.constants.get(name) if name else None

    # -- the transfer function ----------------------------------------------------------------
    def transfer(self, node: onnx.NodeProto, label: str, inputs: list[Value]) -> Value | list[Value]:
        op = node.op_type
        attrs = _attributes(node)
        unknown_in = next((v for v in inputs if isinstance(v, Unknown)), None)
        if node.domain not in ("", "ai.onnx"):
            return unknown_in or Unknown(label, f"custom-domain op {node.domain}.{op} cannot be certified")
        if _has_subgraph(node):
            return Unknown(label, f"control flow ({op}) cannot be certified")
        if op in VALUE_FREE:
            return INDEPENDENT
        if unknown_in is not None and op not in ("Mul", "Div"):  # Mul by 0 cannot rescue it either
            return unknown_in
        if op in MONOTONE_UNARY:
            why = _unary_is_monotone(node, attrs)
            if why:
                return Unknown(label, why)
            if op == "Clip" and any(not isinstance(v, Independent) for v in inputs[1:]):
                return Unknown(label, "Clip bounds that depend on the input cannot be certified")
            if op == "Dropout" and len(inputs) > 2 and not isinstance(inputs[2], Independent):
                return Unknown(label, "Dropout's training flag depends on the input")
            return inputs[0]
        if op == "PRelu":
            slope = self.constant(node.input[1])
            if slope is None or _sign_class(slope) in (None, MINUS):
                return Unknown(label, "PRelu is monotone only with a constant nonnegative slope")
            return inputs[0]
        if op == "Neg":
            return flip(inputs[0], label)
        if op in ("Add", "Sub"):
            right = flip(inputs[1], label) if op == "Sub" else inputs[1]
            return join([inputs[0], right], label, "adds" if op == "Add" else "subtracts")
        if op == "Mul":
            return self._mul(node, label, inputs)
        if op == "Div":
            return self._div(node, label, inputs)
        if op == "MatMul":
            return self._matmul(node, label, inputs[0], inputs[1], node.input[0], node.input[1], 1.0)
        if op == "Gemm":
            return self._gemm(node, label, inputs, attrs)
        if op == "Conv":
            return self._conv(node, label, inputs)
        if op in MONOTONE_VARIADIC:
            return join(inputs, label, f"{op} of")
        if op in MONOTONE_REDUCE:
            if len(inputs) > 1 and not isinstance(inputs[1], Independent):
                return Unknown(label, f"{op} axes depend on the input")
            return collapse(inputs[0], label, op)
        if op in DATA_INPUTS:
            return self._data_movement(node, label, inputs, attrs)
        return Unknown(label, f"op {op} is not supported by the certificate")

    def _data_movement(self, node: onnx.NodeProto, label: str, inputs: list[Value], attrs: dict) -> Value | list[Value]:
        op = node.op_type
        data_positions = DATA_INPUTS[op]
        positions = range(len(inputs)) if data_positions is None else [p for p in data_positions if p < len(inputs)]
        for position, value in enumerate(inputs):
            if position not in positions and not isinstance(value, Independent):
                return Unknown(label, f"{op} input {position} (indices/shape) depends on the input")
        data = [inputs[p] for p in positions]
        keeps = op in KEEPS_LAST_AXIS or (op == "Transpose" and _transpose_keeps_last(attrs))
        if keeps and len(data) == 1 and isinstance(data[0], Columns):
            source = self.info.last_dims.get(node.input[0])
            if source == data[0].width and all(self.info.last_dims.get(o) == source for o in node.output if o):
                result: Value = data[0]
            else:
                result = collapse(data[0], label, op)
        else:
            result = join([collapse(v, label, op) for v in data], label, f"{op} of")
        return [result] * len(node.output) if len(node.output) > 1 else result

    def _scale(self, value: Value, factor: np.ndarray, label: str, factor_name: str) -> Value:
        """value * factor for a constant factor: per last-axis column where the factor varies by column."""
        if isinstance(value, (Independent, Unknown)):
            return value
        factor = np.asarray(factor, dtype=np.float64)
        if factor.ndim == 0 or factor.shape[-1] == 1:
            cls = _sign_class(factor)
            if cls is None:
                bad = _first_index(factor < 0) if np.any(factor < 0) else ()
                return Unknown(label, f"multiplies by {factor_name!r} whose entries have both signs (e.g. index {list(bad)})")
            return INDEPENDENT if cls == 0 else (flip(value, label) if cls == MINUS else value)
        width = int(factor.shape[-1])
        per_column = [_sign_class(factor[..., j]) for j in range(width)]
        if isinstance(value, Uniform):
            signs = {j: value.sign for j in range(width)}
            flips = value.flips
        else:
            assert isinstance(value, Columns)
            if value.width == width:
                signs = dict(value.signs)
            elif value.width == 1:  # broadcast: the single column feeds every column
                signs = {j: value.signs[0][1] for j in range(width)}
            else:
                collapsed = collapse(value, label, "a broadcast")
                return self._scale(collapsed, factor, label, factor_name)
            flips = value.flips
        result: dict[int, int] = {}
        flipped = False
        for column, sign in signs.items():
            cls = per_column[column]
            if cls is None:
                return Unknown(label, f"multiplies column {column} by entries of {factor_name!r} with both signs")
            if cls == 0:
                continue
            result[column] = sign * cls
            flipped |= cls == MINUS
        return _columns(width, result, _add_flip(flips, label) if flipped else flips)

    def _mul(self, node: onnx.NodeProto, label: str, inputs: list[Value]) -> Value:
        left, right = inputs
        for value, other_name, value_name in ((left, node.input[1], node.input[0]), (right, node.input[0], node.input[1])):
            other = self.constant(other_name)
            if other is not None:
                if isinstance(value, Unknown):
                    return value if _sign_class(np.asarray(other)) != 0 else INDEPENDENT
                return self._scale(value, other, label, other_name)
        dependent = [v for v in inputs if not isinstance(v, Independent)]
        if any(isinstance(v, Unknown) for v in dependent):
            return next(v for v in dependent if isinstance(v, Unknown))
        if len(dependent) == 2:
            return Unknown(label, "multiplies two terms that both depend on the input")
        return Unknown(label, "multiplies by a tensor computed at run time (not a constant)")

    def _div(self, node: onnx.NodeProto, label: str, inputs: list[Value]) -> Value:
        numerator, denominator = inputs
        if not isinstance(denominator, Independent):
            return denominator if isinstance(denominator, Unknown) else Unknown(label, "divides by a term that depends on the input")
        if isinstance(numerator, Unknown):
            return numerator
        divisor = self.constant(node.input[1])
        if divisor is None:
            return Unknown(label, f"divides by {node.input[1]!r}, which is not a constant")
        divisor = np.asarray(divisor, dtype=np.float64)
        if not np.all(np.isfinite(divisor)):
            return Unknown(label, f"divides by non-finite entries of {node.input[1]!r}")
        if np.all(divisor > 0):
            return numerator
        if np.all(divisor < 0):
            return flip(numerator, label)
        bad = _first_index(divisor <= 0) if np.any(divisor > 0) else _first_index(divisor >= 0)
        return Unknown(label, f"divides by {node.input[1]!r} whose entries are not all of one strict sign (index {list(bad)})")

    def _matmul(self, node: onnx.NodeProto, label: str, left: Value, right: Value,
                left_name: str, right_name: str, scale: float, right_matrix: np.ndarray | None = None,
                left_matrix: np.ndarray | None = None) -> Value:
        """left @ right (times `scale`) where the non-dependent side must be a constant."""
        if isinstance(left, Unknown):
            return left
        if isinstance(right, Unknown):
            return right
        if not isinstance(left, Independent) and not isinstance(right, Independent):
            return Unknown(label, "multiplies two matrices that both depend on the input")
        if isinstance(left, Independent) and isinstance(right, Independent):
            return INDEPENDENT
        if not isinstance(left, Independent):  # dependent @ constant weight
            weight = right_matrix if right_matrix is not None else self.constant(right_name)
            if weight is None:
                return Unknown(label, f"weight {right_name!r} is not a constant")
            weight = np.asarray(weight, dtype=np.float64) * scale
            if weight.ndim == 1:
                weight = weight[:, None]
            # sign of W[..., j, k] over any batch dimensions: [n, m]
            flat = weight.reshape(-1, *weight.shape[-2:])
            positive, negative = np.any(flat > 0, axis=0), np.any(flat < 0, axis=0)
            if isinstance(left, Columns) and left.width == weight.shape[-2]:
                rows = dict(left.signs)
                flips = left.flips
            else:
                collapsed = collapse(left, label, node.op_type)
                if isinstance(collapsed, Unknown):
                    return collapsed
                assert isinstance(collapsed, Uniform)
                rows = {j: collapsed.sign for j in range(weight.shape[-2])}
                flips = collapsed.flips
            out: dict[int, int] = {}
            flipped = False
            for k in range(weight.shape[-1]):
                pulls: dict[int, int] = {}  # direction -> the row that pulls output column k that way
                for j, sign in rows.items():
                    if positive[j, k]:
                        pulls.setdefault(sign, j)
                    if negative[j, k]:
                        pulls.setdefault(-sign, j)
                        flipped = True
                if len(pulls) == 2:
                    parts = []
                    for direction in (PLUS, MINUS):
                        j = pulls[direction]
                        parts.append(f"input column {j} ({SIGN_WORDS[rows[j]]}, weight {_entry(weight, j, k):.6g})")
                    earlier = f"; directions were reversed earlier at {', '.join(flips)}" if flips else ""
                    return Unknown(
                        label,
                        f"mixes opposite directions into output column {k} of {right_name!r}: "
                        f"{parts[0]} vs {parts[1]}{earlier}",
                    )
                if pulls:
                    out[k] = next(iter(pulls))
            flips = _add_flip(flips, label) if flipped else flips
            return _columns(int(weight.shape[-1]), out, flips)
        # constant @ dependent: every output element mixes a whole column of the right operand
        weight = left_matrix if left_matrix is not None else self.constant(left_name)
        if weight is None:
            return Unknown(label, f"weight {left_name!r} is not a constant")
        collapsed = collapse(right, label, node.op_type)
        if isinstance(collapsed, Unknown):
            return collapsed
        cls = _sign_class(np.asarray(weight, dtype=np.float64) * scale)
        if cls is None:
            return Unknown(label, f"weight {left_name!r} has entries of both signs")
        return INDEPENDENT if cls == 0 else (flip(collapsed, label) if cls == MINUS else collapsed)

    def _gemm(self, node: onnx.NodeProto, label: str, inputs: list[Value], attrs: dict) -> Value:
        a, b = inputs[0], inputs[1]
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        trans_a, trans_b = int(attrs.get("transA", 0)), int(attrs.get("transB", 0))
        b_const, a_const = self.constant(node.input[1]), self.constant(node.input[0])
        if trans_a and not isinstance(a, Independent):
            a = collapse(a, label, "Gemm with transA")  # A's columns become rows
        if trans_b and not isinstance(b, Independent):
            b = collapse(b, label, "Gemm with transB")
        product = self._matmul(
            node, label, a, b, node.input[0], node.input[1], alpha,
            right_matrix=None if b_const is None else (b_const.T if trans_b else b_const),
            left_matrix=None if a_const is None else (a_const.T if trans_a else a_const),
        )
        if len(inputs) < 3 or not node.input[2]:
            return product
        bias = inputs[2]
        if not isinstance(bias, Independent):
            bias = self._scale(bias, np.asarray(beta), label, "beta")
        return join([product, bias], label, "adds (Gemm bias)")

    def _conv(self, node: onnx.NodeProto, label: str, inputs: list[Value]) -> Value:
        x = inputs[0]
        if any(not isinstance(v, Independent) for v in inputs[1:]):
            return Unknown(label, "Conv weights or bias depend on the input")
        weight = self.constant(node.input[1])
        if weight is None:
            return Unknown(label, f"Conv weight {node.input[1]!r} is not a constant")
        collapsed = collapse(x, label, "Conv")
        if isinstance(collapsed, (Unknown, Independent)):
            return collapsed
        cls = _sign_class(np.asarray(weight, dtype=np.float64))
        if cls is None:
            bad = _first_index(np.asarray(weight) < 0)
            return Unknown(label, f"Conv weight {node.input[1]!r} has entries of both signs (negative at {list(bad)})")
        return INDEPENDENT if cls == 0 else (flip(collapsed, label) if cls == MINUS else collapsed)


def _entry(weight: np.ndarray, j: int, k: int) -> float:
    flat = weight.reshape(-1, *weight.shape[-2:])
    column = flat[:, j, k]
    return float(column[np.argmax(np.abs(column))])


def _transpose_keeps_last(attrs: dict) -> bool:
    perm = attrs.get("perm")
    return perm is not None and len(perm) > 0 and perm[-1] == len(perm) - 1


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


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
