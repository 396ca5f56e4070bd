"""The interval rule of each op: the bounds of its output for finite input from its inputs' bounds
(for NaN/Inf safety: Div, Log, Sqrt, Pow), and the hazards a rule finds (a Pow of a possibly
negative base, ...). `info` is the GraphInfo being built (contract.certificate.walk).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from contract.certificate.arithmetic import (
    _array_range,
    _linear,
    _monotone_image,
    _products,
    _unary_function,
    _union,
    _widen,
    EXACT_UNARY,
    EXP_LIMIT,
    FLOAT16_MAX,
    FLOAT32_MAX,
    FULL,
    INF,
)
from contract.certificate.ops import _attributes, _unary_is_monotone
from contract.domains import DOMAINS  # other op domains the proof reads (contract.mlops)


def _range_transfer(info: Any, node: onnx.NodeProto, label: str) -> tuple[float, float]:
    if node.domain in DOMAINS:
        return DOMAINS[node.domain].value_range(info, node, label)
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
    if op in ("ReduceSum", "ReduceSumSquare", "ReduceL1"):
        return _sum_range(info, node, attrs, first)
    if op in HIDDEN_RANGES:
        return HIDDEN_RANGES[op](info, node, attrs, first)
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
              "GatherND", "Expand", "Tile", "Split", "ReduceMax", "ReduceMin", "ReduceMean", "TopK"):
        return first  # (TopK: its values; its indices output is refused wherever it is used)
    return FULL


def _layer_norm_range(info: Any, node: onnx.NodeProto, attrs: dict, first: tuple[float, float]) -> tuple[float, float]:
    """LayerNormalization over the last axis of n elements: each normalized value lies within
    sqrt(n - 1) of 0 (epsilon > 0 only shrinks it), then scale and bias apply."""
    width = info.last_dims.get(node.input[0])
    scale = info.constants.get(node.input[1]) if len(node.input) > 1 else None
    bias = info.constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(1)
    if int(attrs.get("axis", -1)) != -1 or not width or scale is None or bias is None:
        return FULL
    reach = float(np.sqrt(max(width - 1, 0))) * float(np.max(np.abs(np.asarray(scale, dtype=np.float64))))
    bias = np.asarray(bias, dtype=np.float64)
    return _widen(float(bias.min()) - reach, float(bias.max()) + reach)


def _sum_range(info: Any, node: onnx.NodeProto, attrs: dict, first: tuple[float, float]) -> tuple[float, float]:
    """A sum over the last axis of n elements (a static size): n times each element's bounds."""
    axes = info.constants.get(node.input[1]) if len(node.input) > 1 and node.input[1] else attrs.get("axes")
    width = info.last_dims.get(node.input[0])
    if axes is None or [int(a) for a in np.asarray(axes).reshape(-1)] != [-1] or not width:
        return FULL
    if node.op_type != "ReduceSum":
        first = (0.0, _magnitude(first) ** (2 if node.op_type == "ReduceSumSquare" else 1))
    with np.errstate(all="ignore"):
        return _widen(width * first[0], width * first[1])


def _magnitude(first: tuple[float, float]) -> float:
    return max(abs(first[0]), abs(first[1]))


# Ranges of the hidden-layer-only ops (contract.graph.HIDDEN_ONLY_OPS) that have finite ones.
HIDDEN_RANGES = {
    "LayerNormalization": _layer_norm_range,
    "Softmax": lambda info, node, attrs, first: (0.0, 1.0),
    "LogSoftmax": lambda info, node, attrs, first: (-INF, 0.0),
    "Abs": lambda info, node, attrs, first: (0.0 if first[0] <= 0 <= first[1] else min(abs(first[0]), abs(first[1])), _magnitude(first)),
    "Sign": lambda info, node, attrs, first: (-1.0, 1.0),
    "Sin": lambda info, node, attrs, first: (-1.0, 1.0),
    "Cos": lambda info, node, attrs, first: (-1.0, 1.0),
    "HardSwish": lambda info, node, attrs, first: _widen(-0.375, max(first[1], 0.0)),
    "Mish": lambda info, node, attrs, first: _widen(-0.3089, max(first[1], 0.0)),
}


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


def where_threshold_pattern(info: Any, node: onnx.NodeProto) -> str | None:
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
