"""Converter outputs as they are: an ONNX-ML graph from skl2onnx or onnxmltools made one-output.

Converters write classifiers with two outputs, `label` (the class decision) and `probabilities`
([N, classes]; for a binary model two columns, [1 - p, p]). Import keeps them as written and
serves the probabilities of the declared labels: the label output and the nodes only it needs are
dropped, and a constant selection `MatMul` (a 0/1 matrix: the positive column of a binary model,
or every column) becomes the graph's output layer, so the service's classifier rules apply
unchanged (its weight is nonnegative; the per-feature proof goes through it). ZipMap outputs are
refused by contract.mlops with the converter option that removes them. onnx and numpy only.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from contract import mlops

SELECT_NAME = "monoserve.select_labels"
DEFAULT_OPSET = 17  # the default-domain opset added when a converter imports only ai.onnx.ml


# Default-domain ops converters put around the ML nodes whose meaning has not changed since opset 7
# (later opsets only added element types): a graph of these is read the same at DEFAULT_OPSET.
SAME_SINCE_7 = {"Identity", "Cast", "Mul", "Add", "Sub", "Div", "MatMul", "Sigmoid", "Relu", "Neg"}


class ConverterGraphError(ValueError):
    """The graph's outputs are not a converter's (label, probabilities) pair the import can serve."""


def is_ml_graph(model: onnx.ModelProto) -> bool:
    return any(o.domain == mlops.DOMAIN for o in model.opset_import)


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {name: node for node in graph.node for name in node.output if name}


def _needed(graph: onnx.GraphProto, outputs: list[str]) -> list[onnx.NodeProto]:
    """The nodes `outputs` depend on, in graph order (the rest is dead once an output is dropped)."""
    producers = _producers(graph)
    wanted, stack = set(), list(outputs)
    while stack:
        name = stack.pop()
        node = producers.get(name)
        if node is None or id(node) in wanted:
            continue
        wanted.add(id(node))
        stack.extend(n for n in node.input if n)
    return [node for node in graph.node if id(node) in wanted]


def score_output(model: onnx.ModelProto) -> str:
    """The float output to serve: the only output, or a converter's probabilities beside its label."""
    graph = model.graph
    for node in graph.node:
        if node.domain == mlops.DOMAIN and node.op_type == "ZipMap":
            raise ConverterGraphError(mlops.REFUSED_SENTENCES["ZipMap"])
    floats = [o.name for o in graph.output if o.type.tensor_type.elem_type in (TensorProto.FLOAT, 0)]
    if len(graph.output) == 1:
        return graph.output[0].name
    if len(floats) != 1:
        raise ConverterGraphError(f"the graph has outputs {[o.name for o in graph.output]}: expected one float output "
                                  "(a converter's probabilities, beside its label)")
    return floats[0]


def select_columns(probabilities: np.ndarray, n_labels: int) -> np.ndarray:
    """What the import serves of a converter's probabilities: a binary model's positive column, or all."""
    if probabilities.ndim == 1:
        return probabilities[:, None]
    if probabilities.shape[1] == 2 and n_labels == 1:
        return probabilities[:, 1:]
    return probabilities


def adapt(model: onnx.ModelProto, n_labels: int, columns: int) -> onnx.ModelProto:
    """A copy with one output: the probabilities of the declared labels, through a selection MatMul.
    `columns`: how many probability columns the graph gives (found by running it)."""
    adapted = onnx.ModelProto()
    adapted.CopyFrom(model)
    graph = adapted.graph
    output = score_output(adapted)
    kept = [o for o in graph.output if o.name == output]
    live = _needed(graph, [output])
    del graph.node[:]
    graph.node.extend(live)
    del graph.output[:]
    graph.output.extend(kept)
    if columns == 2 and n_labels == 1:
        selection = np.asarray([[0.0], [1.0]], dtype=np.float32)
    elif columns == n_labels:
        selection = np.eye(columns, dtype=np.float32)
    else:
        raise ConverterGraphError(f"output {output!r} has {columns} columns for {n_labels} declared label(s): a binary "
                                  "model has two (one label is served, the positive class), a multi-label model one per label")
    with_default_opset(adapted)  # before the selection MatMul: only the converter's own nodes decide
    selected = f"{output}.selected"
    graph.initializer.append(numpy_helper.from_array(selection, SELECT_NAME))
    graph.node.append(helper.make_node("MatMul", [output, SELECT_NAME], [selected], name="monoserve.select"))
    graph.output[0].name = selected
    graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT
    graph.output[0].type.tensor_type.ClearField("shape")
    return adapted


def with_default_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """The default domain at an opset the proof models (converters write 8 or 9 for Identity/Cast, or none
    at all when the graph is one ai.onnx.ml node); the ops they use mean the same at DEFAULT_OPSET."""
    seen, unique = set(), []
    for opset in model.opset_import:  # skl2onnx lists ('', 22) twice: the same import, said twice
        key = ("" if opset.domain == "ai.onnx" else opset.domain, opset.version)
        if key not in seen:
            seen.add(key)
            unique.append(helper.make_opsetid(*key))
    del model.opset_import[:]
    model.opset_import.extend(unique)
    if not any(o.domain in ("", "ai.onnx") for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("", DEFAULT_OPSET))
    plain = all(node.op_type in SAME_SINCE_7 for node in model.graph.node if node.domain in ("", "ai.onnx"))
    for opset in model.opset_import:
        if plain and opset.domain in ("", "ai.onnx") and opset.version < 13:
            opset.version = DEFAULT_OPSET
    model.ir_version = max(model.ir_version, 8)
    return model
