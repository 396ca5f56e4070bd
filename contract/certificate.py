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
sign through MatMul/Gemm/Conv/Mul/Div: a weight computed at run time is not trusted, and an unproven
term stays unproven even when multiplied by zero (0 * inf is NaN).

Beside the directions, GraphInfo computes interval bounds of every float tensor for finite input,
and records every node that may turn finite values into NaN/Inf (contract.graph refuses those).
The points of use (the smoother's Conv kernel, the classifier's output layer) are located here
too, so the rules are checked on the tensor a node consumes, not on a named initializer.

numpy and onnx only: the service runs this without torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from contract.tensors import folded_output_bytes, static_shapes

DEFAULT_MAX_TENSOR_BYTES = 256 * 1024 * 1024  # as contract.files.DEFAULT_MAX_FILE_BYTES

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


def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def node_label(node: onnx.NodeProto, index: int) -> str:
    """How every refusal names a node: its name first (when it has one), then index, op and outputs."""
    where = f"#{index} {node.op_type} -> {', '.join(node.output) or '-'}"
    return f"{node.name} ({where})" if node.name else f"({where})"


def _unary_is_monotone(node: onnx.NodeProto, attrs: dict) -> str | None:
    """None if the node is non-decreasing; otherwise why not."""
    op = node.op_type
    if op in ("LeakyRelu", "Elu", "HardSigmoid", "ThresholdedRelu") and float(attrs.get("alpha", 0.0)) < 0:
        return f"{op} with alpha {attrs['alpha']:g} < 0 is not monotone"
    if op == "Celu" and float(attrs.get("alpha", 1.0)) <= 0:
        return f"Celu with alpha {attrs['alpha']:g} <= 0 is not monotone (alpha 0 divides by zero)"
    if op == "Selu" and (float(attrs.get("alpha", 1.0)) < 0 or float(attrs.get("gamma", 1.0)) < 0):
        return "Selu with a negative alpha or gamma is not monotone"
    if op == "Cast" and int(attrs.get("to", 0)) not in FLOAT_TYPES:
        # an integer Cast wraps on overflow (and truncates): a large input could come out smaller
        return f"Cast to {onnx.TensorProto.DataType.Name(int(attrs.get('to', 0)))} is not monotone (only float targets are)"
    return None


