"""One /explain request's computation, free of web-framework types: checked instances in, the
answer's JSON-ready dict out. The model is reached only through the kind's ExplainView."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.base.errors import BadRequestError
from service.compute.explain import search
from service.compute.explain.additive import Additivity
from service.compute.explain.view import DECREASING, INCREASING, CountingScorer, ExplainView

DEFAULT_TOLERANCE = 1e-3
MAX_CURVE_POINTS = 1025


@dataclass
class ExplainOptions:
    output: int  # the score column explained (a label)
    threshold: float | None  # the decision: score >= threshold (None: no decision; no recourse)
    tolerance: float  # relative to each feature's range
    curve_points: int  # 0: no curves
    ranges: list[tuple[float, float] | None]  # per feature (declared, or the request's)


@dataclass
class Instances:
    lows: np.ndarray  # [N, F] float64 (float32 values)
    highs: np.ndarray
    outside: list[list[str]]  # per instance, the features whose value lies outside its range


def proven(direction: str) -> bool:
    return direction in (INCREASING, DECREASING)


def explain(view: ExplainView, additivity: Additivity, instances: Instances, options: ExplainOptions) -> dict[str, Any]:
    scorer = CountingScorer(view.score, options.output, rows_by_instance=np.zeros(len(instances.lows), dtype=np.int64))
    steps = search.steps_for(options.tolerance)
    directions = view.directions
    box = search.corners(scorer, instances.lows, instances.highs, directions)
    points = np.all(instances.lows == instances.highs, axis=1)
    threshold = options.threshold
    answers: list[dict[str, Any]] = []
    point_rows = np.flatnonzero(points)
    recourse: list[dict[int, search.Recourse | None]] = [{} for _ in range(len(points))]
    if threshold is not None and point_rows.size:
        decided = box.low_scores[point_rows] >= threshold
        found = search.recourse(scorer, instances.lows[point_rows], box.low_scores[point_rows], decided, threshold,
                                directions, options.ranges, steps)
        for row, item in zip(point_rows, found):
            recourse[row] = item
    budget_rows = scorer.rows_by_instance.copy()  # recourse and bounds: what the guarantee counts
    budget_calls = scorer.calls
    curves = (search.curves(scorer, instances.lows[point_rows], options.ranges, options.curve_points)
              if options.curve_points and point_rows.size else [])
    curve_of = dict(zip(point_rows.tolist(), curves))
    contributions, disagreement = _contributions(additivity, instances.lows, points, box.low_scores, options.output,
                                                 view.features)
    searched = [f for f, d in enumerate(directions) if proven(d) and options.ranges[f] is not None]
    bound = 2 + len(searched) * steps
    names = view.features
    for i in range(len(points)):
        item: dict[str, Any] = {}
        if points[i]:
            item["score"] = float(box.low_scores[i])
            if threshold is not None:
                item["decision"] = bool(box.low_scores[i] >= threshold)
        item["bounds"] = _bounds_json(box, i, names, threshold)
        if threshold is not None and points[i]:
            item["recourse"] = {names[f]: _recourse_json(recourse[i].get(f), f, directions) for f in searched
                                if names[f] not in instances.outside[i]}
        if instances.outside[i]:
            item["outside_range"] = instances.outside[i]
        item["contributions"] = contributions[i]
        if points[i] and options.curve_points:
            item["curves"] = {names[f]: {"values": values.tolist(), "scores": scores.tolist(),
                                         "monotone": directions[f] if proven(directions[f]) else None}
                              for f, (values, scores) in curve_of[i].items()}
        item["model_calls"] = {"rows": int(budget_rows[i]), "bound": bound}
        answers.append(item)
    additive = {"additive": additivity.form is not None and disagreement is None,
                "reason": disagreement or additivity.reason or None}
    return {"explanations": answers, "additive": additive,
            "model_calls": {"calls": budget_calls, "rows": int(budget_rows.sum()),
                            "bound_per_instance": bound, "steps": steps,
                            "curve_calls": scorer.calls - budget_calls,
                            "curve_rows": int(scorer.rows_by_instance.sum() - budget_rows.sum())},
            "tolerance": {"relative": options.tolerance,
                          "absolute": {names[f]: search.grid_step(span[0], span[1], steps)
                                       for f, span in enumerate(options.ranges) if span is not None}}}


def _bounds_json(box: search.Corners, i: int, names: list[str], threshold: float | None) -> dict[str, Any]:
    low, high = float(box.low_scores[i]), float(box.high_scores[i])
    bounds: dict[str, Any] = {"low": low, "high": high, "low_at": dict(zip(names, box.low_at[i].tolist())),
                              "high_at": dict(zip(names, box.high_at[i].tolist()))}
    if threshold is not None:  # certain: every point of the box decides alike
        bounds["certain"] = bool(low >= threshold or high < threshold)
        bounds["decision"] = True if low >= threshold else False if high < threshold else None
    return bounds


def _recourse_json(found: search.Recourse | None, feature: int, directions: list[str]) -> dict[str, Any] | None:
    if found is None:
        return None
    return {"value": found.value, "before": found.before, "score": found.score, "score_before": found.score_before,
            "tolerance": found.tolerance, "probes": found.probes,
            "change": "raise" if found.value > found.before else "lower"}


def _contributions(additivity: Additivity, x: np.ndarray, points: np.ndarray, scores: np.ndarray, output: int,
                   names: list[str]) -> tuple[list[dict[str, Any] | None], str | None]:
    """Per instance (points only), the exact per-feature terms and bias of the output's value."""
    form = additivity.form
    if form is None:
        return [None] * len(x), None
    parts, bias = form.contributions(x)
    answers: list[dict[str, Any] | None] = []
    for i in range(len(x)):
        if not points[i]:
            answers.append(None)
            continue
        terms = parts[i, :, output]
        value = float(bias[output] + terms.sum())
        answers.append({"bias": float(bias[output]), "terms": dict(zip(names, terms.tolist())), "value": value,
                        "link": form.link})
    # the form must reproduce the engine's scores: a misread graph gives no contributions at all
    check = form.score(x[points])[:, output] if points.any() else np.zeros(0)
    if check.size and not np.allclose(check, scores[points], atol=1e-4, rtol=1e-4):
        worst = float(np.max(np.abs(check - scores[points])))
        return [None] * len(x), f"the additive form disagrees with the served model by {worst:.3g}"
    return answers, None


def parse_tolerance(value: Any) -> float:
    if value is None:
        return DEFAULT_TOLERANCE
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not search.MIN_TOLERANCE <= value <= search.MAX_TOLERANCE):
        raise BadRequestError(f"'tolerance' is a fraction of each feature's range between {search.MIN_TOLERANCE:g} and "
                              f"{search.MAX_TOLERANCE:g}, got {str(value)[:40]}", field="tolerance")
    return float(value)


def parse_curves(value: Any) -> int:
    if value is None or value is False:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= MAX_CURVE_POINTS:
        raise BadRequestError(f"'curves' is the number of points per feature, 2 to {MAX_CURVE_POINTS}, got "
                              f"{str(value)[:40]}", field="curves")
    return value
