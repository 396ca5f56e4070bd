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
import math
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from contract.modes import check_mode
from models.alpha_search import search_alpha
from models.metrics import best_ses, detect_season, fit_ar, forecast_indices, seasonal_naive
from models.smoother import MonotoneSmoother

logger = logging.getLogger(__name__)

OBJECTIVES = ("forecast", "denoise")


@dataclass
class SmootherTrainOptions:
    objective: str = "forecast"
    horizon: int = 1  # forecast: predict x[t + horizon] from x[<= t]
    mode: str = "same"  # denoise: the edge mode the filter is trained in (forecast is always causal)
    epochs: int = 400  # full-batch Adam steps (exp-cumsum); the loss-evaluation budget (softmax)
    lr: float = 0.05  # Adam (exp-cumsum); the softmax search has no step size
    seed: int = 0
    train_fraction: float = 0.8
    progress: bool | None = None  # None: show a bar only on a terminal
    season: int | None = None  # seasonal-naive period; None: detected from the training part
    ar_order: int | None = None  # AR(p) baseline order; None: AIC-best up to 12
    names: list[str] | None = None  # series names, for the per-series detail

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
    losses: list[float] = field(default_factory=list)  # training loss per step (softmax: best so far)
    warnings: list[str] = field(default_factory=list)
    optimizer: dict = field(default_factory=dict)  # how the fit went: method, steps, converged, ...


def split_point(length: int, train_fraction: float) -> int:
    return int(np.floor(length * train_fraction))


