"""Training a MonotoneClassifier: weighted BCE, a seeded train/validation/test split, early stopping.

The validation split drives early stopping (the best state by validation loss is kept); the test
split is touched once, at the end, for the reported held-out loss, accuracy and ROC AUC.
"""

from __future__ import annotations

import copy
import logging
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from models.classifier import MonotoneClassifier
from models.data import split_indices
from models.metrics import (
    average_precision,
    brier_score,
    choose_threshold,
    confusion,
    expected_calibration_error,
    parse_threshold_criterion,
    roc_auc,
)

logger = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "sgd")
POS_WEIGHTS = ("auto", "none")  # or a positive number
CALIBRATIONS = ("none", "platt", "temperature")
__all__ = ["split_indices"]  # re-exported: it lives in models.data (torch-free, shared with the attack)


@dataclass
class ClassifierTrainOptions:
    epochs: int = 150  # upper bound; early stopping usually ends sooner
    lr: float = 0.01
    optimizer: str = "adam"  # "adam" | "sgd" (momentum 0.9)
    weight_decay: float = 0.0
    pos_weight: str | float = "auto"  # "auto": negatives / positives per label (training split); "none"; a number
    batch_size: int = 128
    patience: int = 15  # epochs without a better validation loss before stopping
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.25
    progress: bool | None = None  # None: show a bar only on a terminal
    calibration: str = "none"  # "platt" | "temperature": fitted on the validation split (model.config.calibrated)
    threshold_criterion: str | None = None  # "f1" | "youden" | "fpr:R": threshold chosen on validation

    def __post_init__(self) -> None:
        assert self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"
        assert self.pos_weight in POS_WEIGHTS or (
            isinstance(self.pos_weight, (int, float)) and 0 < self.pos_weight < float("inf")
        ), f"pos_weight must be one of {POS_WEIGHTS} or a positive number, got {self.pos_weight!r}"
        assert self.calibration in CALIBRATIONS, f"calibration must be one of {CALIBRATIONS}, got {self.calibration!r}"
        if self.threshold_criterion is not None:
            parse_threshold_criterion(self.threshold_criterion)  # ValueError naming the problem
        assert self.epochs >= 1 and self.lr > 0 and self.batch_size >= 1 and self.patience >= 1
        assert self.weight_decay >= 0.0, f"weight_decay must be >= 0, got {self.weight_decay}"
        assert 0.0 < self.val_fraction and 0.0 < self.test_fraction and self.val_fraction + self.test_fraction < 1.0


@dataclass
class ClassifierResult:
    metrics: dict
    split: dict
    history: list[dict] = field(default_factory=list)  # per epoch: train_loss, val_loss
    # per feature name: [min, max] of the raw values in the training split (the manifest's
    # feature_ranges at export: what POST /explain searches and bounds over)
    feature_ranges: dict[str, list[float]] = field(default_factory=dict)


def positive_weights(labels: np.ndarray, mode: str | float) -> torch.Tensor | None:
    """negatives / positives per label column ("auto"), None ("none"), or one given number for every label."""
    if mode == "none":
        return None
    if not isinstance(mode, str):
        return torch.full((labels.shape[1],), float(mode), dtype=torch.float32)
    positives = labels.sum(axis=0)
    negatives = labels.shape[0] - positives
    return torch.tensor(negatives / np.maximum(positives, 1.0), dtype=torch.float32)


@torch.no_grad()
def predict_logits(model: MonotoneClassifier, features: np.ndarray) -> torch.Tensor:
    was_training = model.training
    model.eval()
    logits = model(torch.from_numpy(features).float())
    model.train(was_training)
    return logits


def _label_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict:
    auc = roc_auc(labels, probabilities)
    pr_auc = average_precision(labels, probabilities)
    counts = confusion(labels, probabilities, threshold)
    n_neg = counts["fp"] + counts["tn"]
    return {
        "accuracy": float(((probabilities >= threshold) == labels.astype(bool)).mean()),
        "roc_auc": None if np.isnan(auc) else auc,  # None: this split holds one class only (JSON-safe)
        "pr_auc": None if np.isnan(pr_auc) else pr_auc,
        "brier": brier_score(labels, probabilities),
        "ece": expected_calibration_error(labels, probabilities),
        "mean_probability": float(probabilities.mean()),
        "positive_rate": float(labels.mean()),
        "false_positive_rate": counts["fp"] / n_neg if n_neg else None,
        "confusion": counts,
        "positives": int(labels.sum()),
    }


