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
