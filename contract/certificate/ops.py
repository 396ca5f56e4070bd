"""The op tables the rules read (which ops are monotone, move data, keep the last axis, carry no
value), and the small node helpers every module of the certificate uses.

Adding an op that fits a class (a monotone elementwise function, a data movement, a reduction):
one entry in its table here, and its interval rule in contract.certificate.interval_rules.
"""

from __future__ import annotations


import numpy as np
import onnx

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


def _entry(weight: np.ndarray, j: int, k: int) -> float:
    flat = weight.reshape(-1, *weight.shape[-2:])
    column = flat[:, j, k]
    return float(column[np.argmax(np.abs(column))])


def _transpose_keeps_last(attrs: dict) -> bool:
    perm = attrs.get("perm")
    return perm is not None and len(perm) > 0 and perm[-1] == len(perm) - 1


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
