"""The trusted wrapper modules: what export writes into every artifact, and what the service's
TorchScript proof rebuilds from the proven tensors and scripts as its reference (service/repository/torchscript_proof.py).

One definition, imported by models/ (training uses the activations), export/ (writes them) and,
lazily, the service (the TorchScript proof), so the service never imports export/. torch only.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Non-decreasing activations only: with nonnegative weights they compose into monotone scores.
ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "softplus", "elu")
TRANSFORMS = ("none", "log1p")
LEAKY_SLOPE = 0.01  # >= 0 keeps leaky_relu non-decreasing


def make_activation(name: str) -> nn.Module:
    assert name in ACTIVATIONS, f"activation must be one of {ACTIVATIONS}, got {name!r}"
    return {
        "relu": nn.ReLU,
        "leaky_relu": lambda: nn.LeakyReLU(LEAKY_SLOPE),
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
        "softplus": nn.Softplus,
        "elu": nn.ELU,
    }[name]()


def monotone_transform(x: torch.Tensor, transform: str) -> torch.Tensor:
    """log1p(max(x, 0)) as log(relu(x) + 1): non-decreasing, and the Log's input is provably >= 1."""
    if transform == "log1p":
        return torch.log(torch.relu(x) + 1.0)
    return x


class FullCorrelation(nn.Module):
    """Export wrapper: [B, C, L] -> [B, C, L + K - 1], the output every edge mode slices.

    The kernel is a plain buffer here (folded), so exported graphs hold it as a constant.
    """

    def __init__(self, kernel: torch.Tensor):
        super().__init__()
        self.register_buffer("kernel", kernel.detach().clone().reshape(1, 1, -1))  # [1, 1, K]

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        batch, channels, length = signal.shape
        pad = self.kernel.shape[-1] - 1
        flat = signal.reshape(batch * channels, 1, length)  # ONNX Conv needs a fixed group count
        flat = F.pad(flat, (pad, pad), mode="replicate")
        out = F.conv1d(flat, self.kernel)  # [B*C, 1, L + K - 1]
        return out.reshape(batch, channels, length + pad)

    @classmethod
    def from_manifest(cls, manifest: Any, tensors: Mapping[str, np.ndarray]) -> "FullCorrelation":
        """The wrapper rebuilt from a manifest and its state_dict tensors (the kernel is all it holds)."""
        del manifest
        kernel = np.ascontiguousarray(tensors["kernel"], dtype=np.float32).reshape(-1)
        return cls(torch.from_numpy(kernel.copy())).eval()


class ClassifierScores(nn.Module):
    """Export wrapper of a folded MonotoneClassifier: raw features [B, F] -> sigmoid(logits) [B, n_labels].

    Standardization and direction signs stay separate constants (Sub, Div, Mul in ONNX) so the
    service can read `feature_scale` back and propagate signs node by node.
    """

    def __init__(self, feature_mean: torch.Tensor, feature_scale: torch.Tensor, direction_sign: torch.Tensor,
                 layers: list[tuple[torch.Tensor, torch.Tensor]], activation: str = "relu", transform: str = "none",
                 calibration: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        self.register_buffer("feature_mean", feature_mean.detach().clone().float())
        self.register_buffer("feature_scale", feature_scale.detach().clone().float())
        self.register_buffer("direction_sign", direction_sign.detach().clone().float())
        # the trained function: the model's transform, activation and calibration (models.classifier)
        self.transform = transform
        self.activation = make_activation(activation)
        if calibration is not None:  # (scale, bias) on the logits
            self.register_buffer("calibration_scale", calibration[0].detach().clone().float())
            self.register_buffer("calibration_bias", calibration[1].detach().clone().float())
        self.layers = nn.ModuleList()
        for weight, bias in layers:
            plain = nn.Linear(weight.shape[1], weight.shape[0])
            with torch.no_grad():
                plain.weight.copy_(weight.detach().float())
                plain.bias.copy_(bias.detach().float())
            plain.requires_grad_(False)
            self.layers.append(plain)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        h = monotone_transform(features, self.transform)
        h = (h - self.feature_mean) / self.feature_scale * self.direction_sign
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            h = layer(h)
            if index < last:
                h = self.activation(h)
        if hasattr(self, "calibration_scale"):  # static in TorchScript: uncalibrated graphs have no Mul/Add
            h = h * self.calibration_scale + self.calibration_bias
        return torch.sigmoid(h)

    @classmethod
    def from_manifest(cls, manifest: Any, tensors: Mapping[str, np.ndarray]) -> "ClassifierScores":
        """The wrapper rebuilt from the manifest's classifier section and its state_dict tensors."""
        def tensor(name: str) -> torch.Tensor:
            return torch.from_numpy(np.array(tensors[name], dtype=np.float32, copy=True))

        count = len([name for name in tensors if name.startswith("layers.") and name.endswith(".weight")])
        layers = [(tensor(f"layers.{i}.weight"), tensor(f"layers.{i}.bias")) for i in range(count)]
        # activation and transform are code, not tensors: the manifest says which (ClassifierInfo)
        info = manifest.classifier
        calibration = (tensor("calibration_scale"), tensor("calibration_bias")) if info.calibrated else None
        return cls(tensor("feature_mean"), tensor("feature_scale"), tensor("direction_sign"), layers,
                   info.activation, info.transform, calibration).eval()
