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
from models.metrics import roc_auc

logger = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "sgd")
POS_WEIGHTS = ("auto", "none")


@dataclass
class ClassifierTrainOptions:
    epochs: int = 150  # upper bound; early stopping usually ends sooner
    lr: float = 0.01
    optimizer: str = "adam"  # "adam" | "sgd" (momentum 0.9)
    weight_decay: float = 0.0
    pos_weight: str = "auto"  # "auto": negatives / positives per label (training split); "none"
    batch_size: int = 128
    patience: int = 15  # epochs without a better validation loss before stopping
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.25
    progress: bool | None = None  # None: show a bar only on a terminal

    def __post_init__(self) -> None:
        assert self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"
        assert self.pos_weight in POS_WEIGHTS, f"pos_weight must be one of {POS_WEIGHTS}, got {self.pos_weight!r}"
        assert self.epochs >= 1 and self.lr > 0 and self.batch_size >= 1 and self.patience >= 1
        assert self.weight_decay >= 0.0, f"weight_decay must be >= 0, got {self.weight_decay}"
        assert 0.0 < self.val_fraction and 0.0 < self.test_fraction and self.val_fraction + self.test_fraction < 1.0


@dataclass
class ClassifierResult:
    metrics: dict
    split: dict
    history: list[dict] = field(default_factory=list)  # per epoch: train_loss, val_loss


def split_indices(n_rows: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """A seeded random partition of row indices into train / val / test (each sorted)."""
    order = np.random.default_rng(seed).permutation(n_rows)
    n_test = max(1, int(round(n_rows * test_fraction)))
    n_val = max(1, int(round(n_rows * val_fraction)))
    assert n_rows - n_test - n_val >= 1, f"{n_rows} rows are too few for a train/val/test split"
    return {
        "test": np.sort(order[:n_test]),
        "val": np.sort(order[n_test : n_test + n_val]),
        "train": np.sort(order[n_test + n_val :]),
    }


def positive_weights(labels: np.ndarray, mode: str) -> torch.Tensor | None:
    """negatives / positives per label column ("auto"), or None."""
    if mode == "none":
        return None
    positives = labels.sum(axis=0)
    negatives = labels.shape[0] - positives
    return torch.tensor(negatives / np.maximum(positives, 1.0), dtype=torch.float32)


@torch.no_grad()
def evaluate(
    model: MonotoneClassifier, features: np.ndarray, labels: np.ndarray, pos_weight: torch.Tensor | None
) -> dict:
    """Loss (the training loss, same pos_weight), accuracy at the model's threshold, ROC AUC per label."""
    was_training = model.training
    model.eval()
    logits = model(torch.from_numpy(features).float())
    model.train(was_training)
    target = torch.from_numpy(labels).float()
    loss = float(nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight))
    probabilities = torch.sigmoid(logits).double().numpy()
    predicted = probabilities >= model.config.threshold
    per_label = {}
    for index, name in enumerate(model.config.labels):
        auc = roc_auc(labels[:, index], probabilities[:, index])
        per_label[name] = {
            "accuracy": float((predicted[:, index] == labels[:, index].astype(bool)).mean()),
            "roc_auc": None if np.isnan(auc) else auc,  # None: this split holds one class only (JSON-safe)
            "positives": int(labels[:, index].sum()),
        }
    aucs = [m["roc_auc"] for m in per_label.values() if m["roc_auc"] is not None]
    return {
        "loss": loss,
        "accuracy": float(np.mean([m["accuracy"] for m in per_label.values()])),
        "roc_auc": float(np.mean(aucs)) if aucs else None,
        "per_label": per_label,
        "n_rows": int(labels.shape[0]),
    }


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
    validation = evaluate(model, features[split["val"]], labels[split["val"]], pos_weight)
    held_out = evaluate(model, features[split["test"]], labels[split["test"]], pos_weight)
    final_bias = model.layers[-1].bias.detach().double().numpy()
    metrics = {
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
    return ClassifierResult(metrics=metrics, split=split_info, history=history)
