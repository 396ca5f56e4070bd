"""The one definition of each weight rule, in numpy only.

Training tests, export and the service all call these functions, so a rule means the same thing
everywhere. This module must never import torch: the serving path runs without it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

# Reports list at most this many violations per tensor and rule (the count is always exact).
MAX_REPORTED = 20

RULES = ("nonnegative", "positive", "monotone_nondecreasing", "sums_to_one")


@dataclass(frozen=True)
class Violation:
    tensor: str
    rule: str
    index: tuple[int, ...]  # index into the full tensor; () for a whole-tensor rule
    value: float  # the offending value (for sums_to_one: the sum; for monotone: the step)
    expected: str  # e.g. ">= 0", "> 0", "x[i+1] - x[i] >= 0", "sum == 1 +/- 1e-05"

    def __str__(self) -> str:
        where = f"[{', '.join(map(str, self.index))}]" if self.index else ""
        return f"{self.tensor}{where}: {self.rule} violated, expected {self.expected}, got {self.value:.6g}"

    def to_dict(self) -> dict:
        return asdict(self)


class ConstraintViolationError(ValueError):
    """Raised when tensors break their declared rules; carries every violation."""

    def __init__(self, violations: Sequence[Violation], context: str = "constraint check failed"):
        self.violations = list(violations)
        lines = [str(v) for v in self.violations[:MAX_REPORTED]]
        more = len(self.violations) - len(lines)
        if more > 0:
            lines.append(f"... and {more} more")
        super().__init__(f"{context}: {len(self.violations)} violation(s)\n  " + "\n  ".join(lines))


def _lower_bound(tolerance: float) -> float:
    return -tolerance if tolerance else 0.0  # never print "-0"


def _as_array(values) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return array


def _non_finite(tensor: str, rule: str, array: np.ndarray) -> list[Violation]:
    bad = np.argwhere(~np.isfinite(array))
    return [
        Violation(tensor, rule, tuple(int(i) for i in idx), float(array[tuple(idx)]), "a finite value")
        for idx in bad
    ]


def _selected_mask(array: np.ndarray, columns: Sequence[int] | None) -> np.ndarray:
    """A boolean mask of the elements a rule applies to: all, or only some indices of the last axis."""
    if columns is None:
        return np.ones(array.shape, dtype=bool)
    if array.ndim == 0:
        raise ValueError("columns can only select from a tensor with at least one dimension")
    mask = np.zeros(array.shape, dtype=bool)
    mask[..., list(columns)] = True
    return mask


def _elementwise_check(
    tensor: str, rule: str, values, ok: Callable[[np.ndarray], np.ndarray], expected: str,
    columns: Sequence[int] | None,
) -> list[Violation]:
    """Every selected element must be finite and satisfy `ok`; reports each one that is not."""
    array = _as_array(values)
    mask = _selected_mask(array, columns)
    finite = np.isfinite(array)
    found = _non_finite(tensor, rule, np.where(mask, array, 0.0))
    with np.errstate(invalid="ignore"):
        bad = np.argwhere(mask & finite & ~ok(array))
    found += [Violation(tensor, rule, tuple(int(i) for i in idx), float(array[tuple(idx)]), expected) for idx in bad]
    return found


def check_nonnegative(
    tensor: str, values, tolerance: float = 0.0, columns: Sequence[int] | None = None
) -> list[Violation]:
    """Every selected element >= -tolerance. `columns` restricts the rule to those last-axis indices."""
    return _elementwise_check(
        tensor, "nonnegative", values, lambda a: a >= -tolerance, f">= {_lower_bound(tolerance):g}", columns
    )


def check_positive(
    tensor: str, values, tolerance: float = 0.0, columns: Sequence[int] | None = None
) -> list[Violation]:
    """Every selected element > tolerance (strictly positive, e.g. a scale that is divided by)."""
    return _elementwise_check(tensor, "positive", values, lambda a: a > tolerance, f"> {tolerance:g}", columns)


def check_monotone_nondecreasing(tensor: str, values, tolerance: float = 0.0, axis: int = -1) -> list[Violation]:
    """x[..., i+1] - x[..., i] >= -tolerance along `axis`; the index named is the later element."""
    array = _as_array(values)
    if array.ndim == 0:
        return []
    found = _non_finite(tensor, "monotone_nondecreasing", array)
    if found:
        return found
    axis = axis % array.ndim
    steps = np.diff(array, axis=axis)
    bad = np.argwhere(steps < -tolerance)
    violations = []
    for idx in bad:
        later = list(int(i) for i in idx)
        later[axis] += 1
        violations.append(
            Violation(
                tensor,
                "monotone_nondecreasing",
                tuple(later),
                float(steps[tuple(idx)]),
                f"x[i] - x[i-1] >= {_lower_bound(tolerance):g} along axis {axis}",
            )
        )
    return violations


def check_sums_to_one(tensor: str, values, tolerance: float = 1e-5, axis: int = -1) -> list[Violation]:
    """Sums along `axis` equal 1 within `tolerance`; the index names the slice (axis removed)."""
    array = _as_array(values)
    found = _non_finite(tensor, "sums_to_one", array)
    if found:
        return found
    if array.ndim == 0:
        sums = array
        bad = [()] if abs(float(array) - 1.0) > tolerance else []
        return [Violation(tensor, "sums_to_one", (), float(sums), f"sum == 1 +/- {tolerance:g}") for _ in bad]
    sums = array.sum(axis=axis)
    bad = np.argwhere(np.abs(sums - 1.0) > tolerance)
    return [
        Violation(tensor, "sums_to_one", tuple(int(i) for i in idx), float(np.asarray(sums)[tuple(idx)]),
                  f"sum == 1 +/- {tolerance:g}")
        for idx in bad
    ]


_CHECKERS: dict[str, Callable[..., list[Violation]]] = {
    "nonnegative": check_nonnegative,
    "positive": check_positive,
    "monotone_nondecreasing": check_monotone_nondecreasing,
    "sums_to_one": check_sums_to_one,
}


def check_rule(
    rule: str,
    tensor: str,
    values,
    tolerance: float = 0.0,
    axis: int = -1,
    columns: Sequence[int] | None = None,
) -> list[Violation]:
    """Dispatch by rule name (the names used in checkpoints and manifests)."""
    if rule not in _CHECKERS:
        raise ValueError(f"unknown rule {rule!r}; expected one of {', '.join(RULES)}")
    if rule in ("nonnegative", "positive"):
        return _CHECKERS[rule](tensor, values, tolerance=tolerance, columns=columns)
    if columns is not None:
        raise ValueError(f"rule {rule!r} does not take columns")
    return _CHECKERS[rule](tensor, values, tolerance=tolerance, axis=axis)


def check_all(items: Iterable[tuple[dict, object]]) -> list[Violation]:
    """Check many (spec, values) pairs; a spec is a dict with tensor, rule and optional tolerance/axis/columns."""
    violations: list[Violation] = []
    for spec, values in items:
        violations += check_rule(
            spec["rule"],
            spec["tensor"],
            values,
            tolerance=float(spec.get("tolerance", 0.0)),
            axis=int(spec.get("axis", -1)),
            columns=spec.get("columns"),
        )
    return violations
