"""The ONNX-ML (`ai.onnx.ml`) ops the service serves, and what the proof knows of each.

Exactly these ops of that domain are allowed (ONNX Runtime implements them); every other one, and
every attribute the proof does not read, is refused by the graph check with a plain sentence first:

- `TreeEnsembleClassifier`, `TreeEnsembleRegressor` (opset 1 and 3), `TreeEnsemble` (opset 5):
  read and proven by contract.trees (per tree and feature, exact over leaf boxes);
- `LinearClassifier`, `LinearRegressor`: a constant matrix, per output column, as Gemm is;
- `Scaler`: (x - offset) * scale per column; a negative scale reverses that column.

Post-transforms: NONE and LOGISTIC (elementwise, non-decreasing) only; SOFTMAX mixes the classes
("tree ensembles with softmax over classes are not monotone per class and are not served").
`Normalizer` (each row divided by its norm) is refused: raising one feature lowers every other
normalized value, and an all-zero row divides by zero.

contract.graph calls `node_problems`, contract.certificate calls `transfer` and `value_range`.
numpy and onnx only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper

import sys

from contract.certificate.arithmetic import (INDEPENDENT, PLUS, Columns, Independent, Uniform, Unknown, Value,
                                             _columns)
from contract.certificate.walk import GraphInfo
from contract.domains import DOMAINS
from contract.trees import MONOTONE_POST, TREE_OPS, Ensemble, TreeRefused, describe_violation, read_ensemble

DOMAIN = "ai.onnx.ml"
MIN_OPSET, MAX_OPSET = 1, 5
LINEAR_OPS = {"LinearClassifier", "LinearRegressor"}
ALLOWED_OPS = TREE_OPS | LINEAR_OPS | {"Scaler"}
SOFTMAX_SENTENCE = "tree ensembles and linear models with softmax over classes are not monotone per class and are not served"
REFUSED_SENTENCES = {
    "ZipMap": ("ZipMap outputs (a list of {class: probability} maps per row) are not tensors and are not served: "
               "convert without them (skl2onnx: to_onnx(model, X, options={'zipmap': False}); onnxmltools: "
               "convert_lightgbm(model, ..., zipmap=False); convert_xgboost writes none)"),
    "Normalizer": ("Normalizer (each row divided by its norm) is not monotone in any one feature and divides by zero "
                   "on an all-zero row: it is not served"),
}


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _post(node: onnx.NodeProto) -> str:
    value = _attr(node, "post_transform", "NONE")
    if isinstance(value, int):  # opset 5 writes numbers
        return {0: "NONE", 1: "SOFTMAX", 2: "LOGISTIC", 3: "SOFTMAX_ZERO", 4: "PROBIT"}.get(value, str(value))
    return str(value)


def _linear_shape(node: onnx.NodeProto, n_features: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(coefficients [rows, F], intercepts [rows], output columns); ValueError naming the attribute."""
    coefficients = np.asarray(_attr(node, "coefficients", []), dtype=np.float64)
    intercepts = np.asarray(_attr(node, "intercepts", []), dtype=np.float64)
    if node.op_type == "LinearRegressor":
        rows = int(_attr(node, "targets", 1))
        columns = rows
    else:
        labels = _attr(node, "classlabels_ints", None) or _attr(node, "classlabels_strings", None) or []
        columns = len(labels)
        rows = coefficients.size // n_features if n_features else 0
        if not (rows == columns or (rows == 1 and columns == 2)):
            raise ValueError(f"{coefficients.size} coefficients for {columns} class labels and {n_features} features: "
                             "one row per class (or one row for two classes) is served")
    if not 1 <= rows <= 4096 or coefficients.size != rows * n_features:
        raise ValueError(f"{coefficients.size} coefficients do not make {rows} row(s) of {n_features} features")
    if intercepts.size not in (0, rows):
        raise ValueError(f"{intercepts.size} intercepts for {rows} row(s)")
    if not np.all(np.isfinite(coefficients)) or not np.all(np.isfinite(intercepts)):
        raise ValueError("non-finite coefficients or intercepts")
    return coefficients.reshape(rows, n_features), (intercepts if intercepts.size else np.zeros(rows)), columns


