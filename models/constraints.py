"""Weight constraints as small parametrization modules (torch.nn.utils.parametrize).

Each module maps an unconstrained raw tensor to a tensor that obeys its rule, and each has a public
helper that registers it on a module attribute. Because parametrize recomputes the constrained
tensor from the raw one on every access, the rule holds on every forward and gradients reach the
raw parameters (the classic bug of computing the weights once at construction cannot happen).

`right_inverse` is provided where one exists, so registering keeps the tensor's current value.
Assigning a value the parametrization cannot represent (a negative weight, a kernel that is not
increasing, or not summing to 1 when normalized) raises UnrepresentableError instead of silently
clamping it into another model: `nonnegative` clamps the tensor's initial value explicitly first.
The projection alternative (Keras `NonNeg`) is `project_nonnegative_`, called after each step.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

NonnegKind = Literal["softplus", "exp", "square"]
NONNEG_KINDS: tuple[str, ...] = ("softplus", "exp", "square")

# Smallest positive value right_inverse maps zeros to (log/softplus^-1 of 0 is -inf).
_EPS = 1e-6


# A value counts as represented when the parametrization maps its right_inverse back within this.
REPRESENT_ATOL, REPRESENT_RTOL = 1e-6, 1e-4


class UnrepresentableError(ValueError):
    """A value assigned to a parametrized tensor that the parametrization cannot produce."""


def _check_represented(name: str, wanted: torch.Tensor, produced: torch.Tensor, why: str) -> None:
    if wanted.shape != produced.shape or not torch.allclose(produced, wanted, atol=REPRESENT_ATOL, rtol=REPRESENT_RTOL):
        worst = (produced - wanted).abs().max().item() if wanted.shape == produced.shape else float("nan")
        raise UnrepresentableError(f"{name} cannot represent the assigned value ({why}); it would become another "
                                   f"tensor (max change {worst:.3g}), so it is refused rather than clamped")


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    y = y.clamp_min(_EPS)
    # softplus^-1(y) = log(expm1(y)); for large y it is y itself (avoids overflow).
    return torch.where(y > 20.0, y, torch.log(torch.expm1(y)))


class Nonnegative(nn.Module):
    """raw -> softplus(raw) | exp(raw) | raw**2, optionally only on some last-axis columns."""

    def __init__(self, kind: NonnegKind = "softplus", columns: list[int] | None = None, size: int | None = None):
        super().__init__()
        if kind not in NONNEG_KINDS:
            raise ValueError(f"unknown nonnegative kind {kind!r}; expected one of {NONNEG_KINDS}")
        self.kind = kind
        self.columns = None if columns is None else list(columns)
        if columns is not None:
            if size is None:
                raise ValueError("size (the last-axis length) is required with columns")
            mask = torch.zeros(size, dtype=torch.bool)
            mask[list(columns)] = True
            self.register_buffer("mask", mask, persistent=False)
        else:
            self.mask = None

    def _map(self, raw: torch.Tensor) -> torch.Tensor:
        if self.kind == "softplus":
            return F.softplus(raw)
        if self.kind == "exp":
            return torch.exp(raw)
        return raw * raw

    def _unmap(self, value: torch.Tensor) -> torch.Tensor:
        if self.kind == "softplus":
            return _inverse_softplus(value)
        if self.kind == "exp":
            return torch.log(value.clamp_min(_EPS))
        return torch.sqrt(value.clamp_min(0.0))

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        if self.mask is None:
            return self._map(raw)
        return torch.where(self.mask, self._map(raw), raw)

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        constrained = value if self.mask is None else value[..., self.mask]
        if bool((constrained < 0).any()):
            index = [int(i) for i in torch.nonzero(constrained < 0)[0]]
            raise UnrepresentableError(f"Nonnegative({self.kind}) cannot represent a negative value "
                                       f"({constrained[tuple(index)].item():.6g} at {index}); it is refused rather than clamped")
        if self.mask is None:
            return self._unmap(value)
        return torch.where(self.mask, self._unmap(value), value)


class ExpCumsumKernel(nn.Module):
    """logits [K] -> exp(logits).cumsum(-1): positive and non-decreasing; optionally sums to 1."""

    def __init__(self, normalize: bool = True):
        super().__init__()
        self.normalize = normalize

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        kernel = torch.exp(logits).cumsum(-1)  # [..., K], each step adds a positive amount
        if self.normalize:
            kernel = kernel / kernel.sum(-1, keepdim=True)
        return kernel

    @staticmethod
    def nearest_raw(kernel: torch.Tensor) -> torch.Tensor:
        """The logits of the representable kernel closest to `kernel`: its increments' logs, with an
        increment that is not positive raised to the dtype's smallest normal number (kept exactly
        otherwise, so that a representable kernel maps back onto itself)."""
        steps = torch.diff(kernel, dim=-1, prepend=torch.zeros_like(kernel[..., :1]))
        return torch.log(steps.clamp_min(torch.finfo(steps.dtype).tiny))

    def right_inverse(self, kernel: torch.Tensor) -> torch.Tensor:
        # increments: k[0], k[1]-k[0], ...; they must be positive for a log to exist
        steps = torch.diff(kernel, dim=-1, prepend=torch.zeros_like(kernel[..., :1]))
        raw = self.nearest_raw(kernel)
        if bool((steps <= 0).any()):
            tap = int(torch.nonzero(steps <= 0)[0][-1])
            why = (f"tap {tap} is {kernel[..., tap].reshape(-1)[0].item():.6g}, not above tap {tap - 1}" if tap
                   else "the first tap is not positive")
            raise UnrepresentableError(f"exp(p).cumsum() cannot represent the assigned kernel ({why}: it must be "
                                       "positive and strictly increasing); it is refused rather than clamped")
        with torch.no_grad():
            _check_represented("exp(p).cumsum()" + (" normalized" if self.normalize else ""), kernel, self.forward(raw),
                               f"it sums to {kernel.sum().item():.6g}, not 1" if self.normalize else "rounding")
        return raw


class SoftmaxKernel(nn.Module):
    """raw log(alpha) [1] -> softmax(max(lin * alpha - alpha, -LOG_FLOOR)), lin = linspace(-1, 1, K).

    alpha > 0 makes the kernel increasing (a truncated geometric kernel: adjacent taps differ by the
    ratio exp(-2 alpha / (K - 1))); softmax makes it positive and sum to 1. There is no additive
    offset: softmax cancels any constant, so such a parameter would never learn. alpha -> 0 is the
    flat (moving-average) kernel, alpha -> inf the naive last-value forecast: the floor on the
    logits (relative to the newest tap's, which is 0) keeps every tap >= exp(-LOG_FLOOR) / K, far
    above float32's smallest normal number, so no tap underflows to 0 however large alpha grows,
    and a tap below it weighs less than float32 can resolve next to the newest tap anyway. From
    `naive_alpha(K)` on every tap but the newest sits on the floor: the kernel *is* the naive forecast
    (to float32). models/alpha_search.py fits alpha by a bounded 1-D search over that closed range.
    """

    LOG_FLOOR = 60.0  # exp(-60) = 8.8e-27: far below float32 epsilon (1.2e-7), far above its smallest normal
    RAW_MAX = 30.0  # log(alpha) is clamped here before exp (alpha 1e13): exp never overflows to inf

    def __init__(self, kernel_size: int):
        super().__init__()
        assert kernel_size >= 1, f"kernel_size must be >= 1, got {kernel_size}"
        self.kernel_size = kernel_size
        self.register_buffer("lin", torch.linspace(-1.0, 1.0, kernel_size), persistent=False)

    @staticmethod
    def alpha(raw: torch.Tensor) -> torch.Tensor:
        return torch.exp(raw.clamp(max=SoftmaxKernel.RAW_MAX))

    @classmethod
    def naive_alpha(cls, kernel_size: int) -> float:
        """The smallest alpha at which every tap but the newest is on the floor (the naive kernel)."""
        return cls.LOG_FLOOR * max(kernel_size - 1, 1) / 2.0

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        logits = (self.lin.to(raw.dtype) - 1.0) * self.alpha(raw)  # [K], <= 0; the newest tap's is exactly 0
        return torch.softmax(logits.clamp(min=-self.LOG_FLOOR), dim=-1)  # [K]

    def nearest_raw(self, kernel: torch.Tensor) -> torch.Tensor:
        """The raw parameter of the representable kernel closest to `kernel` (alpha clamped into range)."""
        if self.kernel_size == 1:
            return torch.zeros(1, dtype=kernel.dtype)
        log_k = torch.log(kernel.clamp_min(1e-30))
        lin = self.lin.to(kernel.dtype)
        above = log_k > log_k.max() - self.LOG_FLOOR + 1.0
        if int(above.sum()) < 2:  # only the newest tap above the floor: the naive kernel
            return torch.tensor([math.log(self.naive_alpha(self.kernel_size))], dtype=kernel.dtype)
        lin, log_k = lin[above], log_k[above]
        centred = lin - lin.mean()
        slope = (centred * (log_k - log_k.mean())).sum() / (centred * centred).sum()
        return torch.log(slope.clamp_min(_EPS)).reshape(1)

    def right_inverse(self, kernel: torch.Tensor) -> torch.Tensor:
        # least-squares slope of log(kernel) against lin recovers alpha exactly for a softmax kernel
        assert kernel.shape[-1] == self.kernel_size, (
            f"expected a kernel of {self.kernel_size} taps, got shape {tuple(kernel.shape)}"
        )
        raw = self.nearest_raw(kernel)
        with torch.no_grad():
            _check_represented("softmax(lin * alpha)", kernel, self.forward(raw),
                               "only positive, increasing geometric kernels softmax(linspace(-1, 1, K) * alpha) "
                               "with alpha > 0 are")
        return raw


def nonnegative(
    module: nn.Module, name: str = "weight", kind: NonnegKind = "softplus", columns: list[int] | None = None
) -> nn.Module:
    """Register `Nonnegative` on `module.<name>` (only on last-axis `columns` if given)."""
    tensor = getattr(module, name)
    size = tensor.shape[-1] if columns is not None else None
    with torch.no_grad():  # the random initial value: clamped here, explicitly (right_inverse refuses negatives)
        if columns is None:
            tensor.clamp_(min=0.0)
        else:
            tensor[..., list(columns)] = tensor[..., list(columns)].clamp(min=0.0)
    parametrize.register_parametrization(module, name, Nonnegative(kind, columns, size))
    return module


def monotone_kernel(module: nn.Module, name: str = "weight", normalize: bool = True) -> nn.Module:
    """Register `ExpCumsumKernel` on `module.<name>` (a [K] kernel)."""
    parametrization = ExpCumsumKernel(normalize)
    tensor = getattr(module, name)
    with torch.no_grad():  # the initial value, moved explicitly to the nearest kernel the parametrization represents
        tensor.copy_(parametrization(parametrization.nearest_raw(tensor.detach())))
    parametrize.register_parametrization(module, name, parametrization)
    return module


def softmax_kernel(module: nn.Module, name: str = "weight") -> nn.Module:
    """Register `SoftmaxKernel` on `module.<name>`; the raw parameter becomes a single alpha."""
    tensor = getattr(module, name)
    kernel_size = tensor.shape[-1]
    parametrization = SoftmaxKernel(kernel_size)
    with torch.no_grad():  # the initial value, moved explicitly to the nearest kernel softmax can represent
        tensor.copy_(parametrization(parametrization.nearest_raw(tensor.detach())))
    # unsafe: the raw tensor ([1]) has another shape than the kernel ([K])
    parametrize.register_parametrization(module, name, parametrization, unsafe=True)
    return module


@torch.no_grad()
def project_nonnegative_(tensor: torch.Tensor, columns: list[int] | None = None) -> None:
    """Clamp to >= 0 in place (Keras `NonNeg`): call after every optimizer step."""
    if columns is None:
        tensor.clamp_(min=0.0)
    else:
        tensor[..., columns] = tensor[..., columns].clamp(min=0.0)


def initial_increasing_kernel(kernel_size: int, decay: float = 0.1) -> torch.Tensor:
    """A normalized, strictly increasing kernel to start training from (exponential weights)."""
    taps = torch.arange(kernel_size, dtype=torch.float32)
    kernel = torch.exp(decay * (taps - (kernel_size - 1)))
    return kernel / kernel.sum()


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


@torch.no_grad()
def folded_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict with every parametrized tensor replaced by its constrained value, under its
    plain name (e.g. `layers.0.weight`, `kernel`): the tensors the constraint specs talk about."""
    folded: dict[str, torch.Tensor] = {}
    for key, value in module.state_dict().items():
        if key.startswith("parametrizations.") or ".parametrizations." in key:
            continue  # raw tensors; their constrained values are added below
        folded[key] = value.detach().clone()
    for prefix, submodule in module.named_modules():
        if parametrize.is_parametrized(submodule):
            for name in submodule.parametrizations.keys():
                folded[f"{prefix}.{name}" if prefix else name] = getattr(submodule, name).detach().clone()
    return folded
