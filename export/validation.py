"""Argument checks shared by export_checkpoint and the CLI (no torch: the CLI runs them before
importing torch, so a usage error is answered at once)."""

from __future__ import annotations

import math
import re
from typing import Iterable

from contract.manifest import FORMATS
from export.errors import ExportInputError

MIN_OPSET = 18  # the dynamo ONNX exporter writes opset 18 or newer
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def normalize_formats(formats: Iterable[str] | str) -> tuple[str, ...]:
    """Known, distinct format names in the given order; accepts "onnx,pt2" too."""
    if isinstance(formats, str):
        formats = formats.split(",")
    names = [str(name).strip().lower() for name in formats]
    names = [name for name in names if name]
    unknown = [name for name in names if name not in FORMATS]
    if unknown or not names:
        raise ExportInputError(
            f"unknown format(s) {', '.join(repr(n) for n in unknown) or '(none given)'}; "
            f"choose from {', '.join(FORMATS)} (comma-separated)"
        )
    if "onnx" not in names:  # the service proves every version from its ONNX graph
        raise ExportInputError(
            f"formats {','.join(names)} lack onnx: the service proves every version from model.onnx "
            "(the other formats are served or kept beside it), so export proves and publishes none without it"
        )
    return tuple(dict.fromkeys(names))


def validate_name(name: str) -> str:
    """A model name is one path component of the repository: no separators, no '..', not a version number."""
    if not isinstance(name, str) or not _NAME_PATTERN.match(name) or name.isdigit():
        raise ExportInputError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' or '-' (starting with a letter or digit, "
            "not all digits, at most 128 characters)"
        )
    return name


def validate_tolerance(label: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ExportInputError(f"invalid {label} {value!r}: expected a finite number >= 0")
    return float(value)


def validate_opset(opset: int | None) -> int | None:
    if opset is None:
        return None
    import onnx.defs  # no torch

    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ExportInputError(f"invalid opset {opset!r}: the dynamo ONNX exporter writes opsets {MIN_OPSET} to {newest}")
    return opset