@dataclass
class GraphInfo:
    """What does not depend on the feature being certified: constants, static shapes, dtypes and ranges.

    Shapes come from ONNX shape inference run on a copy whose value_info and output shapes are
    cleared: what the publisher declared about intermediate tensors is never trusted, only the
    graph inputs' shapes, which ONNX Runtime enforces on every call.
    """

    model: onnx.ModelProto
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    last_dims: dict[str, int | None] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)  # TensorProto element type, where inferred
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # float tensors: [lo, hi]
    hazards: list[tuple[str, str]] = field(default_factory=list)  # (node label, why it may give NaN/Inf)
    inference_error: str | None = None
    # the most bytes one folded constant may take (contract.tensors.folded_output_bytes): a larger
    # one is a hazard (refused), never evaluated
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES
    shapes: dict[str, list[int] | None] = field(default_factory=dict)  # static shapes, where inferred

    @classmethod
    def build(cls, model: onnx.ModelProto, fold: bool = True,
              max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES) -> "GraphInfo":
        if model.functions:
            from onnx import inliner

            model = inliner.inline_local_functions(model)
        info = cls(model, max_tensor_bytes=max_tensor_bytes)
        graph = model.graph
        for init in graph.initializer:
            info.constants[init.name] = numpy_helper.to_array(init)
            info.types[init.name] = init.data_type
        bare = onnx.ModelProto()
        bare.CopyFrom(model)
        del bare.graph.value_info[:]
        for output in bare.graph.output:
            output.type.tensor_type.ClearField("shape")
        try:
            inferred = onnx.shape_inference.infer_shapes(bare, strict_mode=True, data_prop=True)
            value_infos = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
        except Exception as exc:  # shape inference is an aid only: without it columns collapse sooner
            info.inference_error = _first_line(str(exc))
            log.debug("shape inference failed: %s", exc)
            value_infos = [*graph.input]
        info.shapes = static_shapes(value_infos)
        for vi in value_infos:
            info.last_dims[vi.name] = _static_last_dim(vi)
            if vi.type.tensor_type.elem_type:
                info.types.setdefault(vi.name, vi.type.tensor_type.elem_type)
        for name, array in info.constants.items():
            info.last_dims[name] = int(array.shape[-1]) if array.ndim else None
        if fold and info.inference_error is None:  # without shapes a folded constant's size is unknown:
            info._fold_constants()  # check_graph refuses such a graph; nothing is evaluated first
        info._propagate_ranges()
        return info

    def _fold_constants(self) -> None:
        """Evaluate every node whose inputs are all constants (Constant nodes, Transpose of weights...),
        so rules are checked on the tensor a node actually consumes, not on a named initializer."""
        evaluator = None  # onnx.reference takes ~0.5 s to import: only when a graph needs folding
        for node in self.model.graph.node:
            if node.domain not in ("", "ai.onnx") or _has_subgraph(node):
                continue
            if node.op_type in NONDETERMINISTIC:
                continue
            if not all(name == "" or name in self.constants for name in node.input):
                continue
            feeds = {name: self.constants[name] for name in node.input if name}
            size = folded_output_bytes(node, feeds, self.shapes)
            if size is None or size > self.max_tensor_bytes:
                label = node_label(node, list(self.model.graph.node).index(node))
                self.hazards.append((label, "would allocate " + ("an output whose size cannot be known before "
                                     "evaluating it" if size is None else f"{size} bytes") + f" (the limit per "
                                     f"tensor is {self.max_tensor_bytes} bytes): refused, not evaluated"))
                continue
            try:
                if evaluator is None:
                    from onnx.reference import ReferenceEvaluator as evaluator
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

    def range_of(self, name: str) -> tuple[float, float]:
        if not name:
            return FULL
        if name in self.constants:
            return _array_range(self.constants[name])
        return self.ranges.get(name, FULL)

    def is_float(self, name: str) -> bool:
        if name in self.constants:
            return self.constants[name].dtype.kind == "f"
        return self.types.get(name) in FLOAT_TYPES

    def _propagate_ranges(self) -> None:
        """Interval bounds of every float tensor for finite inputs, and every node that may turn finite
        values into NaN/Inf (a division by a tensor that may be 0, the log of one that may be <= 0...).
        Float overflow of huge finite inputs is out of scope (docs/threat-model.md)."""
        for index, node in enumerate(self.model.graph.node):
            if all(not o or o in self.constants for o in node.output):
                continue
            label = node_label(node, index)
            try:
                result = _range_transfer(self, node, label)
            except Exception as exc:  # a malformed node: no bounds
                log.debug("no range for %s: %s", label, exc)
                result = FULL
                if node.op_type in DOMAIN_SENSITIVE:  # what could not be bounded cannot be proven safe
                    self.hazards.append((label, f"{node.op_type} whose bounds could not be computed ({exc})"))
            for name in node.output:
                if name and name not in self.constants:
                    self.ranges[name] = result


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else text


def _static_last_dim(value_info: onnx.ValueInfoProto) -> int | None:
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape") or not tensor_type.shape.dim:
        return None
    last = tensor_type.shape.dim[-1]
    return int(last.dim_value) if last.HasField("dim_value") else None


# --------------------------------------------------------------------------------------------
# Interval bounds (for NaN/Inf safety: Div, Log, Sqrt, Pow)
# --------------------------------------------------------------------------------------------
INF = float("inf")
FULL = (-INF, INF)
NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
_HUGE = 1e300  # stands for +-inf when evaluating a monotone function at an unbounded end
DOMAIN_SENSITIVE = {"Div", "Log", "Sqrt", "Pow", "Exp", "Cast"}
EXACT_UNARY = {"Relu", "Identity", "Cast", "Dropout", "Floor", "Ceil", "Round", "ThresholdedRelu"}
EXP_LIMIT = 88.0  # exp(x) overflows float32 just above 88.72
FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT16_MAX = float(np.finfo(np.float16).max)


def _array_range(array: np.ndarray) -> tuple[float, float]:
    if array.dtype.kind not in "fiub" or array.size == 0:
        return FULL
    values = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        return FULL
    return float(values.min()), float(values.max())


def _widen(lo: float, hi: float) -> tuple[float, float]:
    """Float32 rounding (and underflow to 0) may move a value past an exact bound: widen a little."""
    if np.isnan(lo):
        lo = -INF
    if np.isnan(hi):
        hi = INF
    return lo - 1e-6 * abs(lo) - 1e-30, hi + 1e-6 * abs(hi) + 1e-30