def _scaler(node: onnx.NodeProto, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    offset = np.asarray(_attr(node, "offset", [0.0]), dtype=np.float64)
    scale = np.asarray(_attr(node, "scale", [1.0]), dtype=np.float64)
    for name, values in (("offset", offset), ("scale", scale)):
        if values.size not in (1, n_features):
            raise ValueError(f"{name} has {values.size} values for {n_features} features")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{name} holds a non-finite value")
    return np.broadcast_to(offset, (n_features,)), np.broadcast_to(scale, (n_features,))


def node_problems(node: onnx.NodeProto, label: str, n_features: int | None) -> list[str]:
    """Why an ai.onnx.ml node is not served (empty: it is), read before anything is allocated for it."""
    op = node.op_type
    if op in REFUSED_SENTENCES:
        return [f"{REFUSED_SENTENCES[op]} (node {label})"]
    if op not in ALLOWED_OPS:
        return [f"op {DOMAIN}.{op} is not served: of the ONNX-ML domain only {', '.join(sorted(ALLOWED_OPS))} are "
                f"(node {label})"]
    if n_features is None:
        return [f"node {label}: the graph's input has no fixed number of features, which {op} needs"]
    post = _post(node)
    if op != "Scaler" and post not in MONOTONE_POST:
        if "SOFTMAX" in post:
            return [f"{SOFTMAX_SENTENCE} (node {label} post_transform {post})"]
        return [f"node {label}: post_transform {post} is not served (only NONE and LOGISTIC, which are non-decreasing)"]
    try:
        if op in TREE_OPS:
            read_ensemble(node, n_features, label)
        elif op in LINEAR_OPS:
            _linear_shape(node, n_features)
        else:
            _scaler(node, n_features)
    except TreeRefused as exc:
        return [str(exc)]
    except (ValueError, TypeError) as exc:
        return [f"node {label}: {exc}"]
    return []


def ensemble_of(info: GraphInfo, node: onnx.NodeProto, label: str) -> Ensemble:
    """The node's trees, read once per graph (every feature's certificate reuses them)."""
    cache = info.__dict__.setdefault("_ensembles", {})
    if label not in cache:
        width = info.last_dims.get(node.input[0])
        if width is None:
            raise TreeRefused(f"node {label}: its input has no fixed number of features")
        cache[label] = read_ensemble(node, width, label)
    return cache[label]


def _input_columns(value: Value, width: int | None) -> dict[int, int] | None:
    if isinstance(value, Uniform):
        return {c: value.sign for c in range(width)} if width else None
    if isinstance(value, Columns):
        return dict(value.signs) if value.width == width else None
    return {}


def _combine(directions: dict[int, int | None], column: int, sign: int) -> bool:
    """Record that output `column` moves with `sign`; False when it already moves the other way."""
    if directions.get(column) is not None and directions[column] != sign:
        return False
    directions[column] = sign
    return True


def transfer(info: GraphInfo, node: onnx.NodeProto, label: str, inputs: list[Value]) -> Value | list[Value]:
    """The abstract value of each output, given the input's (contract.certificate's domain)."""
    value = inputs[0] if inputs else INDEPENDENT
    if isinstance(value, (Unknown, Independent)):
        return [value] * len(node.output)
    width = info.last_dims.get(node.input[0])
    columns = _input_columns(value, width)
    if columns is None:
        return [Unknown(label, f"{node.op_type}'s input columns are not known (input width {width})")] * len(node.output)
    try:
        if node.op_type in TREE_OPS:
            return _tree_transfer(info, node, label, columns)
        if node.op_type in LINEAR_OPS:
            return _linear_transfer(node, label, columns, width)
        if node.op_type == "Scaler":
            _, scale = _scaler(node, width)
            signs = {c: s * (1 if scale[c] > 0 else -1) for c, s in columns.items() if scale[c] != 0}
            return _columns(width, signs, getattr(value, "flips", ()))
    except (TreeRefused, ValueError) as exc:
        return [Unknown(label, str(exc))] * len(node.output)
    return [Unknown(label, f"op {DOMAIN}.{node.op_type} is not modelled")] * len(node.output)


def _outputs(node: onnx.NodeProto, label: str, width: int, directions: dict[int, int], binary: bool,
             flips: tuple[str, ...] = ()) -> list[Value]:
    """The node's outputs: a classifier's label output carries no score; its scores per column."""
    if binary:  # probabilities [1 - p, p] (or [-s, s]): the positive column moves with the score
        sign = directions.get(0)
        scores = INDEPENDENT if sign is None else _columns(2, {0: -sign, 1: sign}, flips)
    else:
        scores = _columns(width, {c: s for c, s in directions.items() if s is not None}, flips)
    if node.op_type in ("TreeEnsembleClassifier", "LinearClassifier"):
        return [Unknown(label, "the label output is a class decision, not a score"), scores]
    return [scores]


def _tree_transfer(info: GraphInfo, node: onnx.NodeProto, label: str, columns: dict[int, int]) -> list[Value]:
    ensemble = ensemble_of(info, node, label)
    directions: dict[int, int] = {}
    flips: tuple[str, ...] = ()
    for column, sign in columns.items():
        if not ensemble.uses(column):
            continue
        split = ensemble.set_split_on(column)
        if split is not None:
            return _fail(node, label, f"tree {int(ensemble.tree_ids[ensemble.tree[split]])} tests column {column} "
                                      "for equality or set membership (BRANCH_EQ/NEQ/MEMBER): such splits on a "
                                      "monotone feature are not served")
        for target in range(ensemble.n_targets):
            if ensemble.constant_in(column, target):  # e.g. another label's trees: no direction to combine
                continue
            if ensemble.holds(column, PLUS, target):
                moved = sign
            elif ensemble.holds(column, -PLUS, target):
                moved = -sign
                if not flips:  # the reversal, with a pair of inputs that shows it
                    flips = (f"{label}: {describe_violation(ensemble, ensemble.violation(column, PLUS, target, tries=1), PLUS)}",)
            else:  # neither: name a violating pair for each direction (the declared one is among them)
                up, down = ensemble.violation(column, PLUS, target), ensemble.violation(column, -PLUS, target)
                return _fail(node, label, f"{describe_violation(ensemble, up, PLUS)}; and "
                                          f"{describe_violation(ensemble, down, -PLUS)}")
            if not _combine(directions, target, moved):
                return _fail(node, label, f"output {target} rises with one monotone input column and falls with another")
    return _outputs(node, label, ensemble.columns if not ensemble.binary else 2, directions, ensemble.binary, flips)


def _linear_transfer(node: onnx.NodeProto, label: str, columns: dict[int, int], width: int) -> list[Value]:
    coefficients, _, outputs = _linear_shape(node, width)
    binary = coefficients.shape[0] == 1 and outputs == 2 and node.op_type == "LinearClassifier"
    directions: dict[int, int] = {}
    for row in range(coefficients.shape[0]):
        for column, sign in columns.items():
            weight = coefficients[row, column]
            if weight == 0:
                continue
            if not _combine(directions, row, sign * (1 if weight > 0 else -1)):
                return _fail(node, label, f"row {row} of its coefficients mixes opposite directions "
                                          f"(column {column} weighs {weight:.6g})")
    return _outputs(node, label, outputs, directions, binary)


def _fail(node: onnx.NodeProto, label: str, reason: str) -> list[Value]:
    return [Unknown(label, reason)] * len(node.output)


def value_range(info: GraphInfo, node: onnx.NodeProto, label: str) -> tuple[float, float]:
    """Bounds of the node's float output for any finite input (the score output of a classifier)."""
    inf = float("inf")
    post = _post(node)
    if node.op_type == "Scaler":
        width = info.last_dims.get(node.input[0])
        lo, hi = info.range_of(node.input[0])
        if width is None:
            return (-inf, inf)
        offset, scale = _scaler(node, width)
        with np.errstate(all="ignore"):
            ends = np.stack([(lo - offset) * scale, (hi - offset) * scale])
        ends = np.where(scale == 0, 0.0, ends)
        return float(np.nanmin(ends)), float(np.nanmax(ends))
    if node.op_type in TREE_OPS:
        low, high = ensemble_of(info, node, label).score_range()
        lo, hi = float(np.min(low)), float(np.max(high))
    else:
        width = info.last_dims.get(node.input[0])
        x_lo, x_hi = info.range_of(node.input[0])
        if width is None or not (np.isfinite(x_lo) and np.isfinite(x_hi)):
            lo, hi = -inf, inf
        else:
            coefficients, intercepts, _ = _linear_shape(node, width)
            at = np.stack([coefficients * x_lo, coefficients * x_hi])
            lo = float(np.min(at.min(0).sum(1) + intercepts))
            hi = float(np.max(at.max(0).sum(1) + intercepts))
    if post == "LOGISTIC":
        return (0.0, 1.0)
    if node.op_type.endswith("Classifier"):  # the binary forms' other column: -s or 1 - s
        return (min(lo, -hi, 1.0 - hi), max(hi, -lo, 1.0 - lo))
    return (lo, hi)


def declare_outputs(model: onnx.ModelProto, batch: int | None = None) -> None:
    """Add the type and width of every ai.onnx.ml node's outputs to `model.graph.value_info`, from the
    node's own attributes (onnx's shape inference does not type all of them, and a publisher's
    value_info is never trusted): scores float [N, columns], a classifier's label int64/string [N]."""
    graph = model.graph
    width = None
    if len(graph.input) == 1:
        dims = graph.input[0].type.tensor_type.shape.dim
        width = int(dims[-1].dim_value) if dims and dims[-1].HasField("dim_value") else None
    for node in graph.node:
        if node.domain != DOMAIN or node.op_type not in ALLOWED_OPS or width is None:
            continue
        try:
            if node.op_type in TREE_OPS:
                columns = _tree_columns(node)
            elif node.op_type in LINEAR_OPS:
                columns = _linear_shape(node, width)[2]
            else:
                columns = width
        except (ValueError, TypeError):
            continue
        outputs = list(node.output)
        if node.op_type in ("TreeEnsembleClassifier", "LinearClassifier") and len(outputs) == 2:
            strings = bool(_attr(node, "classlabels_strings", None))
            if outputs[0]:
                graph.value_info.append(helper.make_tensor_value_info(
                    outputs[0], onnx.TensorProto.STRING if strings else onnx.TensorProto.INT64, [batch]))
            outputs = outputs[1:]
        if outputs and outputs[0]:
            graph.value_info.append(helper.make_tensor_value_info(outputs[0], onnx.TensorProto.FLOAT, [batch, columns]))


def _tree_columns(node: onnx.NodeProto) -> int:
    if node.op_type == "TreeEnsembleClassifier":
        labels = _attr(node, "classlabels_int64s", None) or _attr(node, "classlabels_strings", None) or []
        return len(labels)
    return int(_attr(node, "n_targets", 1))


DOMAINS[DOMAIN] = sys.modules[__name__]  # the certificate reads this domain through this module
