"""Users' networks beyond MLPs with a clamped head: the subjects of tests/test_byom_nets.py.

A classifier with LayerNorm, Softmax and Gelu in its hidden layers (scope "final"), Lipschitz-monotone
networks built with the `monotonicnetworks` package (g(x) + lambda * sum_i s_i x_i), and smoothers
aligned "same" that pad with zeros, by reflection or circularly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNormClassifier(nn.Module):
    """LayerNorm, GELU, a softmax over hidden units and a mean in the hidden layers; the head clamped >= 0."""

    def __init__(self, n_features: int = 3, hidden: int = 8, n_labels: int = 1):
        super().__init__()
        self.first = nn.Linear(n_features, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.second = nn.Linear(hidden, hidden)
        self.head = nn.Linear(2 * hidden, n_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.norm(self.first(x)))
        attention = torch.softmax(self.second(h), dim=-1)
        pooled = (attention * h).sum(dim=-1, keepdim=True)
        return self.head(torch.cat([h, attention * 4.0 + pooled.pow(2)], dim=-1))  # logits


def lipschitz_network(n_features: int, directions: list[int], lam: float, width: int = 16, depth: int = 3,
                      activation: str = "groupsort", oversize: float = 1.0, seed: int = 0) -> nn.Module:
    """A monotonicnetworks model as its README builds one: LipschitzLinear layers whose norms multiply
    to `lam` (the first "one-inf", the others "inf"), GroupSort (or ReLU) between them, wrapped in
    MonotonicWrapper (the residual lam * sum_i s_i x_i). `oversize` > 1 scales g's last layer after
    training-time normalization, so g's rate exceeds lambda (the network is then not proven monotone)."""
    import monotonicnetworks as lmn

    torch.manual_seed(seed)
    per_layer = lam ** (1.0 / depth)
    layers: list[nn.Module] = []
    sizes = [n_features] + [width] * (depth - 1) + [1]
    for index in range(depth):
        kind = "one-inf" if index == 0 else "inf"
        layers.append(lmn.LipschitzLinear(sizes[index], sizes[index + 1], kind=kind, lipschitz_const=per_layer))
        if index < depth - 1:
            layers.append(lmn.GroupSort(sizes[index + 1] // 2) if activation == "groupsort" else nn.ReLU())
    g = nn.Sequential(*layers)
    model = lmn.MonotonicWrapper(g, lipschitz_const=lam, monotonic_constraints=directions)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(256, n_features, generator=generator)
    y = ((x * torch.tensor(directions, dtype=torch.float32)).sum(dim=1) > 0).float().unsqueeze(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(30):
        optimizer.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
        optimizer.step()
    model.eval()
    if oversize != 1.0:
        last = layers[-1]
        from torch.nn.utils import parametrize

        parametrize.remove_parametrizations(last, "weight", leave_parametrized=True)
        with torch.no_grad():
            last.weight.mul_(oversize)
    return model


class ZeroPadFir(nn.Module):
    """A 'same' smoother as users write it with zero padding: F.conv1d(x, w, padding=K // 2, groups=C)."""

    def __init__(self, kernel_size: int = 5):
        super().__init__()
        self.raw = nn.Parameter(torch.linspace(-1.0, 1.0, kernel_size))

    def kernel(self) -> torch.Tensor:
        w = self.raw.exp().cumsum(0)
        return w / w.sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels, k = x.shape[1], self.raw.numel()
        return F.conv1d(x, self.kernel().view(1, 1, -1).expand(channels, 1, k), padding=k // 2, groups=channels)


class PaddedFir(ZeroPadFir):
    """A 'same' smoother padding with F.pad(x, (K - 1 - K // 2, K // 2), mode=padding)."""

    def __init__(self, kernel_size: int = 5, padding: str = "reflect"):
        super().__init__(kernel_size)
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels, k = x.shape[1], self.raw.numel()
        padded = F.pad(x, (k - 1 - k // 2, k // 2), mode="constant" if self.padding == "zeros" else self.padding)
        return F.conv1d(padded, self.kernel().view(1, 1, -1).expand(channels, 1, k), groups=channels)


def lipschitz_groupsort() -> nn.Module:
    """A factory for `monoserve export --module net_models.py:lipschitz_groupsort`: increasing in the first
    feature, free in the second, decreasing in the third, lambda 2."""
    return lipschitz_network(3, [1, 0, -1], 2.0)
