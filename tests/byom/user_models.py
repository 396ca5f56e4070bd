"""Modules written the way users write them (not monoserve's own classes): the subjects of tests/test_byom.py."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize


class Fir1dSoftmax(nn.Module):
    """kernel = softmax(lin * alpha): positive, sums to 1, non-decreasing while alpha > 0."""

    def __init__(self, kernel_size: int = 5):
        super().__init__()
        self.register_buffer("lin", torch.linspace(-1.0, 1.0, kernel_size))
        self.alpha = nn.Parameter(torch.tensor(0.5))

    def kernel(self) -> torch.Tensor:
        return torch.softmax(self.lin * F.softplus(self.alpha), dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, L] -> [B, C, L - K + 1]
        channels = x.shape[1]
        w = self.kernel()
        return F.conv1d(x, w.view(1, 1, -1).expand(channels, 1, -1), groups=channels)


class Fir1dCumsum(nn.Module):
    """kernel = exp(p).cumsum(0), normalized; 'same' alignment with replicate padding."""

    def __init__(self, kernel_size: int = 7, reverse: bool = False):
        super().__init__()
        self.kernel_parameters = nn.Parameter(torch.full((kernel_size,), -1.0))
        self.reverse = reverse

    def kernel(self) -> torch.Tensor:
        w = self.kernel_parameters.exp().cumsum(0)
        w = w / w.sum()
        return w.flip(0) if self.reverse else w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels, k = x.shape[1], self.kernel_parameters.numel()
        padded = F.pad(x, (k // 2, k - 1 - k // 2), mode="replicate")
        return F.conv1d(padded, self.kernel().view(1, 1, -1).expand(channels, 1, k), groups=channels)


class ChannelLoopFir(nn.Module):
    """One kernel applied channel by channel in a Python loop (causal, unnormalized)."""

    def __init__(self, kernel: torch.Tensor):
        super().__init__()
        self.register_buffer("taps", kernel.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.taps.numel()
        padded = F.pad(x, (k - 1, 0), mode="replicate")
        return torch.cat([F.conv1d(padded[:, c:c + 1], self.taps.view(1, 1, -1)) for c in range(x.shape[1])], dim=1)


class MixingFir(nn.Module):
    """Not a smoother: channel 1 leaks into channel 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.avg_pool1d(x, 3, stride=1)
        return out + 0.1 * out.roll(1, dims=1)


class SquaringFir(nn.Module):
    """Not a smoother: nonlinear."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool1d(x * x.abs(), 3, stride=1)


class ClampedClassifier(nn.Module):
    """Hidden layers with BatchNorm, GELU, Dropout; the last Linear clamped >= 0 after each step."""

    def __init__(self, n_features: int = 3, hidden: int = 8, n_labels: int = 1):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_features, hidden), nn.BatchNorm1d(hidden), nn.GELU(), nn.Dropout(0.1),
                                  nn.Linear(hidden, hidden), nn.SiLU())
        self.head = nn.Linear(hidden, n_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))  # logits


class Positive(nn.Module):
    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return F.softplus(raw)


class ParametrizedMonotoneNet(nn.Module):
    """Every weight softplus-parametrized (torch.nn.utils.parametrize): non-decreasing in every feature."""

    def __init__(self, n_features: int = 3, hidden: int = 6):
        super().__init__()
        self.first = nn.Linear(n_features, hidden)
        self.second = nn.Linear(hidden, 1)
        for layer in (self.first, self.second):
            parametrize.register_parametrization(layer, "weight", Positive())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.second(torch.tanh(self.first(x))))


def train_classifier(model: nn.Module, steps: int = 30, clamp: bool = True, seed: int = 0, logits: bool = True) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 3, generator=generator)
    y = ((x.sum(dim=1) + 0.3 * torch.randn(256, generator=generator)) > 0).float().unsqueeze(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    loss_fn = nn.BCEWithLogitsLoss() if logits else nn.BCELoss()
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
        if clamp:
            with torch.no_grad():
                model.head.weight.clamp_(min=0.0)
    return model.eval()


def train_smoother(model: nn.Module, steps: int = 20, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 6.28, 120)
    clean = torch.stack([torch.sin(t), torch.cos(t)]).unsqueeze(0)
    noisy = clean + 0.3 * torch.randn(clean.shape, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        out = model(noisy)
        offset = (clean.shape[-1] - out.shape[-1]) // 2
        loss = ((out - clean[..., offset:offset + out.shape[-1]]) ** 2).mean()
        loss.backward()
        optimizer.step()
    return model.eval()
