"""Hostile ONNX files for the round-three corpus (tests/test_hostile_files.py and friends).

Each builder writes what a hostile publisher would: a graph whose tensors point at a file outside
it (external data) in every place a tensor can sit, and graphs that declare far more memory than
they hold. onnx.helper only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 18
CANARY_BYTES = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI"  # 48 bytes, a key's first line


def external_tensor(name: str, location: str, size: int, data_type: int = TensorProto.UINT8) -> TensorProto:
    """A tensor whose data is `size` elements read from `location` (external data)."""
    tensor = TensorProto(name=name, data_type=data_type, dims=[size])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(size))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _model(nodes, inputs, outputs, initializers=(), **kwargs) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), "hostile", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], **kwargs)


def exfiltrating_smoother(location: str, size: int) -> onnx.ModelProto:
    """The issue's exfiltration: a 'valid' smoother [B, C, L] -> [B, C, L - K + 1] whose kernel is
    CumSum(bytes + 1) / sum of a file's bytes: positive, non-decreasing, normalized, so every rule
    holds and the file's bytes would be published as the kernel."""
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Constant", [], ["secret"], value=external_tensor("secret", location, size)),
        helper.make_node("Cast", ["secret"], ["secret_f"], to=f),
        helper.make_node("Add", ["secret_f", "one"], ["plus_one"]),
        helper.make_node("CumSum", ["plus_one", "axis0"], ["rising"]),
        helper.make_node("ReduceSum", ["rising"], ["total"], keepdims=1),
        helper.make_node("Div", ["rising", "total"], ["kernel_flat"]),
        helper.make_node("Reshape", ["kernel_flat", "kernel_shape"], ["kernel"]),
        helper.make_node("Reshape", ["signal", "rows_shape"], ["rows"]),
        helper.make_node("Conv", ["rows", "kernel"], ["conv"]),
        helper.make_node("Shape", ["signal"], ["signal_shape"]),
        helper.make_node("Slice", ["signal_shape", "zero1", "two1"], ["batch_channels"]),
        helper.make_node("Concat", ["batch_channels", "minus_one1"], ["out_shape"], axis=0),
        helper.make_node("Reshape", ["conv", "out_shape"], ["smoothed"]),
    ]
    inits = [numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array(0, np.int64), "axis0"),
             numpy_helper.from_array(np.array([1, 1, -1], np.int64), "kernel_shape"),
             numpy_helper.from_array(np.array([-1, 1, 0], np.int64), "rows_shape"),
             numpy_helper.from_array(np.array([0], np.int64), "zero1"),
             numpy_helper.from_array(np.array([2], np.int64), "two1"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus_one1")]
    return _model(nodes, [helper.make_tensor_value_info("signal", f, ["batch", "channels", "length"])],
                  [helper.make_tensor_value_info("smoothed", f, ["batch", "channels", None])], inits)


def _identity_classifier(extra_nodes, extra_inits=(), add_name: str | None = None, **kwargs) -> onnx.ModelProto:
    """features [N, 2] -> MatMul(nonnegative W) -> scores [N, 1], plus the hostile part."""
    f = TensorProto.FLOAT
    nodes = [helper.make_node("MatMul", ["features", "W"], ["mm"])]
    if add_name is not None:
        nodes.append(helper.make_node("Add", ["mm", add_name], ["scores"]))
    else:
        nodes.append(helper.make_node("Identity", ["mm"], ["scores"]))
    inits = [numpy_helper.from_array(np.array([[0.5], [0.25]], np.float32), "W"), *extra_inits]
    return _model(list(extra_nodes) + nodes, [helper.make_tensor_value_info("features", f, ["batch", 2])],
                  [helper.make_tensor_value_info("scores", f, ["batch", 1])], inits, **kwargs)


def carrier_models(location: str) -> dict[str, onnx.ModelProto]:
    """One model per place a tensor with external data can sit (each points at `location`)."""
    f = TensorProto.FLOAT
    models: dict[str, onnx.ModelProto] = {}
    bias = external_tensor("bias", location, 1, f)
    models["initializer"] = _identity_classifier([], [bias], add_name="bias")
    models["constant value"] = _identity_classifier(
        [helper.make_node("Constant", [], ["bias"], value=external_tensor("bias", location, 1, f))], add_name="bias")
    models["constant_of_shape value"] = _identity_classifier(
        [helper.make_node("ConstantOfShape", ["one_shape"], ["bias"], value=external_tensor("v", location, 1, f))],
        [numpy_helper.from_array(np.array([1], np.int64), "one_shape")], add_name="bias")
    tensors_attr = helper.make_node("Identity", ["mm_in"], ["mm_out"])
    tensors_attr.attribute.append(helper.make_attribute("payload", [external_tensor("p", location, 1, f)]))
    models["tensors attribute"] = _identity_classifier([tensors_attr])
    sparse = onnx.SparseTensorProto(values=external_tensor("sv", location, 1, f), dims=[1])
    sparse.indices.CopyFrom(numpy_helper.from_array(np.array([0], np.int64), "si"))
    models["sparse constant"] = _identity_classifier(
        [helper.make_node("Constant", [], ["bias"], sparse_value=sparse)], add_name="bias")
    model = _identity_classifier([])
    sparse_init = onnx.SparseTensorProto(values=external_tensor("spi", location, 1, f), dims=[1])
    sparse_init.indices.CopyFrom(numpy_helper.from_array(np.array([0], np.int64), "spi_idx"))
    model.graph.sparse_initializer.append(sparse_init)
    models["sparse initializer"] = model
    branch = helper.make_graph([helper.make_node("Constant", [], ["b"], value=external_tensor("b", location, 1, f))],
                               "then", [], [helper.make_tensor_value_info("b", f, [1])])
    nested = helper.make_graph([helper.make_node("If", ["cond"], ["b"], then_branch=branch, else_branch=branch)],
                               "outer", [], [helper.make_tensor_value_info("b", f, [1])])
    models["subgraph (nested If)"] = _identity_classifier(
        [helper.make_node("If", ["cond"], ["bias"], then_branch=nested, else_branch=nested)],
        [numpy_helper.from_array(np.array(True), "cond")], add_name="bias")
    function = helper.make_function("hostile.fn", "Bias", [], ["out"],
                                    [helper.make_node("Constant", [], ["out"], value=external_tensor("fb", location, 1, f))],
                                    [helper.make_opsetid("", OPSET)])
    models["local function"] = _identity_classifier(
        [helper.make_node("Bias", [], ["bias"], domain="hostile.fn")], add_name="bias",
        functions=[function])
    models["local function"].opset_import.append(helper.make_opsetid("hostile.fn", 1))
    graphs_attr = helper.make_node("Identity", ["mm_in"], ["mm_out"])
    graphs_attr.attribute.append(onnx.AttributeProto(name="bodies", type=onnx.AttributeProto.GRAPHS, graphs=[branch]))
    models["graphs attribute"] = _identity_classifier([graphs_attr])
    model = _identity_classifier([])
    model.training_info.add().algorithm.CopyFrom(branch)
    models["training_info"] = model
    indices = onnx.SparseTensorProto(values=numpy_helper.from_array(np.array([1.0], np.float32), "iv"), dims=[1])
    indices.indices.CopyFrom(external_tensor("ii", location, 1, TensorProto.INT64))
    models["sparse indices"] = _identity_classifier(
        [helper.make_node("Constant", [], ["bias"], sparse_value=indices)], add_name="bias")
    defaults = helper.make_function("hostile.fd", "Bias", [], ["out"],
                                    [helper.make_node("Constant", [], ["out"], value=helper.make_tensor("z", f, [1], [0.0]))],
                                    [helper.make_opsetid("", OPSET)])
    defaults.attribute_proto.append(helper.make_attribute("w", external_tensor("fw", location, 1, f)))
    models["function attribute default"] = _identity_classifier(
        [helper.make_node("Bias", [], ["bias"], domain="hostile.fd")], add_name="bias", functions=[defaults])
    models["function attribute default"].opset_import.append(helper.make_opsetid("hostile.fd", 1))
    return models


def dims_bomb_classifier() -> onnx.ModelProto:
    """A classifier whose weight declares 1 GiB in its dims ([2, 2**27] float32) and holds 4 bytes."""
    weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[2, 2**27], raw_data=b"\x00\x00\x80\x3f")
    f = TensorProto.FLOAT
    return _model([helper.make_node("MatMul", ["features", "W"], ["scores"])],
                  [helper.make_tensor_value_info("features", f, ["batch", 2])],
                  [helper.make_tensor_value_info("scores", f, ["batch", 1])], [weight])


