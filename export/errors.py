"""Errors raised by export (stdlib only, so the CLI can name them without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

MAX_MESSAGE_CHARS = 500  # one message line: a hostile file's names and values are cut to this


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` cut to `limit` characters (the cut says how much was left out)."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"


class ExportError(Exception):
    """Base class: an export that publishes nothing."""


class ExportInputError(ExportError, ValueError):
    """Bad arguments: unknown format, bad name/opset/tolerance, unwritable repository (CLI exit 2)."""


class KindConflictError(ExportError):
    """The name holds versions of another model kind (CLI exit 1); `--replace-kind` overrides."""


class ProofRefusedError(ExportError):
    """The staged version fails the service's own load-time proof: publishing it would only be refused."""

    def __init__(self, reason: str, report: str):
        self.reason = reason
        self.report = report
        super().__init__(f"the service's proof refuses the exported version ({reason}); nothing was published")


class ArtifactError(ExportError):
    """An artifact could not be written or does not hold what it must (e.g. a folded tensor)."""


@dataclass(frozen=True)
class Mismatch:
    """One parity comparison that failed: an artifact disagreed with eager torch (or crashed)."""

    format: str  # "onnx" | "torchscript" | "pt2"
    case: str  # the input case, e.g. "length_1", "batch_64"
    output: str  # "full", an edge mode ("same", "causal", "valid"), or "scores"
    expected_shape: tuple[int, ...]
    actual_shape: tuple[int, ...] | None
    max_abs_error: float | None  # None when the shapes differ or the artifact failed
    worst_index: tuple[int, ...] | None = None
    expected_value: float | None = None
    actual_value: float | None = None
    error: str | None = None  # the exception text when the artifact could not run the input

    def __str__(self) -> str:
        where = f"{self.format} on {self.case} ({self.output})"
        if self.error is not None:
            return f"{where}: failed to run: {self.error}"
        if self.actual_shape != self.expected_shape:
            return f"{where}: shape {list(self.actual_shape or ())}, expected {list(self.expected_shape)}"
        index = ", ".join(map(str, self.worst_index or ()))
        return (
            f"{where}: max abs error {self.max_abs_error:.3g} at [{index}] "
            f"(got {self.actual_value:.9g}, eager torch {self.expected_value:.9g})"
        )


class ParityError(ExportError):
    """Artifacts disagree with eager torch; carries every mismatch found (not just the first)."""

    def __init__(self, mismatches: Sequence[Mismatch], atol: float, rtol: float):
        self.mismatches = list(mismatches)
        self.atol = atol
        self.rtol = rtol
        shown = [str(m) for m in self.mismatches[:50]]
        if len(self.mismatches) > len(shown):
            shown.append(f"... and {len(self.mismatches) - len(shown)} more")
        super().__init__(
            f"parity check failed (atol={atol:g}, rtol={rtol:g}): {len(self.mismatches)} mismatch(es); "
            "nothing was published\n  " + "\n  ".join(shown)
        )


class ModelRefusedError(ExportError):
    """The user's model breaks its declared rules, or is not a model of the declared kind; nothing published."""

    def __init__(self, problems: list[str], source: str):
        self.problems = list(problems)
        self.source = source
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"refusing {source}: {problems[0]}{more}; nothing was published")
