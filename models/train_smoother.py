"""Training a MonotoneSmoother: the `forecast` and `denoise` objectives.

Series are standardized per column with the mean/std of their training part. A normalized kernel
(sums to 1) commutes with any affine map of the signal, replicate padding included, so the kernel
learned on standardized series is exactly the kernel for the raw series: nothing to fold.

- forecast: the causal filter output at t predicts x[t + horizon] (self-supervised). Trained on the
  first `train_fraction` of each series, evaluated on the forecasts whose target lies in the rest,
  against the naive last-value forecast and simple exponential smoothing (SES) whose smoothing
  constant is grid-searched on the training part.
- denoise: the filter maps a noisy series to a clean target series, in the chosen edge mode.
  Trained on the first rows, evaluated on the rest against the identity (the noisy series itself).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from contract.modes import check_mode
from models.metrics import best_ses, forecast_indices
from models.smoother import MonotoneSmoother

logger = logging.getLogger(__name__)

OBJECTIVES = ("forecast", "denoise")


@dataclass
class SmootherTrainOptions:
    objective: str = "forecast"
    horizon: int = 1  # forecast: predict x[t + horizon] from x[<= t]
    mode: str = "same"  # denoise: the edge mode the filter is trained in (forecast is always causal)
    epochs: int = 400  # full-batch Adam steps
    lr: float = 0.05
    seed: int = 0
    train_fraction: float = 0.8
    progress: bool | None = None  # None: show a bar only on a terminal

    def __post_init__(self) -> None:
        assert self.objective in OBJECTIVES, f"objective must be one of {OBJECTIVES}, got {self.objective!r}"
        assert self.horizon >= 1, f"horizon must be >= 1, got {self.horizon}"
        check_mode(self.mode)
        assert self.epochs >= 1 and self.lr > 0, f"need epochs >= 1 and lr > 0, got {self.epochs}, {self.lr}"
        assert 0.0 < self.train_fraction < 1.0, f"train_fraction must be in (0, 1), got {self.train_fraction}"


@dataclass
class SmootherResult:
    metrics: dict[str, float]
    scaling: dict[str, list[float]]  # per input column: mean and scale of the training part
    split: dict[str, int | float]
    losses: list[float] = field(default_factory=list)  # training loss per step


def split_point(length: int, train_fraction: float) -> int:
    return int(np.floor(length * train_fraction))


def _standardize(series: np.ndarray, n_train: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (channel) mean and scale of the training part; constant rows get scale 1."""
    mean = series[:, :n_train].mean(axis=1)
    scale = series[:, :n_train].std(axis=1)
    scale = np.where(scale > 1e-12, scale, 1.0)
    return mean, scale


def _fit(model: MonotoneSmoother, loss_fn, options: SmootherTrainOptions, description: str) -> list[float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
    show = sys.stderr.isatty() if options.progress is None else options.progress
    losses: list[float] = []
    bar = tqdm(range(options.epochs), desc=description, disable=not show, leave=False)
    for step in bar:
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.5f}")
    return losses