def constant_of_shape_bomb_smoother(elements: int = 2**28) -> onnx.ModelProto:
    """A tiny file whose ConstantOfShape allocates `elements` float32 (1 GiB) when run, added to
    the signal through a ReduceSum, so it is live in every run."""
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("ConstantOfShape", ["big_shape"], ["big"], value=helper.make_tensor("v", f, [1], [0.0])),
        helper.make_node("ReduceSum", ["big"], ["zero"], keepdims=0),
        helper.make_node("Add", ["signal", "zero"], ["smoothed"]),
    ]
    inits = [numpy_helper.from_array(np.array([elements], np.int64), "big_shape")]
    return _model(nodes, [helper.make_tensor_value_info("signal", f, ["batch", "channels", "length"])],
                  [helper.make_tensor_value_info("smoothed", f, ["batch", "channels", "length"])], inits)


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())  # as written: onnx.save would look for external data
    return path


def subgraph_bomb_smoother(elements: int = 2**28) -> onnx.ModelProto:
    """constant_of_shape_bomb_smoother's 1 GiB ConstantOfShape moved into an If branch: the top
    graph's shapes are all small, the allocation happens inside the subgraph when it runs."""
    f = TensorProto.FLOAT
    branch = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["big_shape"], ["big"], value=helper.make_tensor("v", f, [1], [0.0])),
         helper.make_node("ReduceSum", ["big"], ["zero"], keepdims=0)],
        "bomb", [], [helper.make_tensor_value_info("zero", f, [])])
    nodes = [helper.make_node("If", ["always"], ["zero"], then_branch=branch, else_branch=branch),
             helper.make_node("Add", ["signal", "zero"], ["smoothed"])]
    inits = [numpy_helper.from_array(np.array([elements], np.int64), "big_shape"),
             numpy_helper.from_array(np.array(True), "always")]
    return _model(nodes, [helper.make_tensor_value_info("signal", f, ["batch", "channels", "length"])],
                  [helper.make_tensor_value_info("smoothed", f, ["batch", "channels", "length"])], inits)
