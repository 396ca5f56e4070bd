"""Every tensor an ONNX file carries, and the checks that must hold before anything reads one.

A hostile ONNX file can point any tensor at a file outside itself (external data): ONNX Runtime
and `onnx.numpy_helper.to_array` then read that file (relative to the model's folder, or to the
current working directory for a model given as bytes) and the bytes become weights. So external
data is refused wherever a tensor can carry it, not only on `graph.initializer`:

- graph initializers and sparse initializers (values and indices);
- node attributes of type TENSOR (`Constant.value`, `ConstantOfShape.value`), TENSORS,
  SPARSE_TENSOR (`Constant.sparse_value`) and SPARSE_TENSORS;
- the same inside every subgraph (If/Loop/Scan bodies, GRAPH and GRAPHS attributes, at any depth),
  local functions (their nodes and their attributes' default values) and training_info graphs.

The walk is iterative (a deeply nested graph cannot exhaust the Python stack) and only looks at
the protobuf fields: it never reads tensor data. Alongside, each tensor's declared size (the
product of its dims times its element size) is checked against a cap and against the bytes it
actually holds, before any reader allocates an array of that size (a 1 GiB dims declaration with
4 bytes of data is refused by name, never a traceback from numpy).

`seal_external_data(options)` makes an ONNX Runtime session unable to read external data even if
a graph slipped past these checks: it points the runtime's external-data folder at an empty
private directory (the runtime also refuses paths that leave that folder).

`allocation_problems(model, shapes, budget)`: the graph with concrete input shapes, through ONNX
shape inference (with data propagation), refused when any tensor it computes would exceed `budget`
bytes, or when an allocating op (ConstantOfShape, Expand, Tile, ...) has an output size that cannot
be known before running it: a graph is probed only once its memory is bounded.

numpy and onnx only.
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import Any, Iterator, Sequence

import onnx
from onnx import AttributeProto, TensorProto

from contract.domains import DOMAINS

MAX_REPORTED = 20  # problems listed per file (the count beyond is given)
MAX_NAME_CHARS = 80  # names are cut in messages: a name may be megabytes long

# Ops whose output can be much larger than their inputs: their output size must be known (with
# concrete input shapes) before the graph is run.
ALLOCATING_OPS = frozenset({"ConstantOfShape", "Expand", "Tile", "Range", "Resize", "Upsample", "OneHot", "Pad",
                            "MatMul", "Gemm", "Einsum", "RandomNormal", "RandomUniform", "RandomNormalLike",
                            "RandomUniformLike", "EyeLike", "Col2Im", "ConvTranspose", "DepthToSpace",
                            "SpaceToDepth", "Unique", "NonZero", "Compress", "TopK", "Multinomial", "StringSplit",
                            "Bernoulli", "Trilu", "CenterCropPad"})


def short(name: str, limit: int = MAX_NAME_CHARS) -> str:
    """A name cut to `limit` characters for a message (repr'd, so control characters are visible)."""
    text = name if len(name) <= limit else name[:limit] + f"...({len(name)} chars)"
    return repr(text)


def _graph_tensors(graph: onnx.GraphProto, where: str) -> Iterator[tuple[str, Any]]:
    """(label, TensorProto | GraphProto) directly in `graph`: graphs are yielded for the caller's stack."""
    for init in graph.initializer:
        yield f"{where}initializer {short(init.name)}", init
    for sparse in graph.sparse_initializer:
        yield f"{where}sparse initializer {short(sparse.values.name)} (values)", sparse.values
        yield f"{where}sparse initializer {short(sparse.values.name)} (indices)", sparse.indices
    yield from _node_tensors(graph.node, where)


def _node_tensors(nodes: Sequence[onnx.NodeProto], where: str) -> Iterator[tuple[str, Any]]:
    for index, node in enumerate(nodes):
        label = f"{where}node #{index} {node.op_type}" + (f" {short(node.name)}" if node.name else "")
        for attr in node.attribute:
            yield from _attribute_tensors(attr, f"{label} attribute {short(attr.name)}")


def _attribute_tensors(attr: onnx.AttributeProto, at: str) -> Iterator[tuple[str, Any]]:
    if attr.type == AttributeProto.TENSOR or attr.HasField("t"):
        yield at, attr.t
    for i, tensor in enumerate(attr.tensors):
        yield f"{at}[{i}]", tensor
    if attr.type == AttributeProto.SPARSE_TENSOR or attr.HasField("sparse_tensor"):
        yield f"{at} (sparse values)", attr.sparse_tensor.values
        yield f"{at} (sparse indices)", attr.sparse_tensor.indices
    for i, sparse in enumerate(attr.sparse_tensors):
        yield f"{at}[{i}] (sparse values)", sparse.values
        yield f"{at}[{i}] (sparse indices)", sparse.indices
    if attr.HasField("g"):
        yield f"{at} subgraph: ", attr.g
    for i, graph in enumerate(attr.graphs):
        yield f"{at} subgraph [{i}]: ", graph


def carried_tensors(model: onnx.ModelProto) -> Iterator[tuple[str, TensorProto]]:
    """Every TensorProto the model carries, at any depth, with a label naming where (iterative)."""
    stack: list[tuple[str, onnx.GraphProto]] = [("", model.graph)]
    for function in model.functions:
        where = f"function {short(function.name)}: "
        # a function's attribute defaults (attribute_proto) are tensors too, used when a call omits them
        for attr in function.attribute_proto:
            yield from _expand(_attribute_tensors(attr, f"{where}default of attribute {short(attr.name)}"), stack)
        yield from _expand(_node_tensors(function.node, where), stack)
    for index, info in enumerate(model.training_info):
        stack.append((f"training_info[{index}] initialization: ", info.initialization))
        stack.append((f"training_info[{index}] algorithm: ", info.algorithm))
    while stack:
        where, graph = stack.pop()
        yield from _expand(_graph_tensors(graph, where), stack)


def _expand(items: Iterator[tuple[str, Any]], stack: list) -> Iterator[tuple[str, TensorProto]]:
    for label, item in items:
        if isinstance(item, onnx.GraphProto):
            stack.append((label, item))
        else:
            yield label, item


def is_external(tensor: TensorProto) -> bool:
    return tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data) > 0


