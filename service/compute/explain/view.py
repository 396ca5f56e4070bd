"""What a model kind shows the explainer: service.kinds' adapters build an ExplainView, so a new
kind (a regressor) plugs in by giving one, with no branch here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

INCREASING, DECREASING, FREE = "increasing", "decreasing", "free"


@dataclass(frozen=True)
class ExplainView:
    features: list[str]
    # Per feature, the direction the version's certificate PROVED ("free" for any feature it did
    # not: recourse and bounds need a proven direction).
    directions: list[str]
    outputs: list[str]  # the score columns (a classifier's labels)
    # Per output, the decision "score >= threshold"; None: the kind decides nothing by itself (a
    # request may still give a threshold).
    thresholds: list[float] | None
    ranges: dict[str, tuple[float, float]]  # declared ranges (the manifest's feature_ranges)
    score: Callable[[np.ndarray], np.ndarray]  # [N, F] float32 -> [N, outputs] scores (one model call)
    score_name: str = "probability"


@dataclass
class CountingScorer:
    """The view's scorer, counting model calls (engine invocations) and the rows they evaluated."""

    score: Callable[[np.ndarray], np.ndarray]
    column: int
    calls: int = 0
    rows: int = 0
    rows_by_instance: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __call__(self, x: np.ndarray, owners: np.ndarray) -> np.ndarray:
        """Scores (float64, the chosen output column) of the rows `x`; `owners[i]` is the instance
        row i is evaluated for (each row counts once against its instance's budget)."""
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.float64)
        out = np.asarray(self.score(np.ascontiguousarray(x, dtype=np.float32)))
        self.calls += 1
        self.rows += int(x.shape[0])
        np.add.at(self.rows_by_instance, owners, 1)
        return out.reshape(x.shape[0], -1)[:, self.column].astype(np.float64)