def _mean(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


@torch.no_grad()
def evaluate(
    model: MonotoneClassifier, features: np.ndarray, labels: np.ndarray, pos_weight: torch.Tensor | None
) -> dict:
    """Loss (the training loss, same pos_weight), and per label: accuracy and confusion at the model's
    threshold, ROC AUC, PR AUC (average precision), Brier score, ECE (10 bins); means over labels."""
    logits = predict_logits(model, features)
    target = torch.from_numpy(labels).float()
    loss = float(nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight))
    probabilities = torch.sigmoid(logits).double().numpy()
    thresholds = model.config.label_thresholds
    per_label = {
        name: {**_label_metrics(labels[:, index], probabilities[:, index], thresholds[index]),
               "threshold": thresholds[index]}
        for index, name in enumerate(model.config.labels)
    }
    result: dict = {"loss": loss}
    for key in ("accuracy", "roc_auc", "pr_auc", "brier", "ece", "mean_probability", "positive_rate",
                "false_positive_rate"):
        result[key] = _mean([m[key] for m in per_label.values()])
    result["confusion"] = {k: sum(m["confusion"][k] for m in per_label.values()) for k in ("tp", "fp", "tn", "fn")}
    result["per_label"] = per_label
    result["n_rows"] = int(labels.shape[0])
    return result


