"""Edge modes of the smoother, shared by training, export and the service (no torch, no numpy).

Every exported smoother computes the *full* correlation: the signal padded by replicating its
first and last values K-1 times on each side, then a valid correlation with the K-tap kernel, so
the output has L + K - 1 samples. Each edge mode is a slice of that output:

- ``causal``: ``full[0 : L]``         (output[t] depends on x[<= t]; left edge replicated)
- ``same``:   ``full[h : h + L]``     with h = K // 2 (both edges replicated, centred window)
- ``valid``:  ``full[K - 1 : L]``     (no padding; L - K + 1 samples, empty when L < K)

One graph therefore serves every mode, and a mode costs a zero-copy slice.
"""

from __future__ import annotations

EDGE_MODES = ("same", "causal", "valid")
DEFAULT_MODE = "same"


def check_mode(mode: str) -> str:
    if mode not in EDGE_MODES:
        raise ValueError(f"unknown edge mode {mode!r}; expected one of {', '.join(EDGE_MODES)}")
    return mode


def mode_pads(mode: str, kernel_size: int) -> tuple[int, int]:
    """(left, right) replicate-padding that makes a valid correlation produce `mode`."""
    check_mode(mode)
    if mode == "same":
        half = kernel_size // 2
        return half, half
    if mode == "causal":
        return kernel_size - 1, 0
    return 0, 0


def mode_slice(mode: str, length: int, kernel_size: int) -> slice:
    """The slice of the full output (length + kernel_size - 1 samples) that is `mode`'s output."""
    check_mode(mode)
    if mode == "causal":
        return slice(0, length)
    if mode == "same":
        half = kernel_size // 2
        return slice(half, half + length)
    return slice(kernel_size - 1, max(length, kernel_size - 1))


def output_length(mode: str, length: int, kernel_size: int) -> int:
    check_mode(mode)
    if mode == "valid":
        return max(length - kernel_size + 1, 0)
    return length
