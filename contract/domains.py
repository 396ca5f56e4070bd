"""Op domains beside the default ONNX one that the proof reads, each through a module that registers
itself here (contract.mlops for ai.onnx.ml, imported by contract.graph and export.mlprep).

A registered module provides `declare_outputs(model, batch=None)` (the type and shape of its nodes'
outputs, from their own attributes, for shape inference), `value_range(info, node, label)` and
`transfer(info, node, label, inputs)` (contract.certificate). A domain not registered stays unknown:
its ops lose the proof, and the graph check refuses them. No imports: every contract module may use it.
"""

from __future__ import annotations

from typing import Any

DOMAINS: dict[str, Any] = {}
