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