def _location(tensor: TensorProto) -> str:
    return next((short(e.value) for e in tensor.external_data if e.key == "location"), "'?'")


def _itemsize(data_type: int) -> int | None:
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize
    except Exception:  # noqa: BLE001 - strings, undefined or unknown types: no fixed size
        return None


# 4-bit types: two elements per byte of raw_data
_PACKED_4BIT = {getattr(TensorProto, name) for name in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(TensorProto, name)}


def declared_elements(tensor: TensorProto) -> int | None:
    """The element count the dims declare (None for a negative dim)."""
    if any(d < 0 for d in tensor.dims):
        return None
    return math.prod(int(d) for d in tensor.dims)


def _size_problem(tensor: TensorProto, label: str, max_bytes: int) -> str | None:
    elements = declared_elements(tensor)
    if elements is None:
        return f"{label} declares a negative dimension {list(tensor.dims)[:8]}"
    itemsize = _itemsize(tensor.data_type)
    if itemsize is None:
        return None  # strings and unknown types are refused by the graph step by type
    declared = elements * itemsize
    if declared > max_bytes:
        return (f"{label} declares {declared} bytes (dims {list(tensor.dims)[:8]}), over the "
                f"{max_bytes}-byte limit per tensor; not read")
    if tensor.HasField("raw_data"):
        held = len(tensor.raw_data)
        expected = (elements + 1) // 2 if tensor.data_type in _PACKED_4BIT else declared
        if held != expected:
            return f"{label} declares {expected} bytes in its dims but holds {held}: not read"
    return None


