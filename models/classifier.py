"""MonotoneClassifier: an MLP whose scores can only rise when a monotone feature rises.

Scope `final`: only the output layer is nonnegative. Scope `all`: every weight on a path from a
monotone feature to a score is nonnegative and every activation is non-decreasing, so each score
is non-decreasing in each increasing feature (decreasing features enter negated; free features
get unconstrained first-layer weights and nothing is promised about them). Scope `none`: no
constraint at all, the unconstrained baseline (export and serving refuse it unless told otherwise).

Everything between the raw features and the probability is part of the module, so the exported
graph is the trained function: the optional `log1p` transform (written as log(relu(x) + 1) so the
graph is Relu -> Add -> Log, which the load-time certificate proves), the standardization, the
direction signs, the MLP with a non-decreasing activation, and the optional calibration
(a positive scale and a bias on the logit, fitted on validation data after training).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from models.constraints import NONNEG_KINDS, nonnegative, project_nonnegative_
# The activations and the transform: one definition in torchref.modules (the trusted wrappers use them).
from torchref.modules import ACTIVATIONS, LEAKY_SLOPE, TRANSFORMS, make_activation, monotone_transform  # noqa: F401

DIRECTIONS = ("increasing", "decreasing", "free")
SCOPES = ("all", "final", "none")
METHODS = ("reparam", "project")


@dataclass
class ClassifierConfig:
    feature_names: list[str]
    labels: list[str] = field(default_factory=lambda: ["positive"])
    hidden: list[int] = field(default_factory=lambda: [32, 32])
    scope: str = "all"  # "all" | "final"
    method: str = "reparam"  # "reparam" | "project"
    nonneg: str = "softplus"  # reparam map: "softplus" | "exp" | "square"
    directions: list[str] | None = None  # per feature; None = all increasing
    threshold: float = 0.5  # every label's, unless `thresholds` gives one per label
    thresholds: list[float] | None = None  # one per label, in `labels` order (multi-label, chosen on validation)
    activation: str = "relu"  # one of ACTIVATIONS (all non-decreasing)
    transform: str = "none"  # "none" | "log1p" (on every feature, before standardization)
    calibrated: bool = False  # a positive scale and a bias on the logits (fitted after training)

    def __post_init__(self) -> None:
        assert len(self.feature_names) >= 1, "a classifier needs at least one feature"
        assert len(set(self.feature_names)) == len(self.feature_names), (
            f"feature names must be unique, got {self.feature_names}"
        )
        assert len(self.labels) >= 1, "a classifier needs at least one label (n_outputs >= 1)"
        assert self.scope in SCOPES, f"scope must be one of {SCOPES}, got {self.scope!r}"
        assert self.method in METHODS, f"method must be one of {METHODS}, got {self.method!r}"
        assert self.nonneg in NONNEG_KINDS, f"nonneg must be one of {NONNEG_KINDS}, got {self.nonneg!r}"
        assert all(h >= 1 for h in self.hidden), f"hidden sizes must be >= 1, got {self.hidden}"
        if self.directions is None:
            self.directions = ["increasing"] * len(self.feature_names)
        assert len(self.directions) == len(self.feature_names), (
            f"expected {len(self.feature_names)} directions, got {len(self.directions)}"
        )
        assert all(d in DIRECTIONS for d in self.directions), f"directions must be in {DIRECTIONS}"
        assert self.scope == "all" or all(d == "increasing" for d in self.directions), (
            "per-feature directions need scope 'all' (scope 'final' promises no monotonicity in the inputs)"
        )
        assert 0.0 < self.threshold < 1.0, f"threshold must be in (0, 1), got {self.threshold}"
        if self.thresholds is not None:
            assert len(self.thresholds) == len(self.labels), (
                f"expected one threshold per label ({len(self.labels)}), got {len(self.thresholds)}"
            )
            assert all(0.0 < t < 1.0 for t in self.thresholds), f"thresholds must be in (0, 1), got {self.thresholds}"
        assert self.activation in ACTIVATIONS, f"activation must be one of {ACTIVATIONS}, got {self.activation!r}"
        assert self.transform in TRANSFORMS, f"transform must be one of {TRANSFORMS}, got {self.transform!r}"

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def n_outputs(self) -> int:
        return len(self.labels)

    @property
    def label_thresholds(self) -> list[float]:
        """The decision threshold of each label, in `labels` order."""
        return list(self.thresholds) if self.thresholds is not None else [self.threshold] * len(self.labels)

    @property
    def monotone_columns(self) -> list[int]:
        assert self.directions is not None
        return [i for i, d in enumerate(self.directions) if d != "free"]


class MonotoneClassifier(nn.Module):
    """x [B, F] -> logits [B, n_outputs]; standardization and direction signs are part of the model."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        n_features = config.n_features
        # Standardization fitted on training data (fit_standardization); scale stays positive.
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_scale", torch.ones(n_features))
        signs = [-1.0 if d == "decreasing" else 1.0 for d in config.directions or []]
        self.register_buffer("direction_sign", torch.tensor(signs))  # decreasing features enter negated

        sizes = [n_features, *config.hidden, config.n_outputs]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.activation = make_activation(config.activation)  # non-decreasing: monotone composition
        if config.calibrated:
            # logit -> scale * logit + bias; scale > 0 keeps every score's order and monotonicity
            self.register_buffer("calibration_scale", torch.ones(config.n_outputs))
            self.register_buffer("calibration_bias", torch.zeros(config.n_outputs))

        self._init_nonnegative_friendly()
        if config.method == "reparam":
            for index, columns in self.constrained_layers().items():
                nonnegative(self.layers[index], "weight", kind=config.nonneg, columns=columns)

    def _init_nonnegative_friendly(self) -> None:
        # Constrained layers start from small positive weights (~ 1/fan_in), so the ReLU network is
        # not dead at the start; unconstrained layers keep PyTorch's default initialization.
        constrained = self.constrained_layers()
        with torch.no_grad():
            for index, layer in enumerate(self.layers):
                if index in constrained:
                    fan_in = layer.weight.shape[1]
                    positive = torch.rand_like(layer.weight) * (2.0 / fan_in)
                    columns = constrained[index]
                    if columns is None:
                        layer.weight.copy_(positive)
                    else:
                        layer.weight[:, columns] = positive[:, columns]

    def constrained_layers(self) -> dict[int, list[int] | None]:
        """Layer index -> the last-axis columns that must be nonnegative (None = the whole weight)."""
        last = len(self.layers) - 1
        if self.config.scope == "none":
            return {}
        if self.config.scope == "final":
            return {last: None}
        result: dict[int, list[int] | None] = {i: None for i in range(len(self.layers))}
        monotone = self.config.monotone_columns
        if len(monotone) < self.config.n_features:  # free features: first layer only partly constrained
            result[0] = monotone
        return result

    def constraint_specs(self) -> list[dict]:
        """Rules on the (folded) tensors, by state_dict name: the same dicts go into the manifest."""
        specs = [{"tensor": "feature_scale", "rule": "positive", "tolerance": 0.0}]
        for index, columns in self.constrained_layers().items():
            spec = {"tensor": f"layers.{index}.weight", "rule": "nonnegative", "tolerance": 0.0}
            if columns is not None:
                spec["columns"] = list(columns)
            specs.append(spec)
        if self.config.calibrated:
            specs.append({"tensor": "calibration_scale", "rule": "positive", "tolerance": 0.0})
        return specs

    def project_(self) -> None:
        """Projection method: clamp constrained weights to >= 0 after each optimizer step."""
        if self.config.method != "project":
            return
        for index, columns in self.constrained_layers().items():
            project_nonnegative_(self.layers[index].weight, columns)

    @torch.no_grad()
    def fit_standardization(self, features: torch.Tensor) -> None:
        """Set mean/scale from training features [N, F] (raw: the transform is applied here);
        constant columns get scale 1."""
        assert features.dim() == 2 and features.shape[1] == self.config.n_features, (
            f"expected features [N, {self.config.n_features}], got {tuple(features.shape)}"
        )
        features = monotone_transform(features, self.config.transform)
        self.feature_mean.copy_(features.mean(0))
        std = features.std(0, unbiased=False)
        self.feature_scale.copy_(torch.where(std > 1e-12, std, torch.ones_like(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 2 and x.shape[1] == self.config.n_features, (
            f"expected x [B, {self.config.n_features}], got {tuple(x.shape)}"
        )
        return self.calibrate(self.uncalibrated_logits(x))  # [B, n_outputs] logits

    def uncalibrated_logits(self, x: torch.Tensor) -> torch.Tensor:
        h = monotone_transform(x, self.config.transform)
        h = (h - self.feature_mean) / self.feature_scale * self.direction_sign  # [B, F]
        for index, layer in enumerate(self.layers):
            h = layer(h)
            if index < len(self.layers) - 1:
                h = self.activation(h)  # [B, hidden]
        return h  # [B, n_outputs]

    def calibrate(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.config.calibrated:
            return logits
        return logits * self.calibration_scale + self.calibration_bias
