"""The graph walk: GraphInfo, what does not depend on the feature being certified (constants,
static shapes, dtypes, interval bounds of every float tensor, the nodes that may make NaN/Inf).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from contract.certificate.arithmetic import _array_range, DOMAIN_SENSITIVE, FULL, NONDETERMINISTIC
from contract.certificate.interval_rules import _range_transfer
from contract.certificate.ops import _has_subgraph, FLOAT_TYPES, node_label
from contract.domains import DOMAINS  # other op domains the proof reads (contract.mlops)
from contract.tensors import folded_output_bytes, static_shapes

DEFAULT_MAX_TENSOR_BYTES = 256 * 1024 * 1024  # as contract.files.DEFAULT_MAX_FILE_BYTES


log = logging.getLogger(__name__)


@dataclass
class GraphInfo:
    """What does not depend on the feature being certified: constants, static shapes, dtypes and ranges.

    Shapes come from ONNX shape inference run on a copy whose value_info and output shapes are
    cleared: what the publisher declared about intermediate tensors is never trusted, only the
    graph inputs' shapes, which ONNX Runtime enforces on every call.
    """

    model: onnx.ModelProto
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    last_dims: dict[str, int | None] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)  # TensorProto element type, where inferred
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # float tensors: [lo, hi]
    hazards: list[tuple[str, str]] = field(default_factory=list)  # (node label, why it may give NaN/Inf)
    inference_error: str | None = None
    # the most bytes one folded constant may take (contract.tensors.folded_output_bytes): a larger
    # one is a hazard (refused), never evaluated
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES
    shapes: dict[str, list[int] | None] = field(default_factory=dict)  # static shapes, where inferred

    @classmethod
    def build(cls, model: onnx.ModelProto, fold: bool = True,
              max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES) -> "GraphInfo":
        if model.functions:
            from onnx import inliner

            model = inliner.inline_local_functions(model)
        info = cls(model, max_tensor_bytes=max_tensor_bytes)
        graph = model.graph
        for init in graph.initializer:
            info.constants[init.name] = numpy_helper.to_array(init)
            info.types[init.name] = init.data_type
        bare = onnx.ModelProto()
        bare.CopyFrom(model)
        del bare.graph.value_info[:]
        for output in bare.graph.output:
            output.type.tensor_type.ClearField("shape")
        for opset in bare.opset_import:  # ops of another domain the proof reads (contract.mlops): typed from their attributes
            if opset.domain in DOMAINS:
                DOMAINS[opset.domain].declare_outputs(bare)
        try:
            inferred = onnx.shape_inference.infer_shapes(bare, strict_mode=True, data_prop=True)
            value_infos = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
        except Exception as exc:  # shape inference is an aid only: without it columns collapse sooner
            info.inference_error = _first_line(str(exc))
            log.debug("shape inference failed: %s", exc)
            value_infos = [*graph.input]
        info.shapes = static_shapes(value_infos)
        for vi in value_infos:
            info.last_dims[vi.name] = _static_last_dim(vi)
            if vi.type.tensor_type.elem_type:
                info.types.setdefault(vi.name, vi.type.tensor_type.elem_type)
        for name, array in info.constants.items():
            info.last_dims[name] = int(array.shape[-1]) if array.ndim else None
        if fold and info.inference_error is None:  # without shapes a folded constant's size is unknown:
            info._fold_constants()  # check_graph refuses such a graph; nothing is evaluated first
        info._propagate_ranges()
        return info

    def _fold_constants(self) -> None:
        """Evaluate every node whose inputs are all constants (Constant nodes, Transpose of weights...),
        so rules are checked on the tensor a node actually consumes, not on a named initializer."""
        evaluator = None  # onnx.reference takes ~0.5 s to import: only when a graph needs folding
        for node in self.model.graph.node:
            if node.domain not in ("", "ai.onnx") or _has_subgraph(node):
                continue
            if node.op_type in NONDETERMINISTIC:
                continue
            if not all(name == "" or name in self.constants for name in node.input):
                continue
            feeds = {name: self.constants[name] for name in node.input if name}
            size = folded_output_bytes(node, feeds, self.shapes)
            if size is None or size > self.max_tensor_bytes:
                label = node_label(node, list(self.model.graph.node).index(node))
                self.hazards.append((label, "would allocate " + ("an output whose size cannot be known before "
                                     "evaluating it" if size is None else f"{size} bytes") + f" (the limit per "
                                     f"tensor is {self.max_tensor_bytes} bytes): refused, not evaluated"))
                continue
            try:
                if evaluator is None:
                    from onnx.reference import ReferenceEvaluator as evaluator
                outputs = evaluator(node).run(None, feeds)
            except Exception as exc:  # an op the reference evaluator lacks: its outputs stay non-constant
                log.debug("cannot fold %s: %s", node.op_type, exc)
                continue
            for name, value in zip(node.output, outputs):
                if name:
                    array = np.asarray(value)
                    self.constants[name] = array
                    if self.last_dims.get(name) is None and array.ndim:
                        self.last_dims[name] = int(array.shape[-1])

    def range_of(self, name: str) -> tuple[float, float]:
        if not name:
            return FULL
        if name in self.constants:
            return _array_range(self.constants[name])
        return self.ranges.get(name, FULL)

    def is_float(self, name: str) -> bool:
        if name in self.constants:
            return self.constants[name].dtype.kind == "f"
        return self.types.get(name) in FLOAT_TYPES

    def _propagate_ranges(self) -> None:
        """Interval bounds of every float tensor for finite inputs, and every node that may turn finite
        values into NaN/Inf (a division by a tensor that may be 0, the log of one that may be <= 0...).
        Float overflow of huge finite inputs is out of scope (docs/threat-model.md)."""
        for index, node in enumerate(self.model.graph.node):
            if all(not o or o in self.constants for o in node.output):
                continue
            label = node_label(node, index)
            try:
                result = _range_transfer(self, node, label)
            except Exception as exc:  # a malformed node: no bounds
                log.debug("no range for %s: %s", label, exc)
                result = FULL
                if node.op_type in DOMAIN_SENSITIVE:  # what could not be bounded cannot be proven safe
                    self.hazards.append((label, f"{node.op_type} whose bounds could not be computed ({exc})"))
            for name in node.output:
                if name and name not in self.constants:
                    self.ranges[name] = result


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else text


def _static_last_dim(value_info: onnx.ValueInfoProto) -> int | None:
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape") or not tensor_type.shape.dim:
        return None
    last = tensor_type.shape.dim[-1]
    return int(last.dim_value) if last.HasField("dim_value") else None
