"""Evaluation helpers in numpy only: ROC AUC by ranks, naive and exponential-smoothing forecasts."""

from __future__ import annotations

import numpy as np


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values` [N]; tied values share the average of their ranks."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # start of each run of equal values in sorted order
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], values.size]  # exclusive
    run_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U / (n_pos * n_neg)); NaN when a class is absent."""
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    assert labels.shape == scores.shape, f"labels {labels.shape} and scores {scores.shape} differ"
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = average_ranks(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def ses_levels(series: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Simple exponential smoothing levels for each alpha: [C, L] x [G] -> [G, C, L].

    level[0] = x[0]; level[t] = alpha * x[t] + (1 - alpha) * level[t-1]. level[t] uses x[<= t] only,
    so it is a causal forecast of x[t + h] for every horizon h.
    """
    series = np.asarray(series, dtype=np.float64)
    alphas = np.asarray(alphas, dtype=np.float64)[:, None]  # [G, 1]
    levels = np.empty((alphas.shape[0], *series.shape), dtype=np.float64)
    level = np.broadcast_to(series[:, 0], (alphas.shape[0], series.shape[0])).copy()  # [G, C]
    levels[:, :, 0] = level
    for t in range(1, series.shape[1]):
        level = alphas * series[:, t] + (1.0 - alphas) * level
        levels[:, :, t] = level
    return levels


def forecast_indices(length: int, n_train: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Origins t of forecasts whose target t + horizon lies in the training part / the held-out part."""
    origins = np.arange(length - horizon)
    targets = origins + horizon
    return origins[targets < n_train], origins[targets >= n_train]


def best_ses(
    series: np.ndarray, n_train: int, horizon: int, alphas: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """Grid-search the smoothing constant on training targets; returns (alpha, forecasts [C, L]).

    forecasts[:, t] predicts series[:, t + horizon].
    """
    if alphas is None:
        alphas = np.linspace(0.01, 1.0, 100)
    levels = ses_levels(series, alphas)  # [G, C, L]
    train_origins, _ = forecast_indices(series.shape[1], n_train, horizon)
    errors = levels[:, :, train_origins] - series[None, :, train_origins + horizon]
    best = int(np.argmin((errors**2).mean(axis=(1, 2))))
    return float(alphas[best]), levels[best]


# -- classifier metrics (numpy only) -------------------------------------------------------------


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve as average precision (scikit-learn's definition):
    sum over thresholds of (recall step) * precision; NaN without positives."""
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int(labels.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    # one point per distinct score (ties enter together)
    last_of_run = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    true_pos = np.cumsum(sorted_labels)[last_of_run]
    predicted = (np.arange(scores.size) + 1)[last_of_run]
    precision = true_pos / predicted
    recall = true_pos / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def brier_score(labels: np.ndarray, probabilities: np.ndarray) -> float:
    labels = np.asarray(labels, dtype=np.float64).ravel()
    probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
    return float(np.mean((probabilities - labels) ** 2))


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> float:
    """ECE with `bins` equal-width probability bins: sum over bins of |mean label - mean prob| * share."""
    labels = np.asarray(labels, dtype=np.float64).ravel()
    probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
    index = np.clip((probabilities * bins).astype(np.int64), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    gap = np.abs(np.bincount(index, labels, bins) - np.bincount(index, probabilities, bins))
    return float(gap.sum() / max(labels.size, 1)) if counts.sum() else float("nan")


def confusion(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, int]:
    """Counts at `threshold` (predicted positive when probability >= threshold)."""
    labels = np.asarray(labels).astype(bool).ravel()
    predicted = np.asarray(probabilities, dtype=np.float64).ravel() >= threshold
    return {
        "tp": int((predicted & labels).sum()),
        "fp": int((predicted & ~labels).sum()),
        "tn": int((~predicted & ~labels).sum()),
        "fn": int((~predicted & labels).sum()),
    }


THRESHOLD_CRITERIA = ("f1", "youden", "fpr:X")


def parse_threshold_criterion(text: str) -> tuple[str, float | None]:
    """'f1' | 'youden' | 'fpr:0.01' -> (name, target); ValueError naming the problem."""
    if text in ("f1", "youden"):
        return text, None
    if text.startswith("fpr:"):
        try:
            target = float(text[4:])
        except ValueError:
            raise ValueError(f"expected fpr:RATE with a number RATE, got {text!r}") from None
        if not 0.0 < target < 1.0:
            raise ValueError(f"the target false-positive rate must be in (0, 1), got {text!r}")
        return "fpr", target
    raise ValueError(f"unknown threshold criterion {text!r}; expected f1, youden or fpr:RATE (e.g. fpr:0.01)")


def choose_threshold(labels: np.ndarray, probabilities: np.ndarray, criterion: str) -> float:
    """The probability threshold that is best on these rows by `criterion` (see parse_threshold_criterion).

    Candidates are the distinct probabilities (predict positive when p >= t); f1 maximizes F1, youden
    maximizes TPR - FPR, fpr:R takes the lowest threshold whose false-positive rate is <= R. The
    result is clipped into (0, 1) as the model's config requires.
    """
    name, target = parse_threshold_criterion(criterion)
    labels = np.asarray(labels).astype(bool).ravel()
    probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    order = np.argsort(-probabilities, kind="mergesort")
    sorted_p, sorted_y = probabilities[order], labels[order]
    last_of_run = np.r_[sorted_p[1:] != sorted_p[:-1], True]
    candidates = sorted_p[last_of_run]  # descending
    tp = np.cumsum(sorted_y)[last_of_run].astype(np.float64)
    fp = np.cumsum(~sorted_y)[last_of_run].astype(np.float64)
    if name == "f1":
        score = 2 * tp / np.maximum(2 * tp + fp + (n_pos - tp), 1.0)
        best = int(np.argmax(score))
    elif name == "youden":
        best = int(np.argmax(tp / max(n_pos, 1) - fp / max(n_neg, 1)))
    else:
        allowed = np.flatnonzero(fp / max(n_neg, 1) <= target)
        if not allowed.size:  # even the top score lets too many negatives through: flag nothing seen
            return float(np.clip(np.nextafter(candidates[0], np.inf), 1e-6, 1.0 - 1e-6))
        best = int(allowed[-1])
    return float(np.clip(candidates[best], 1e-6, 1.0 - 1e-6))


# -- forecasting baselines (numpy only) ----------------------------------------------------------


def detect_season(
    series: np.ndarray, n_train: int, max_lag: int | None = None, min_acf: float = 0.2, min_prominence: float = 0.25
) -> int | None:
    """The season length of [C, L] series from the training part: the lag >= 2 with the highest
    autocorrelation (averaged over series) that is a local peak, at least `min_acf`, and rises at
    least `min_prominence` above the lowest autocorrelation at a shorter lag (a persistent series
    without a cycle has a slowly decaying autocorrelation with small bumps: no season); None if none."""
    part = np.asarray(series, dtype=np.float64)[:, :n_train]
    part = part - part.mean(axis=1, keepdims=True)
    denominator = (part**2).sum(axis=1)
    max_lag = max_lag or min(n_train // 3, 60)
    if max_lag < 3:
        return None
    acf = np.array([
        np.mean((part[:, lag:] * part[:, :-lag]).sum(axis=1) / np.where(denominator > 0, denominator, 1.0))
        for lag in range(1, max_lag + 2)
    ])  # acf[i] is lag i + 1
    best, best_value = None, min_acf
    for lag in range(2, max_lag + 1):
        value = acf[lag - 1]
        prominent = value - acf[: lag - 1].min() >= min_prominence
        if value >= best_value and value > acf[lag - 2] and value >= acf[lag] and prominent:
            best, best_value = lag, value
    return best


def seasonal_naive(series: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """forecasts[:, t] predicts series[:, t + horizon] by the value one or more whole seasons earlier
    (x[t + h - m * ceil(h / m)]); NaN where that lies before the start."""
    series = np.asarray(series, dtype=np.float64)
    lag = period * int(np.ceil(horizon / period)) - horizon  # how far before t the source value lies
    forecasts = np.full(series.shape, np.nan)
    forecasts[:, lag:] = series[:, : series.shape[1] - lag]
    return forecasts


def _ar_design(series: np.ndarray, origins: np.ndarray, order: int) -> np.ndarray:
    """[C * len(origins), order + 1]: x[t], x[t-1], ..., x[t-order+1], 1 for each series and origin."""
    columns = [series[:, origins - lag] for lag in range(order)]  # each [C, O]
    design = np.stack(columns, axis=-1).reshape(-1, order)
    return np.concatenate([design, np.ones((design.shape[0], 1))], axis=1)


def fit_ar(
    series: np.ndarray, n_train: int, horizon: int, order: int | None = None, max_order: int = 12
) -> tuple[int, np.ndarray]:
    """Direct AR(p) forecast of x[t + h] from x[t-p+1 .. t] and an intercept, by least squares on the
    training targets of (standardized) [C, L] series, pooled over series. The order, unless given, is
    the AIC-best of 1..max_order on the same rows. -> (order, forecasts [C, L], NaN where undefined)."""
    series = np.asarray(series, dtype=np.float64)
    length = series.shape[1]
    train_origins, _ = forecast_indices(length, n_train, horizon)
    orders = [order] if order is not None else list(range(1, max_order + 1))
    usable = [p for p in orders if (train_origins >= p - 1).sum() >= p + 2]
    if not usable:
        raise ValueError(f"too few training targets for an AR({orders[0]}) baseline at horizon {horizon}")
    first = max(usable) - 1  # the same rows for every candidate order
    rows = train_origins[train_origins >= first]
    target = series[:, rows + horizon].reshape(-1)
    best_order, best_aic, best_coef = usable[0], np.inf, None
    for p in usable:
        design = _ar_design(series, rows, p)
        coef, *_ = np.linalg.lstsq(design, target, rcond=None)
        sse = float(((design @ coef - target) ** 2).sum())
        aic = target.size * np.log(max(sse, 1e-300) / target.size) + 2 * (p + 1)
        if aic < best_aic:
            best_order, best_aic, best_coef = p, aic, coef
    forecasts = np.full(series.shape, np.nan)
    origins = np.arange(best_order - 1, length)
    forecasts[:, origins] = (_ar_design(series, origins, best_order) @ best_coef).reshape(series.shape[0], -1)
    return best_order, forecasts
