"""A user's classifier graph [N, F] -> [N, L], written by anything, made into the service's classifier graph.

What happens to the ONNX graph (nothing about it is declared by the user):
- initializers listed as graph inputs (older exporters) stop being inputs;
- the one input becomes `features` [batch, F], the one output `scores` [batch, L]; when the
  declaration says `output = "logits"` a Sigmoid is appended (the service serves probabilities);
- BatchNormalization with constant statistics (inference mode) is folded into a Mul and an Add;
- the output layer (the last Gemm/MatMul before the output) is found by the service's own code
  (contract.certificate.output_layer), and its weight traced back to the initializer the user's
  framework wrote (the user's parameter name, e.g. `net.6.weight`).
onnx and numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from contract.certificate.ops import node_label
from contract.certificate.uses import producers

INPUT_NAME, OUTPUT_NAME, LOGITS_NAME = "features", "scores", "logits"
# single-operand ops a weight may pass through between its initializer and the layer using it
_WEIGHT_PASSTHROUGH = {"Transpose", "Identity", "Reshape", "Cast", "Squeeze", "Unsqueeze", "Flatten"}


class GraphShapeError(ValueError):
    """The graph is not [N, F] -> [N, L] as declared."""


@dataclass
class PreparedGraph:
    model: onnx.ModelProto
    n_features: int
    n_labels: int
    original_input: str
    original_output: str


def _dims(value: onnx.ValueInfoProto) -> list[int | str | None] | None:
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return [int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None) for d in tensor_type.shape.dim]


def _set_dims(value: onnx.ValueInfoProto, dims: list[int | str]) -> None:
    value.type.tensor_type.elem_type = TensorProto.FLOAT
    shape = value.type.tensor_type.shape
    shape.ClearField("dim")
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        else:
            dim.dim_param = d


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in [*graph.input, *graph.output]:
        if value.name == old:
            value.name = new


def _all_names(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in [*graph.input, *graph.output, *graph.initializer]}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def _free(graph: onnx.GraphProto, wanted: str, keep: set[str]) -> None:
    """Make `wanted` unused (renaming a tensor that has it), unless it is one of `keep`."""
    if wanted in _all_names(graph) and wanted not in keep:
        names = _all_names(graph)
        suffix = 1
        while f"{wanted}_{suffix}" in names:
            suffix += 1
        _rename(graph, wanted, f"{wanted}_{suffix}")
        for init in graph.initializer:
            if init.name == wanted:
                init.name = f"{wanted}_{suffix}"


def _fold_batch_norms(graph: onnx.GraphProto) -> int:
    """BatchNormalization (inference, constant statistics, input rank 2) -> x * scale + shift."""
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    folded, nodes = 0, []
    for index, node in enumerate(graph.node):
        params = list(node.input[1:5])
        if node.op_type != "BatchNormalization" or len(node.output) != 1 or not all(p in constants for p in params):
            nodes.append(node)
            continue
        gamma, beta, mean, var = (constants[p].astype(np.float64) for p in params)
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        scale = gamma / np.sqrt(var + epsilon)
        shift = beta - mean * scale
        base = node.name or f"batchnorm_{index}"
        scale_name, shift_name, middle = f"{base}.folded_scale", f"{base}.folded_shift", f"{base}.scaled"
        graph.initializer.extend([numpy_helper.from_array(scale.astype(np.float32), scale_name),
                                  numpy_helper.from_array(shift.astype(np.float32), shift_name)])
        nodes.append(helper.make_node("Mul", [node.input[0], scale_name], [middle], name=f"{base}.mul"))
        nodes.append(helper.make_node("Add", [middle, shift_name], [node.output[0]], name=f"{base}.add"))
        folded += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return folded


# Ops through which a TopK's k may be computed from static dimensions (torch writes a sort as
# TopK(x, Reshape(Gather(Shape(x), -1), [1]))).
_SHAPE_ARITHMETIC = {"Shape", "Gather", "Reshape", "Unsqueeze", "Squeeze", "Cast", "Identity", "Concat", "Slice"}


def _fix_sort_sizes(model: onnx.ModelProto) -> int:
    """Each TopK whose k is computed at run time from dimensions that are static (a sort over a
    fixed-size axis: GroupSort) gets k as a constant, so that shape inference, and with it the
    memory bound of every later node (contract.tensors.allocation_problems), knows its output's
    size. Evaluated on the inferred static shapes only; anything else is left as it is."""
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    made_by = {name: node for node in graph.node for name in node.output if name}
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - an aid only: the graph check judges the graph
        return 0
    shapes = {vi.name: [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
              for vi in [*inferred.graph.value_info, *inferred.graph.input] if vi.type.tensor_type.HasField("shape")}

    def value(name: str, depth: int = 0) -> np.ndarray | None:
        if name in constants:
            return constants[name]
        node = made_by.get(name)
        if node is None or node.op_type not in _SHAPE_ARITHMETIC or depth > 16:
            return None
        if node.op_type == "Shape":
            dims = shapes.get(node.input[0])
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if dims is None:
                return None
            dims = dims[attrs.get("start", 0):attrs.get("end", len(dims))]
            if any(d is None for d in dims):  # a dynamic dimension: only a Gather of static ones can help
                return _partial_shape(dims)
            return np.asarray(dims, dtype=np.int64)
        feeds = {}
        for operand in node.input:
            if operand:
                known = value(operand, depth + 1)
                if known is None or (isinstance(known, np.ndarray) and known.dtype == object and node.op_type != "Gather"):
                    return None
                feeds[operand] = known
        if node.op_type == "Gather" and feeds[node.input[0]].dtype == object:
            picked = np.take(feeds[node.input[0]], feeds[node.input[1]].astype(np.int64), axis=0)
            return None if np.any(picked == None) else np.asarray(picked, dtype=np.int64)  # noqa: E711
        try:
            return np.asarray(ReferenceEvaluator(node).run(None, feeds)[0])
        except Exception:  # noqa: BLE001
            return None

    fixed = 0
    for index, node in enumerate(graph.node):
        if node.op_type != "TopK" or len(node.input) < 2 or node.input[1] in constants:
            continue
        k = value(node.input[1])
        if k is None or k.dtype == object:
            continue
        name = f"{node.name or 'topk'}_{index}.k"
        graph.initializer.append(numpy_helper.from_array(np.asarray(k, dtype=np.int64).reshape(1), name))
        node.input[1] = name
        fixed += 1
    return fixed


def _partial_shape(dims: list) -> np.ndarray:
    """A shape with unknown (None) dimensions, as an object array: only a Gather of known ones resolves."""
    return np.asarray(dims, dtype=object)


def prepare_classifier_graph(model: onnx.ModelProto, n_features: int, n_labels: int, output: str) -> PreparedGraph:
    """A copy of `model` with the service's io names, a Sigmoid when `output` is "logits", BatchNorm folded."""
    prepared = onnx.ModelProto()
    prepared.CopyFrom(model)
    graph = prepared.graph
    initializers = {init.name for init in graph.initializer}
    kept_inputs = [value for value in graph.input if value.name not in initializers]
    del graph.input[:]
    graph.input.extend(kept_inputs)
    if len(graph.input) != 1:
        raise GraphShapeError(f"the graph has {len(graph.input)} inputs {[v.name for v in graph.input]}: "
                              "a classifier takes one input [N, F]")
    if len(graph.output) != 1:
        raise GraphShapeError(f"the graph has {len(graph.output)} outputs {[v.name for v in graph.output]}: "
                              "a classifier gives one output [N, L]")
    source_input, source_output = graph.input[0].name, graph.output[0].name
    for what, value, size, key in (("input", graph.input[0], n_features, "features"),
                                   ("output", graph.output[0], n_labels, "labels")):
        dims = _dims(value)
        if value.type.tensor_type.elem_type not in (0, TensorProto.FLOAT):
            raise GraphShapeError(f"graph {what} {value.name!r} is {TensorProto.DataType.Name(value.type.tensor_type.elem_type)}: "
                                  "the service feeds and reads float32")
        if dims is not None and len(dims) != 2:
            raise GraphShapeError(f"graph {what} {value.name!r} has shape {dims}: a classifier's {what} is [N, {len(key) and size}]")
        if dims is not None and isinstance(dims[1], int) and dims[1] != size:
            raise GraphShapeError(f"graph {what} {value.name!r} has {dims[1]} columns, the declaration's {key!r} lists {size}")
    del graph.value_info[:]  # intermediate shapes are inferred again, never trusted
    _fold_batch_norms(graph)
    _fix_sort_sizes(prepared)
    final = LOGITS_NAME if output == "logits" else OUTPUT_NAME
    _free(graph, INPUT_NAME, {source_input})
    _rename(graph, source_input, INPUT_NAME)
    _free(graph, final, {source_output})
    if output == "logits":
        _free(graph, OUTPUT_NAME, set())
    _rename(graph, source_output, final)
    if output == "logits":
        graph.node.append(helper.make_node("Sigmoid", [LOGITS_NAME], [OUTPUT_NAME], name="monoserve.sigmoid"))
        graph.output[0].name = OUTPUT_NAME
    _set_dims(graph.input[0], ["batch", n_features])
    _set_dims(graph.output[0], ["batch", n_labels])
    return PreparedGraph(prepared, n_features, n_labels, source_input, source_output)


def weight_source(model: onnx.ModelProto, constants: dict[str, np.ndarray], consumed_name: str) -> str:
    """The tensor the framework stored for a weight a node consumes (back through Transpose, Reshape...):
    the user's parameter name when the exporter kept it (torch does: `net.6.weight`)."""
    made_by = producers(model)
    name = consumed_name
    for _ in range(len(model.graph.node) + 1):
        if name not in made_by:
            return name
        _, node = made_by[name]
        operands = [i for i in node.input if i]
        if node.op_type not in _WEIGHT_PASSTHROUGH or not operands or operands[0] not in constants:
            return name
        if node.op_type == "Reshape" and len(operands) > 1 and operands[1] not in constants:
            return name
        name = operands[0]
    return name


def describe_node(model: onnx.ModelProto, tensor: str) -> str:
    made_by = producers(model)
    if tensor in made_by:
        index, node = made_by[tensor]
        return node_label(node, index)
    return repr(tensor)