def tensor_problems(model: onnx.ModelProto, file: str = "model.onnx", max_tensor_bytes: int | None = None) -> list[str]:
    """What is wrong with the tensors `model` carries before any is read: external data anywhere
    (refused), and, with `max_tensor_bytes`, declared sizes over that cap or not matching the data."""
    problems: list[str] = []
    count = 0
    for label, tensor in carried_tensors(model):
        problem = None
        if is_external(tensor):
            problem = (f"{file}: {label} stores its data externally (location {_location(tensor)}): external "
                       "data is refused, nothing outside the model file is read")
        elif max_tensor_bytes is not None:
            problem = _size_problem(tensor, f"{file}: {label}", max_tensor_bytes)
        if problem is not None:
            count += 1
            if len(problems) < MAX_REPORTED:
                problems.append(problem)
    if count > len(problems):
        problems.append(f"... and {count - len(problems)} more tensor problem(s)")
    return problems


# -- ONNX Runtime: no external data, whatever the graph -----------------------------------------
_EMPTY_DIR: str | None = None
EXTERNAL_FOLDER_KEY = "session.model_external_initializers_file_folder_path"


def empty_directory() -> str:
    """A private (0700) directory this process keeps empty: where a session may look for external data."""
    global _EMPTY_DIR
    if _EMPTY_DIR is None or not os.path.isdir(_EMPTY_DIR) or os.listdir(_EMPTY_DIR):
        _EMPTY_DIR = tempfile.mkdtemp(prefix="monoserve-no-external-data-")
    return _EMPTY_DIR


def seal_external_data(options: Any) -> Any:
    """ONNX Runtime SessionOptions that resolve any external data in an empty private directory
    (so none is found), for a session created from bytes. Returns `options`."""
    options.add_session_config_entry(EXTERNAL_FOLDER_KEY, empty_directory())
    return options


# -- memory before running --------------------------------------------------------------------
def _static_shape(value_info: onnx.ValueInfoProto) -> list[int] | None:
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    dims = []
    for dim in tensor_type.shape.dim:
        if not dim.HasField("dim_value") or dim.dim_value < 0:
            return None
        dims.append(int(dim.dim_value))
    return dims


def allocation_problems(model: onnx.ModelProto, input_shapes: dict[str, Sequence[int]], budget_bytes: int,
                        file: str = "model.onnx", require_known: bool = True) -> list[str]:
    """Problems when running `model` on inputs of `input_shapes` could allocate more than
    `budget_bytes` in one tensor, decided by shape inference before anything runs (never executes
    the graph). With `require_known`, an allocating op whose output shape stays unknown is refused
    too (without it, only the sizes known now are checked: before a session is made, say).
    Subgraphs (If/Loop/Scan bodies) and local functions are refused: their tensors' sizes are not
    bounded by the top graph's shapes (a 1 GiB ConstantOfShape in an If branch), nor modelled by
    the proof."""
    nested = _nested_graph_problem(model, file)
    if nested is not None:
        return [nested]
    concrete = onnx.ModelProto()
    concrete.CopyFrom(model)
    del concrete.graph.value_info[:]
    for value in concrete.graph.input:
        shape = input_shapes.get(value.name)
        if shape is None:
            continue
        tensor_shape = value.type.tensor_type.shape
        del tensor_shape.dim[:]
        for size in shape:
            tensor_shape.dim.add().dim_value = int(size)
    for value in concrete.graph.output:
        value.type.tensor_type.ClearField("shape")
    batches = {int(shape[0]) for shape in input_shapes.values() if len(shape)}
    for opset in concrete.opset_import:  # ops of another domain (ai.onnx.ml): typed from their attributes
        if opset.domain in DOMAINS:
            DOMAINS[opset.domain].declare_outputs(concrete, batches.pop() if len(batches) == 1 else None)
    try:
        inferred = onnx.shape_inference.infer_shapes(concrete, strict_mode=False, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - a graph shape inference cannot follow cannot be bounded
        return [f"{file}: its memory cannot be bounded before running it (shape inference fails: "
                f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__})"]
    elem_types: dict[str, int] = {}
    shapes: dict[str, list[int] | None] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]:
        shapes[vi.name] = _static_shape(vi)
        elem_types[vi.name] = vi.type.tensor_type.elem_type
    problems: list[str] = []
    for index, node in enumerate(inferred.graph.node):
        label = f"node #{index} {node.op_type}" + (f" {short(node.name)}" if node.name else "")
        for output in node.output:
            if not output:
                continue
            shape = shapes.get(output)
            if shape is None:
                if require_known and node.op_type in ALLOCATING_OPS:
                    problems.append(f"{file}: {label}: the size of its output {short(output)} cannot be known "
                                    f"before running it (input shapes {dict(input_shapes)}): refused, its memory "
                                    "would be unbounded")
                continue
            itemsize = _itemsize(elem_types.get(output, TensorProto.FLOAT)) or 8
            size = math.prod(shape) * itemsize
            if size > budget_bytes:
                problems.append(f"{file}: {label} would allocate {size} bytes for {short(output)} (shape "
                                f"{shape[:8]}), over the in-flight memory budget of {budget_bytes} bytes: refused "
                                "before running")
        if len(problems) >= MAX_REPORTED:
            problems.append("... (further nodes not listed)")
            break
    return problems


