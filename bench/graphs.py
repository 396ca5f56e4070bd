"""ONNX graphs for benchmarks, built with onnx.helper (no torch): the smoother's exported contract.

`full_correlation_model(kernel)`: input `signal` float32 [batch, channels, length] -> output `full`
[batch, channels, length + K - 1]: reshape to one channel over batch*channels signals, replicate
(edge) padding of K-1 each side, Conv with the [1, 1, K] kernel, reshape back: the same ops the
exported FullCorrelation graph runs.
"""

from __future__ import annotations

import numpy as np


def full_correlation_model(kernel: np.ndarray, opset: int = 18):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    kernel = np.asarray(kernel, dtype=np.float32).reshape(1, 1, -1)
    pad = kernel.shape[-1] - 1
    initializers = [
        numpy_helper.from_array(kernel, "kernel"),
        numpy_helper.from_array(np.array([-1, 1, 0], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([0, 0, pad, 0, 0, pad], dtype=np.int64), "pads"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "two"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "minus_one"),
    ]
    nodes = [
        helper.make_node("Reshape", ["signal", "flat_shape"], ["flat"]),
        helper.make_node("Pad", ["flat", "pads"], ["padded"], mode="edge"),
        helper.make_node("Conv", ["padded", "kernel"], ["conv"]),
        helper.make_node("Shape", ["signal"], ["signal_shape"]),
        helper.make_node("Slice", ["signal_shape", "zero", "two"], ["batch_channels"]),
        helper.make_node("Concat", ["batch_channels", "minus_one"], ["out_shape"], axis=0),
        helper.make_node("Reshape", ["conv", "out_shape"], ["full"]),
    ]
    graph = helper.make_graph(
        nodes,
        "full_correlation",
        [helper.make_tensor_value_info("signal", TensorProto.FLOAT, ["batch", "channels", "length"])],
        [helper.make_tensor_value_info("full", TensorProto.FLOAT, ["batch", "channels", "full_length"])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def session_for(model, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def classifier_model(
    feature_mean: np.ndarray,
    feature_scale: np.ndarray,
    direction_sign: np.ndarray,
    weights: list[np.ndarray],
    biases: list[np.ndarray],
    opset: int = 18,
):
    """features [batch, F] -> scores [batch, n_labels] = sigmoid(MLP((x - mean) / scale * sign)).

    Used only when export has not produced a model.onnx (the bench prefers the exported graph).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    initializers = [
        numpy_helper.from_array(f32(feature_mean), "feature_mean"),
        numpy_helper.from_array(f32(feature_scale), "feature_scale"),
        numpy_helper.from_array(f32(direction_sign), "direction_sign"),
    ]
    nodes = [
        helper.make_node("Sub", ["features", "feature_mean"], ["centred"]),
        helper.make_node("Div", ["centred", "feature_scale"], ["scaled"]),
        helper.make_node("Mul", ["scaled", "direction_sign"], ["h0"]),
    ]
    current = "h0"
    for index, (weight, bias) in enumerate(zip(weights, biases)):
        initializers += [
            numpy_helper.from_array(f32(weight), f"layers.{index}.weight"),
            numpy_helper.from_array(f32(bias), f"layers.{index}.bias"),
        ]
        out = f"gemm{index}"
        nodes.append(helper.make_node("Gemm", [current, f"layers.{index}.weight", f"layers.{index}.bias"], [out], transB=1))
        current = out
        if index < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [out], [f"relu{index}"]))
            current = f"relu{index}"
    nodes.append(helper.make_node("Sigmoid", [current], ["scores"]))
    n_features, n_labels = np.shape(weights[0])[1], np.shape(weights[-1])[0]
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n_features])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", n_labels])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model