def _standardize(series: np.ndarray, n_train: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (channel) mean and scale of the training part; constant rows get scale 1."""
    mean = series[:, :n_train].mean(axis=1)
    scale = series[:, :n_train].std(axis=1)
    scale = np.where(scale > 1e-12, scale, 1.0)
    return mean, scale


def convergence_warning(losses: list[float], tolerance: float = 1e-3) -> str | None:
    """A warning when the loss still fell by more than `tolerance` (relative) over the last tenth of
    the steps: the optimizer had not settled and more steps (or a larger learning rate) would help."""
    window = max(10, len(losses) // 10)
    if len(losses) <= window:
        return None
    drop = (losses[-window - 1] - losses[-1]) / max(abs(losses[-1]), 1e-12)
    if drop > tolerance:
        return (f"training has not converged: the loss still fell by {drop:.2%} over the last {window} of "
                f"{len(losses)} steps; use more --epochs or a larger --lr")
    return None


def _fit(model: MonotoneSmoother, loss_fn, options: SmootherTrainOptions, description: str) -> tuple[list[float], dict]:
    """Fit the raw parameters; -> (loss curve, optimizer facts incl. "converged" and a "warning" or None).

    softmax: one parameter, fitted by the deterministic bounded search of models.alpha_search (the
    naive limit included); exp-cumsum: K logits, full-batch Adam for `epochs` steps.
    """
    if model.config.param == "softmax":
        return _fit_alpha(model, loss_fn, options)
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
    warning = convergence_warning(losses)
    facts = {"method": "adam", "steps": len(losses), "lr": options.lr, "converged": warning is None,
             "warning": warning}
    return losses, facts


@torch.no_grad()
def _fit_alpha(model: MonotoneSmoother, loss_fn, options: SmootherTrainOptions) -> tuple[list[float], dict]:
    raw = model.raw_parameters()["kernel.original"]  # [1], log(alpha)

    def loss_at_alpha(alpha: float) -> float:
        raw.fill_(math.log(alpha))
        return float(loss_fn())

    found = search_alpha(loss_at_alpha, model.kernel_size, max_evaluations=options.epochs)
    raw.fill_(math.log(found.alpha))
    warning = None if found.converged else (f"training has not converged: {found.message}; use more --epochs "
                                            "(for --param softmax: the budget of loss evaluations)")
    facts = {"method": "bounded search over alpha (grid + Brent, models/alpha_search.py)",
             "steps": found.evaluations, "converged": found.converged, "warning": warning,
             "alpha": found.alpha, "ratio": found.ratio, "naive_limit": found.naive,
             "train_loss": found.loss, "naive_train_loss": found.naive_loss}
    return found.losses, facts


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
    standardized64 = torch.from_numpy((series - mean[:, None]) / scale[:, None])  # [C, L] float64
    standardized = standardized64.float()
    train_part = standardized[:, :n_train]

    def loss_fn() -> torch.Tensor:
        predictions = model(train_part, mode="causal")  # [C, n_train]; column t uses x[<= t]
        return F.mse_loss(predictions[:, : n_train - horizon], train_part[:, horizon:])

    losses, optimizer = _fit(model, loss_fn, options, "smoother (forecast)")

    with torch.no_grad():
        # evaluated in float64 (the float32 kernel, cast): a kernel that is the naive forecast gives
        # the naive forecast's MSE, not one float32 rounding away from it
        filtered = model(standardized64, mode="causal").numpy()  # [C, L]
    forecasts = filtered * scale[:, None] + mean[:, None]  # raw units; [:, t] predicts x[t + h]
    train_origins, test_origins = forecast_indices(length, n_train, horizon)

    def mse(predictions: np.ndarray, origins: np.ndarray) -> float:
        return float(((predictions[:, origins] - series[:, origins + horizon]) ** 2).mean())

    def per_series_mse(predictions: np.ndarray) -> np.ndarray:  # [C], raw units
        return ((predictions[:, test_origins] - series[:, test_origins + horizon]) ** 2).mean(axis=1)

    period = options.season or detect_season(series, n_train)
    ses_alpha, ses_forecasts = best_ses(series, n_train, horizon)
    ar_order, ar_standardized = fit_ar((series - mean[:, None]) / scale[:, None], n_train, horizon, options.ar_order)
    candidates = {
        "model": forecasts,
        "naive": series,
        "seasonal_naive": seasonal_naive(series, horizon, period or 1),
        "ar": ar_standardized * scale[:, None] + mean[:, None],
        "ses": ses_forecasts,
    }
    raw = {name: per_series_mse(values) for name, values in candidates.items()}  # [C] each
    # Several series: each MSE divided by its series' training variance, then averaged (scale-free),
    # so the series with the largest units does not decide. One series: raw units.
    units = "raw" if channels == 1 else "standardized (per-series MSE / training variance, averaged)"
    summary = {name: float(v[0]) if channels == 1 else float(np.mean(v / scale**2)) for name, v in raw.items()}
    names = options.names or [f"series {i}" for i in range(channels)]
    heldout = {
        "mse": summary["model"],
        "units": units,
        "baselines": {name: summary[name] for name in ("naive", "seasonal_naive", "ar", "ses")},
        "skill": {name: 1.0 - summary["model"] / summary[name] if summary[name] > 0 else None
                  for name in ("naive", "seasonal_naive", "ar", "ses")},
        "baseline_settings": {"season": period, "season_detected": options.season is None,
                              "ar_order": ar_order, "ses_alpha": ses_alpha},
        "n_targets": int(test_origins.size * channels),
        "horizon": horizon,
        "per_series": {
            name: {"mse": float(raw["model"][i]), "naive": float(raw["naive"][i]),
                   "seasonal_naive": float(raw["seasonal_naive"][i]), "ar": float(raw["ar"][i]),
                   "ses": float(raw["ses"][i])}
            for i, name in enumerate(names)
        },
    }
    warnings = []
    # a baseline that ties (the naive one, when the softmax search picked its naive limit) does not beat it
    beaten = sorted((summary[name], name) for name in heldout["baselines"]
                    if summary[name] < summary["model"] * (1.0 - 1e-9))
    if beaten:
        warnings.append(
            "a simple baseline beats the smoother on the held-out targets: "
            + ", ".join(f"{name} {value:.6g} vs {summary['model']:.6g}" for value, name in beaten)
        )
    if period is None:
        heldout["baseline_settings"]["note"] = "no season detected: seasonal_naive is the naive forecast"
    if optimizer["warning"]:
        warnings.append(optimizer["warning"])
    for message in warnings:
        logger.warning(message)
    metrics = {
        "heldout": heldout,
        "warnings": warnings,
        "heldout_mse": summary["model"],
        "naive_mse": summary["naive"],
        "seasonal_naive_mse": summary["seasonal_naive"],
        "ar_mse": summary["ar"],
        "ses_mse": summary["ses"],
        "ses_alpha": ses_alpha,
        "train_mse": mse(forecasts, train_origins),
        "final_loss": losses[-1],
        "optimizer": optimizer,
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
    return SmootherResult(metrics=metrics, scaling=scaling, split=split, losses=losses, warnings=warnings,
                          optimizer=optimizer)


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

    losses, optimizer = _fit(model, loss_fn, options, "smoother (denoise)")

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
        "optimizer": optimizer,
    }
    metrics["skill_vs_identity"] = 1.0 - metrics["heldout_mse"] / metrics["identity_mse"]
    metrics["heldout"] = {"mse": metrics["heldout_mse"], "units": "raw", "baselines": {"identity": metrics["identity_mse"]}}
    warnings = [w for w in [optimizer["warning"]] if w]
    if metrics["identity_mse"] < metrics["heldout_mse"]:
        warnings.append(f"the noisy input itself ({metrics['identity_mse']:.6g}) beats the smoother ({metrics['heldout_mse']:.6g})")
    for message in warnings:
        logger.warning(message)
    metrics["warnings"] = warnings
    split = {"train_fraction": options.train_fraction, "n_train": n_train, "n_heldout": int(length - n_train)}
    scaling = {"mean": mean.tolist(), "scale": scale.tolist()}
    return SmootherResult(metrics=metrics, scaling=scaling, split=split, losses=losses, warnings=warnings,
                          optimizer=optimizer)