def _monotone_image(function, lo: float, hi: float, exact: bool = False) -> tuple[float, float]:
    """[f(lo), f(hi)] for a non-decreasing f, its limits standing in for the unbounded ends.
    exact: f is computed exactly in float32 too (max(x, 0), a copy...), so no widening."""
    ends = np.clip(np.array([lo, hi], dtype=np.float64), -_HUGE, _HUGE)
    with np.errstate(all="ignore"):
        values = np.asarray(function(ends), dtype=np.float64)
    values = np.where(values >= _HUGE * 0.1, INF, np.where(values <= -_HUGE * 0.1, -INF, values))
    return (float(values[0]), float(values[1])) if exact else _widen(float(values[0]), float(values[1]))


def _products(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """Bounds of x * y for x in a, y in b (0 times an unbounded end is 0: the values are finite)."""
    corners = []
    for x in a:
        for y in b:
            corners.append(0.0 if x == 0 or y == 0 else x * y)
    return _widen(min(corners), max(corners))


def _linear(x: tuple[float, float], weight: np.ndarray) -> tuple[float, float]:
    """Bounds of sum_i W[i, j] x_i over every output column j, x_i in x. weight: [..., n, m]."""
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim == 1:
        w = w[:, None]
    w = w.reshape(-1, *w.shape[-2:])
    lo, hi = x
    with np.errstate(all="ignore"):
        at_lo = np.where(w == 0, 0.0, w * lo)
        at_hi = np.where(w == 0, 0.0, w * hi)
        low = np.minimum(at_lo, at_hi).sum(axis=-2)
        high = np.maximum(at_lo, at_hi).sum(axis=-2)
    return _widen(float(np.min(low)), float(np.max(high)))


def _union(ranges: Sequence[tuple[float, float]]) -> tuple[float, float]:
    return (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else FULL


def _unary_function(op: str, attrs: dict):
    alpha = attrs.get("alpha")
    if op == "Relu":
        return lambda x: np.maximum(x, 0.0)
    if op == "LeakyRelu":
        a = float(0.01 if alpha is None else alpha)
        return lambda x: np.where(x < 0, a * x, x)
    if op == "Sigmoid":
        return lambda x: 1.0 / (1.0 + np.exp(-x))
    if op == "Tanh":
        return np.tanh
    if op == "Softplus":
        return lambda x: np.logaddexp(0.0, x)
    if op == "Elu":
        a = float(1.0 if alpha is None else alpha)
        return lambda x: np.where(x < 0, a * np.expm1(np.minimum(x, 0.0)), x)
    if op == "Selu":
        a, g = float(attrs.get("alpha", 1.67326319217681884765625)), float(attrs.get("gamma", 1.05070102214813232421875))
        return lambda x: g * np.where(x <= 0, a * np.expm1(np.minimum(x, 0.0)), x)
    if op == "Celu":
        a = float(1.0 if alpha is None else alpha)
        return lambda x: np.maximum(0.0, x) + np.minimum(0.0, a * np.expm1(np.minimum(x, 0.0) / a))
    if op == "HardSigmoid":
        a, b = float(0.2 if alpha is None else alpha), float(attrs.get("beta", 0.5))
        return lambda x: np.clip(a * x + b, 0.0, 1.0)
    if op == "Softsign":
        return lambda x: x / (1.0 + np.abs(x))
    if op == "Erf":
        import math

        return np.vectorize(math.erf)
    if op == "ThresholdedRelu":
        a = float(1.0 if alpha is None else alpha)
        return lambda x: np.where(x > a, x, 0.0)
    if op == "Exp":
        return np.exp
    if op in ("Identity", "Cast", "Dropout"):
        return lambda x: x
    if op == "Floor":
        return np.floor
    if op == "Ceil":
        return np.ceil
    if op == "Round":
        return np.round
    return None


def _range_transfer(info: GraphInfo, node: onnx.NodeProto, label: str) -> tuple[float, float]:
    op = node.op_type
    attrs = _attributes(node)
    names = list(node.input)
    ranges = [info.range_of(n) for n in names]
    first = ranges[0] if ranges else FULL
    function = _unary_function(op, attrs)
    if op == "Exp" and not first[1] <= EXP_LIMIT:  # exp(89) is already inf in float32
        info.hazards.append((label, f"takes exp of {names[0]!r}, which may exceed {EXP_LIMIT:g} "
                                    f"(bounds [{first[0]:.3g}, {first[1]:.3g}]): inf from finite input"))
        return (0.0, INF)
    if op == "Cast" and int(attrs.get("to", 0)) == onnx.TensorProto.FLOAT16 and not max(-first[0], first[1]) <= FLOAT16_MAX:
        info.hazards.append((label, f"casts {names[0]!r} to FLOAT16, which overflows to inf above {FLOAT16_MAX:g} "
                                    f"(bounds [{first[0]:.3g}, {first[1]:.3g}])"))
        return FULL
    if function is not None:
        return _monotone_image(function, *first, exact=op in EXACT_UNARY)
    if op in BOUNDED_BELOW_UNARY:
        return _bounded_below_range(op, *first)
    if op == "Log":
        if not first[0] > 0:
            info.hazards.append((label, f"takes the log of {names[0]!r}, which may be <= 0 (bounds [{first[0]:.3g}, {first[1]:.3g}])"))
            return FULL
        return _monotone_image(np.log, *first)
    if op == "Sqrt":
        if not first[0] >= 0:
            info.hazards.append((label, f"takes the square root of {names[0]!r}, which may be negative (bounds [{first[0]:.3g}, {first[1]:.3g}])"))
            return FULL
        return _monotone_image(np.sqrt, *first)
    if op == "Pow":
        exponent = info.constants.get(names[1]) if len(names) > 1 else None
        hazard = _pow_hazard(first, exponent)
        if hazard:
            info.hazards.append((label, f"raises {names[0]!r} to {names[1]!r}: {hazard}"))
            return FULL
        p = float(np.asarray(exponent).reshape(-1)[0])
        if p == 0:
            return (1.0, 1.0)
        if p < 0:  # base > 0 here: decreasing
            with np.errstate(all="ignore"):
                return _widen(float(np.float64(first[1]) ** p), float(np.float64(first[0]) ** p))
        if first[0] >= 0 or int(p) % 2 == 1:  # increasing on [0, inf), or everywhere for an odd power
            return _monotone_image(lambda x: x ** p, *first)
        with np.errstate(all="ignore"):  # an even power of a signed base
            return _widen(0.0, float(np.float64(max(abs(first[0]), abs(first[1]))) ** p))
    if op == "Neg":
        return (-first[1], -first[0])
    if op == "Add":
        return _widen(ranges[0][0] + ranges[1][0], ranges[0][1] + ranges[1][1])
    if op == "Sub":
        return _widen(ranges[0][0] - ranges[1][1], ranges[0][1] - ranges[1][0])
    if op == "Mul":
        return _products(ranges[0], ranges[1])
    if op == "Div":
        divisor = info.constants.get(names[1])
        if divisor is not None:
            d = np.asarray(divisor, dtype=np.float64)
            if d.size == 0 or np.any(d == 0) or not np.all(np.isfinite(d)):
                info.hazards.append((label, f"divides by {names[1]!r}, a constant with a zero or non-finite entry"))
                return FULL
            return _products(first, _array_range(1.0 / d))
        lo, hi = ranges[1]
        if lo <= 0 <= hi:
            info.hazards.append((label, f"divides by {names[1]!r}, which may be 0 (bounds [{lo:.3g}, {hi:.3g}])"))
            return FULL
        return _products(first, _widen(min(1 / lo, 1 / hi), max(1 / lo, 1 / hi)))
    if op in ("Max", "Min"):
        pick = max if op == "Max" else min
        return (pick(r[0] for r in ranges), pick(r[1] for r in ranges))
    if op == "Sum":
        return _widen(sum(r[0] for r in ranges), sum(r[1] for r in ranges))
    if op == "Mean":
        return _union(ranges)
    if op == "Clip":
        lo, hi = first
        low = info.constants.get(names[1]) if len(names) > 1 and names[1] else None
        high = info.constants.get(names[2]) if len(names) > 2 and names[2] else None
        if low is not None and np.size(low):
            lo, hi = max(lo, float(np.max(low))), max(hi, float(np.max(low)))
        if high is not None and np.size(high):
            lo, hi = min(lo, float(np.min(high))), min(hi, float(np.min(high)))
        return (lo, hi)
    if op == "PRelu":
        slope = info.constants.get(names[1])
        if slope is None:
            return FULL
        negative = _products((min(first[0], 0.0), 0.0), _array_range(np.asarray(slope)))
        return (min(negative[0], max(first[0], 0.0)), max(negative[1], max(first[1], 0.0)))
    if op == "MatMul":
        for dependent, weight in ((0, 1), (1, 0)):
            w = info.constants.get(names[weight])
            if w is not None and names[dependent] not in info.constants:
                return _linear(ranges[dependent], w if dependent == 0 else np.swapaxes(np.asarray(w), -1, -2))
        return FULL
    if op == "Gemm":
        a, b = info.constants.get(names[0]), info.constants.get(names[1])
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        if b is not None and a is None:
            w = np.asarray(b).T if int(attrs.get("transB", 0)) else np.asarray(b)
            product = _linear(ranges[0], w * alpha)
        elif a is not None and b is None:
            w = np.asarray(a) if int(attrs.get("transA", 0)) else np.asarray(a).T
            product = _linear(ranges[1], w * alpha)
        else:
            return FULL
        if len(names) > 2 and names[2]:
            bias = _products(ranges[2], (beta, beta))
            return _widen(product[0] + bias[0], product[1] + bias[1])
        return product
    if op == "Conv":
        weight = info.constants.get(names[1])
        if weight is None:
            return FULL
        x = first
        pads = attrs.get("pads")
        if (pads and any(pads)) or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
            x = (min(x[0], 0.0), max(x[1], 0.0))  # zero padding enters the sums
        w = np.asarray(weight, dtype=np.float64)
        out = _linear(x, w.reshape(w.shape[0], -1).T)
        if len(names) > 2 and names[2]:
            bias = info.range_of(names[2])
            return _widen(out[0] + bias[0], out[1] + bias[1])
        return out
    if op == "Pad":
        mode = attrs.get("mode", b"constant")
        if mode in (b"constant", "constant"):
            value = info.constants.get(names[2]) if len(names) > 2 and names[2] else np.zeros(1)
            return _union([first, _array_range(np.asarray(value))]) if value is not None else FULL
        return first
    if op in ("Concat", "Where"):
        return _union(ranges[1:] if op == "Where" else ranges)
    if op == "CastLike":
        return first
    if op == "ConstantOfShape":
        value = attrs.get("value")
        return _array_range(numpy_helper.to_array(value)) if value is not None else (0.0, 0.0)
    if op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice", "Gather", "GatherElements",
              "GatherND", "Expand", "Tile", "Split", "ReduceMax", "ReduceMin"):
        return first
    return FULL


# Elementwise activations of users' hidden layers that are finite for finite input but NOT monotone
# (GELU dips to about -0.17 near x = -0.75): their ranges are bounded soundly below, so a scope-"final"
# classifier's hidden layers may use them; the certificate treats them as losing the direction.
BOUNDED_BELOW_UNARY = {"Gelu": -0.1701}


def _bounded_below_range(op: str, lo: float, hi: float) -> tuple[float, float]:
    """Sound bounds of GELU-like f (f(x) >= floor everywhere, f(x) <= max(x, 0), f increasing for x >= 0)."""
    floor = BOUNDED_BELOW_UNARY[op]
    if lo >= 0:  # GELU(x) >= x * Phi(0) = x / 2 for x >= 0 (either approximation)
        low = 0.5 * lo
    else:
        low = floor
    return _widen(low, max(hi, 0.0))


def where_threshold_pattern(info: GraphInfo, node: onnx.NodeProto) -> str | None:
    """None when `node` is Where(Greater(X, c), X, F(X)) with F non-decreasing and F(c) <= the next
    float32 above c (so the switch from F(X) to X never steps down); otherwise why not."""
    made_by = {out: n for n in info.model.graph.node for out in n.output}
    if len(node.input) != 3:
        return "Where needs three inputs"
    condition, x, fx = node.input
    greater, unary = made_by.get(condition), made_by.get(fx)
    if greater is None or greater.op_type != "Greater" or greater.input[0] != x:
        return "a Where whose condition depends on the input is only modelled as Where(Greater(X, c), X, F(X))"
    threshold = info.constants.get(greater.input[1])
    if threshold is None or np.size(threshold) != 1:
        return "Where(Greater(X, c), ...) needs a constant scalar threshold c"
    if unary is None or list(unary.input)[:1] != [x] or len(unary.input) != 1:
        return "Where(Greater(X, c), X, F(X)) needs F a unary op of the same X"
    function = _unary_function(unary.op_type, _attributes(unary))
    if function is None or _unary_is_monotone(unary, _attributes(unary)):
        return f"Where(Greater(X, c), X, F(X)) with F = {unary.op_type}, which is not a modelled non-decreasing op"
    c = float(np.asarray(threshold, dtype=np.float64).reshape(-1)[0])
    with np.errstate(all="ignore"):
        at_switch = float(np.asarray(function(np.array([c], dtype=np.float64)))[0])
    above = float(np.nextafter(np.float32(c), np.float32(np.inf)))
    if not at_switch <= above:
        return f"Where(Greater(X, {c:g}), X, {unary.op_type}(X)) steps down at the switch: {unary.op_type}({c:g}) = {at_switch:.9g} > {above:.9g}"
    return None


def _pow_hazard(base: tuple[float, float], exponent: np.ndarray | None) -> str | None:
    if exponent is None or np.size(exponent) != 1:
        return "the exponent is not a constant scalar"
    p = float(np.asarray(exponent, dtype=np.float64).reshape(-1)[0])
    if not np.isfinite(p):
        return "the exponent is not finite"
    with np.errstate(all="ignore"):
        largest = float(np.float64(max(abs(base[0]), abs(base[1]))) ** p)
    if p > 1 and not largest < FLOAT32_MAX:
        return f"exponent {p:g} of a base bounded only by [{base[0]:.3g}, {base[1]:.3g}] may overflow to inf"
    if p < 0 and not base[0] > 0:
        return f"a negative exponent {p:g} of a base that may be 0 or negative"
    if not p.is_integer() and not base[0] >= 0:
        return f"a fractional exponent {p:g} of a base that may be negative"
    return None


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
        self.seeds = dict(seeds)
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
                if name and name not in self.seeds:  # a seeded tensor is the variable: its producer is held fixed
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
        if op == "Where" and len(inputs) == 3:  # its condition may be "unknown" (a Greater): the pattern decides
            return self._where(node, label, inputs)
        if unknown_in is not None and op not in ("Mul", "Div"):  # Mul by 0 cannot rescue it either
            return unknown_in
        if op in MONOTONE_UNARY:
            why = _unary_is_monotone(node, attrs)
            if why:
                return Unknown(label, why)
            if op == "Clip" and any(not isinstance(v, Independent) for v in inputs[1:]):
                return Unknown(label, "Clip bounds that depend on the input cannot be certified")
            if op == "Dropout" and len(node.input) > 2 and node.input[2]:
                flag = self.constant(node.input[2])
                if flag is None or bool(np.any(flag)):
                    return Unknown(label, "Dropout in training mode (or a mode not fixed to false) drops inputs at random")
            if op in ("Log", "Sqrt"):
                low = self.info.range_of(node.input[0])[0]
                if not (low > 0 if op == "Log" else low >= 0):
                    return Unknown(label, f"{op} of {node.input[0]!r}, which may be {'<= 0' if op == 'Log' else 'negative'} (NaN/Inf)")
            return inputs[0]
        if op == "Pow":
            return self._pow(node, label, inputs)
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
        if op == "CastLike":
            target = self.info.types.get(node.input[1]) if len(node.input) > 1 else None
            if target not in FLOAT_TYPES:
                return Unknown(label, "CastLike to a non-float type is not monotone (integer casts wrap)")
            if len(inputs) > 1 and not isinstance(inputs[1], Independent):
                return Unknown(label, "CastLike's type donor depends on the input")
            return inputs[0]

        if op in MONOTONE_REDUCE:
            if len(inputs) > 1 and not isinstance(inputs[1], Independent):
                return Unknown(label, f"{op} axes depend on the input")
            return collapse(inputs[0], label, op)
        if op in DATA_INPUTS:
            return self._data_movement(node, label, inputs, attrs)
        if op in BOUNDED_BELOW_UNARY and all(isinstance(v, Independent) for v in inputs):
            return INDEPENDENT
        if op in BOUNDED_BELOW_UNARY:
            return Unknown(label, f"{op} is not monotone (it dips below 0 for negative input)")
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

    def _where(self, node: onnx.NodeProto, label: str, inputs: list[Value]) -> Value:
        """Where with a fixed condition selects elements (directions must agree); with a condition
        Greater(X, c), the pattern torch exports for softplus: Where(X > c, X, F(X)) is a
        non-decreasing function of X when F is and F(c) does not exceed the next float32 above c."""
        condition, chosen, other = inputs
        for value in (chosen, other):
            if isinstance(value, Unknown):
                return value
        if isinstance(condition, Independent):
            return join([chosen, other], label, "selects between")
        why = where_threshold_pattern(self.info, node)
        if why is not None:
            return Unknown(label, why)
        return chosen

    def _pow(self, node: onnx.NodeProto, label: str, inputs: list[Value]) -> Value:
        if len(inputs) < 2 or not isinstance(inputs[1], Independent):
            return Unknown(label, "Pow with an exponent that depends on the input")
        base = self.info.range_of(node.input[0])
        exponent = self.constant(node.input[1])
        hazard = _pow_hazard(base, exponent)
        if hazard:
            return Unknown(label, hazard)
        p = float(np.asarray(exponent, dtype=np.float64).reshape(-1)[0])
        if p == 0:
            return INDEPENDENT
        if p < 0:  # base > 0: x ** p decreases
            return flip(inputs[0], label)
        if base[0] >= 0 or (p.is_integer() and int(p) % 2 == 1):
            return inputs[0]
        return Unknown(label, f"Pow with exponent {p:g} of a base that may be negative is not monotone")

    def _mul(self, node: onnx.NodeProto, label: str, inputs: list[Value]) -> Value:
        left, right = inputs
        for value, other_name, value_name in ((left, node.input[1], node.input[0]), (right, node.input[0], node.input[1])):
            other = self.constant(other_name)
            if other is not None:
                if isinstance(value, Unknown):
                    return value  # 0 * (something unproven) stays unproven: 0 * inf is NaN
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


# --------------------------------------------------------------------------------------------
# Points of use: the tensors the rules are checked on, as the consuming node sees them
# --------------------------------------------------------------------------------------------
@dataclass
class WeightUse:
    """A weight as one node consumes it (constant-folded; Gemm's alpha and transB applied)."""

    node: str  # the consuming node's label
    input_name: str  # the tensor name at that input (an initializer, a Constant, or a folded node output)
    values: np.ndarray  # [K] taps for a Conv as the node reads them; [in, out] for Gemm/MatMul
    data_input: str  # the node's other (dependent) operand


def producers(model: onnx.ModelProto) -> dict[str, tuple[int, onnx.NodeProto]]:
    return {name: (index, node) for index, node in enumerate(model.graph.node) for name in node.output if name}


def output_layer(info: GraphInfo, output: str) -> WeightUse:
    """The last Gemm/MatMul before `output`, found by walking back through single-operand nodes
    (the sigmoid, a calibration's constant scale and bias...). Raises ValueError naming where the
    walk stopped."""
    made_by = producers(info.model)
    tensor = output
    seen = 0
    while True:
        if tensor not in made_by:
            raise ValueError(f"{tensor!r} is not computed by any node, so the graph has no output layer before {output!r}")
        index, node = made_by[tensor]
        label = node_label(node, index)
        if node.op_type in ("Gemm", "MatMul"):
            return _layer_weight(info, node, label)
        dependent = [name for name in node.input if name and name not in info.constants]
        if len(dependent) != 1 or seen > len(made_by):
            raise ValueError(f"node {label} combines {len(dependent)} computed operands before the output layer: "
                             "cannot locate the output layer")
        tensor, seen = dependent[0], seen + 1


def _layer_weight(info: GraphInfo, node: onnx.NodeProto, label: str) -> WeightUse:
    attrs = _attributes(node)
    a_name, b_name = node.input[0], node.input[1]
    a, b = info.constants.get(a_name), info.constants.get(b_name)
    if node.op_type == "MatMul":
        if b is None:
            raise ValueError(f"node {label}: the output layer's weight {b_name!r} is not a constant")
        return WeightUse(label, b_name, np.asarray(b, dtype=np.float64), a_name)
    if b is None:
        raise ValueError(f"node {label}: the output layer's weight {b_name!r} is not a constant")
    weight = np.asarray(b, dtype=np.float64)
    weight = (weight.T if int(attrs.get("transB", 0)) else weight) * float(attrs.get("alpha", 1.0))
    if a is not None:
        raise ValueError(f"node {label}: the output layer's input {a_name!r} is a constant")
    return WeightUse(label, b_name, weight, a_name)


# Ops that pass a smoother's rows through unchanged (row-major reshapes never reorder elements).
_PASS_THROUGH = {"Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten"}


def smoother_kernel(info: GraphInfo, signal: str, output: str, kernel_size: int) -> tuple[str, str, np.ndarray]:
    """(Conv label, weight name, weight as the Conv consumes it) of a smoother graph, which must compute
    exactly the full correlation the served fast paths compute with that kernel: signal -> reshapes ->
    Pad(edge, K-1 both sides of the last axis) -> one plain Conv -> reshapes -> output. ValueError
    names the node that breaks this. (The warm-up checks the output shape, which pins the reshapes.)"""
    convs = [(index, node) for index, node in enumerate(info.model.graph.node) if node.op_type == "Conv"]
    if len(convs) != 1:
        raise ValueError(f"a smoother graph must apply exactly one Conv (its kernel), found {len(convs)}")
    index, conv = convs[0]
    label = node_label(conv, index)
    attrs = _attributes(conv)
    plain = (int(attrs.get("group", 1)) == 1 and all(v == 1 for v in attrs.get("strides", [1]))
             and all(v == 1 for v in attrs.get("dilations", [1])) and not any(attrs.get("pads", [0]))
             and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", b"VALID") and (len(conv.input) < 3 or not conv.input[2]))
    if not plain:
        raise ValueError(f"node {label}: the smoother's Conv must be a plain correlation (group 1, strides 1, dilations 1, "
                         "no padding, no bias): the served fast paths apply the kernel as one")
    weight = info.constants.get(conv.input[1])
    if weight is None:
        raise ValueError(f"node {label}: the Conv's weight {conv.input[1]!r} is not a constant")
    if weight.shape != (1, 1, kernel_size):
        raise ValueError(f"node {label}: the Conv's weight {conv.input[1]!r} has shape {list(weight.shape)}, "
                         f"expected [1, 1, {kernel_size}] (kernel_size in the manifest)")
    made_by = producers(info.model)

    def back_through_reshapes(tensor: str) -> tuple[str, tuple[int, onnx.NodeProto] | None]:
        while tensor in made_by and made_by[tensor][1].op_type in _PASS_THROUGH:
            tensor = made_by[tensor][1].input[0]
        return tensor, made_by.get(tensor)

    tensor, found = back_through_reshapes(output)
    if found is None or found[1] is not conv:
        where = f"node {node_label(found[1], found[0])}" if found else f"tensor {tensor!r}"
        raise ValueError(f"{where} stands between the Conv {label} and the output {output!r}: "
                         "a smoother's output must be the Conv's, only reshaped")
    tensor, found = back_through_reshapes(conv.input[0])
    pad = found[1] if found else None
    if pad is None or pad.op_type != "Pad":
        where = f"node {node_label(found[1], found[0])}" if found else f"tensor {tensor!r}"
        raise ValueError(f"{where} feeds the Conv {label}: a smoother pads the signal by edge replication, then correlates")
    pad_label = node_label(pad, found[0])
    pads = info.constants.get(pad.input[1]) if len(pad.input) > 1 else None
    mode = _attributes(pad).get("mode", b"constant")
    expected = [0, 0, kernel_size - 1, 0, 0, kernel_size - 1]
    if mode not in (b"edge", "edge") or pads is None or [int(p) for p in np.asarray(pads).reshape(-1)] != expected \
            or (len(pad.input) > 3 and pad.input[3]):
        raise ValueError(f"node {pad_label}: a smoother pads by edge replication with pads {expected} "
                         f"(K - 1 = {kernel_size - 1} on both sides of the last axis)")
    source, found = back_through_reshapes(pad.input[0])
    if source != signal:
        where = f"node {node_label(found[1], found[0])}" if found else f"tensor {source!r}"
        raise ValueError(f"{where} stands between the signal {signal!r} and the Pad {pad_label}: only reshapes may")
    return label, conv.input[1], np.asarray(weight)
