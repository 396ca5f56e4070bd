"""How a smoother pads its signal's edges, in one place for export, one-shot inference and streams.

The declaration's `padding` (contract.spec) becomes the manifest's `smoother.padding`; every
smoother computes the full correlation of its signal padded by K - 1 samples on each side this way
(contract.modes slices each edge mode out of it):

- ``replicate`` (default): copies of the first and last sample (`F.pad(..., mode="replicate")`,
  ONNX Pad "edge");
- ``zeros``: zeros (`F.conv1d(x, w, padding=...)`, ONNX Pad "constant");
- ``reflect``: the signal mirrored about its first and last sample, which are not repeated
  (`F.pad(..., mode="reflect")`, ONNX Pad "reflect"); it needs at least K samples (a signal shorter
  than the kernel has no K - 1 samples to mirror: ONNX Runtime refuses it, and so do we, with a 400);
- ``circular``: the signal wrapped around (`F.pad(..., mode="circular")`, ONNX Pad "wrap"); the left
  edge is the signal's end, so a stream answers only when it ends (edge modes other than "valid").

Every padded sample is a copy of an input sample (or 0), so a positive kernel keeps the output
non-decreasing in every sample: the proof is the same for all four. numpy only.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

Padding = Literal["replicate", "zeros", "reflect", "circular"]
PADDINGS: tuple[str, ...] = get_args(Padding)
DEFAULT_PADDING = "replicate"
ONNX_PAD_MODES: dict[str, str] = {"replicate": "edge", "zeros": "constant", "reflect": "reflect", "circular": "wrap"}
_NUMPY_MODES = {"replicate": "edge", "zeros": "constant", "reflect": "reflect", "circular": "wrap"}


def check_padding(padding: str) -> str:
    if padding not in PADDINGS:
        raise ValueError(f"unknown padding {padding!r}; expected one of {', '.join(PADDINGS)}")
    return padding


def min_length(padding: str, kernel_size: int) -> int:
    """The fewest samples a signal may have with this padding (reflect mirrors K - 1 of them)."""
    return kernel_size if check_padding(padding) == "reflect" and kernel_size > 1 else 1


def pad(signals: np.ndarray, left: int, right: int, padding: str) -> np.ndarray:
    """[N, L] -> [N, left + L + right] float32, C order, padded as `padding` says (ONNX Pad's semantics)."""
    check_padding(padding)
    signals = np.asarray(signals, dtype=np.float32)
    if padding == "replicate":  # the hot path: no np.pad dispatch
        n, length = signals.shape
        out = np.empty((n, left + length + right), dtype=np.float32)
        out[:, left:left + length] = signals
        if left:
            out[:, :left] = signals[:, :1]
        if right:
            out[:, left + length:] = signals[:, -1:]
        return out
    if padding == "reflect" and max(left, right) >= signals.shape[1]:
        raise ValueError(f"reflect padding of {max(left, right)} sample(s) needs more than that many samples, "
                         f"got {signals.shape[1]}")
    return np.ascontiguousarray(np.pad(signals, ((0, 0), (left, right)), mode=_NUMPY_MODES[padding]), dtype=np.float32)


def history(padding: str, kernel_size: int) -> int:
    """Samples per channel a stream keeps between chunks once it answers: the K - 1 the next output
    needs, and for reflect one more (the right edge mirrors the last K samples but the last one)."""
    return kernel_size - 1 + (1 if check_padding(padding) == "reflect" and kernel_size > 1 else 0)


def lead(padding: str, kernel_size: int, mode: str) -> int | None:
    """Samples a stream must hold before its left edge is known (its first answer): None for the
    whole signal (circular: the left edge is the signal's end). Mode "valid" never reads the padding."""
    if mode == "valid" or check_padding(padding) in ("replicate", "zeros"):
        return 1
    return kernel_size if padding == "reflect" else None


def left_edge(head: np.ndarray, kernel_size: int, padding: str, mode: str) -> np.ndarray:
    """The K - 1 padded samples before the signal, from its first samples `head` [C, n >= lead]."""
    width = kernel_size - 1
    if mode == "valid" or padding == "zeros":  # valid mode never answers from them
        return np.zeros((head.shape[0], width), dtype=np.float32)
    if padding == "replicate":
        return np.repeat(head[:, :1], width, axis=1)
    if padding == "reflect":
        return np.ascontiguousarray(head[:, 1:kernel_size][:, ::-1])
    raise ValueError(f"the left edge of {padding!r} padding needs the whole signal")


def right_edge(tail: np.ndarray, kernel_size: int, padding: str, mode: str) -> np.ndarray:
    """The K - 1 padded samples after the signal, from its last samples `tail` [C, history]."""
    width = kernel_size - 1
    if mode == "valid" or padding == "zeros":
        return np.zeros((tail.shape[0], width), dtype=np.float32)
    if padding == "replicate":
        return np.repeat(tail[:, -1:], width, axis=1)
    if padding == "reflect":
        return np.ascontiguousarray(tail[:, -kernel_size:-1][:, ::-1])
    raise ValueError(f"the right edge of {padding!r} padding needs the whole signal")
