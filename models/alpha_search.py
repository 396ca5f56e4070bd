"""Fitting the softmax smoother's one parameter, alpha, by a bounded 1-D search (no learning rate).

The softmax kernel (models.constraints.SoftmaxKernel) is a truncated geometric kernel: adjacent
taps differ by the ratio q = exp(-2 alpha / (K - 1)). The search runs over q in the closed interval
[0, 1], which holds both limits of the family: q = 1 is the flat kernel (alpha = 0, a moving
average) and q = 0 the naive last-value forecast (alpha -> inf, represented exactly by
SoftmaxKernel.naive_alpha). Every tap is a polynomial in q divided by their sum, so the loss is a
smooth function of q on the whole interval, where it is not of alpha (alpha runs off to infinity).

1. A grid of `grid` values of q, both ends included: the naive and flat kernels are evaluated
   exactly and compete with every other candidate.
2. Brent's bounded method (scipy.optimize.minimize_scalar) between the grid neighbours of the best
   grid point, to `xatol` in q.
3. The best point seen wins (a grid end beats the interior when it is better).

Deterministic (no random start, no step size): the same loss gives the same alpha. Converged means
Brent narrowed its bracket to the tolerance within the evaluation budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.optimize import minimize_scalar

from models.constraints import SoftmaxKernel

ALPHA_MIN = 1e-6  # q = 1: the flat kernel, up to 1e-6 (log(alpha) stays finite)


@dataclass
class AlphaSearchResult:
    alpha: float
    ratio: float  # q = exp(-2 alpha / (K - 1)); 0 for the naive kernel
    loss: float
    evaluations: int
    converged: bool
    naive: bool  # the chosen kernel is the naive last-value forecast (the q = 0 end)
    naive_loss: float  # the loss of that end, evaluated exactly
    losses: list[float] = field(default_factory=list)  # the best loss so far after each evaluation
    message: str = ""


def alpha_for_ratio(ratio: float, kernel_size: int) -> float:
    """q in [0, 1] -> alpha in [ALPHA_MIN, naive_alpha(K)] (q = 0: the naive kernel)."""
    naive = SoftmaxKernel.naive_alpha(kernel_size)
    if ratio <= 0.0:
        return naive
    return float(min(max(-(kernel_size - 1) / 2.0 * math.log(min(ratio, 1.0)), ALPHA_MIN), naive))


def ratio_for_alpha(alpha: float, kernel_size: int) -> float:
    if alpha >= SoftmaxKernel.naive_alpha(kernel_size):
        return 0.0
    return math.exp(-2.0 * alpha / max(kernel_size - 1, 1))


def search_alpha(
    loss_at_alpha: Callable[[float], float],
    kernel_size: int,
    max_evaluations: int = 400,
    grid: int = 33,
    xatol: float = 1e-5,
) -> AlphaSearchResult:
    """Minimize `loss_at_alpha` over the closed softmax family; at most `max_evaluations` calls."""
    assert kernel_size >= 1 and max_evaluations >= 1 and grid >= 3, (kernel_size, max_evaluations, grid)
    seen: dict[float, float] = {}  # q -> loss
    best_so_far: list[float] = []

    def loss(q: float) -> float:
        q = float(min(max(q, 0.0), 1.0))
        if q not in seen:
            value = float(loss_at_alpha(alpha_for_ratio(q, kernel_size)))
            seen[q] = value if math.isfinite(value) else math.inf
            best_so_far.append(min(seen[q], best_so_far[-1]) if best_so_far else seen[q])
        return seen[q]

    if kernel_size == 1:  # one tap: every alpha gives the same kernel [1]
        value = loss(0.0)
        return AlphaSearchResult(SoftmaxKernel.naive_alpha(1), 0.0, value, 1, True, True, value, best_so_far,
                                 "one tap: nothing to fit")
    points = np.linspace(0.0, 1.0, min(grid, max_evaluations))
    values = [loss(q) for q in points]
    naive_loss = seen[0.0]
    best = int(np.argmin(values))
    remaining = max_evaluations - len(seen)
    converged, message = False, ""
    if remaining >= 1:
        low, high = points[max(best - 1, 0)], points[min(best + 1, len(points) - 1)]
        found = minimize_scalar(loss, bounds=(low, high), method="bounded",
                                options={"xatol": xatol, "maxiter": remaining})
        converged = bool(found.success)
        if not converged:
            message = (f"the bounded search over alpha stopped after {len(seen)} loss evaluations with its "
                       f"bracket in q = exp(-2 alpha / (K - 1)) still wider than {xatol:g}")
    else:
        message = f"a budget of {max_evaluations} loss evaluations covers only the {len(points)}-point grid"
    q_best = min(seen, key=lambda q: (seen[q], q))  # ties: the smaller q (the larger alpha)
    return AlphaSearchResult(
        alpha=alpha_for_ratio(q_best, kernel_size), ratio=q_best, loss=seen[q_best], evaluations=len(seen),
        converged=converged, naive=q_best == 0.0, naive_loss=naive_loss, losses=best_so_far, message=message,
    )
