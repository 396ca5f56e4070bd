"""What an export kind's adapter hands back for a user's model (export.byom): the final graph and
every manifest fact, built by export.kinds and published by export.byom. Kept apart from both so
neither imports the other's module (contract.manifest only, no torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from contract.manifest import ConstraintEntry, Probe, TensorSpec


@dataclass
class Prepared:
    """What a kind adapter hands back for one user model: the graph and every manifest fact."""

    onnx_model: Any  # onnx.ModelProto, final
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    constraints: list[ConstraintEntry]
    probe: Probe
    parity: dict[str, Any]
    info: dict[str, Any]  # Manifest keyword arguments of the kind section
    found: list[str] = field(default_factory=list)  # what the export found on its own (the report)
    draw_card: Callable[[Any], None] | None = None  # the card plot (a matplotlib Figure)


def tensor_specs(input_name: str, input_shape: list, output_name: str, output_shape: list) -> tuple[list[TensorSpec], list[TensorSpec]]:
    return ([TensorSpec(name=input_name, dtype="float32", shape=list(input_shape))],
            [TensorSpec(name=output_name, dtype="float32", shape=list(output_shape))])