def train_forecast(model: MonotoneSmoother, series: np.ndarray, options: SmootherTrainOptions) -> SmootherResult:
    """series: [C, L] float64 (C series of one length). Trains `model` in place."""
    channels, length = series.shape
    horizon = options.horizon
    n_train = split_point(length, options.train_fraction)
    assert horizon < n_train < length, (
        f"a series of {length} samples is too short to forecast {horizon} step(s) ahead with a "
        f"{options.train_fraction:.0%} training part"
    )
    mean, scale = _standardize(series, n_train)
    standardized = torch.from_numpy((series - mean[:, None]) / scale[:, None]).float()  # [C, L]
    train_part = standardized[:, :n_train]

    def loss_fn() -> torch.Tensor:
        predictions = model(train_part, mode="causal")  # [C, n_train]; column t uses x[<= t]
        return F.mse_loss(predictions[:, : n_train - horizon], train_part[:, horizon:])

    losses = _fit(model, loss_fn, options, "smoother (forecast)")

    with torch.no_grad():
        filtered = model(standardized, mode="causal").double().numpy()  # [C, L]
    forecasts = filtered * scale[:, None] + mean[:, None]  # raw units; [:, t] predicts x[t + h]
    train_origins, test_origins = forecast_indices(length, n_train, horizon)

    def mse(predictions: np.ndarray, origins: np.ndarray) -> float:
        return float(((predictions[:, origins] - series[:, origins + horizon]) ** 2).mean())

    ses_alpha, ses_forecasts = best_ses(series, n_train, horizon)
    metrics = {
        "heldout_mse": mse(forecasts, test_origins),
        "naive_mse": mse(series, test_origins),
        "ses_mse": mse(ses_forecasts, test_origins),
        "ses_alpha": ses_alpha,
        "train_mse": mse(forecasts, train_origins),
        "final_loss": losses[-1],
    }
    metrics["skill_vs_naive"] = 1.0 - metrics["heldout_mse"] / metrics["naive_mse"]
    metrics["skill_vs_ses"] = 1.0 - metrics["heldout_mse"] / metrics["ses_mse"]
    split = {
        "train_fraction": options.train_fraction,
        "n_train": n_train,
        "n_heldout_targets": int(test_origins.size * channels),
        "horizon": horizon,
    }
    scaling = {"mean": mean.tolist(), "scale": scale.tolist()}
    return SmootherResult(metrics=metrics, scaling=scaling, split=split, losses=losses)


def train_denoise(
    model: MonotoneSmoother, noisy: np.ndarray, clean: np.ndarray, options: SmootherTrainOptions
) -> SmootherResult:
    """noisy, clean: [C, L] float64. The filter in `options.mode` maps noisy -> clean."""
    assert noisy.shape == clean.shape, f"noisy {noisy.shape} and clean {clean.shape} differ"
    mode = options.mode
    length = noisy.shape[1]
    n_train = split_point(length, options.train_fraction)
    assert n_train >= model.kernel_size and n_train < length, (
        f"a series of {length} samples leaves no training part of >= {model.kernel_size} samples and a held-out part"
    )
    # One affine map for input and target, so the raw-unit kernel is the standardized-unit kernel.
    mean, scale = _standardize(noisy, n_train)
    x = torch.from_numpy((noisy - mean[:, None]) / scale[:, None]).float()
    y = torch.from_numpy((clean - mean[:, None]) / scale[:, None]).float()
    x_train = x[:, :n_train]
    offset = model.kernel_size - 1 if mode == "valid" else 0  # valid output[i] sits at input i + K - 1

    def loss_fn() -> torch.Tensor:
        out = model(x_train, mode=mode)
        return F.mse_loss(out, y[:, offset : offset + out.shape[-1]])

    losses = _fit(model, loss_fn, options, "smoother (denoise)")

    with torch.no_grad():
        out = model(x, mode=mode).double().numpy() * scale[:, None] + mean[:, None]
    positions = np.arange(out.shape[1]) + offset
    held_out = positions >= n_train

    def mse(estimate: np.ndarray, where: np.ndarray) -> float:
        return float(((estimate[:, where] - clean[:, positions[where]]) ** 2).mean())

    metrics = {
        "heldout_mse": mse(out, held_out),
        "identity_mse": float(((noisy[:, n_train:] - clean[:, n_train:]) ** 2).mean()),
        "train_mse": mse(out, ~held_out),
        "final_loss": losses[-1],
    }
    metrics["skill_vs_identity"] = 1.0 - metrics["heldout_mse"] / metrics["identity_mse"]
    split = {"train_fraction": options.train_fraction, "n_train": n_train, "n_heldout": int(length - n_train)}
    scaling = {"mean": mean.tolist(), "scale": scale.tolist()}
    return SmootherResult(metrics=metrics, scaling=scaling, split=split, losses=losses)