def _nested_graph_problem(model: onnx.ModelProto, file: str) -> str | None:
    if model.functions:
        return (f"{file} defines local function {short(model.functions[0].name)}: its memory cannot be bounded "
                "before running it (nor is it modelled by the proof)")
    for index, node in enumerate(model.graph.node):
        if any(attr.HasField("g") or len(attr.graphs) for attr in node.attribute):
            return (f"{file}: node #{index} {node.op_type} has a subgraph: its memory cannot be bounded before "
                    "running it (control flow is not modelled by the proof either)")
    return None


def folded_output_bytes(node: onnx.NodeProto, feeds: dict[str, Any], static_shapes: dict[str, list[int] | None]
                        ) -> int | None:
    """The bytes a constant node's outputs would take if evaluated now (None: cannot be known).

    From shape inference where it gave a static shape; for the allocating ops, from their constant
    inputs (ConstantOfShape's shape, Expand's broadcast, Tile's repeats). Called before folding a
    node, so a tiny file whose ConstantOfShape declares gigabytes is refused, never evaluated."""
    total = 0
    for output in node.output:
        if not output:
            continue
        shape = static_shapes.get(output)
        if shape is None:
            shape = _shape_from_inputs(node, feeds)
            if shape is None:
                if node.op_type in ALLOCATING_OPS:
                    return None  # an allocating op of unknown output size is never evaluated
                continue
        total += math.prod(shape) * 8  # 8 bytes: float64/int64, the widest the evaluator returns here
    return total


def _shape_from_inputs(node: onnx.NodeProto, feeds: dict[str, Any]) -> list[int] | None:
    import numpy as np

    inputs = [feeds.get(name) for name in node.input]
    try:
        if node.op_type == "ConstantOfShape" and inputs and inputs[0] is not None:
            return [int(d) for d in np.asarray(inputs[0]).reshape(-1)]
        if node.op_type == "Expand" and len(inputs) == 2 and all(i is not None for i in inputs):
            return list(np.broadcast_shapes(np.asarray(inputs[0]).shape,
                                            tuple(int(d) for d in np.asarray(inputs[1]).reshape(-1))))
        if node.op_type == "Tile" and len(inputs) == 2 and all(i is not None for i in inputs):
            repeats = [int(d) for d in np.asarray(inputs[1]).reshape(-1)]
            return [a * b for a, b in zip(np.asarray(inputs[0]).shape, repeats)]
    except (ValueError, TypeError, OverflowError):
        return None
    return None


def static_shapes(value_infos: Sequence[onnx.ValueInfoProto]) -> dict[str, list[int] | None]:
    return {vi.name: _static_shape(vi) for vi in value_infos}
