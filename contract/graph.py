"""Default deny over the ONNX graph that ONNX Runtime will run.

The certificate reasons about a graph; this module makes sure that graph is the one ONNX Runtime
executes, read the same way, and built only from what the certificate models:

- the graph's inputs and outputs are exactly the manifest's io spec (names, dtypes, ranks, fixed
  dimensions), so no name the manifest gives can be "independent" while the runtime reads another;
- every tensor is read the same way by the prover and the runtime: no sparse initializers, no
  external data, no duplicate names (initializers, inputs, node outputs), one data field per
  tensor, no non-finite constants;
- no local functions, no subgraphs (If/Loop/Scan), only the default ONNX domain at a modelled
  opset, and only the ops in ALLOWED_OPS (and, upstream of a scope-"final" classifier's output layer,
  HIDDEN_ONLY_OPS), each with its attributes and dtypes checked; of the ai.onnx.ml domain (opsets
  1-5) only the tree ensembles, linear models and Scaler of contract.mlops, each read and bounded
  (hostile trees refused) before anything sizes it;
- nothing that turns finite values into NaN/Inf (a division by a tensor that may be 0, the log of
  one that may be <= 0, ...), by interval bounds (contract.certificate.GraphInfo).

numpy and onnx only. Every problem names the node (name, index, op), the tensor or the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from contract import mlops
from contract.certificate.ops import FLOAT_TYPES, node_label
from contract.certificate.walk import DEFAULT_MAX_TENSOR_BYTES, GraphInfo
from contract.tensors import tensor_problems

# The default-domain opsets whose op semantics the proof models (the exporter writes 18 and up): the
# allowed ops' semantics are unchanged from 13 to the newest opset the installed onnx knows.
MIN_OPSET = 13
MAX_OPSET = onnx.defs.onnx_opset_version()

# Every op the proof models. Anything else is refused, on the feature's path or not.
ACTIVATIONS = {"Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Softplus", "Elu", "Selu", "Celu", "HardSigmoid",
               "Softsign", "Erf", "ThresholdedRelu", "Exp", "Log", "Sqrt", "Clip",
               "Gelu"}  # Gelu: bounded, not monotone (contract.certificate.BOUNDED_BELOW_UNARY)
ARITHMETIC = {"Add", "Sub", "Mul", "Div", "Neg", "Pow", "Sum", "Mean", "Max", "Min", "MatMul", "Gemm", "Conv"}
STRUCTURE = {"Identity", "Dropout", "Cast", "CastLike", "Where", "Greater", "Constant", "ConstantOfShape", "Shape", "Reshape", "Flatten", "Squeeze",
             "Unsqueeze", "Transpose", "Slice", "Gather", "Concat", "Pad", "Expand", "Split"}
# Order statistics and reductions the certificate models (non-decreasing in every element); TopK is
# how torch writes sort (GroupSort/MaxMin activations), its indices output must go unused.
ORDER = {"TopK", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceMean"}
ALLOWED_OPS = ACTIVATIONS | ARITHMETIC | STRUCTURE | ORDER
# Deterministic ops of the default domain whose time and memory are bounded by their inputs' sizes
# and that give finite values for finite input, but that the certificate does not model: allowed
# only in a classifier's hidden layers (upstream of its output layer) when its scope is "final",
# whose proof needs nothing of the hidden layers but that they are computed (docs/export.md).
HIDDEN_ONLY_OPS = {"LayerNormalization", "GroupNormalization", "InstanceNormalization", "Softmax", "LogSoftmax",
                   "Abs", "Sign", "Sin", "Cos", "HardSwish", "Mish", "ReduceProd", "ReduceL1", "ReduceL2",
                   "ReduceLogSumExp", "ReduceSumSquare"}
# Normalizations divide by sqrt(variance + epsilon): finite only with epsilon > 0.
_EPSILON_OPS = {"LayerNormalization", "GroupNormalization", "InstanceNormalization"}
# Ops that may take integer inputs (shape arithmetic: Shape -> ... -> Reshape); everything else is float only.
INTEGER_OK = {"Add", "Sub", "Mul", "Div", "Neg", "Max", "Min", "Identity", "Cast", "Constant", "ConstantOfShape",
              "Shape", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice", "Gather", "Concat",
              "Expand"}
INTEGER_TYPES = {TensorProto.INT64, TensorProto.INT32}
# Ops whose float data is their first input only (the others: shapes, axes, indices, counts, bounds).
_DATA_FIRST = {"Reshape", "Expand", "Squeeze", "Unsqueeze", "Slice", "Gather", "Pad", "Clip", "Dropout", "Split", "TopK",
               "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
               "ReduceLogSumExp", "ReduceSumSquare"}
PAD_MODES = {"constant", "edge", "reflect", "wrap"}
_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data")
_DTYPES = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE, "float16": TensorProto.FLOAT16}


@dataclass(frozen=True)
class IoSpec:
    """One manifest input or output: name, numpy dtype name, shape (str: a named dynamic dimension)."""

    name: str
    dtype: str
    shape: Sequence[int | str]


class GraphRefused(Exception):
    def __init__(self, problems: list[str]):
        super().__init__(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
        self.problems = problems


def check_graph(model: onnx.ModelProto, inputs: Sequence[IoSpec], outputs: Sequence[IoSpec],
                file: str = "model.onnx", max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
                scope: str | None = None) -> GraphInfo:
    """The graph's facts (constants folded, shapes, bounds) when every check passes; GraphRefused otherwise.

    First, before any tensor is read: external data anywhere (contract.tensors), and declared
    tensor sizes over `max_tensor_bytes` or unlike the bytes held; no folded constant may exceed
    `max_tensor_bytes` either (refused before it is evaluated).

    `scope`: a classifier's scope. With "final", the ops of HIDDEN_ONLY_OPS are allowed upstream of
    the output layer (contract.certificate.output_layer); anywhere else, and in any other scope,
    they are refused naming the node and the op."""
    problems = tensor_problems(model, file, max_tensor_bytes)
    if problems:  # nothing below may read a tensor that points outside the file or lies about its size
        raise GraphRefused(problems)
    problems += _structure(model, file)
    if problems:  # the rest assumes one plain graph in the default domain
        raise GraphRefused(problems)
    problems += _io(model, inputs, outputs)
    problems += _tensors(model, file)
    hidden: list[tuple[int, str, str]] = []  # (index, label, op) of hidden-layer-only ops, judged once the graph is known
    problems += _nodes(model, hidden)
    if hidden and scope != "final":
        problems += [f"node {label}: op {op} is not modelled by the certificate, so it cannot be proven in scope "
                     f"{scope or 'all'!r} (it is allowed in hidden layers, before the output layer, with monotone = \"final\")"
                     for _, label, op in hidden]
    if problems:
        raise GraphRefused(problems)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # ValidationError and friends: unknown attributes, input counts, node order
        raise GraphRefused([f"{file} is not a valid ONNX graph: {_first_line(str(exc))}"]) from exc
    info = GraphInfo.build(model, max_tensor_bytes=max_tensor_bytes)
    if info.inference_error:
        raise GraphRefused([f"{file}: shape inference fails, so the graph is not one the proof models: {info.inference_error}"])
    problems += _dtypes(model, info)
    problems += _after_folding(model, info)
    problems += [f"node {label} {why}" for label, why in info.hazards]
    if hidden:
        problems += _hidden_outside_layers(info, hidden, outputs[0].name if outputs else "")
    if problems:
        raise GraphRefused(problems)
    return info


def _hidden_outside_layers(info: GraphInfo, hidden: list[tuple[int, str, str]], output: str) -> list[str]:
    """Scope "final": every hidden-layer-only op must feed the output layer's input (the certificate
    then holds that input fixed and proves the score non-decreasing in it, whatever computed it)."""
    from contract.certificate import output_layer, producers

    try:
        layer = output_layer(info, output)
    except ValueError as exc:
        return [f"node {label}: op {op} is allowed only in hidden layers before the output layer, and none was found: {exc}"
                for _, label, op in hidden]
    made_by = producers(info.model)
    upstream: set[int] = set()
    pending = [layer.data_input]
    while pending:
        name = pending.pop()
        if name not in made_by or made_by[name][0] in upstream:
            continue
        index, node = made_by[name]
        upstream.add(index)
        pending.extend(n for n in node.input if n)
    return [f"node {label}: op {op} is allowed only in hidden layers before the output layer (node {layer.node}), "
            "and this node is not one" for index, label, op in hidden if index not in upstream]


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else text


def _structure(model: onnx.ModelProto, file: str) -> list[str]:
    problems = []
    for function in model.functions:
        problems.append(f"{file} defines local function {function.domain}.{function.name}: functions are not modelled")
    imports = list(model.opset_import)
    if not imports:
        problems.append(f"{file} imports no opset")
    domains = [o.domain or "ai.onnx" for o in imports]
    if len(set(domains)) != len(domains):
        problems.append(f"{file} imports a domain twice ({domains}): which version applies is ambiguous")
    if len(model.training_info):
        problems.append(f"{file} carries training_info (training algorithms): not modelled")
    for opset in imports:
        if opset.domain == mlops.DOMAIN:  # trees and linear models: contract.mlops
            if not mlops.MIN_OPSET <= opset.version <= mlops.MAX_OPSET:
                problems.append(f"{file} imports {mlops.DOMAIN} opset {opset.version}: "
                                f"the proof reads opsets {mlops.MIN_OPSET}-{mlops.MAX_OPSET}")
        elif opset.domain not in ("", "ai.onnx"):
            problems.append(f"{file} imports opset domain {opset.domain!r}: only the default ONNX domain is modelled")
        elif not MIN_OPSET <= opset.version <= MAX_OPSET:
            problems.append(f"{file} imports ONNX opset {opset.version}: the proof models opsets {MIN_OPSET}-{MAX_OPSET}")
    graph = model.graph
    for sparse in graph.sparse_initializer:
        problems.append(f"{file} holds sparse_initializer {sparse.values.name!r}: sparse tensors are not read by the proof")
    for index, node in enumerate(graph.node):
        label = node_label(node, index)
        if node.domain == mlops.DOMAIN and not any(o.domain == mlops.DOMAIN for o in imports):
            problems.append(f"node {label} is in domain {node.domain!r}, which the graph does not import")
        elif node.domain not in ("", "ai.onnx", mlops.DOMAIN):
            problems.append(f"node {label} is in domain {node.domain!r}: only the default ONNX domain and "
                            f"{mlops.DOMAIN} ({', '.join(sorted(mlops.ALLOWED_OPS))}) are modelled")
        for attr in node.attribute:
            if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                problems.append(f"node {label} has a subgraph (attribute {attr.name!r}): control flow is not modelled")
            if attr.type in (onnx.AttributeProto.SPARSE_TENSOR, onnx.AttributeProto.SPARSE_TENSORS):
                problems.append(f"node {label} has a sparse tensor attribute {attr.name!r}: sparse tensors are not read by the proof")
            if attr.ref_attr_name:
                problems.append(f"node {label} attribute {attr.name!r} refers to a function attribute")
    return problems


def _tensor_problems(tensor: onnx.TensorProto, where: str) -> list[str]:
    """A tensor must be read identically by numpy_helper and ONNX Runtime: inline, one data field, finite."""
    if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data):
        location = next((e.value for e in tensor.external_data if e.key == "location"), "?")
        return [f"{where} stores its data externally (location {location!r}): external data is refused"]
    if tensor.HasField("segment"):
        return [f"{where} is a segment of a tensor: segmented tensors are refused"]
    filled = [f for f in _DATA_FIELDS if (tensor.HasField(f) if f == "raw_data" else len(getattr(tensor, f)))]
    if len(filled) > 1:
        return [f"{where} carries its data twice ({', '.join(filled)}): the readers could disagree"]
    try:
        array = numpy_helper.to_array(tensor)
    except Exception as exc:  # wrong byte count for its dims, unsupported type...
        return [f"{where} cannot be read: {_first_line(str(exc))}"]
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        index = [int(i) for i in np.argwhere(~np.isfinite(array))[0]]
        return [f"{where} holds a non-finite value at {index}"]
    if array.dtype.kind not in "fiub":
        return [f"{where} has element type {TensorProto.DataType.Name(tensor.data_type)}, which the proof does not model"]
    return []


def _tensors(model: onnx.ModelProto, file: str) -> list[str]:
    graph = model.graph
    problems = []
    for init in graph.initializer:
        problems += _tensor_problems(init, f"{file}: initializer {init.name!r}")
    for index, node in enumerate(graph.node):
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                problems += _tensor_problems(attr.t, f"node {node_label(node, index)} attribute {attr.name!r}")
    # One name, one tensor: an initializer, a graph input and a node output must never share a name
    # (ONNX Runtime and the prover could then read different tensors under it).
    owners: dict[str, str] = {}
    named = [(i.name, "graph input") for i in graph.input] + [(i.name, "initializer") for i in graph.initializer]
    named += [(out, f"output of node {node_label(node, index)}") for index, node in enumerate(graph.node)
              for out in node.output if out]
    for name, owner in named:
        if name in owners:
            problems.append(f"{file}: tensor name {name!r} is defined twice ({owners[name]} and {owner})")
        else:
            owners[name] = owner
    if not problems:
        defined = set(owners)
        for index, node in enumerate(graph.node):
            for name in node.input:
                if name and name not in defined:
                    problems.append(f"node {node_label(node, index)} reads {name!r}, which nothing defines")
    return problems


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str | None] | None:
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return [int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None) for d in tensor_type.shape.dim]


def _io(model: onnx.ModelProto, inputs: Sequence[IoSpec], outputs: Sequence[IoSpec]) -> list[str]:
    graph = model.graph
    problems = []
    for kind, declared, actual in (("input", inputs, list(graph.input)), ("output", outputs, list(graph.output))):
        names = [v.name for v in actual]
        wanted = [s.name for s in declared]
        if names != wanted:
            problems.append(f"the graph's {kind}s are {names}, the manifest's are {wanted}: they must be equal")
            continue
        for spec, value in zip(declared, actual):
            elem = value.type.tensor_type.elem_type
            if _DTYPES.get(spec.dtype) != elem:
                got = TensorProto.DataType.Name(elem) if elem else "no tensor type"
                problems.append(f"graph {kind} {spec.name!r} is {got}, the manifest says {spec.dtype}")
                continue
            dims = _dims(value)
            if kind == "output" and dims is None:
                continue  # the runtime does not enforce output shapes; the warm-up checks them
            if dims is None or len(dims) != len(spec.shape):
                problems.append(f"graph {kind} {spec.name!r} has rank {None if dims is None else len(dims)}, "
                                f"the manifest's shape {list(spec.shape)} has rank {len(spec.shape)}")
                continue
            if kind == "input":  # fixed sizes must agree both ways: the runtime checks only what the graph fixes
                for axis, (want, got) in enumerate(zip(spec.shape, dims)):
                    if (isinstance(want, int) or isinstance(got, int)) and want != got:
                        problems.append(f"graph input {spec.name!r} axis {axis} is {got!r}, the manifest says {want!r}")
    return problems


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _nodes(model: onnx.ModelProto, hidden: list[tuple[int, str, str]]) -> list[str]:
    problems = []
    used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    width = _input_width(model)
    for index, node in enumerate(model.graph.node):
        label = node_label(node, index)
        op = node.op_type
        if node.domain == mlops.DOMAIN:  # read (and bounded) before any shape inference or session sizes it
            problems += mlops.node_problems(node, label, width)
            continue
        if op in HIDDEN_ONLY_OPS:
            hidden.append((index, label, op))
        elif op not in ALLOWED_OPS:
            problems.append(f"node {label}: op {op} is not modelled by the proof, in any scope (allowed: "
                            f"{', '.join(sorted(ALLOWED_OPS))}; in hidden layers of scope \"final\" also "
                            f"{', '.join(sorted(HIDDEN_ONLY_OPS))})")
            continue
        attrs = _attrs(node)
        if op in _EPSILON_OPS:
            epsilon = float(attrs.get("epsilon", 1e-5))
            if not (np.isfinite(epsilon) and epsilon > 0):
                problems.append(f"node {label}: {op} with epsilon {epsilon:g} may divide by zero (needs epsilon > 0)")
        if op == "TopK" and len(node.output) > 1 and node.output[1] in used:
            problems.append(f"node {label}: TopK's indices output {node.output[1]!r} is used: only its values (a sort) are modelled")
        alpha = attrs.get("alpha")
        if op in ("LeakyRelu", "Elu", "HardSigmoid", "ThresholdedRelu") and alpha is not None and float(alpha) < 0:
            problems.append(f"node {label}: {op} with alpha {float(alpha):g} < 0 is not non-decreasing")
        if op == "Celu" and alpha is not None and not float(alpha) > 0:
            problems.append(f"node {label}: Celu with alpha {float(alpha):g} <= 0 is not non-decreasing (0 divides by zero)")
        if op == "Selu" and any(float(attrs.get(k, 1.0)) < 0 for k in ("alpha", "gamma")):
            problems.append(f"node {label}: Selu with a negative alpha or gamma is not non-decreasing")
        for key in ("alpha", "beta", "gamma"):
            if key in attrs and isinstance(attrs[key], float) and not np.isfinite(attrs[key]):
                problems.append(f"node {label}: attribute {key} is not finite")
        if op == "Gelu" and _text(attrs.get("approximate", "none")) not in ("none", "tanh"):
            problems.append(f"node {label}: Gelu approximate {_text(attrs['approximate'])!r} is not modelled")
        if op == "Pad" and _text(attrs.get("mode", "constant")) not in PAD_MODES:
            problems.append(f"node {label}: Pad mode {_text(attrs['mode'])!r} is not modelled")
        if op == "Constant":
            kinds = [a.name for a in node.attribute]
            if kinds not in (["value"], ["value_float"], ["value_floats"], ["value_int"], ["value_ints"]):
                problems.append(f"node {label}: Constant with attribute(s) {kinds} (only one numeric value is modelled)")
    return problems


def _input_width(model: onnx.ModelProto) -> int | None:
    """The graph input's fixed last dimension (the features of a tabular model), if it has one."""
    if len(model.graph.input) != 1:
        return None
    dims = _dims(model.graph.input[0])
    return dims[-1] if dims and isinstance(dims[-1], int) else None


