"""Monotonicity certificates computed from an ONNX graph itself, by abstract interpretation.

For one input "feature" (a last-axis column of the classifier's `features` input, or the whole
`signal` of a smoother) every tensor of the graph gets an abstract value saying how it depends on
that feature:

- ``INDEPENDENT``: it does not depend on the feature at all;
- ``Columns(width, {column: sign})``: elementwise, its last-axis column ``column`` is monotone in
  the feature with ``sign`` (+1 non-decreasing, -1 non-increasing) and every other column is
  independent of it (the input column itself, before the first layer mixes columns);
- ``Uniform(sign)``: every element is monotone in the feature with ``sign``;
- ``Unknown``: nothing is known; it records the node that lost the proof and why.

An independent element is monotone with either sign, so ``Columns`` whose signs agree may always
be weakened to ``Uniform``; that is how every op that moves data around is handled soundly.
Only constant weights (initializers, Constant nodes, and nodes computed from them alone) can keep a
sign through MatMul/Gemm/Conv/Mul/Div: a weight computed at run time is not trusted, and an unproven
term stays unproven even when multiplied by zero (0 * inf is NaN).

Beside the directions, GraphInfo computes interval bounds of every float tensor for finite input,
and records every node that may turn finite values into NaN/Inf (contract.graph refuses those).
The points of use (the smoother's Conv kernel, the classifier's output layer) are located here
too, so the rules are checked on the tensor a node consumes, not on a named initializer.

numpy and onnx only: the service runs this without torch.

The package, one concern a module (each imports only those listed before it):

- `arithmetic`: the sign lattice above and interval arithmetic;
- `ops`: the op tables (monotone elementwise functions, data movements, reductions, value-free ops)
  and node helpers;
- `interval_rules`: each op's interval rule (bounds, NaN/Inf hazards);
- `walk`: GraphInfo, the walk over the graph that computes constants, shapes and bounds;
- `sign_rules`: each op's sign rule (`_Interpreter.transfer`);
- `report`: Finding, Certificate and `certify`;
- `uses`: the points of use (the classifier's output layer, the smoother's kernel).

Adding an op: an entry in a table of `ops` when it fits a class, else a branch in
`sign_rules._Interpreter.transfer`; its bounds in `interval_rules._range_transfer`; and its
attribute checks in contract.graph. The names below stay importable from `contract.certificate`.
"""

from __future__ import annotations

from contract.certificate.interval_rules import BOUNDED_BELOW_UNARY, where_threshold_pattern
from contract.certificate.ops import FLOAT_TYPES, node_label
from contract.certificate.report import Certificate, Finding, certify
from contract.certificate.uses import WeightUse, output_layer, producers, smoother_kernel
from contract.certificate.walk import DEFAULT_MAX_TENSOR_BYTES, GraphInfo

__all__ = ["BOUNDED_BELOW_UNARY", "DEFAULT_MAX_TENSOR_BYTES", "FLOAT_TYPES", "Certificate", "Finding", "GraphInfo", "WeightUse", "certify",
           "node_label", "output_layer", "producers", "smoother_kernel", "where_threshold_pattern"]
