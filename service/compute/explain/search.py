"""Recourse, bounds and curves for a model whose scores are proven monotone in each feature.

Monotone in feature f (others held) means the decision "score >= threshold" changes at most once
along f: the values that flip it form one interval reaching the end of f's range, so the smallest
change is found by bisection, and a box's lowest and highest scores are at two of its corners.

Recourse searches a grid: feature f's declared range [L, H] cut into M = 2^K - 1 steps of
h = (H - L) / M, K = ceil(log2(1/r + 1)) for the requested relative tolerance r, so h <= r (H - L)
and ceil(log2((H - L) / h)) = K. The candidates are the grid points beyond the instance's value in
the direction that moves the score toward the other decision: at most M of them, plus "none", so a
binary search needs at most K probes. The model computes in float32: the grid is its float32
values, and the stated tolerance is the widest gap between neighbours of that grid (h, or a
float32 rounding more where the range is narrow for its magnitude). Every feature of every instance advances one probe per
step, all in one batched model call. The answer v has been evaluated (it flips the decision) and so
has the point one step h before it (it does not; or the instance itself, within h of v).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from service.compute.explain.view import DECREASING, INCREASING, CountingScorer

MIN_TOLERANCE, MAX_TOLERANCE = 1e-6, 0.25


def steps_for(tolerance: float) -> int:
    """K: the probes per feature for relative tolerance r (K >= 3 for r <= 0.25)."""
    return max(1, math.ceil(math.log2(1.0 / tolerance + 1.0) - 1e-12))


def grid(low: float, high: float, steps: int) -> np.ndarray:
    """The 2^K grid points of [low, high] as the model sees them (float32 values, held in float64)."""
    count = 2 ** steps
    points = low + (high - low) * (np.arange(count, dtype=np.float64) / (count - 1))
    points[-1] = high
    return points.astype(np.float32).astype(np.float64)


def grid_step(low: float, high: float, steps: int) -> float:
    """The tolerance a search over this grid meets: its widest gap between neighbours, in the
    float32 values the model sees (h = (high - low) / (2^K - 1), or a float32 rounding more)."""
    if high <= low:
        return 0.0
    return float(np.max(np.diff(grid(low, high, steps))))


@dataclass
class Corners:
    low_scores: np.ndarray  # [N] the least score over each box
    high_scores: np.ndarray  # [N] the greatest
    low_at: np.ndarray  # [N, F] the corner reaching it
    high_at: np.ndarray


def corners(scorer: CountingScorer, lows: np.ndarray, highs: np.ndarray, directions: list[str]) -> Corners:
    """Exact score bounds over the boxes [lows, highs] (one box per instance): each feature at the
    end of its interval that lowers (raises) the score. A box that is a point costs one row."""
    decreasing = np.array([d == DECREASING for d in directions])
    low_at = np.where(decreasing, highs, lows)
    high_at = np.where(decreasing, lows, highs)
    point = np.all(low_at == high_at, axis=1)
    rows = np.concatenate([low_at, high_at[~point]])
    owners = np.concatenate([np.arange(len(lows)), np.flatnonzero(~point)])
    scores = scorer(rows, owners)
    low_scores = scores[: len(lows)]
    high_scores = low_scores.copy()
    high_scores[~point] = scores[len(lows):]
    return Corners(low_scores, high_scores, low_at, high_at)


@dataclass
class Recourse:
    value: float  # the feature's value that flips the decision (evaluated)
    before: float  # one grid step before it toward the instance, or the instance's own value (evaluated)
    score: float
    score_before: float
    tolerance: float  # the grid step h: |value - before| <= h
    probes: int


def recourse(scorer: CountingScorer, points: np.ndarray, scores: np.ndarray, decided: np.ndarray, threshold: float,
             directions: list[str], ranges: list[tuple[float, float] | None], steps: int
             ) -> list[dict[int, Recourse | None]]:
    """Per instance (rows of `points`, with their `scores` and decisions), per feature with a proven
    direction and a range that holds the instance's value: the Recourse, or None when no grid
    value of the range flips the decision. All searches advance together, one model call a step."""
    searches: list[_Search] = []
    answers: list[dict[int, Recourse | None]] = [{} for _ in range(len(points))]
    for f, direction in enumerate(directions):
        if direction not in (INCREASING, DECREASING) or ranges[f] is None:
            continue
        low, high = ranges[f]
        values = grid(low, high, steps) if high > low else None
        step = grid_step(low, high, steps)
        for i in range(len(points)):
            a = points[i, f]
            if not low <= a <= high:
                continue  # outside the declared range: not searched (the answer lists it)
            raise_score = not decided[i]
            upward = raise_score == (direction == INCREASING)
            if values is None:
                candidates = np.zeros(0)
            else:
                candidates = values[values > a] if upward else values[values < a][::-1]
            searches.append(_Search(i, f, candidates, step))
    active = [s for s in searches if s.open]
    while active:
        rows = points[[s.instance for s in active]]  # a copy: each row gets its own probe
        for row, search in zip(rows, active):
            row[search.feature] = search.candidates[search.middle - 1]
        probed = scorer(rows, np.array([s.instance for s in active]))
        for search, score in zip(active, probed):
            flipped = (score >= threshold) != decided[search.instance]
            search.record(score, flipped)
        active = [s for s in active if s.open]
    for search in searches:
        answers[search.instance][search.feature] = search.answer(points[search.instance, search.feature],
                                                                 scores[search.instance])
    return answers


class _Search:
    """Binary search for the first flipping candidate: lo (0: the instance) does not flip, hi
    (m + 1: none) does; candidates are 1-based."""

    def __init__(self, instance: int, feature: int, candidates: np.ndarray, step: float):
        self.instance, self.feature, self.candidates, self.step = instance, feature, candidates, step
        self.lo, self.hi = 0, len(candidates) + 1
        self.seen: dict[int, float] = {}

    @property
    def open(self) -> bool:
        return self.hi - self.lo > 1

    @property
    def middle(self) -> int:
        return (self.lo + self.hi) // 2

    def record(self, score: float, flipped: bool) -> None:
        middle = self.middle
        self.seen[middle] = float(score)
        if flipped:
            self.hi = middle
        else:
            self.lo = middle

    def answer(self, value: float, score: float) -> Recourse | None:
        if self.hi == len(self.candidates) + 1:
            return None
        before, score_before = ((value, score) if self.lo == 0
                                else (self.candidates[self.lo - 1], self.seen[self.lo]))
        return Recourse(float(self.candidates[self.hi - 1]), float(before), self.seen[self.hi], float(score_before),
                        self.step, len(self.seen))


def curves(scorer: CountingScorer, points: np.ndarray, ranges: list[tuple[float, float] | None], count: int
           ) -> list[dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Per instance and ranged feature: (values, scores) at `count` points of the range, others held."""
    blocks, owners, keys = [], [], []
    for f, span in enumerate(ranges):
        if span is None:
            continue
        values = np.linspace(span[0], span[1], count).astype(np.float32).astype(np.float64)
        for i in range(len(points)):
            block = np.repeat(points[i:i + 1], count, axis=0)
            block[:, f] = values
            blocks.append(block)
            owners.append(np.full(count, i))
            keys.append((i, f, values))
    result: list[dict[int, tuple[np.ndarray, np.ndarray]]] = [{} for _ in range(len(points))]
    if not blocks:
        return result
    scores = scorer(np.concatenate(blocks), np.concatenate(owners))
    for n, (i, f, values) in enumerate(keys):
        result[i][f] = (values, scores[n * count:(n + 1) * count])
    return result
