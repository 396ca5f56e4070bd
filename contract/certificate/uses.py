"""Points of use: the tensors the policy's rules are checked on, as the consuming node sees them
(the classifier's output layer, the smoother's Conv kernel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from contract.certificate.ops import _attributes, node_label
from contract.certificate.walk import GraphInfo


# --------------------------------------------------------------------------------------------
# Points of use: the tensors the rules are checked on, as the consuming node sees them
# --------------------------------------------------------------------------------------------
@dataclass
class WeightUse:
    """A weight as one node consumes it (constant-folded; Gemm's alpha and transB applied)."""

    node: str  # the consuming node's label
    input_name: str  # the tensor name at that input (an initializer, a Constant, or a folded node output)
    values: np.ndarray  # [K] taps for a Conv as the node reads them; [in, out] for Gemm/MatMul
    data_input: str  # the node's other (dependent) operand


def producers(model: onnx.ModelProto) -> dict[str, tuple[int, onnx.NodeProto]]:
    return {name: (index, node) for index, node in enumerate(model.graph.node) for name in node.output if name}


def output_layer(info: GraphInfo, output: str) -> WeightUse:
    """The last Gemm/MatMul before `output`, found by walking back through single-operand nodes
    (the sigmoid, a calibration's constant scale and bias...). Raises ValueError naming where the
    walk stopped."""
    made_by = producers(info.model)
    tensor = output
    seen = 0
    while True:
        if tensor not in made_by:
            raise ValueError(f"{tensor!r} is not computed by any node, so the graph has no output layer before {output!r}")
        index, node = made_by[tensor]
        label = node_label(node, index)
        if node.op_type in ("Gemm", "MatMul"):
            return _layer_weight(info, node, label)
        dependent = [name for name in node.input if name and name not in info.constants]
        if len(dependent) != 1 or seen > len(made_by):
            raise ValueError(f"node {label} combines {len(dependent)} computed operands before the output layer: "
                             "cannot locate the output layer")
        tensor, seen = dependent[0], seen + 1


def _layer_weight(info: GraphInfo, node: onnx.NodeProto, label: str) -> WeightUse:
    attrs = _attributes(node)
    a_name, b_name = node.input[0], node.input[1]
    a, b = info.constants.get(a_name), info.constants.get(b_name)
    if node.op_type == "MatMul":
        if b is None:
            raise ValueError(f"node {label}: the output layer's weight {b_name!r} is not a constant")
        return WeightUse(label, b_name, np.asarray(b, dtype=np.float64), a_name)
    if b is None:
        raise ValueError(f"node {label}: the output layer's weight {b_name!r} is not a constant")
    weight = np.asarray(b, dtype=np.float64)
    weight = (weight.T if int(attrs.get("transB", 0)) else weight) * float(attrs.get("alpha", 1.0))
    if a is not None:
        raise ValueError(f"node {label}: the output layer's input {a_name!r} is a constant")
    return WeightUse(label, b_name, weight, a_name)


# Ops that pass a smoother's rows through unchanged (row-major reshapes never reorder elements).
_PASS_THROUGH = {"Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten"}


def smoother_kernel(info: GraphInfo, signal: str, output: str, kernel_size: int,
                    padding: str = "replicate") -> tuple[str, str, np.ndarray]:
    """(Conv label, weight name, weight as the Conv consumes it) of a smoother graph, which must compute
    exactly the full correlation the served fast paths compute with that kernel: signal -> reshapes ->
    Pad(K-1 both sides of the last axis, the mode of the manifest's `padding`: edge, constant 0,
    reflect or wrap; contract.padding) -> one plain Conv -> reshapes -> output. ValueError names the
    node that breaks this. (The warm-up checks the output shape, which pins the reshapes.)"""
    from contract.padding import ONNX_PAD_MODES
    convs = [(index, node) for index, node in enumerate(info.model.graph.node) if node.op_type == "Conv"]
    if len(convs) != 1:
        raise ValueError(f"a smoother graph must apply exactly one Conv (its kernel), found {len(convs)}")
    index, conv = convs[0]
    label = node_label(conv, index)
    attrs = _attributes(conv)
    plain = (int(attrs.get("group", 1)) == 1 and all(v == 1 for v in attrs.get("strides", [1]))
             and all(v == 1 for v in attrs.get("dilations", [1])) and not any(attrs.get("pads", [0]))
             and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", b"VALID") and (len(conv.input) < 3 or not conv.input[2]))
    if not plain:
        raise ValueError(f"node {label}: the smoother's Conv must be a plain correlation (group 1, strides 1, dilations 1, "
                         "no padding, no bias): the served fast paths apply the kernel as one")
    weight = info.constants.get(conv.input[1])
    if weight is None:
        raise ValueError(f"node {label}: the Conv's weight {conv.input[1]!r} is not a constant")
    if weight.shape != (1, 1, kernel_size):
        raise ValueError(f"node {label}: the Conv's weight {conv.input[1]!r} has shape {list(weight.shape)}, "
                         f"expected [1, 1, {kernel_size}] (kernel_size in the manifest)")
    made_by = producers(info.model)

    def back_through_reshapes(tensor: str) -> tuple[str, tuple[int, onnx.NodeProto] | None]:
        while tensor in made_by and made_by[tensor][1].op_type in _PASS_THROUGH:
            tensor = made_by[tensor][1].input[0]
        return tensor, made_by.get(tensor)

    tensor, found = back_through_reshapes(output)
    if found is None or found[1] is not conv:
        where = f"node {node_label(found[1], found[0])}" if found else f"tensor {tensor!r}"
        raise ValueError(f"{where} stands between the Conv {label} and the output {output!r}: "
                         "a smoother's output must be the Conv's, only reshaped")
    tensor, found = back_through_reshapes(conv.input[0])
    pad = found[1] if found else None
    if pad is None or pad.op_type != "Pad":
        where = f"node {node_label(found[1], found[0])}" if found else f"tensor {tensor!r}"
        raise ValueError(f"{where} feeds the Conv {label}: a smoother pads the signal by edge replication, then correlates")
    pad_label = node_label(pad, found[0])
    pads = info.constants.get(pad.input[1]) if len(pad.input) > 1 else None
    mode = _attributes(pad).get("mode", b"constant")
    expected = [0, 0, kernel_size - 1, 0, 0, kernel_size - 1]
    wanted = ONNX_PAD_MODES[padding]
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    value = info.constants.get(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(1)
    if mode != wanted or pads is None or [int(p) for p in np.asarray(pads).reshape(-1)] != expected \
            or (len(pad.input) > 3 and pad.input[3]) or value is None or np.any(np.asarray(value) != 0):
        words = {"replicate": "edge replication", "zeros": "zeros", "reflect": "reflection", "circular": "wrapping around"}
        raise ValueError(f"node {pad_label}: a smoother with {padding!r} padding pads by {words[padding]} (ONNX Pad mode "
                         f"{wanted!r}, value 0) with pads {expected} (K - 1 = {kernel_size - 1} on both sides of the last "
                         f"axis); this one has mode {mode!r}")
    source, found = back_through_reshapes(pad.input[0])
    if source != signal:
        where = f"node {node_label(found[1], found[0])}" if found else f"tensor {source!r}"
        raise ValueError(f"{where} stands between the signal {signal!r} and the Pad {pad_label}: only reshapes may")
    return label, conv.input[1], np.asarray(weight)