@torch.no_grad()
def fit_calibration(model: MonotoneClassifier, features: np.ndarray, labels: np.ndarray, method: str) -> dict:
    """Platt scaling (scale and bias) or temperature scaling (scale only) of each label's logit,
    fitted by unweighted BCE on these rows and written into the model's calibration buffers.

    The scale is exp(log_scale), so it is positive by construction: calibration keeps every score
    monotone and every ranking (AUC) unchanged.
    """
    assert model.config.calibrated and method in ("platt", "temperature"), (model.config.calibrated, method)
    model.calibration_scale.fill_(1.0)
    model.calibration_bias.fill_(0.0)
    logits = model.uncalibrated_logits(torch.from_numpy(features).float()).double()
    target = torch.from_numpy(labels).double()
    log_scale = torch.zeros(logits.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(logits.shape[1], dtype=torch.float64, requires_grad=(method == "platt"))
    params = [log_scale, bias] if method == "platt" else [log_scale]
    optimizer = torch.optim.LBFGS(params, lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        with torch.enable_grad():
            loss = nn.functional.binary_cross_entropy_with_logits(logits * log_scale.exp() + bias, target)
            loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    model.calibration_scale.copy_(log_scale.detach().exp().float())
    model.calibration_bias.copy_(bias.detach().float())
    return {"method": method, "scale": model.calibration_scale.tolist(), "bias": model.calibration_bias.tolist()}


def fit(
    model: MonotoneClassifier,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    options: ClassifierTrainOptions,
    after_step: Callable[[MonotoneClassifier], None] | None = None,
) -> tuple[list[dict], int, torch.Tensor | None]:
    """Minibatch training with early stopping on validation loss; restores the best state.

    The projection method clamps after every optimizer step; `after_step(model)` (tests) runs
    right after that. Returns (history, best_epoch, pos_weight).
    """
    x_train = torch.from_numpy(train[0]).float()
    y_train = torch.from_numpy(train[1]).float()
    pos_weight = positive_weights(train[1], options.pos_weight)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    if options.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=options.lr, momentum=0.9, weight_decay=options.weight_decay)
    shuffler = torch.Generator().manual_seed(options.seed)

    model.project_()  # the projection method starts from a feasible point too
    best_loss, best_epoch, best_state = float("inf"), -1, copy.deepcopy(model.state_dict())
    history: list[dict] = []
    show = sys.stderr.isatty() if options.progress is None else options.progress
    bar = tqdm(range(options.epochs), desc="classifier", disable=not show, leave=False)
    for epoch in bar:
        model.train()
        total, count = 0.0, 0
        for batch in torch.randperm(x_train.shape[0], generator=shuffler).split(options.batch_size):
            optimizer.zero_grad()
            loss = loss_fn(model(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
            model.project_()  # no-op for reparam
            if after_step is not None:
                after_step(model)
            total += float(loss.detach()) * batch.numel()
            count += batch.numel()
        val_loss = evaluate(model, *val, pos_weight)["loss"]
        history.append({"epoch": epoch, "train_loss": total / count, "val_loss": val_loss})
        bar.set_postfix(train=f"{total / count:.4f}", val=f"{val_loss:.4f}")
        if val_loss < best_loss - 1e-6:
            best_loss, best_epoch, best_state = val_loss, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= options.patience:
            logger.info("early stop at epoch %d (best validation loss %.4f at epoch %d)", epoch, best_loss, best_epoch)
            break
    model.load_state_dict(best_state)
    model.eval()
    return history, best_epoch, pos_weight


def train_classifier(
    model: MonotoneClassifier,
    features: np.ndarray,
    labels: np.ndarray,
    options: ClassifierTrainOptions,
    after_step: Callable[[MonotoneClassifier], None] | None = None,
) -> ClassifierResult:
    """features [N, F] (raw), labels [N, n_labels] 0/1. Fits standardization on the training split."""
    assert features.shape[0] == labels.shape[0], f"{features.shape[0]} feature rows vs {labels.shape[0]} label rows"
    split = split_indices(features.shape[0], options.val_fraction, options.test_fraction, options.seed)
    model.fit_standardization(torch.from_numpy(features[split["train"]]).float())
    history, best_epoch, pos_weight = fit(
        model,
        (features[split["train"]], labels[split["train"]]),
        (features[split["val"]], labels[split["val"]]),
        options,
        after_step,
    )
    val_x, val_y = features[split["val"]], labels[split["val"]]
    warnings: list[str] = []
    calibration = None
    if model.config.calibrated:
        before = evaluate(model, val_x, val_y, pos_weight)["ece"]
        calibration = fit_calibration(model, val_x, val_y, options.calibration)
        calibration["val_ece_before"] = before
    if options.threshold_criterion is not None:
        probabilities = torch.sigmoid(predict_logits(model, val_x)).double().numpy()
        # `threshold`: chosen on all labels' rows pooled (a single-label model's only one);
        # several labels: one more per label, by the same criterion on that label's rows, which the
        # served model applies (labels differ in prevalence, so a pooled threshold suits none of them)
        model.config.threshold = choose_threshold(val_y.ravel(), probabilities.ravel(), options.threshold_criterion)
        if val_y.shape[1] > 1:
            model.config.thresholds = [choose_threshold(val_y[:, i], probabilities[:, i], options.threshold_criterion)
                                       for i in range(val_y.shape[1])]
    validation = evaluate(model, val_x, val_y, pos_weight)
    if calibration is not None:
        calibration["val_ece_after"] = validation["ece"]
    held_out = evaluate(model, features[split["test"]], labels[split["test"]], pos_weight)
    if best_epoch == len(history) - 1:
        warnings.append(
            f"the best validation loss came at the last epoch ({best_epoch + 1} of {len(history)}): training had "
            "not converged; try more --epochs or a larger --lr"
        )
    directions = model.config.directions or []
    uncovered = [f"{n} ({d})" for n, d in zip(model.config.feature_names, directions) if d != "increasing"]
    if uncovered and model.config.scope == "all":
        warnings.append(
            "the increase-only (additive) guarantee does not cover "
            + ", ".join(uncovered)
            + ": raising a decreasing feature can lower a score, a free feature can move it either way"
        )
    for message in warnings:
        logger.warning(message)
    final_bias = model.layers[-1].bias.detach().double().numpy()
    metrics = {
        "heldout": {k: v for k, v in held_out.items()},
        "validation": {k: v for k, v in validation.items() if k != "per_label"},
        # one number when every label shares it; None when each label has its own (`thresholds`)
        "threshold": None if model.config.thresholds is not None else model.config.threshold,
        "thresholds": dict(zip(model.config.labels, model.config.label_thresholds)),
        # several labels, a criterion: the one threshold the labels' pooled rows give (the old behaviour)
        "threshold_pooled": (model.config.threshold if model.config.thresholds is not None
                             and options.threshold_criterion is not None else None),
        "threshold_criterion": options.threshold_criterion or "fixed",
        "calibration": calibration,
        "warnings": warnings,
        "heldout_loss": held_out["loss"],
        "heldout_accuracy": held_out["accuracy"],
        "heldout_roc_auc": held_out["roc_auc"],
        "heldout_per_label": held_out["per_label"],
        "val_loss": validation["loss"],
        "val_roc_auc": validation["roc_auc"],
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "pos_weight": None if pos_weight is None else pos_weight.tolist(),
        "final_bias": final_bias.tolist(),
    }
    split_info = {
        "seed": options.seed,
        "val_fraction": options.val_fraction,
        "test_fraction": options.test_fraction,
        "n_train": int(split["train"].size),
        "n_val": int(split["val"].size),
        "n_test": int(split["test"].size),
    }
    train_x = features[split["train"]]
    ranges = {name: [float(train_x[:, i].min()), float(train_x[:, i].max())]
              for i, name in enumerate(model.config.feature_names)}
    return ClassifierResult(metrics=metrics, split=split_info, history=history, feature_ranges=ranges)
