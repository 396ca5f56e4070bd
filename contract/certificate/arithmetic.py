"""The certificate's arithmetic: the sign lattice of a tensor's dependence on one feature
(Independent, Columns, Uniform, Unknown; join, flip, collapse) and the interval bounds of a float
tensor for finite input (products, linear maps, monotone images).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

PLUS, MINUS = 1, -1
SIGN_WORDS = {PLUS: "non-decreasing", MINUS: "non-increasing"}


# --------------------------------------------------------------------------------------------
# The abstract domain
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Independent:
    def __str__(self) -> str:
        return "independent"


INDEPENDENT = Independent()


@dataclass(frozen=True)
class Uniform:
    sign: int
    flips: tuple[str, ...] = ()  # nodes that reversed the direction on the way here (diagnostics)

    def __str__(self) -> str:
        return f"{SIGN_WORDS[self.sign]} everywhere"


@dataclass(frozen=True)
class Columns:
    width: int
    signs: tuple[tuple[int, int], ...]  # sorted (column, sign) pairs; other columns independent
    flips: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "column-wise " + ", ".join(f"[{c}] {SIGN_WORDS[s]}" for c, s in self.signs)


@dataclass(frozen=True)
class Unknown:
    node: str  # the node that broke the proof
    reason: str

    def __str__(self) -> str:
        return f"unknown (lost at node {self.node}: {self.reason})"


Value = Independent | Uniform | Columns | Unknown


def _columns(width: int, signs: Mapping[int, int], flips: tuple[str, ...]) -> Value:
    """Normalize: no dependent column -> independent; every column with one sign -> uniform."""
    if not signs:
        return INDEPENDENT
    distinct = set(signs.values())
    if len(signs) == width and len(distinct) == 1:
        return Uniform(distinct.pop(), flips)
    return Columns(width, tuple(sorted(signs.items())), flips)


def _add_flip(flips: tuple[str, ...], node: str) -> tuple[str, ...]:
    return flips if node in flips else flips + (node,)


def collapse(value: Value, node: str, why: str) -> Value:
    """Weaken Columns to Uniform (sound when all signs agree), for ops that move data across columns."""
    if not isinstance(value, Columns):
        return value
    distinct = {s for _, s in value.signs}
    if len(distinct) == 1:
        return Uniform(distinct.pop(), value.flips)
    return Unknown(node, f"columns with opposite directions are mixed by {why}")


def flip(value: Value, node: str) -> Value:
    if isinstance(value, Uniform):
        return Uniform(-value.sign, _add_flip(value.flips, node))
    if isinstance(value, Columns):
        return Columns(value.width, tuple((c, -s) for c, s in value.signs), _add_flip(value.flips, node))
    return value


def join(values: Iterable[Value], node: str, what: str = "adds") -> Value:
    """The abstract value of a sum (or max/min/mean) of terms: directions must agree."""
    result: Value = INDEPENDENT
    for value in values:
        if isinstance(value, Unknown):
            return value
        if isinstance(value, Independent):
            continue
        if isinstance(result, Independent):
            result = value
            continue
        if isinstance(result, Columns) and isinstance(value, Columns) and result.width == value.width:
            merged = dict(result.signs)
            for column, sign in value.signs:
                if merged.get(column, sign) != sign:
                    return Unknown(node, f"{what} terms that move in opposite directions (column {column})")
                merged[column] = sign
            result = _columns(result.width, merged, result.flips + tuple(f for f in value.flips if f not in result.flips))
            continue
        left, right = collapse(result, node, what), collapse(value, node, what)
        if isinstance(left, Unknown):
            return left
        if isinstance(right, Unknown):
            return right
        assert isinstance(left, Uniform) and isinstance(right, Uniform)
        if left.sign != right.sign:
            return Unknown(node, f"{what} a {SIGN_WORDS[left.sign]} term and a {SIGN_WORDS[right.sign]} term")
        result = Uniform(left.sign, left.flips + tuple(f for f in right.flips if f not in left.flips))
    return result


def _sign_class(values: np.ndarray) -> int | None:
    """+1 if all >= 0, -1 if all <= 0, 0 if all zero, None if both signs occur (or non-finite)."""
    if values.size == 0:
        return 0
    if not np.all(np.isfinite(values)):
        return None
    positive, negative = bool(np.any(values > 0)), bool(np.any(values < 0))
    if positive and negative:
        return None
    return PLUS if positive else (MINUS if negative else 0)


def _first_index(condition: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(condition)[0])


# --------------------------------------------------------------------------------------------
# Interval bounds (for NaN/Inf safety: Div, Log, Sqrt, Pow)
# --------------------------------------------------------------------------------------------
INF = float("inf")
FULL = (-INF, INF)
NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
_HUGE = 1e300  # stands for +-inf when evaluating a monotone function at an unbounded end
DOMAIN_SENSITIVE = {"Div", "Log", "Sqrt", "Pow", "Exp", "Cast"}
EXACT_UNARY = {"Relu", "Identity", "Cast", "Dropout", "Floor", "Ceil", "Round", "ThresholdedRelu"}
EXP_LIMIT = 88.0  # exp(x) overflows float32 just above 88.72
FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT16_MAX = float(np.finfo(np.float16).max)


def _array_range(array: np.ndarray) -> tuple[float, float]:
    if array.dtype.kind not in "fiub" or array.size == 0:
        return FULL
    values = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        return FULL
    return float(values.min()), float(values.max())


def _widen(lo: float, hi: float) -> tuple[float, float]:
    """Float32 rounding (and underflow to 0) may move a value past an exact bound: widen a little."""
    if np.isnan(lo):
        lo = -INF
    if np.isnan(hi):
        hi = INF
    return lo - 1e-6 * abs(lo) - 1e-30, hi + 1e-6 * abs(hi) + 1e-30


def _monotone_image(function, lo: float, hi: float, exact: bool = False) -> tuple[float, float]:
    """[f(lo), f(hi)] for a non-decreasing f, its limits standing in for the unbounded ends.
    exact: f is computed exactly in float32 too (max(x, 0), a copy...), so no widening."""
    ends = np.clip(np.array([lo, hi], dtype=np.float64), -_HUGE, _HUGE)
    with np.errstate(all="ignore"):
        values = np.asarray(function(ends), dtype=np.float64)
    values = np.where(values >= _HUGE * 0.1, INF, np.where(values <= -_HUGE * 0.1, -INF, values))
    return (float(values[0]), float(values[1])) if exact else _widen(float(values[0]), float(values[1]))


def _products(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """Bounds of x * y for x in a, y in b (0 times an unbounded end is 0: the values are finite)."""
    corners = []
    for x in a:
        for y in b:
            corners.append(0.0 if x == 0 or y == 0 else x * y)
    return _widen(min(corners), max(corners))


def _linear(x: tuple[float, float], weight: np.ndarray) -> tuple[float, float]:
    """Bounds of sum_i W[i, j] x_i over every output column j, x_i in x. weight: [..., n, m]."""
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim == 1:
        w = w[:, None]
    w = w.reshape(-1, *w.shape[-2:])
    lo, hi = x
    with np.errstate(all="ignore"):
        at_lo = np.where(w == 0, 0.0, w * lo)
        at_hi = np.where(w == 0, 0.0, w * hi)
        low = np.minimum(at_lo, at_hi).sum(axis=-2)
        high = np.maximum(at_lo, at_hi).sum(axis=-2)
    return _widen(float(np.min(low)), float(np.max(high)))


def _union(ranges: Sequence[tuple[float, float]]) -> tuple[float, float]:
    return (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else FULL


def _unary_function(op: str, attrs: dict):
    alpha = attrs.get("alpha")
    if op == "Relu":
        return lambda x: np.maximum(x, 0.0)
    if op == "LeakyRelu":
        a = float(0.01 if alpha is None else alpha)
        return lambda x: np.where(x < 0, a * x, x)
    if op == "Sigmoid":
        return lambda x: 1.0 / (1.0 + np.exp(-x))
    if op == "Tanh":
        return np.tanh
    if op == "Softplus":
        return lambda x: np.logaddexp(0.0, x)
    if op == "Elu":
        a = float(1.0 if alpha is None else alpha)
        return lambda x: np.where(x < 0, a * np.expm1(np.minimum(x, 0.0)), x)
    if op == "Selu":
        a, g = float(attrs.get("alpha", 1.67326319217681884765625)), float(attrs.get("gamma", 1.05070102214813232421875))
        return lambda x: g * np.where(x <= 0, a * np.expm1(np.minimum(x, 0.0)), x)
    if op == "Celu":
        a = float(1.0 if alpha is None else alpha)
        return lambda x: np.maximum(0.0, x) + np.minimum(0.0, a * np.expm1(np.minimum(x, 0.0) / a))
    if op == "HardSigmoid":
        a, b = float(0.2 if alpha is None else alpha), float(attrs.get("beta", 0.5))
        return lambda x: np.clip(a * x + b, 0.0, 1.0)
    if op == "Softsign":
        return lambda x: x / (1.0 + np.abs(x))
    if op == "Erf":
        import math

        return np.vectorize(math.erf)
    if op == "ThresholdedRelu":
        a = float(1.0 if alpha is None else alpha)
        return lambda x: np.where(x > a, x, 0.0)
    if op == "Exp":
        return np.exp
    if op in ("Identity", "Cast", "Dropout"):
        return lambda x: x
    if op == "Floor":
        return np.floor
    if op == "Ceil":
        return np.ceil
    if op == "Round":
        return np.round
    return None
