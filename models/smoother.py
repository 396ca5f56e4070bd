"""MonotoneSmoother: a learnable FIR trend filter with a positive, non-decreasing kernel."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from contract.modes import DEFAULT_MODE, check_mode, mode_pads
from models.constraints import initial_increasing_kernel, monotone_kernel, softmax_kernel
from torchref.modules import FullCorrelation  # noqa: F401  (the export wrapper, defined once in torchref)

PARAMS = ("exp-cumsum", "softmax")


@dataclass
class SmootherConfig:
    kernel_size: int = 31
    param: str = "exp-cumsum"  # "exp-cumsum" | "softmax"
    normalize: bool = True  # kernel sums to 1, so a constant signal passes unchanged
    mode: str = DEFAULT_MODE  # default edge mode: "same" | "causal" | "valid"
    init_decay: float = 0.1  # initial kernel: exp(decay * (tap - (K-1))), normalized

    def __post_init__(self) -> None:
        assert self.kernel_size >= 1 and self.kernel_size % 2 == 1, (
            f"kernel_size must be odd and >= 1, got {self.kernel_size}"
        )
        assert self.param in PARAMS, f"param must be one of {PARAMS}, got {self.param!r}"
        assert self.param != "softmax" or self.normalize, "the softmax kernel is always normalized"
        check_mode(self.mode)


class MonotoneSmoother(nn.Module):
    """One kernel shared by every channel, applied as F.conv1d does (cross-correlation).

    The last tap weighs the newest sample of each window, so an increasing kernel weighs recent
    samples most. `self.kernel` is recomputed from the raw parameters on every access.
    """

    def __init__(self, config: SmootherConfig):
        super().__init__()
        self.config = config
        self.kernel = nn.Parameter(initial_increasing_kernel(config.kernel_size, config.init_decay))  # [K]
        if config.param == "exp-cumsum":
            monotone_kernel(self, "kernel", normalize=config.normalize)
        else:
            softmax_kernel(self, "kernel")

    @property
    def kernel_size(self) -> int:
        return self.config.kernel_size

    def raw_parameters(self) -> dict[str, torch.Tensor]:
        """The unconstrained tensors the optimizer moves (exp-cumsum logits, or the softmax alpha)."""
        return {"kernel.original": self.parametrizations.kernel.original}

    @staticmethod
    def constraint_specs(normalize: bool = True) -> list[dict]:
        """The rules the folded kernel obeys: the same dicts go into the manifest and the checkers."""
        specs = [
            {"tensor": "kernel", "rule": "positive", "tolerance": 0.0},
            {"tensor": "kernel", "rule": "monotone_nondecreasing", "tolerance": 0.0, "axis": -1},
        ]
        if normalize:
            specs.append({"tensor": "kernel", "rule": "sums_to_one", "tolerance": 1e-4, "axis": -1})
        return specs

    def forward(self, x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        """x: [L], [C, L] or [B, C, L] -> the same rank; length L, or L - K + 1 for `valid`."""
        mode = check_mode(mode or self.config.mode)
        assert 1 <= x.dim() <= 3, f"expected a signal of shape [L], [C, L] or [B, C, L], got {tuple(x.shape)}"
        shape = x.shape
        length = shape[-1]
        signals = x.reshape(-1, 1, length)  # [N, 1, L], N = B * C: one shared kernel, no loop
        left, right = mode_pads(mode, self.kernel_size)
        if left or right:
            signals = F.pad(signals, (left, right), mode="replicate")
        weight = self.kernel.to(signals.dtype).view(1, 1, -1)  # [1, 1, K]
        out = F.conv1d(signals, weight)  # [N, 1, L']
        return out.reshape(*shape[:-1], out.shape[-1])