def _dtypes(model: onnx.ModelProto, info: GraphInfo) -> list[str]:
    """Float ops on floats only; a Cast of a float only to a float (an integer Cast wraps on overflow)."""
    problems = []
    for index, node in enumerate(model.graph.node):
        label = node_label(node, index)
        op = node.op_type
        types = [info.types.get(name) for name in node.input if name]
        if op == "Cast":
            target = int(_attrs(node).get("to", 0))
            source = types[0] if types else None
            if source not in FLOAT_TYPES | INTEGER_TYPES:
                problems.append(f"node {label}: Cast of a tensor of unknown or unmodelled type")
            elif source in FLOAT_TYPES and target not in FLOAT_TYPES:
                problems.append(f"node {label}: Cast of float {node.input[0]!r} to {TensorProto.DataType.Name(target)}: "
                                "only float targets are monotone (integer casts wrap and truncate)")
            elif target not in FLOAT_TYPES | INTEGER_TYPES:
                problems.append(f"node {label}: Cast to {TensorProto.DataType.Name(target)} is not modelled")
            continue
        if op in ("Shape", "Constant", "ConstantOfShape", "CastLike"):
            if op == "CastLike" and types and types[0] in FLOAT_TYPES and (len(types) < 2 or types[1] not in FLOAT_TYPES):
                problems.append(f"node {label}: CastLike of float {node.input[0]!r} to a non-float type: integer casts wrap")
            continue
        if op == "Where":
            types = types[1:]  # the condition is a bool (from Greater)
            if info.types.get(node.input[0]) != TensorProto.BOOL:
                problems.append(f"node {label}: Where condition {node.input[0]!r} is not a bool tensor")
                continue
        data = types[:1] if op in _DATA_FIRST else types
        for name, kind in zip(node.input, data):
            if kind in FLOAT_TYPES:
                continue
            if kind in INTEGER_TYPES and op in INTEGER_OK:
                continue
            what = TensorProto.DataType.Name(kind) if kind else "unknown type"
            problems.append(f"node {label}: input {name!r} is {what}, which {op} is not modelled on")
            break
    return problems


def _after_folding(model: onnx.ModelProto, info: GraphInfo) -> list[str]:
    """Checks that need constants: Clip bounds and Pow exponents fixed, Dropout never in training mode."""
    problems = []
    for index, node in enumerate(model.graph.node):
        label = node_label(node, index)
        inputs = list(node.input)
        if node.op_type == "Clip":
            for name in inputs[1:]:
                if name and name not in info.constants:
                    problems.append(f"node {label}: Clip bound {name!r} is not a constant")
        if node.op_type == "Pow" and (len(inputs) < 2 or inputs[1] not in info.constants):
            problems.append(f"node {label}: Pow exponent {inputs[1] if len(inputs) > 1 else ''!r} is not a constant")
        if node.op_type == "Dropout" and len(inputs) > 2 and inputs[2]:
            flag = info.constants.get(inputs[2])
            if flag is None or bool(np.any(flag)):
                problems.append(f"node {label}: Dropout's training_mode {inputs[2]!r} is not the constant false")
        if node.op_type == "Pad":
            for name in inputs[1:]:
                if name and name not in info.constants:
                    problems.append(f"node {label}: Pad input {name!r} is not a constant")
    return problems
