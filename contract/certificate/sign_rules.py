"""The sign rule of each op: how the direction of a tensor's dependence on one feature goes
through the node that consumes it (`_Interpreter.transfer`). Only constant weights keep a sign
through MatMul/Gemm/Conv/Mul/Div; anything else an op cannot prove becomes Unknown, naming the node.

Adding an op with its own rule: a branch in `transfer` (and its interval rule in
contract.certificate.interval_rules); an op that fits a class is one entry in contract.certificate.ops.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx

from contract.certificate.arithmetic import (
    _add_flip,
    _columns,
    _first_index,
    _sign_class,
    collapse,
    Columns,
    flip,
    INDEPENDENT,
    Independent,
    join,
    MINUS,
    PLUS,
    SIGN_WORDS,
    Uniform,
    Unknown,
    Value,
)
from contract.certificate.interval_rules import _pow_hazard, BOUNDED_BELOW_UNARY, where_threshold_pattern
from contract.certificate.ops import (
    _attributes,
    _entry,
    _has_subgraph,
    _transpose_keeps_last,
    _unary_is_monotone,
    DATA_INPUTS,
    FLOAT_TYPES,
    KEEPS_LAST_AXIS,
    MONOTONE_REDUCE,
    MONOTONE_UNARY,
    MONOTONE_VARIADIC,
    node_label,
    VALUE_FREE,
)
from contract.certificate.walk import GraphInfo
from contract.domains import DOMAINS  # other op domains the proof reads (contract.mlops)


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
        unknown_in = next((v for v in inputs if isinstance(v, Unknown)), None)
        if node.domain in DOMAINS and unknown_in is None:  # trees and linear models (contract.mlops)
            return DOMAINS[node.domain].transfer(self.info, node, label, inputs)
        attrs = _attributes(node)  # after the ML ops: a tree node's attributes are large
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
        if op == "TopK":  # each order statistic is non-decreasing in every element; the indices are not values
            if len(inputs) > 1 and not isinstance(inputs[1], Independent):
                return Unknown(label, "TopK's k depends on the input")
            return [collapse(inputs[0], label, op), Unknown(label, "TopK's indices output is not modelled")]
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
